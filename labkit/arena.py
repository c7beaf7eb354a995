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

import math
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
from .trace import Trace, metric_values, progress

BASELINE = "ce"


@dataclass(frozen=True)
class Config:
    """student: every method's deployed student (the budget: its steps). scenarios: name -> spec for
    `data.apply_scenario` ({} for clean data; the scenario's seed is the run's). methods: the methods to run, in
    order, each with overrides of its module's preset (teacher budgets). target: steps-to-reach uses this share
    of cross-entropy's mean final dev accuracy in the scenario. deployments: seeds per cell. preset: which of each
    method module's presets its teacher settings start from (the student is always this config's)."""

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
    teacher (or None); deploy(teacher, splits, mcfg, seeds, done) -> Traces, where `done` holds the scenario's
    outcomes so far (RandTeach copies L2T's keep rates); needs: what the method requires of a scenario
    ("corrupted": the oracle needs known corrupted labels) or which method must run first ("l2t": RandTeach)."""

    config: Callable[[Config, dict], Any]
    teach: Callable[[Splits, Any, int], Any]
    deploy: Callable[..., list[Trace]]
    needs: str = ""


def _module(name: str):
    import importlib

    return importlib.import_module(f"labkit.{name}")


def _module_config(module: str) -> Callable[[Config, dict], Any]:
    """The method's preset (the arena's preset name) with the arena's student and the method's overrides."""
    def build(cfg: Config, overrides: dict):
        return replace(_module(module).PRESETS[cfg.preset], student=cfg.student, deployments=cfg.deployments,
                       **overrides)
    return build


def _no_teacher(splits: Splits, mcfg: Any, seed: int) -> None:
    return None


def _plain(cfg: Config, overrides: dict) -> StudentConfig:
    return replace(cfg.student, **overrides)


def _ce(teacher, splits: Splits, student: StudentConfig, seeds: list[int], done) -> list[Trace]:
    return engine.train(engine.Run(splits, student, seeds), progress_bar=False)


def _teach(module: str) -> Callable[[Splits, Any, int], Any]:
    return lambda splits, mcfg, seed: _module(module).train_teacher(splits, mcfg, seed, progress_bar=False)[0]


def _deploy(module: str, **kwargs) -> Callable[..., list[Trace]]:
    return lambda teacher, splits, mcfg, seeds, done: _module(module).deploy(teacher, splits, mcfg, seeds, **kwargs)


def _l2t_teach(splits: Splits, mcfg, seed: int):
    """τ read on dev for this scenario (a τ no episode reaches leaves the teacher no signal), then REINFORCE."""
    l2t = _module("l2t")
    mcfg = replace(mcfg, tau=l2t.tau_for(splits, mcfg, seed))
    return l2t.train_teacher(splits, mcfg, seed, progress_bar=False)[0], mcfg


def _policy(make: Callable) -> Callable[..., list[Trace]]:
    """Deploy an L2T batch policy; make(teacher, mcfg, splits, done) -> the policy's class and arguments."""
    def deploy(teacher, splits, mcfg, seeds, done):
        l2t, policies = _module("l2t"), _module("l2t_policies")
        if isinstance(teacher, tuple):  # (the teacher, its config with the scenario's τ)
            teacher, mcfg = teacher
        name, args, kwargs = make(teacher, mcfg, splits, done)
        policy = getattr(policies, name)(*args, **kwargs, **l2t._common(mcfg, None))
        return l2t.deploy_policy(policy, splits, mcfg, seeds)
    return deploy


def _lot_deploy(teacher, splits, mcfg, seeds, done) -> list[Trace]:
    return _module("lot").train_models(splits, mcfg, seeds, (seeding.DEPLOY,), mcfg.alpha)[1]


def _spl(t, c, s, done):
    return "SelfPaced", (c.spl[0] * math.log(s.num_classes), c.spl[1] * math.log(s.num_classes)), {}


METHODS: dict[str, Entry] = {
    "ce": Entry(_plain, _no_teacher, _ce),
    "spl": Entry(_module_config("l2t"), _no_teacher, _policy(_spl)),
    "l2t": Entry(_module_config("l2t"), _l2t_teach,
                 _policy(lambda t, c, s, done: ("TeacherPolicy", (t,), {"sample": True}))),
    "randteach": Entry(_module_config("l2t"), _no_teacher, _policy(lambda t, c, s, done: (
        "RandTeach", ([tr.metrics["keep_rate"] or 0.0 for tr in done["l2t"].traces],), {})), needs="l2t"),
    "oracle": Entry(_module_config("l2t"), _no_teacher, _policy(lambda t, c, s, done: ("Oracle", (), {})),
                    needs="corrupted"),
    "l2rw": Entry(_module_config("reweight"), _teach("reweight"), _deploy("reweight", progress_bar=False)),
    "l2t-dlf": Entry(_module_config("dlf"), _teach("dlf"), _deploy("dlf", record=False, progress_bar=False)),
    "phi0": Entry(_module_config("dlf"), lambda s, c, seed: _module("dlf").untrained_teacher(s, c, seed).at_start(),
                  _deploy("dlf", record=False, progress_bar=False)),
    "l2t-dln": Entry(_module_config("dln"), _teach("dln"), _deploy("dln", progress_bar=False)),
    "lot": Entry(_module_config("lot"), _no_teacher, _lot_deploy),
}


