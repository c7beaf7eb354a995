"""The arena: every teacher on one student, one budget of student steps, one seed set, in each scenario.

At a given seed every method's deployed student starts from the same initial weights and sees the same batch
order (role "deploy"); no deployed student is one a teacher trained on (role "teach"). Per scenario and method:
test accuracy per seed, the paired difference to cross-entropy with its 95 % interval and the seeds it wins, the
steps to reach a dev accuracy (`target`: a share of cross-entropy's final dev accuracy in that scenario), and the
cost charged honestly: teacher training plus deployment wall time and student example-passes (forward and
backward, `student.PASSES`), as multiples of cross-entropy's, and the peak resident memory the work added.

Each method is an `Entry` in `METHODS`: how to build its config from its module's preset with the arena's student
and budget (`overrides` per method in `Config.methods`), how to train its teacher (or nothing), how to deploy it.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from . import data, engine, repro, stats
from . import seeds as seeding
from .checks import check_float, check_int
from .data import Splits
from .student import StudentConfig, counting
from .trace import Trace, metric_values

BASELINE = "ce"


@dataclass(frozen=True)
class Config:
    """student: every method's deployed student (the budget: its steps). scenarios: name -> spec for
    `data.apply_scenario` ({} for clean data; the scenario's seed is the run's). methods: the methods to run, in
    order, each with overrides of its module's preset (teacher budgets). target: steps-to-reach uses this share
    of cross-entropy's mean final dev accuracy in the scenario. deployments: seeds per cell."""

    student: StudentConfig
    scenarios: dict[str, dict] = field(default_factory=dict)
    methods: dict[str, dict] = field(default_factory=dict)
    preset: str = "cpu"
    deployments: int = 5
    target: float = 0.98
    dataset: str = "mnist"
    train_size: int | None = None
    dev_size: int = 5000

    def check(self) -> "Config":
        self.student.check()
        check_int("deployments", self.deployments, 2, seeding.SEED_BLOCK)
        check_float("target", self.target, 0, 1, low_open=True)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"methods {unknown} are not known: choose among {', '.join(METHODS)}")
        if BASELINE not in self.methods:
            raise ValueError(f"methods must include the baseline {BASELINE!r}")
        for name, spec in self.scenarios.items():
            if spec and spec.get("kind") not in data.SCENARIOS:
                raise ValueError(f"scenario {name!r} has kind={spec.get('kind')!r}: choose one of {list(data.SCENARIOS)}")
        return self


@dataclass
class Entry:
    """A method in the arena. config(arena cfg, overrides) -> the method's Config; teach(splits, mcfg, seed) -> a
    teacher (or None); deploy(teacher, splits, mcfg, seeds) -> Traces; needs: a scenario property it requires
    ("corrupted": an oracle needs known corrupted labels)."""

    config: Callable[[Config, dict], Any]
    teach: Callable[[Splits, Any, int], Any]
    deploy: Callable[[Any, Splits, Any, list[int]], list[Trace]]
    needs: str = ""


def _no_teacher(splits: Splits, mcfg: Any, seed: int) -> None:
    return None


def _plain(cfg: Config, overrides: dict) -> StudentConfig:
    return replace(cfg.student, **overrides)


def _ce_deploy(teacher, splits: Splits, student: StudentConfig, seeds: list[int]) -> list[Trace]:
    return engine.train(engine.Run(splits, student, seeds), progress_bar=False)


def _module_config(module: str) -> Callable[[Config, dict], Any]:
    """The method's preset (the arena's preset name) with the arena's student and the method's overrides."""
    def build(cfg: Config, overrides: dict):
        import importlib

        mod = importlib.import_module(f"labkit.{module}")
        return replace(mod.PRESETS[cfg.preset], student=cfg.student, deployments=cfg.deployments, **overrides)
    return build


def _dlf_teach(splits, mcfg, seed):
    from . import dlf

    return dlf.train_teacher(splits, mcfg, seed, progress_bar=False)[0]


