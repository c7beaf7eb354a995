"""L2T-DLF: Learning to Teach with Dynamic Loss Functions (Wu et al., NeurIPS 2018).

The student minimises α·CE + (1 − α)·l_Φt with l_Φ(p, y) = −σ(yᵀ Φ_t log p + b_y); a teacher μ_θ maps the
student's state s_t to Φ_t at every step. The teacher learns by reverse-mode differentiation
(`labkit.meta.sgd_meta_grad`) of a smooth dev error through windows of K student SGD steps.

The model's pieces are in `labkit.dlf_model` (public here too): `dlf_loss` and `student_loss` (batched over a
population: logits [S, B, C], Φ [S, C, C]), the surrogates, `StudentState` (s_t of every member), `DLFTeacher`
(Φ_t = Σ_k a_k(s_t) M_k over a bank of C×C matrices: a learned attention, fixed hat functions of the progress t/T,
or one static matrix). Here, in reading order: `Config` and `PRESETS`; `train_teacher` (engine pre-training, then windows through `meta`, checkpointed per window);
`deploy` (the engine with `DLFHooks`); `compare` (CE, L2T-DLF and Φ fixed at Φ_0 on the same seeds); `lr_sweep`.

Deviation from the paper, as the official demo (`--combine_loss`, α = 0.5): the student's loss mixes in
cross-entropy, because bare l_Φ's gradient is a few percent of cross-entropy's. The demo's *meta-training*
differentiates pure l_Φ, and uses the mixture only when retraining with a frozen loss; here the teacher is trained
through the same mixture its students use (so what it learns is what they get); `alpha=0` is the pure form.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from . import checkpoint, engine, meta, repro, stats
from . import seeds as seeding
from .checks import check_choice, check_float, check_int
from .data import Splits
from .dlf_model import (GATES, SURROGATES, DLFTeacher, StudentState, dlf_loss, expected_error,  # noqa: F401
                        smooth_error, student_loss, surrogate)
from .student import StudentConfig, predict
from .trace import Trace, metric_values, progress

METHOD = "l2t-dlf"


# ---------------------------------------------------------------- settings

@dataclass(frozen=True)
class Config:
    """L2T-DLF's knobs. `student`: every student of the method (the teacher's and the deployed ones):
    `pretrain_steps` cross-entropy steps (at `pretrain_lr`, shared by every method), then `steps` steps on the
    teacher's loss at `lr`; the cross-entropy baseline continues at its own `ce_lr` (None: lr).

    alpha: the CE share of the student's loss. gate / bank / bias / init_scale: the teacher (`DLFTeacher`).
    window (K) student steps per teacher update, `teacher_updates` updates; restart=False (the demo): the
    teacher's student continues across windows and restarts after `student.steps` steps; True: every window
    starts a fresh student (the paper's Algorithm 1). teacher_lr / teacher_optimizer ("sgd" as the demo, or
    "adam"); surrogate and its k; dev_read: dev examples the surrogate and the state read (None: all of dev);
    mode ("snapshot" or "unroll") and keep_activations: how `meta.sgd_meta_grad` differentiates (same numbers).
    deployments: deployment seeds per run; tune_count: students per learning rate in `lr_sweep` (role "tune").
    dataset / train_size / dev_size: what `load` reads.
    """

    student: StudentConfig
    ce_lr: float | None = None
    dataset: str = "mnist"
    train_size: int | None = None
    dev_size: int = 5000
    alpha: float = 0.5
    gate: str = "progress"
    bank: int = 4
    bias: bool = True
    init_scale: float = 4.0
    window: int = 25
    teacher_updates: int = 60
    restart: bool = False
    teacher_lr: float = 0.01
    teacher_optimizer: str = "sgd"
    surrogate: str = "smooth_error"
    k: float = 50.0
    dev_read: int | None = None
    mode: str = "snapshot"
    keep_activations: bool = True
    refresh_every: int = 25
    deployments: int = 8
    tune_count: int = 5
    lr_grid: tuple[float, ...] = ()
    ce_lr_grid: tuple[float, ...] = ()

    def check(self) -> "Config":
        self.student.check()
        if self.ce_lr is not None:
            check_float("ce_lr", self.ce_lr, 0, low_open=True)
        check_float("alpha", self.alpha, 0, 1, high_open=True)
        check_choice("gate", self.gate, GATES)
        check_int("bank", self.bank, 1)
        check_float("init_scale", self.init_scale, 0, low_open=True)
        check_int("window", self.window, 1, self.student.steps)
        check_int("teacher_updates", self.teacher_updates, 1)
        check_float("teacher_lr", self.teacher_lr, 0, low_open=True)
        check_choice("teacher_optimizer", self.teacher_optimizer, ("sgd", "adam"))
        surrogate(self.surrogate)
        check_float("k", self.k, 0, low_open=True)
        if self.dev_read is not None:
            check_int("dev_read", self.dev_read, 1)
        check_choice("mode", self.mode, meta.META_MODES)
        check_int("refresh_every", self.refresh_every, 1)
        check_int("deployments", self.deployments, 1, seeding.SEED_BLOCK)
        check_int("tune_count", self.tune_count, 1, seeding.SEED_BLOCK)
        for name in ("lr_grid", "ce_lr_grid"):
            for lr in getattr(self, name):
                check_float(name, lr, 0, low_open=True)
        if self.student.schedule == "plateau":
            raise ValueError("student.schedule='plateau' is not allowed for L2T-DLF: the windows need a known lr")
        return self


_MLP = StudentConfig(model="mlp", batch_size=64, momentum=0.9, pretrain_steps=1000, pretrain_lr=0.05, steps=1500,
                     lr=0.02, eval_every=250)
PRESETS: dict[str, Config] = {
    # CI: a tiny MLP on the first 2 000 images (load with train_size=2000); proves that everything runs
    "smoke": Config(student=replace(_MLP, model_kwargs={"hidden": (32,)}, pretrain_steps=20, steps=40,
                                    eval_every=20), ce_lr=0.02, train_size=2000, dev_size=300, window=10,
                    teacher_updates=4, dev_read=200,
                    deployments=3, tune_count=2, lr_grid=(0.02, 0.05), ce_lr_grid=(0.02, 0.05)),
    # the teaching default: MNIST MLP 784-500-10 as the demo (CE pre-training 1000 steps, then the loss mixture
    # α = 0.5 with Φ_0 = 4·I), K = 25 windows continued across (the demo), the progress-gated bank of 4 phase
    # matrices; lrs tuned on dev over the 5 "tune" students (notebook 02's record, docs/dlf-diary.md)
    "cpu": Config(student=_MLP, ce_lr=0.01, teacher_updates=60, teacher_lr=0.01, lr_grid=(0.005, 0.01, 0.02, 0.05, 0.1),
                  ce_lr_grid=(0.0025, 0.005, 0.01, 0.02, 0.05)),
    # the paper's CIFAR-10 setting on a GPU (needs the CIFAR-10 files): ResNet-20, SGD 0.1 momentum 0.9, wd 1e-4
    "paper": Config(dataset="cifar10", student=StudentConfig(model="resnet20", batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4,
                                          pretrain_steps=1000, steps=64_000, schedule="step", eval_every=2000),
                    window=50, teacher_updates=400, teacher_lr=0.001, teacher_optimizer="adam", dev_read=2000,
                    deployments=5, keep_activations=False),
}


def load(cfg: Config, seed: int, device: str = "auto") -> Splits:
    """The preset's data: `cfg.dataset` with its dev split (`dev_size`, carved by the stream seed/"split")."""
    from . import data

    return data.load(cfg.dataset, dev_size=cfg.dev_size, train_size=cfg.train_size, seed=seed, device=device)


