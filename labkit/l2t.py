"""L2T: Learning to Teach (Fan et al., ICLR 2018): a teacher policy that keeps or drops training examples.

At every student step the teacher is shown mini-batches of training examples; for each example it
sees a state vector g(s) and keeps it with probability p(keep) = teacher(g(s)). Kept examples are
pooled until M of them are there; the student then takes one optimizer step on those M examples.
An episode trains a fresh student until its dev accuracy first reaches τ (checked every `dev_every`
steps) or T' steps pass; the reward is r = −log(i_τ / T') and the teacher learns by REINFORCE with
a moving-average baseline. Deployed, the frozen teacher (keep when p >= 0.5) trains a new student
on the other half of the training data; the baselines are NoTeach, RandTeach and Self-Paced Learning.
In deployment τ is judged on a dev split (give it one the teacher did not train on); test is only reported.

    teacher_half, student_half = split_halves(splits.train, seed=0)
    dev_teacher, dev_student = splits.dev[:2500], splits.dev[2500:]
    cfg = PRESETS["cpu"]
    teacher, trace = train_teacher(teacher_half, dev_teacher, setup=cfg.setup, episodes=cfg.episodes,
                                   teacher_lr=cfg.teacher_lr, group_size=cfg.group_size, normalize=cfg.normalize)
    run = deploy("l2t", student_half, dev_student, splits.test, setup=cfg.setup, steps=400, teacher=teacher)

Deviations from the paper, all optional and off in the "paper" preset (documented in train_teacher):
group_size >= 2 runs episodes in groups sharing the student's seed (common random numbers) with the group's
mean reward as baseline instead of the paper's EMA, and normalize=True divides by the group's reward std.
The REINFORCE loss averages log-probabilities over an episode's decisions (the paper sums them).
The cpu preset also starts the teacher at p(keep) = 0.5 (public code: 0.88): measured on it, from 0.88 the
teacher never fell under p = 0.5, so deployed it was NoTeach; from 0.5 it learns to keep misclassified examples more
than confident ones. Notebook 01 prints what that buys against NoTeach, RandTeach, SPL and `loss_threshold_teacher`
(a hand-set network of the same shape: the saving within reach of the policy class), measured by each run.

Bugs of the public re-implementations that are *not* repeated here (see reference/papers.md §1):
the student optimizer lives for the whole episode (momentum kept), the teacher optimizer lives across
episodes, the dev set is checked every few steps rather than after every step, and the teacher is
the paper's 25 → 12 → 1 tanh network with one sigmoid output.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import Split, check_int, batches
from .models import build
from .trace import Trace
from .train import predict, progress

METHODS = ("l2t", "noteach", "randteach", "spl")
STUDENT_FEATURES = 3  # iteration / T', average historical train loss, best dev loss (both / loss_norm)


def feature_dim(num_classes: int) -> int:
    """Width of g(s): one-hot label (C) + student features (3) + probabilities (C) + loss + margin = 2C + 5."""
    return 2 * num_classes + STUDENT_FEATURES + 2


# ---------------------------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Setup:
    """The student side of an episode or a deployment.

    batch_size is M, the number of kept examples per student step; `shown` is how many examples the
    teacher is shown per draw (draws repeat until M are kept). tau is τ, max_steps is T'.
    eval_size: how many dev (and test) examples each accuracy check uses (None: all of them).
    """

    model: str = "mlp"
    batch_size: int = 20
    shown: int = 20
    tau: float = 0.93
    max_steps: int = 10_000
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    dev_every: int = 20
    eval_size: int | None = None
    loss_norm: float = 2.3
    max_draws: int = 50

    def check(self) -> "Setup":
        if not isinstance(self.tau, (int, float)) or not 0 < self.tau < 1:
            raise ValueError(f"tau={self.tau!r} is not allowed: the accuracy threshold τ must be in (0, 1)")
        check_int("batch_size", self.batch_size, 1)
        check_int("shown", self.shown, 1)
        check_int("max_steps", self.max_steps, 1)
        check_int("dev_every", self.dev_every, 1)
        check_int("max_draws", self.max_draws, 1)
        if self.eval_size is not None:
            check_int("eval_size", self.eval_size, 1)
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer={self.optimizer!r} is not allowed: choose 'sgd' or 'adam'")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr!r} is not allowed: it must be > 0")
        if not self.loss_norm > 0:
            raise ValueError(f"loss_norm={self.loss_norm!r} is not allowed: it must be > 0")
        return self


@dataclass(frozen=True)
class Preset:
    """Everything the notebook needs for one preset."""

    setup: Setup
    train_size: int | None      # training examples kept before halving (None: all)
    episodes: int               # teacher-training episodes
    deploy_steps: int           # student steps of every deployment run
    seeds: tuple[int, ...]      # deployment seeds
    teacher_lr: float = 1e-3
    baseline_decay: float = 0.8
    group_size: int = 1         # 1: the paper's EMA baseline; k >= 2: groups of k episodes sharing a student seed
    normalize: bool = False     # divide the group advantages by the group's reward std
    test_size: int | None = None  # test examples used to report (None: all); smoke uses fewer, for speed
    init_keep: float = 0.88     # the teacher's initial p(keep) (0.88 in the public code)
    transfer_model: str = "lenet"
    transfer_steps: int | None = None
    transfer_seeds: tuple[int, ...] = (0,)
    dataset: str = "mnist"
    note: str = ""


PRESETS: dict[str, Preset] = {
    "smoke": Preset(Setup(batch_size=16, shown=16, tau=0.6, max_steps=40, lr=0.05, dev_every=5, eval_size=300),
                    train_size=3000, episodes=4, deploy_steps=40, seeds=(0, 1, 2), teacher_lr=0.03, group_size=2,
                    normalize=True, transfer_steps=30, test_size=1000,
                    note="CI only: numbers mean nothing"),
    # Scaled down to run in minutes on 2 CPU cores: τ = 0.9 is reached in ~200-250 of T' = 400 steps (SGD 0.02,
    # momentum 0.9, M = 32), dev checked every 5 steps on 2500 examples (a dev half); the teacher trains on
    # groups of 8 episodes sharing a student seed (common random numbers, a deviation from the paper's EMA
    # baseline), advantages normalised per group, Adam 0.05. The teacher starts at p(keep) = 0.5 rather than
    # the public code's 0.88: measured, from 0.88 the same 240 episodes leave p(keep) > 0.67 for every example,
    # so the deployed rule (p >= 0.5) keeps everything; from 0.5 the learned preference decides keep/drop.
    "cpu": Preset(Setup(batch_size=32, shown=32, tau=0.9, max_steps=400, lr=0.02, dev_every=5, eval_size=2500),
                  train_size=None, episodes=240, deploy_steps=400, seeds=(0, 1, 2), teacher_lr=0.05, group_size=8,
                  normalize=True, init_keep=0.5, transfer_steps=300, transfer_seeds=(0,),
                  note="MNIST MLP with τ and T' scaled down, common-random-number episode groups"),
    # The paper's MNIST setting as read in code (sixiaozheng: τ=0.93, T'=10 000, M=20, SGD 0.01 momentum 0.9,
    # wd 1e-4, 300 episodes); the dev checks use the whole dev split.
    "paper": Preset(Setup(batch_size=20, shown=20, tau=0.93, max_steps=10_000, lr=0.01, dev_every=20),
                    train_size=None, episodes=300, deploy_steps=10_000, seeds=(0, 1, 2, 3, 4), teacher_lr=1e-3,
                    transfer_steps=10_000, transfer_seeds=(0, 1, 2),
                    note="MNIST MLP, the paper's setting as read in the public code (GPU)"),
    # CIFAR-10 ResNet-32 (τ=0.80 [MEM]; SGD 0.1, momentum 0.9, wd 1e-4; M=128 as in hyzcn). Needs CIFAR-10 files.
    "paper_cifar10": Preset(Setup(model="resnet32", batch_size=128, shown=128, tau=0.80, max_steps=24_219, lr=0.1,
                                  weight_decay=1e-4, dev_every=100),
                            train_size=None, episodes=50, deploy_steps=24_219, seeds=(0, 1, 2), teacher_lr=1e-3,
                            transfer_model="resnet56", transfer_steps=24_219, dataset="cifar10",
                            note="CIFAR-10 ResNet-32, the paper's setting (GPU, hours)"),
}


# ---------------------------------------------------------------------------------------------- data

def split_halves(train: Split, seed: int = 0) -> tuple[Split, Split]:
    """Split a training set in half class by class (seeded): (teacher half, student half).

    Each class's examples are permuted with `seed` and its first half goes to the teacher, so both
    halves keep the class balance. Each half is returned in a seeded shuffled order.
    """
    check_int("seed", seed, 0)
    gen = torch.Generator().manual_seed(seed)
    y = train.y.cpu()
    first, second = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        first.append(idx[: len(idx) // 2])
        second.append(idx[len(idx) // 2:])
    halves = []
    for parts in (first, second):
        idx = torch.cat(parts)
        idx = idx[torch.randperm(len(idx), generator=gen)].to(train.x.device)
        halves.append(train[idx])
    return halves[0], halves[1]


# ---------------------------------------------------------------------------------------------- state and teacher

def state_features(logits: torch.Tensor, y: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """g(s) for a batch, all examples at once.

    logits: [B, C] the student's outputs on the shown examples; y: [B] their labels;
    student: [3] = (iteration / T', average historical train loss / norm, best dev loss / norm).
    Returns [B, 2C + 5] = [one-hot label (C) | student (3) | probabilities (C) | −log p_y | p_y − max_{j≠y} p_j].
    """
    if logits.ndim != 2 or y.ndim != 1 or len(y) != len(logits):
        raise ValueError(f"logits must be [B, C] and y [B]; got {tuple(logits.shape)} and {tuple(y.shape)}")
    if student.shape != (STUDENT_FEATURES,):
        raise ValueError(f"student features must have shape ({STUDENT_FEATURES},); got {tuple(student.shape)}")
    c = logits.shape[1]
    logp = F.log_softmax(logits.float(), dim=1)
    p = logp.exp()
    onehot = F.one_hot(y, c).to(p.dtype)
    p_y = (p * onehot).sum(1)
    p_other = p.masked_fill(onehot.bool(), float("-inf")).max(1).values
    loss = -(logp * onehot).sum(1)
    return torch.cat([onehot, student.to(p).expand(len(y), -1), p, loss[:, None], (p_y - p_other)[:, None]], 1)


class Teacher(nn.Module):
    """The paper's policy: g(s) [B, 2C+5] -> 12 tanh units -> 1 -> p(keep) [B].

    Weights start in U(−0.01, 0.01) and the output bias at logit(init_keep), so that p(keep) ≈ 0.88 at the
    start and the early student is not starved of data (the paper's appendix, as cited in the public code).
    """

    def __init__(self, num_classes: int = 10, hidden: int = 12, init_keep: float = 0.88, seed: int | None = None):
        super().__init__()
        check_int("num_classes", num_classes, 2)
        check_int("hidden", hidden, 1)
        if not 0 < init_keep < 1:
            raise ValueError(f"init_keep={init_keep!r} is not allowed: it must be in (0, 1)")
        self.num_classes, self.in_features = num_classes, feature_dim(num_classes)
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self.hidden = nn.Linear(self.in_features, hidden)
            self.out = nn.Linear(hidden, 1)
            for layer in (self.hidden, self.out):
                nn.init.uniform_(layer.weight, -0.01, 0.01)
            nn.init.zeros_(self.hidden.bias)
            nn.init.constant_(self.out.bias, math.log(init_keep / (1 - init_keep)))

    def logit(self, features: torch.Tensor) -> torch.Tensor:
        """features [B, 2C+5] -> keep logits [B]."""
        if features.ndim != 2 or features.shape[1] != self.in_features:
            raise ValueError(f"features have shape {tuple(features.shape)}: this teacher takes [B, {self.in_features}] "
                             f"(2C + 5 for C = {self.num_classes} classes)")
        return self.out(torch.tanh(self.hidden(features))).squeeze(1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features [B, 2C+5] -> p(keep) [B]."""
        return torch.sigmoid(self.logit(features))

    def log_prob(self, features: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """log π(keep | s) [B] of the decisions `keep` [B] (bool)."""
        z = self.logit(features)
        return torch.where(keep, F.logsigmoid(z), F.logsigmoid(-z))


def loss_threshold_teacher(num_classes: int = 10, threshold: float = 0.05, sharpness: float = 20.0) -> Teacher:
    """A hand-set reference, not learned: a Teacher of the paper's shape whose weights keep an example when the
    student's loss on it, −log p_y, is above `threshold` (p(keep) = σ(10·tanh(sharpness·(loss − threshold)))).

    It shows what the 25 → 12 → 1 policy class can express ("skip what the student already knows") and how
    much that saves, as a yardstick for the learned teacher; it is no part of the paper's method.
    """
    if not threshold > 0:
        raise ValueError(f"threshold={threshold!r} is not allowed: it must be > 0")
    teacher = Teacher(num_classes, seed=0)
    with torch.no_grad():
        teacher.hidden.weight.zero_()
        teacher.hidden.bias.zero_()
        teacher.out.weight.zero_()
        teacher.hidden.weight[0, -2] = sharpness             # the loss feature, column 2C + 3
        teacher.hidden.bias[0] = -sharpness * threshold
        teacher.out.weight[0, 0] = 10.0
        teacher.out.bias.zero_()
    return teacher.eval()


# ---------------------------------------------------------------------------------------------- policies

@dataclass
class _Policy:
    """How a run decides keep/drop. decide(features, losses, step) -> (keep [S] bool, p_keep [S])."""

    name: str
    needs_student: bool
    decide: Callable[[torch.Tensor | None, torch.Tensor | None, int, int], tuple[torch.Tensor, torch.Tensor]]


def _make_policy(method: str, *, teacher: Teacher | None, sample: bool, keep_rate: float | None,
                 spl: tuple[float, float], steps: int, generator: torch.Generator) -> _Policy:
    if method == "l2t":
        if teacher is None:
            raise ValueError("method='l2t' needs a teacher: pass teacher=... (from train_teacher)")

        def decide(features, losses, step, n):
            with torch.no_grad():
                p = teacher(features)
            keep = (torch.rand(n, generator=generator, device=p.device) < p) if sample else p >= 0.5
            return keep, p
        return _Policy(method, True, decide)
    if method == "noteach":
        return _Policy(method, False, lambda f, l, step, n: (torch.ones(n, dtype=torch.bool, device=generator.device),
                                                             torch.ones(n, device=generator.device)))
    if method == "randteach":
        if keep_rate is None or not 0 <= keep_rate <= 1:  # 0: copies a teacher that dropped everything
            raise ValueError(f"keep_rate={keep_rate!r} is not allowed: RandTeach needs the fraction to keep in [0, 1]")

        def decide_rand(f, l, step, n):
            p = torch.full((n,), float(keep_rate), device=generator.device)
            return torch.rand(n, generator=generator, device=generator.device) < p, p
        return _Policy(method, False, decide_rand)
    if method == "spl":
        start, end = spl

        def decide_spl(f, losses, step, n):
            # Self-paced learning: keep the examples whose loss is under λ_t, a threshold that grows linearly.
            lam = start + (end - start) * min(step / max(steps - 1, 1), 1.0)
            keep = losses < lam
            return keep, keep.float()
        return _Policy(method, True, decide_spl)
    raise ValueError(f"method={method!r} is not allowed: choose one of {', '.join(METHODS)}")


# ---------------------------------------------------------------------------------------------- the engine

@dataclass
class _Run:
    trace: Trace
    reached: int | None = None          # first student step at which the checked accuracy was >= τ
    steps_done: int = 0
    diverged: bool = False
    shown: int = 0
    kept: int = 0
    features: list = field(default_factory=list)   # per draw [S, D] (teacher training only)
    actions: list = field(default_factory=list)    # per draw [S] bool
    student: nn.Module | None = None


def _check_split(name: str, split: Split) -> None:
    if len(split) == 0:
        raise ValueError(f"{name} is empty: it needs at least one example")


def _run_student(train: Split, dev: Split, setup: Setup, policy: _Policy, *, num_classes: int, seed: int, steps: int,
                 stop_at_tau: bool, test: Split | None = None, record: bool = False, collect: bool = False,
                 model: nn.Module | None = None, progress_bar: bool | None = False, desc: str = "") -> _Run:
    """Train one fresh student with keep/drop decisions from `policy`; see `deploy` for what is recorded."""
    device = train.x.device
    m = setup.batch_size
    trace = Trace(config=dict(method=policy.name, seed=seed, steps=steps, **asdict(setup)))
    run = _Run(trace)
    student = model if model is not None else build(setup.model, tuple(train.x.shape[1:]), num_classes,
                                                    seed=seed, device=device)
    student.train()
    if setup.optimizer == "sgd":
        opt = torch.optim.SGD(student.parameters(), lr=setup.lr, momentum=setup.momentum,
                              weight_decay=setup.weight_decay)
    else:
        opt = torch.optim.Adam(student.parameters(), lr=setup.lr, weight_decay=setup.weight_decay)
    stream = batches(len(train), min(setup.shown, len(train)), seed=seed, device=device)
    pool = torch.empty(0, dtype=torch.long, device=device)
    log_c = math.log(num_classes)
    loss_sum, best_dev = 0.0, log_c  # before any step, the untrained student's loss is about ln C
    n_eval = setup.eval_size
    dev_eval = dev[:n_eval] if n_eval else dev
    test_eval = (test[:n_eval] if n_eval else test) if test is not None else None
    losses = torch.zeros(steps)
    for step in progress(range(steps), total=steps, desc=desc, enabled=progress_bar):
        avg_loss = loss_sum / step if step else log_c
        student_feats = torch.tensor([step / setup.max_steps, avg_loss / setup.loss_norm,
                                      best_dev / setup.loss_norm], device=device)
        shown_idx, shown_keep, shown_p, shown_feats = [], [], [], []
        draws = 0
        while len(pool) < m:
            if draws >= setup.max_draws:
                trace.note(f"step {step}: the {policy.name} policy kept only {len(pool)} of {m} examples in "
                           f"{draws} draws of {setup.shown}; the run stops here")
                break
            idx = next(stream)
            draws += 1
            features = student_losses = None
            if policy.needs_student:
                with torch.no_grad():
                    logits = student(train.x[idx])
                if not torch.isfinite(logits).all():
                    run.diverged = True
                    break
                features = state_features(logits, train.y[idx], student_feats)
                student_losses = features[:, -2]
            keep, p = policy.decide(features, student_losses, step, len(idx))
            if collect:
                run.features.append(features)
                run.actions.append(keep)
            pool = torch.cat([pool, idx[keep]])
            run.shown += len(keep)  # counted per draw, so a run that stalls before its first step has a keep rate
            run.kept += int(keep.sum())
            shown_idx.append(idx), shown_keep.append(keep), shown_p.append(p)
            if record and features is not None:
                shown_feats.append(features)
        if run.diverged or len(pool) < m:
            if run.diverged:
                trace.note(f"step {step}: the student diverged (non-finite outputs); the run ends here")
            break
        batch, pool = pool[:m], pool[m:]
        loss = F.cross_entropy(student(train.x[batch]), train.y[batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        shown_keep_t = torch.cat(shown_keep)
        if record:
            shown_idx_t = torch.cat(shown_idx)
            extra = {}
            if shown_feats:  # what the teacher saw: the student's loss and margin on each shown example
                feats = torch.cat(shown_feats)
                extra = dict(student_loss=feats[:, -2], margin=feats[:, -1])
            trace.log_array(step + 1, keep_mask=shown_keep_t, labels=train.y[shown_idx_t], p_keep=torch.cat(shown_p),
                            index=shown_idx_t, **extra)
        if not math.isfinite(value):
            run.diverged = True
            trace.note(f"step {step + 1}: the student's training loss is {value} (diverged); the run ends here")
            break
        losses[step] = value
        loss_sum += value
        run.steps_done = step + 1
        done = step + 1
        if done % setup.dev_every == 0 or done == steps:
            logits = predict(student, dev_eval.x)
            dev_loss = F.cross_entropy(logits, dev_eval.y).item()
            dev_acc = (logits.argmax(1) == dev_eval.y).float().mean().item()
            best_dev = min(best_dev, dev_loss) if math.isfinite(dev_loss) else best_dev
            values = dict(dev_acc=dev_acc, dev_loss=dev_loss, effective_at_eval=done * m)
            if test_eval is not None:  # reported only: τ is always judged on dev
                values["test_acc"] = (predict(student, test_eval.x).argmax(1) == test_eval.y).float().mean().item()
            trace.log(done, **values)
            if run.reached is None and dev_acc >= setup.tau:
                run.reached = done
                if stop_at_tau:
                    break
    if run.steps_done:
        trace.log_series("loss", range(1, run.steps_done + 1), losses[: run.steps_done])
        trace.log_series("effective_examples", range(1, run.steps_done + 1),
                         m * np.arange(1, run.steps_done + 1))
    trace.metrics.update(steps_done=run.steps_done, reached_step=run.reached, diverged=run.diverged,
                         keep_rate=run.kept / run.shown if run.shown else float("nan"),
                         effective_examples=run.steps_done * m,
                         effective_examples_to_tau=run.reached * m if run.reached else None)
    run.student = student
    return run


# ---------------------------------------------------------------------------------------------- teacher training

def reward(reached: int | None, max_steps: int) -> float:
    """r = −log(i_τ / T'): 0 when τ was never reached (i_τ = T'), larger the sooner it was."""
    i = reached if reached is not None else max_steps
    return -math.log(min(i, max_steps) / max_steps)


def train_teacher(train: Split, dev: Split, *, setup: Setup, episodes: int, num_classes: int = 10,
                  teacher: Teacher | None = None, teacher_lr: float = 1e-3, baseline_decay: float = 0.8,
                  group_size: int = 1, normalize: bool = False, seed: int = 0, student_seeds: int | None = None,
                  progress_bar: bool | None = None) -> tuple[Teacher, Trace]:
    """Train a teacher by REINFORCE over `episodes` episodes, each with a fresh student on `train`.

    train: the teacher's half of the training data; dev: the dev data that decides τ (checked on its first
    `setup.eval_size` examples every `setup.dev_every` steps). The reward of an episode is r = −log(i_τ/T').

    group_size = 1 (the paper): episode e's student (initial weights and data order) is seeded with
    seed * 1000 + e (or cycles through `student_seeds` seeds); the baseline is an EMA,
    b <- decay·b + (1 − decay)·r, started at the first reward; one teacher update per episode.

    group_size = k >= 2 (a variance-reduction deviation from the paper: common random numbers): the
    episodes come in groups of k that share one student seed, so the k students start from the same weights
    and are shown the same stream of examples; only the teacher's sampled keep/drop decisions differ. The
    baseline of an episode is the mean reward of its group, so the advantage r − mean reflects the teacher's
    decisions rather than the student's luck; with normalize=True it is also divided by the group's reward
    std (skipped when all rewards tie). One teacher update per group. `episodes` is rounded down to a
    multiple of k.

    The policy-gradient loss of an episode is −A · mean over its decisions of log π(a|s): the mean (not the
    paper's sum) keeps the step size independent of the episode's length and of M; with Adam, which divides
    by the gradient's running scale, the two differ mostly in how episodes of different lengths are weighed.
    The teacher's Adam optimizer lives across episodes. An episode whose student diverges is noted in the
    Trace and left out of the update.
    Trace scalars per episode: "reward", "baseline", "advantage", "steps_to_tau", "keep_rate", "p_keep_mean".
    """
    setup.check()
    check_int("episodes", episodes, 1)
    check_int("group_size", group_size, 1, episodes)
    if student_seeds is not None:
        check_int("student_seeds", student_seeds, 1)
    check_int("seed", seed, 0)
    _check_split("train", train)
    _check_split("dev", dev)
    if not 0 <= baseline_decay < 1:
        raise ValueError(f"baseline_decay={baseline_decay!r} is not allowed: it must be in [0, 1)")
    if not teacher_lr > 0:
        raise ValueError(f"teacher_lr={teacher_lr!r} is not allowed: it must be > 0")
    device = train.x.device
    teacher = (teacher or Teacher(num_classes, seed=seed)).to(device)
    if teacher.num_classes != num_classes:
        raise ValueError(f"teacher is for {teacher.num_classes} classes but num_classes={num_classes}")
    opt = torch.optim.Adam(teacher.parameters(), lr=teacher_lr)
    trace = Trace(config=dict(episodes=episodes, teacher_lr=teacher_lr, baseline_decay=baseline_decay, seed=seed,
                              group_size=group_size, normalize=normalize, student_seeds=student_seeds,
                              num_classes=num_classes, **asdict(setup)))
    baseline = None
    generator = torch.Generator(device=device)
    groups = episodes // group_size
    for g in progress(range(groups), total=groups, desc="teacher", enabled=progress_bar):
        runs = []
        for k in range(group_size):
            episode = g * group_size + k
            unit = g if group_size > 1 else episode   # the student's seed index: shared inside a group
            episode_seed = seed * 1000 + (unit % student_seeds if student_seeds else unit)
            generator.manual_seed(seed * 1_000_003 + episode)
            policy = _make_policy("l2t", teacher=teacher, sample=True, keep_rate=None, spl=(0, 0),
                                  steps=setup.max_steps, generator=generator)
            run = _run_student(train, dev, setup, policy, num_classes=num_classes, seed=episode_seed,
                               steps=setup.max_steps, stop_at_tau=True, collect=True)
            if run.diverged or run.steps_done == 0:
                for message in run.trace.messages:
                    trace.note(f"episode {episode}: {message}")
                trace.note(f"episode {episode}: the student diverged or never stepped; the teacher update is skipped")
                continue
            runs.append((episode, run, reward(run.reached, setup.max_steps)))
        if not runs:
            continue
        rewards = np.array([r for _, _, r in runs])
        if group_size == 1:
            baseline = rewards[0] if baseline is None else baseline
            baselines = np.array([baseline])
            advantages = rewards - baseline
        else:
            baselines = np.full(len(runs), rewards.mean())
            advantages = rewards - baselines
            if normalize and rewards.std() > 1e-8:
                advantages = advantages / rewards.std()
        decisions = [(torch.cat(run.features), torch.cat(run.actions)) for _, run, _ in runs]  # [S_e, D], [S_e]
        loss = 0.0
        for (features, actions), advantage in zip(decisions, advantages):
            # REINFORCE: every decision of the episode shares the terminal reward (mean over decisions, see above)
            loss = loss - float(advantage) * teacher.log_prob(features, actions).mean() / len(runs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            p_means = [float(teacher(features).mean()) for features, _ in decisions]
        for (episode, run, r), b, advantage, p_mean in zip(runs, baselines, advantages, p_means):
            trace.log(episode, reward=r, baseline=float(b), advantage=float(advantage),
                      steps_to_tau=run.reached if run.reached else float("nan"),
                      keep_rate=run.kept / max(run.shown, 1),
                      p_keep_mean=p_mean)
        if group_size == 1:
            baseline = baseline_decay * baseline + (1 - baseline_decay) * float(rewards[0])
    if "reward" in trace.scalars:
        rewards = trace.series("reward")[1]
        q = max(len(rewards) // 4, 1)
        trace.metrics.update(reward_first_quarter=float(rewards[:q].mean()),
                             reward_last_quarter=float(rewards[-q:].mean()), episodes_used=len(rewards))
    return teacher.eval(), trace


# ---------------------------------------------------------------------------------------------- deployment

def deploy(method: str, train: Split, dev: Split, test: Split, *, setup: Setup, steps: int, num_classes: int = 10,
           teacher: Teacher | None = None, keep_rate: float | None = None, spl: tuple[float, float] | None = None,
           model: str | None = None, seed: int = 0, record: bool = False,
           progress_bar: bool | None = False) -> Trace:
    """Train a fresh student on `train` (the student half) for `steps` steps with one data policy.

    method: "l2t" (the frozen teacher, keep when p >= 0.5), "noteach" (keep all), "randteach" (keep each
    example with probability `keep_rate`, e.g. L2T's measured keep rate), "spl" (self-paced: keep the
    examples whose loss is under λ_t, growing linearly from spl[0] to spl[1];
    default (1.5, 3)·ln C: an untrained student's losses are all near ln C, so every example passes at
    first (a lower start drops whole classes whose initial loss happens to be above it, and they are
    never learned); later the confidently wrong examples, loss above λ_t, are left out).
    model: the student (default setup.model), e.g. "lenet" for the transfer experiment.
    Every `setup.dev_every` steps the dev and test accuracy are measured on their first `setup.eval_size`
    examples; τ is judged on the dev accuracy (pass a dev split the teacher was not trained on), the test
    accuracy is only reported (the paper's curves are test accuracy against effective training examples).
    Trace: scalars "loss", "effective_examples" (per step), "dev_acc", "test_acc", "effective_at_eval" (per check);
    with record=True, arrays per step "keep_mask", "labels", "p_keep", "index" (into `train`) of the examples shown,
    and for the policies that look at the student (l2t, spl) their "student_loss" −log p_y and "margin".
    metrics: effective_examples_to_tau (None if τ was not reached), keep_rate, test_acc (whole test split), ...
    """
    setup = setup.check()
    check_int("steps", steps, 1)
    check_int("seed", seed, 0)
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not allowed: choose one of {', '.join(METHODS)}")
    for name, split in (("train", train), ("dev", dev), ("test", test)):
        _check_split(name, split)
    if teacher is not None and teacher.num_classes != num_classes:
        raise ValueError(f"teacher is for {teacher.num_classes} classes but num_classes={num_classes}")
    if model is not None:
        setup = replace(setup, model=model)
    device = train.x.device
    generator = torch.Generator(device=device).manual_seed(seed * 7919 + 1)
    log_c = math.log(num_classes)
    policy = _make_policy(method, teacher=teacher.to(device) if teacher is not None else None, sample=False,
                          keep_rate=keep_rate, spl=spl or (1.5 * log_c, 3.0 * log_c), steps=steps,
                          generator=generator)
    run = _run_student(train, dev, setup, policy, num_classes=num_classes, seed=seed, steps=steps,
                       stop_at_tau=False, test=test, record=record, progress_bar=progress_bar, desc=method)
    final = predict(run.student, test.x)
    run.trace.metrics.update(test_acc=(final.argmax(1) == test.y).float().mean().item(), method=method,
                             model=setup.model, seed=seed)
    return run.trace


def compare(train: Split, dev: Split, test: Split, *, teacher: Teacher, setup: Setup, steps: int,
            seeds: Sequence[int], num_classes: int = 10, methods: Sequence[str] = METHODS,
            model: str | None = None, record_seed: int | None = None,
            progress_bar: bool | None = None) -> dict[str, list[Trace]]:
    """Deploy every method on the same data, steps and seeds: {method: [Trace per seed]}.

    RandTeach keeps the fraction that L2T kept with the same seed (so L2T runs first). The L2T run
    with seed `record_seed` records its per-step keep/drop arrays (for the scrubber).
    """
    if "randteach" in methods and "l2t" not in methods:
        raise ValueError("methods must include 'l2t' when they include 'randteach' (it copies L2T's keep rate)")
    order = sorted(methods, key=lambda m: METHODS.index(m))
    out: dict[str, list[Trace]] = {m: [] for m in order}
    jobs = [(s, m) for s in seeds for m in order]
    for s, m in progress(jobs, total=len(jobs), desc="deploy", enabled=progress_bar):
        keep_rate = out["l2t"][-1].metrics["keep_rate"] if m == "randteach" else None
        out[m].append(deploy(m, train, dev, test, setup=setup, steps=steps, num_classes=num_classes,
                             teacher=teacher if m == "l2t" else None, keep_rate=keep_rate, model=model, seed=s,
                             record=(m == "l2t" and s == record_seed)))
    return out


def summarize(results: dict[str, list[Trace]]) -> dict[str, dict]:
    """Per method: effective examples to τ over seeds (mean, std), how many seeds reached τ, keep rate,
    final test accuracy. A seed that never reached τ counts at its whole budget, steps · M (a lower bound), and
    `reached` says how many did."""
    table = {}
    for method, traces in results.items():
        # not reached (or the run stopped early): counted at the whole budget, steps · M
        to_tau = [t.metrics["effective_examples_to_tau"] or t.config["steps"] * t.config["batch_size"] for t in traces]
        reached = sum(t.metrics["effective_examples_to_tau"] is not None for t in traces)
        table[method] = dict(to_tau=to_tau, mean=float(np.mean(to_tau)), std=float(np.std(to_tau)),
                             reached=reached, seeds=len(traces),
                             keep_rate=float(np.mean([t.metrics["keep_rate"] for t in traces])),
                             test_acc=float(np.mean([t.metrics["test_acc"] for t in traces])))
    return table


def keep_profile(trace: Trace, feature: str = "margin",
                 edges: Sequence[float] = (-1.0, 0.0, 0.5, 0.9, 0.99, 1.0)) -> list[dict]:
    """What a deployed teacher does, in numbers: for each bin [edges[i], edges[i+1]) of `feature` ("margin" or
    "student_loss"; the last bin includes its right edge), the number of shown examples, their mean p(keep) and
    the share kept. trace: an l2t deployment recorded with record=True."""
    if feature not in trace.arrays or "p_keep" not in trace.arrays:
        raise ValueError(f"feature={feature!r} is not in this trace: record an l2t deployment (record=True)")
    x, p, keep = trace.concat(feature), trace.concat("p_keep"), trace.concat("keep_mask").astype(bool)
    rows = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        sel = (x >= lo) & ((x <= hi) if i == len(edges) - 2 else (x < hi))
        rows.append(dict(low=float(lo), high=float(hi), shown=int(sel.sum()),
                         p_keep=float(p[sel].mean()) if sel.any() else float("nan"),
                         kept=float(keep[sel].mean()) if sel.any() else float("nan")))
    return rows