_STUDENT = StudentConfig(model="mlp", model_kwargs={"hidden": (100,)}, steps=1000, batch_size=64, lr=0.05,
                         momentum=0.9, eval_every=50)
_SCENARIOS = {"clean": {}, "noisy-40%": {"kind": "noisy_labels", "rate": 0.4},
              "imbalanced-20": {"kind": "imbalanced", "ratio": 20.0}, "small-1000": {"kind": "subsample", "size": 1000}}
_METHODS = {"ce": {}, "spl": {}, "l2t": dict(episodes=48, group_size=8, max_steps=300, dev_read=None), "randteach": {},
            "oracle": {}, "l2rw": dict(dev_batch=100), "l2t-dlf": dict(window=25, teacher_updates=20, dev_read=1000),
            "phi0": {}, "l2t-dln": dict(window=10, teacher_updates=60), "lot": dict(student_steps=2, num_students=1)}
PRESETS = {
    # CI: every method runs, numbers mean nothing
    "smoke": Config(student=replace(_STUDENT, model_kwargs={"hidden": (16,)}, steps=40, eval_every=10),
                    scenarios={"clean": {}, "noisy-40%": {"kind": "noisy_labels", "rate": 0.4}},
                    methods={"ce": {}, "spl": {}, "l2t": dict(episodes=4, group_size=2, max_steps=20, dev_read=None),
                             "randteach": {}, "oracle": {}, "l2rw": {}, "l2t-dlf": dict(window=10, teacher_updates=2),
                             "phi0": {}, "l2t-dln": dict(window=5, teacher_updates=2), "lot": {}},
                    preset="smoke", deployments=2, train_size=3000, dev_size=500),
    # the teaching default: MNIST, an MLP 784-100-10, 1000 steps, 5 seeds, four scenarios, small teacher budgets
    "cpu": Config(student=_STUDENT, scenarios=_SCENARIOS, methods=_METHODS, preset="cpu", deployments=5),
    # a GPU: the same protocol with 8 seeds and the ResNet-20 on CIFAR-10
    "paper": Config(student=StudentConfig(model="resnet20", steps=20_000, batch_size=128, lr=0.1, momentum=0.9,
                                          eval_every=1000), scenarios=_SCENARIOS, methods=_METHODS, preset="cpu",
                    deployments=8, dataset="cifar10"),
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


def play(entry: Entry, mcfg: Any, splits: Splits, seed: int, seeds: list[int], done: dict) -> Outcome:
    """Train the method's teacher and deploy it, timing each part and counting student passes."""
    with counting() as passes, PeakMemory() as memory:
        start = time.perf_counter()
        teacher = entry.teach(splits, mcfg, seed)
        mid = time.perf_counter()
        traces = entry.deploy(teacher, splits, mcfg, seeds, done)
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
    for scenario, method in progress(jobs, total=len(jobs), desc="arena", enabled=progress_bar):
        splits_s = scenario_splits(splits, cfg.scenarios[scenario], seed)
        entry = METHODS[method]
        lacking = (splits_s.train.clean_y is None) if entry.needs == "corrupted" else \
            (bool(entry.needs) and entry.needs not in results[scenario])
        if lacking:
            continue
        outcome = play(entry, entry.config(cfg, cfg.methods[method]), splits_s, seed, seeds, results[scenario])
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


def cost_table(costs: dict[str, dict]) -> str:
    """A Markdown table of `summary`'s extras["costs"]: per scenario and method, the teacher's and the deployment's
    wall time, both as a multiple of cross-entropy's, the student passes as a multiple, and the peak memory added."""
    rows = [[scenario, m, f"{c['teacher_seconds']:.1f}", f"{c['deploy_seconds']:.1f}", f"{c['time_ratio']:.1f}x",
             f"{c['passes_ratio']:.1f}x", "—" if c["peak_mb"] is None else f"{c['peak_mb']:.0f}"]
            for scenario, cells in costs.items() for m, c in cells.items()]
    return stats.markdown_table(["scenario", "method", "teacher s", "deployment s", "time / CE", "passes / CE",
                                 "peak MB added"], rows)


def check_predictions(predictions: dict[str, str | None], experiments: dict[str, dict]) -> list[str]:
    """The reader's predicted winner per scenario against what was measured (`winners`)."""
    measured, out = winners(experiments), []
    for scenario, text in measured.items():
        guess = predictions.get(scenario)
        helping = [m for m, e in experiments[scenario]["methods"].items() if e["paired"] and e["paired"]["helps"]]
        best = helping[0] if helping else None
        if best is not None:
            best = max(helping, key=lambda m: experiments[scenario]["methods"][m]["paired"]["difference"]["mean"])
        verdict = ("no prediction" if guess is None else "right" if guess == best or (guess == "none" and best is None)
                   else "not what was measured")
        out.append(f"{scenario}: you predicted {guess!r} ({verdict}); measured: {text}.")
    return out