def for_model(cfg: Config, model: str) -> Config:
    """The preset's settings for another student: LeNet gets a shorter budget (a step costs ~10x the MLP's on a
    CPU): 300 pre-training and 300 teacher-loss steps, K = 20, 15 updates."""
    if model == cfg.student.model:
        return cfg
    if model == "lenet":
        short = replace(cfg.student, model="lenet", model_kwargs={}, pretrain_steps=min(cfg.student.pretrain_steps, 300),
                        steps=min(cfg.student.steps, 300), eval_every=150)
        return replace(cfg, student=short, window=min(cfg.window, 20), teacher_updates=min(cfg.teacher_updates, 15))
    return replace(cfg, student=replace(cfg.student, model=model, model_kwargs={}))


def untrained_teacher(splits: Splits, cfg: Config, seed: int = 0) -> DLFTeacher:
    """The teacher `train_teacher(splits, cfg, seed)` starts from (Φ_0 = init_scale·I)."""
    return DLFTeacher(splits.num_classes, 4 + splits.num_classes, gate=cfg.gate, bank=cfg.bank, bias=cfg.bias,
                      init_scale=cfg.init_scale, seed=seed).to(splits.device)


# ---------------------------------------------------------------- teacher training

@dataclass
class _Learner:
    """The teacher's current student: its engine Run (pre-training, batch stream), its weights and momentum as
    the functional state `meta` advances, its state s_t and how many steps it has taken on the teacher's loss."""

    index: int
    run: engine.Run
    params: dict
    velocity: dict
    state: StudentState
    t: int = 0