def _dlf_deploy(teacher, splits, mcfg, seeds):
    from . import dlf

    return dlf.deploy(teacher, splits, mcfg, seeds, record=False, progress_bar=False)


def _phi0_teach(splits, mcfg, seed):
    from . import dlf

    return dlf.untrained_teacher(splits, mcfg, seed).at_start()


def _l2rw_teach(splits, mcfg, seed):
    from . import reweight

    return reweight.train_teacher(splits, mcfg, seed)[0]


def _l2rw_deploy(teacher, splits, mcfg, seeds):
    from . import reweight

    return reweight.deploy(teacher, splits, mcfg, seeds, progress_bar=False)


METHODS: dict[str, Entry] = {
    "ce": Entry(_plain, _no_teacher, _ce_deploy),
    "l2rw": Entry(_module_config("reweight"), _l2rw_teach, _l2rw_deploy),
    "l2t-dlf": Entry(_module_config("dlf"), _dlf_teach, _dlf_deploy),
    "phi0": Entry(_module_config("dlf"), _phi0_teach, _dlf_deploy),
}


# ---------------------------------------------------------------- cost

class PeakMemory:
    """The peak resident memory (MB) the block added, sampled every 5 ms from /proc/self/statm (Linux; None
    elsewhere). Memory the allocator keeps from earlier work is not counted again: a lower bound."""

    def __enter__(self) -> "PeakMemory":
        self.peak_mb: float | None = None
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._start = self._rss()
        self._peak, self._stop = self._start, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        if self._start is not None:
            self._thread.start()
        return self

    def _rss(self) -> int | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            return None

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self._rss() or 0)

    def __exit__(self, *exc) -> None:
        if self._start is None:
            return
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._rss() or 0)
        self.peak_mb = (self._peak - self._start) / 2 ** 20


@dataclass
class Outcome:
    """One method in one scenario: its deployed students' Traces and what teaching them cost."""

    traces: list[Trace]
    teacher_seconds: float
    deploy_seconds: float
    passes: int
    peak_mb: float | None

    @property
    def seconds(self) -> float:
        return self.teacher_seconds + self.deploy_seconds


def play(entry: Entry, mcfg: Any, splits: Splits, seed: int, seeds: list[int]) -> Outcome:
    """Train the method's teacher and deploy it, timing each part and counting student passes."""
    with counting() as passes, PeakMemory() as memory:
        start = time.perf_counter()
        teacher = entry.teach(splits, mcfg, seed)
        mid = time.perf_counter()
        traces = entry.deploy(teacher, splits, mcfg, seeds)
        end = time.perf_counter()
    return Outcome(traces, mid - start, end - mid, passes.forward + passes.backward, memory.peak_mb)


# ---------------------------------------------------------------- the run

def load(cfg: Config, seed: int, device: str = "auto") -> Splits:
    return data.load(cfg.dataset, dev_size=cfg.dev_size, train_size=cfg.train_size, seed=seed, device=device)


def scenario_splits(splits: Splits, spec: dict, seed: int) -> Splits:
    """The scenario applied to the training split with the run's seed ({}: the clean data)."""
    return data.apply_scenario(splits, dict(spec, seed=seed) if spec else None)


def run(splits: Splits, cfg: Config, seed: int, *, progress_bar: bool | None = None,
        log: Callable[[str], None] | None = print) -> dict[str, dict[str, Outcome]]:
    """Every method of `cfg.methods` in every scenario: {scenario: {method: Outcome}}. A method that needs
    something a scenario lacks (the oracle needs known corrupted labels) is left out of that scenario."""
    cfg = cfg.check()
    seeds = seeding.deployment_seeds(seed, cfg.deployments)
    jobs = [(s, m) for s in cfg.scenarios for m in cfg.methods]
    results: dict[str, dict[str, Outcome]] = {s: {} for s in cfg.scenarios}
    for scenario, method in engine.progress(jobs, total=len(jobs), desc="arena", enabled=progress_bar):
        splits_s = scenario_splits(splits, cfg.scenarios[scenario], seed)
        entry = METHODS[method]
        if entry.needs == "corrupted" and splits_s.train.clean_y is None:
            continue
        outcome = play(entry, entry.config(cfg, cfg.methods[method]), splits_s, seed, seeds)
        results[scenario][method] = outcome
        if log is not None:
            acc = stats.estimate([t.metrics.get("test_acc") for t in outcome.traces])
            log(f"{scenario:>12s} {method:>12s}: test acc {acc.format(2, 100, ' %')}, "
                f"teacher {outcome.teacher_seconds:.1f} s, deployment {outcome.deploy_seconds:.1f} s")
    return results


