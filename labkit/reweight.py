"""L2RW: Learning to Reweight Examples for Robust Deep Learning (Ren, Zeng, Yang & Urtasun, ICML 2018).

The bridge between L2T's data teaching (REINFORCE on keep/drop decisions) and L2T-DLF's reverse-mode teaching
(a gradient through the student's SGD): at every step the example weights are themselves a meta-gradient. Each
training example i gets the weight w_i ∝ max(0, −∂L_dev(w'(ε))/∂ε_i) at ε = 0, where w'(ε) is one SGD step on the
ε-weighted training loss and L_dev the loss on a mini-batch of the small, clean dev set
(`labkit.meta.example_weight_grads`: exact, in closed form at ε = 0, tested against finite differences). An
example whose gradient points against the dev gradient (a corrupted label, typically) gets weight 0.
The weights are normalised to sum to 1 per member; a member whose weights are all 0 takes a step of zero loss
(its momentum still moves it, as in torch.optim.SGD).

The "teacher" is the procedure itself (nothing is trained before deployment); `train_teacher` returns it so that
the method has the lab's verbs. The dev batches come from each member's own stream (role .../"dev-batches").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Sequence

import torch

from . import engine, meta, repro, stats
from . import seeds as seeding
from .checks import check_int
from .data import IndexStream, Splits
from .student import StudentConfig
from .trace import Trace, metric_values

METHOD = "l2rw"


@dataclass(frozen=True)
class Config:
    """student: the deployed students (and the look-ahead's lr: theirs at each step); dev_batch: dev examples
    per step's meta-gradient; deployments: deployment seeds per run; dataset / train_size / dev_size: `load`."""

    student: StudentConfig
    dev_batch: int = 100
    deployments: int = 8
    dataset: str = "mnist"
    train_size: int | None = None
    dev_size: int = 5000

    def check(self) -> "Config":
        self.student.check()
        check_int("dev_batch", self.dev_batch, 1)
        check_int("deployments", self.deployments, 1, seeding.SEED_BLOCK)
        return self


_MLP = StudentConfig(model="mlp", model_kwargs={"hidden": (100,)}, batch_size=64, lr=0.05, momentum=0.9,
                     steps=1500, eval_every=250)
PRESETS = {
    "smoke": Config(student=replace(_MLP, steps=40, eval_every=20), dev_batch=50, deployments=3, train_size=2000,
                    dev_size=300),
    "cpu": Config(student=_MLP),
    # the paper's CIFAR setting (ResNet-32 in the paper; a GPU)
    "paper": Config(student=StudentConfig(model="resnet32", batch_size=100, lr=0.1, momentum=0.9, weight_decay=5e-4,
                                          steps=60_000, schedule="multistep", milestones=(40_000, 50_000),
                                          eval_every=2000), dataset="cifar10", dev_size=1000),
}


@dataclass(frozen=True)
class Reweighter:
    """The L2RW "teacher": nothing learned, only how many dev examples each step's meta-gradient reads."""

    dev_batch: int


class ReweightHooks(engine.Hooks):
    """Each step's batch policy: per-example weights from the one-step look-ahead meta-gradient on a dev batch.
    Logs, per member and step, the mean weight of the batch's corrupted and clean examples (when the training split
    records label noise) and the share of examples weighted 0."""

    def __init__(self, splits: Splits, dev_batch: int):
        self.dev, self.dev_batch = splits.dev, dev_batch
        self.corrupted = splits.train.corrupted if splits.train.clean_y is not None else None
        self.streams: list[IndexStream] | None = None
        self.positions: list[int] | None = None

    def _dev_batches(self, run: engine.Run) -> tuple[torch.Tensor, torch.Tensor]:
        if self.streams is None:
            size = min(self.dev_batch, len(self.dev))
            self.streams = [IndexStream(len(self.dev), size, run.stream_seed(i, "dev-batches"), run.device)
                            for i in range(len(run.seeds))]
            for s, p in zip(self.streams, self.positions or []):
                s.position = p
        index = torch.stack([next(s) for s in self.streams])        # [S, b]
        return self.dev.x[index], self.dev.y[index]

    def select(self, run: engine.Run, step: int) -> engine.Batch:
        batch = run.draw()
        if step < run.config.pretrain_steps:
            return batch
        dev_x, dev_y = self._dev_batches(run)
        params = dict(run.students.named_parameters())
        grads = meta.example_weight_grads(run.students, params, batch.x, batch.y, dev_x, dev_y,
                                          lr=run.config.lr_at(step), per_example=engine.cross_entropy)
        weight = (-grads).clamp(min=0)                                # [S, B]
        total = weight.sum(1, keepdim=True)
        weight = torch.where(total > 0, weight / total.clamp(min=1e-30), torch.zeros_like(weight))
        self._record(run, step, batch, weight)
        return engine.Batch(batch.x, batch.y, batch.index, weight)

    def _record(self, run: engine.Run, step: int, batch: engine.Batch, weight: torch.Tensor) -> None:
        B = weight.shape[1]
        zero = (weight == 0).float().mean(1)
        values = {"zero_weight_share": zero}
        if self.corrupted is not None:
            bad = self.corrupted[batch.index].float()                 # [S, B]
            for name, mask in (("weight_corrupted", bad), ("weight_clean", 1 - bad)):
                count = mask.sum(1)
                values[name] = torch.where(count > 0, (weight * mask).sum(1) * B / count.clamp(min=1), float("nan"))
        for i, tr in enumerate(run.traces):
            if run.alive[i]:  # weights x B: 1 is the plain mean's weight
                tr.log(step + 1, **{k: float(v[i]) for k, v in values.items() if v[i] == v[i]})

    def state_dict(self) -> dict:
        return {"positions": None if self.streams is None else [s.position for s in self.streams]}

    def load_state_dict(self, state: dict) -> None:
        self.positions = state["positions"]


def load(cfg: Config, seed: int, device: str = "auto") -> Splits:
    from . import data

    return data.load(cfg.dataset, dev_size=cfg.dev_size, train_size=cfg.train_size, seed=seed, device=device)


def train_teacher(splits: Splits, cfg: Config, seed: int, *, checkpoint_dir=None,
                  progress_bar: bool | None = None) -> tuple[Reweighter, Trace]:
    """L2RW trains no teacher: the weights are a meta-gradient at every step. Returned for the lab's verbs."""
    cfg = cfg.check()
    seeding.check_seed("seed", seed)
    return Reweighter(cfg.dev_batch), Trace(config=dict(asdict(cfg), method=METHOD, seed=seed))


def deploy(teacher: Reweighter, splits: Splits, cfg: Config, seeds: Sequence[int] | int, *,
           progress_bar: bool | None = None) -> list[Trace] | Trace:
    """Fresh students (role "deploy") trained on the meta-gradient weights, one population; an int seed gives one
    Trace. Scalars per step: "weight_corrupted", "weight_clean" (mean weight x batch size: 1 is the plain mean),
    "zero_weight_share"."""
    cfg = cfg.check()
    single = isinstance(seeds, int)
    seeds = [seeds] if single else seeding.check_seeds("seeds", seeds)
    run = engine.Run(splits, cfg.student, seeds, hooks=ReweightHooks(splits, teacher.dev_batch))
    traces = engine.train(run, progress_bar=progress_bar, desc=METHOD)
    for t in traces:
        t.config["method"] = METHOD
    return traces[0] if single else traces


def compare(teacher: Reweighter, splits: Splits, cfg: Config, seeds: Sequence[int], *,
            progress_bar: bool | None = None) -> dict[str, list[Trace]]:
    """Cross-entropy and L2RW on the same students and batches: {"ce": [...], "l2rw": [...]}."""
    cfg = cfg.check()
    ce = engine.train(engine.Run(splits, cfg.student, seeding.check_seeds("seeds", seeds)), progress_bar=progress_bar,
                      desc="ce")
    return {"ce": ce, METHOD: deploy(teacher, splits, cfg, list(seeds), progress_bar=progress_bar)}


def summary(results: dict[str, list[Trace]], seeds: Sequence[int], splits: Splits, cfg: Config) -> dict:
    """Test accuracy per method, paired against cross-entropy (metrics.json's experiment)."""
    return repro.experiment(stats.summarize(metric_values(results, "test_acc"), list(seeds), baseline="ce"),
                            metric="test_acc", dataset=splits.name, model=cfg.student.model,
                            setting=f"{cfg.student.steps} steps, dev batch {cfg.dev_batch}",
                            scenario=splits.scenario)