def _new_learner(splits: Splits, cfg: Config, seed: int, index: int, progress_bar: bool | None) -> _Learner:
    """Student `index` of the teacher's training (role "teach"/"student"/index): the shared CE pre-training
    through the engine, then its weights and momentum buffers as the starting point of the windows."""
    run = engine.Run(splits, cfg.student, [seed], role=(seeding.TEACH, "student", index))
    run.run_steps(cfg.student.pretrain_steps, progress_bar=progress_bar, desc="pre-training")
    net = run.students.member(0)
    params = {n: p.detach().clone() for n, p in net.named_parameters()}
    buffers = run.optimizer.state
    velocity = {n: (buffers[p]["momentum_buffer"].detach().clone() if "momentum_buffer" in buffers.get(p, {})
                    else torch.zeros_like(p)) for n, p in net.named_parameters()}
    state = StudentState(1, splits.num_classes, cfg.student.steps, device=splits.device)
    dev = _dev(splits, cfg)
    with torch.no_grad():
        state.refresh_dev(_dev_logits(net, params, dev.x)[None], dev.y)
    return _Learner(index, run, params, velocity, state)


def _dev(splits: Splits, cfg: Config):
    return splits.dev if cfg.dev_read is None else splits.dev[:cfg.dev_read]


def _dev_logits(net: nn.Module, params: dict, x: torch.Tensor) -> torch.Tensor:
    """The student's dev logits in eval mode (BatchNorm reads its running statistics, not the dev batch's)."""
    was = net.training
    net.eval()
    try:
        return functional_call(net, params, (x,))
    finally:
        net.train(was)