def steps_to(trace: Trace, target: float) -> int | None:
    """The first evaluation step at which the member's dev accuracy reached `target` (None: never, or diverged)."""
    if trace.diverged or "dev_acc" not in trace.scalars:
        return None
    steps, acc = trace.series("dev_acc")
    hit = [int(s) for s, a in zip(steps, acc) if a >= target]
    return hit[0] if hit else None


def costs(cells: dict[str, Outcome]) -> dict[str, dict]:
    """Per method: wall time and student passes as multiples of cross-entropy's, and the peak memory added."""
    base = cells[BASELINE]
    return {m: dict(teacher_seconds=o.teacher_seconds, deploy_seconds=o.deploy_seconds,
                    time_ratio=o.seconds / max(base.seconds, 1e-9), passes_ratio=o.passes / max(base.passes, 1),
                    peak_mb=o.peak_mb) for m, o in cells.items()}


def summary(results: dict[str, dict[str, Outcome]], seeds: Sequence[int], splits: Splits,
            cfg: Config) -> tuple[dict[str, dict], dict]:
    """(experiments, extras) for metrics.json: per scenario, test accuracy paired against CE ("<scenario>") and the
    steps to reach `target` x CE's mean final dev accuracy ("<scenario>/steps"); extras: the costs and targets."""
    experiments, extras = {}, {"costs": {}, "targets": {}}
    setting = f"{cfg.student.model}, {cfg.student.steps} steps, {len(seeds)} seeds"
    for scenario, cells in results.items():
        traces = {m: o.traces for m, o in cells.items()}
        acc = stats.summarize(metric_values(traces, "test_acc"), list(seeds), baseline=BASELINE)
        experiments[scenario] = repro.experiment(acc, metric="test_acc", dataset=splits.name,
                                                 model=cfg.student.model, setting=setting)
        ce_dev = stats.estimate(metric_values(traces, "dev_acc")[BASELINE]).mean
        target = cfg.target * ce_dev
        steps = {m: [steps_to(t, target) for t in ts] for m, ts in traces.items()}
        experiments[f"{scenario}/steps"] = repro.experiment(
            stats.summarize(steps, list(seeds), baseline=BASELINE, higher_is_better=False, missing="not reached"),
            metric="steps_to_dev_acc", dataset=splits.name, model=cfg.student.model,
            setting=f"{setting}; dev accuracy {target:.4f} ({cfg.target:g} x CE's final)")
        extras["costs"][scenario], extras["targets"][scenario] = costs(cells), target
    return experiments, extras


def winners(experiments: dict[str, dict]) -> dict[str, str]:
    """Per scenario, one sentence: which methods help (their paired interval excludes 0 above CE), the best of
    them first; or that none does."""
    out = {}
    for name, exp in experiments.items():
        if name.endswith("/steps"):
            continue
        helping = sorted(((m["paired"]["difference"]["mean"], k) for k, m in exp["methods"].items()
                          if m["paired"] and m["paired"]["helps"]), reverse=True)
        hurting = [k for k, m in exp["methods"].items() if m["paired"] and m["paired"]["hurts"]]
        if helping:
            text = "helps: " + ", ".join(f"{k} (+{100 * d:.2f} points)" for d, k in helping)
        else:
            text = "no method separates from cross-entropy"
        out[name] = text + (f"; hurts: {', '.join(hurting)}" if hurting else "")
    return out