def _window(teacher: DLFTeacher, learner: _Learner, splits: Splits, cfg: Config, trace: Trace, step: int) -> dict:
    """One teacher update: K student steps on the teacher's loss, differentiated exactly; returns the numbers."""
    net, dev = learner.run.students.member(0), _dev(splits, cfg)
    batches = [(b.x[0], b.y[0]) for b in learner.run.draw_ahead(cfg.window)]
    states: list[torch.Tensor] = []
    t0 = learner.t
    a0 = teacher(learner.state.features(t0))
    trace.log_array(step, phi=a0[0][0].detach(), attention=a0[2][0].detach())

    def loss_fn(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
        if k == len(states):  # s_t is an input, not a function of θ: fixed at the forward sweep, reused backwards
            states.append(learner.state.features(t0 + k))
            learner.state.observe(logits.detach()[None], y[None])
        phi, b, _ = teacher(states[k])
        return student_loss(logits, y, phi[0], None if b is None else b[0], cfg.alpha).mean()

    dev_logits: list[torch.Tensor] = []

    def dev_fn(w: dict) -> torch.Tensor:
        logits = _dev_logits(net, w, dev.x)
        dev_logits.append(logits.detach())  # the window's one dev pass: also its dev accuracy and the next s_t
        return surrogate(cfg.surrogate)(logits, dev.y, cfg.k)

    c = cfg.student
    grads, learner.params, learner.velocity, value, losses = meta.sgd_meta_grad(
        net, learner.params, batches, loss_fn, list(teacher.parameters()), dev_fn,
        lr=c.lr_at(c.pretrain_steps + t0), momentum=c.momentum, velocity=learner.velocity, mode=cfg.mode,
        keep_activations=cfg.keep_activations and cfg.mode == "snapshot", weight_decay=c.weight_decay)
    learner.t += cfg.window
    learner.state.refresh_dev(dev_logits[-1][None], dev.y)
    return dict(grads=grads, dev_surrogate=value, train_loss=float(np.mean(losses)),
                dev_acc=float((dev_logits[-1].argmax(1) == dev.y).float().mean()))


CHECKPOINT_FILE = "dlf-teacher.pt"
DEPLOYMENT_ONLY = ("deployments",)  # Config fields of the deployment only, never the teacher's (labkit.cards)


def _teacher_optimizer(teacher: DLFTeacher, cfg: Config) -> torch.optim.Optimizer:
    cls = torch.optim.Adam if cfg.teacher_optimizer == "adam" else torch.optim.SGD
    return cls(teacher.parameters(), lr=cfg.teacher_lr)


def _save(path: Path, teacher, opt, learner: _Learner, update: int, step: int, trace: Trace) -> None:
    engine.save_checkpoint(path, dict(
        config=trace.config, update=update, step=step, teacher=teacher.state_dict(), optimizer=opt.state_dict(),
        trace=checkpoint.trace_tensor(trace),
        learner=dict(index=learner.index, t=learner.t, params=learner.params, velocity=learner.velocity,
                     state=learner.state.values, run=learner.run.state_dict())))


def _resume(path: Path, teacher, opt, splits: Splits, cfg: Config, seed: int) -> tuple[_Learner, int, int, Trace]:
    ck = engine.load_checkpoint(path, splits.device)
    checkpoint.check_same(ck["config"], dict(asdict(cfg), method=METHOD, seed=seed, dataset=splits.name), path)
    teacher.load_state_dict(ck["teacher"])
    opt.load_state_dict(ck["optimizer"])
    lk = ck["learner"]
    run = engine.Run(splits, cfg.student, [seed], role=(seeding.TEACH, "student", lk["index"]))
    run.load_state_dict(lk["run"])
    state = StudentState(1, splits.num_classes, cfg.student.steps, device=splits.device)
    state.values = lk["state"]
    learner = _Learner(lk["index"], run, lk["params"], lk["velocity"], state, lk["t"])
    return learner, ck["update"], ck["step"], checkpoint.trace_from_tensor(ck["trace"])


def train_teacher(splits: Splits, cfg: Config, seed: int, *, checkpoint_dir: str | Path | None = None,
                  progress_bar: bool | None = None) -> tuple[DLFTeacher, Trace]:
    """Train a DLF teacher: `teacher_updates` windows of K student steps, one teacher step after each on the
    smooth dev error, differentiated exactly through the window (`meta.sgd_meta_grad`).

    The teacher's students are role ("teach", "student", r): never a deployment student. Each is pre-trained
    with CE through the engine, then advanced window by window by `meta` (the lr of a window is the student's lr
    at its first step). checkpoint_dir: a checkpoint after every window; a killed run resumes there and ends
    with the same numbers. Trace (step = the teacher's student steps, pre-training excluded): per window
    "dev_surrogate", "dev_acc", "train_loss", "meta_grad_norm", and arrays "phi" [C, C] / "attention" [M] at
    each window's start.
    """
    cfg = cfg.check()
    seeding.check_seed("seed", seed)
    teacher = untrained_teacher(splits, cfg, seed)
    opt = _teacher_optimizer(teacher, cfg)
    trace = Trace(config=dict(asdict(cfg), method=METHOD, seed=seed, dataset=splits.name))
    path = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    learner, start, step = None, 0, 0
    if path is not None and path.exists():
        learner, start, step, trace = _resume(path, teacher, opt, splits, cfg, seed)
    for update in progress(range(start, cfg.teacher_updates), total=cfg.teacher_updates, initial=start,
                           desc="L2T-DLF teacher", enabled=progress_bar):
        if learner is None or cfg.restart or learner.t + cfg.window > cfg.student.steps:
            learner = _new_learner(splits, cfg, seed, 0 if learner is None else learner.index + 1, False)
        out = _window(teacher, learner, splits, cfg, trace, step)
        step += cfg.window
        opt.zero_grad(set_to_none=True)
        for p, g in zip(teacher.parameters(), out["grads"]):
            p.grad = g
        opt.step()
        norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in out["grads"])))
        trace.log(step, dev_surrogate=out["dev_surrogate"], dev_acc=out["dev_acc"], train_loss=out["train_loss"],
                  meta_grad_norm=norm)
        if not (math.isfinite(out["dev_surrogate"]) and math.isfinite(norm)):
            trace.note(f"teacher update {update + 1}: the dev surrogate or its gradient is not finite; stopped")
            break
        if path is not None:
            _save(path, teacher, opt, learner, update + 1, step, trace)
    trace.metrics.update(teacher_updates=len(trace.series("dev_acc")[0]), student_runs=learner.index + 1,
                         final_dev_acc=trace.last("dev_acc"), final_dev_surrogate=trace.last("dev_surrogate"))
    return teacher.eval(), trace




# ---------------------------------------------------------------- deployment and the baselines

class DLFHooks(engine.Hooks):
    """The students' side of L2T-DLF in the engine: each member's state s_t, the frozen teacher's Φ_t, the loss
    α·CE + (1 − α)·l_Φt. With `record`, member 0's Φ_t, attention and s_t are logged every step and its dev
    confusion matrix at every evaluation. teacher None: plain cross-entropy (the CE baseline), recorded the same way.
    """

    def __init__(self, teacher: DLFTeacher | None, splits: Splits, cfg: Config, record: bool = True):
        self.teacher, self.cfg, self.record = teacher, cfg, record
        self.dev, self.num_classes = _dev(splits, cfg), splits.num_classes
        self.state: StudentState | None = None
        self.last: tuple | None = None

    def select(self, run: engine.Run, step: int) -> engine.Batch:
        t = step - self.cfg.student.pretrain_steps
        if self.teacher is not None and t >= 0:
            if self.state is None:
                self.state = StudentState(len(run.seeds), self.num_classes, self.cfg.student.steps, device=run.device)
            if self.teacher.reads_dev_state and t % self.cfg.refresh_every == 0:
                self.state.refresh_dev(predict(run.students, self.dev.x), self.dev.y)
        return run.draw()

    def objective(self, logits: torch.Tensor, batch: engine.Batch, step: int) -> torch.Tensor:
        if self.teacher is None:
            return engine.cross_entropy(logits, batch.y)
        s = self.state.features(step - self.cfg.student.pretrain_steps)
        with torch.no_grad():
            phi, bias, attention = self.teacher(s)
        self.last = (phi[0], attention[0], s[0])
        self.state.observe(logits.detach(), batch.y)
        return student_loss(logits, batch.y, phi, bias, self.cfg.alpha)

    def after_step(self, run: engine.Run, step: int, loss: torch.Tensor) -> None:
        if self.record and self.last is not None and step >= self.cfg.student.pretrain_steps:
            phi, attention, s = self.last
            run.traces[0].log_array(step + 1, phi=phi, attention=attention, state=s)

    def state_dict(self) -> dict:
        return {"state": None if self.state is None else self.state.values}

    def load_state_dict(self, state: dict) -> None:
        if state["state"] is not None:
            self.state = StudentState(len(state["state"]), self.num_classes, self.cfg.student.steps,
                                      device=state["state"].device)
            self.state.values = state["state"]


def _train(splits: Splits, cfg: Config, seeds, teacher: DLFTeacher | None, student: StudentConfig, *,
           record: bool, role=seeding.DEPLOY, progress_bar: bool | None = None) -> list[Trace]:
    single = isinstance(seeds, int)
    seeds = [seeds] if single else seeding.check_seeds("seeds", seeds)
    run = engine.Run(splits, replace(student, record_confusion=record), seeds, role=role,
                     hooks=DLFHooks(teacher, splits, cfg, record))
    traces = engine.train(run, progress_bar=progress_bar, desc=METHOD if teacher is not None else "ce")
    for t in traces:
        t.config["method"] = METHOD if teacher is not None else "ce"
    return traces[0] if single else traces


def deploy(teacher: DLFTeacher, splits: Splits, cfg: Config, seeds: Sequence[int] | int, *, record: bool = True,
           progress_bar: bool | None = None) -> list[Trace] | Trace:
    """Fresh students (role "deploy": the same initial weights and batches as every method's at these seeds)
    trained with the frozen teacher: the shared CE pre-training, then `student.steps` steps on α·CE + (1 − α)·l_Φt.
    One population; an int seed gives one Trace. Member 0 records "phi" [C, C], "attention" [M], "state" and
    "confusion" [C, C] (record=True)."""
    if not isinstance(teacher, DLFTeacher):
        raise ValueError(f"teacher={type(teacher).__name__} is not allowed: pass a DLFTeacher")
    return _train(splits, cfg.check(), seeds, teacher.eval(), cfg.student, record=record, progress_bar=progress_bar)


def train_ce(splits: Splits, cfg: Config, seeds: Sequence[int] | int, *, record: bool = True,
             progress_bar: bool | None = None) -> list[Trace] | Trace:
    """The cross-entropy baseline: the same students, pre-training, batches and steps as `deploy`, on CE
    throughout, at its own dev-tuned lr `ce_lr` after the pre-training."""
    cfg = cfg.check()
    student = replace(cfg.student, lr=cfg.ce_lr if cfg.ce_lr is not None else cfg.student.lr)
    return _train(splits, cfg, seeds, None, student, record=record, progress_bar=progress_bar)


def compare(teachers: DLFTeacher | dict[str, DLFTeacher], splits: Splits, cfg: Config, seeds: Sequence[int], *,
            with_phi0: bool = True, record: bool = True, progress_bar: bool | None = None) -> dict[str, list[Trace]]:
    """CE, the teacher(s) and Φ fixed at Φ_0 (the first teacher's start: what the loss family gives without
    teaching) on the same seeds and budget: {"ce": [...], "l2t-dlf": [...] (or the names given), "phi0": [...]}."""
    teachers = {METHOD: teachers} if isinstance(teachers, DLFTeacher) else dict(teachers)
    out = {"ce": train_ce(splits, cfg, seeds, record=record, progress_bar=progress_bar)}
    for name, teacher in teachers.items():
        out[name] = deploy(teacher, splits, cfg, seeds, record=record, progress_bar=progress_bar)
    if with_phi0:
        out["phi0"] = deploy(next(iter(teachers.values())).at_start(), splits, cfg, seeds, record=record,
                             progress_bar=progress_bar)
    return out


def lr_sweep(splits: Splits, cfg: Config, lrs: Sequence[float], *, seed: int = 0, teacher: DLFTeacher | None = None,
             progress_bar: bool | None = None) -> dict[float, float | None]:
    """Mean dev accuracy (never test) over `tune_count` students (role "tune": no reported student) for every
    learning rate after the shared pre-training: CE (teacher None) or a frozen teacher's loss (e.g. `at_start()`,
    Φ fixed at Φ_0). Give every method the same rates and students: equal tuning. None: every student diverged."""
    cfg = cfg.check()
    if not lrs:
        raise ValueError("lrs=[] is not allowed: give at least one learning rate")
    out = {}
    for lr in lrs:
        student = replace(cfg.student, lr=check_float("lrs", lr, 0, low_open=True), eval_every=0)
        traces = _train(splits, cfg, seeding.deployment_seeds(seed, cfg.tune_count), teacher, student, record=False,
                        role=seeding.TUNE, progress_bar=progress_bar)
        accs = [t.metrics["dev_acc"] for t in traces if not t.diverged]
        out[float(lr)] = float(np.mean(accs)) if accs else None
    return out


def best_lr(sweep: dict[float, float | None]) -> float:
    """The learning rate of the highest mean dev accuracy in an `lr_sweep` result."""
    scored = {lr: acc for lr, acc in sweep.items() if acc is not None}
    if not scored:
        raise ValueError("every learning rate of the sweep diverged")
    return max(scored, key=scored.get)


def summary(results: dict[str, list[Trace]], seeds: Sequence[int], splits: Splits, cfg: Config) -> dict:
    """The comparison as metrics.json and the report read it: test accuracy per method, paired against CE."""
    values = metric_values(results, "test_acc")
    c = cfg.student
    setting = (f"{c.pretrain_steps} CE steps, then {c.steps} steps (K = {cfg.window}, {cfg.teacher_updates} "
               f"teacher updates, gate {cfg.gate}, alpha {cfg.alpha})")
    return repro.experiment(stats.summarize(values, list(seeds), baseline="ce"), metric="test_acc",
                            dataset=splits.name, model=c.model, paper="dlf", setting=setting,
                            scenario=splits.scenario)
