"""What a student is and how it is measured: `StudentConfig` (how it trains) and the measures every view reads
(`predict`, `evaluate`, `confusion`, `evaluate_text`, per-example `cross_entropy`). The loop is `labkit.engine`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_choice, check_float, check_int
from .data import batchify, bptt_windows

SCHEDULES = ("constant", "cosine", "step", "multistep", "plateau")
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class StudentConfig:
    """How a student trains. `steps` steps of the method's objective follow `pretrain_steps` cross-entropy steps
    (at `pretrain_lr`, None: lr), so a run takes `total_steps` steps in all.

    schedule: constant | cosine (to 0 over `steps`) | step (x0.1 at 50 % and 75 % of `steps`, He et al.) |
      multistep (x0.1 at each of `milestones`) | plateau (x0.25 per member whenever its dev loss did not improve
      at an evaluation; members looped, not stacked).
    clip: gradient-norm clipping per member (None: off). bptt: window length of a text stream.
    eval_every: steps between evaluations (None: 10 per run; 0: only the final one); eval_size: dev (and, with
      eval_test, test) examples each periodic evaluation reads (None: all; the final one always reads all);
      test_every: with eval_test, test is read only at evaluations whose step is a multiple of it (None: at
      every one; a test curve for a figure needs fewer points than a dev check that stops at τ);
      record_confusion: member 0's dev confusion matrix [C, C] at every evaluation (array "confusion").
    diverge_factor: a member whose training loss is not finite, or exceeds diverge_factor x max(1, |first loss|),
      stops at that step and is reported as diverged.
    """

    model: str = "mlp"
    model_kwargs: dict = field(default_factory=dict)
    steps: int = 1000
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    schedule: str = "constant"
    milestones: tuple[int, ...] = ()
    pretrain_steps: int = 0
    pretrain_lr: float | None = None
    clip: float | None = None
    bptt: int = 35
    eval_every: int | None = None
    eval_size: int | None = None
    eval_test: bool = False
    test_every: int | None = None
    record_confusion: bool = False
    diverge_factor: float = 100.0
    bf16: bool = False

    @property
    def total_steps(self) -> int:
        return self.pretrain_steps + self.steps

    def check(self) -> "StudentConfig":
        """Raise a ValueError naming any parameter out of range (NaN and inf included); return self."""
        check_int("steps", self.steps, 1)
        check_int("batch_size", self.batch_size, 1)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_float("lr", self.lr, 0, low_open=True)
        check_float("momentum", self.momentum, 0, 1, high_open=True)
        check_float("weight_decay", self.weight_decay, 0)
        check_choice("schedule", self.schedule, SCHEDULES)
        for m in self.milestones:
            check_int("milestones", m, 1, self.steps)
        check_int("pretrain_steps", self.pretrain_steps, 0)
        if self.pretrain_lr is not None:
            check_float("pretrain_lr", self.pretrain_lr, 0, low_open=True)
        if self.clip is not None:
            check_float("clip", self.clip, 0, low_open=True)
        check_int("bptt", self.bptt, 1)
        if self.eval_every is not None:
            check_int("eval_every", self.eval_every, 0)
        for name in ("eval_size", "test_every"):
            _ = getattr(self, name) is None or check_int(name, getattr(self, name), 1)
        check_float("diverge_factor", self.diverge_factor, 1, low_open=True)
        return self

    def lr_at(self, step: int) -> float:
        """The learning rate of step `step` (0-based) before any plateau factor."""
        if step < self.pretrain_steps:
            return self.pretrain_lr if self.pretrain_lr is not None else self.lr
        t = step - self.pretrain_steps
        factor = {"cosine": lambda: 0.5 * (1 + math.cos(math.pi * min(t, self.steps) / self.steps)),
                  "step": lambda: 0.1 ** ((t >= self.steps // 2) + (t >= 3 * self.steps // 4)),
                  "multistep": lambda: 0.1 ** sum(t >= m for m in self.milestones)}.get(self.schedule, lambda: 1.0)
        return self.lr * factor()

    @property
    def evaluations(self) -> int:
        """Steps between periodic evaluations (0: none)."""
        return max(self.total_steps // 10, 1) if self.eval_every is None else self.eval_every


def upcast(t: torch.Tensor) -> torch.Tensor:
    """bfloat16 / float16 logits to float32 for a loss (float32 and float64 stay as they are)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy: logits [S, B, C], y [S, B] -> [S, B]."""
    return F.cross_entropy(upcast(logits.flatten(0, 1)), y.flatten(), reduction="none").view(y.shape)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int | None = None,
            members: Sequence[int] | None = None) -> torch.Tensor:
    """Logits of `model` on inputs x [N, ...] in eval mode (its mode is restored): [N, C] for a plain model,
    [S, N, C] for a `labkit.population.Population` ([len(members), N, C] for the members listed, in that order;
    a population only). batch_size: examples per forward (None: 512 on a CPU, where a
    LeNet population's larger chunks fall out of the cache: 4 LeNets on 1000 images took 194-247 ms in chunks of
    512 against 259-342 ms in one, while 8 MLPs 784-500-10 on 2503 images took about the same either way; four runs
    of benchmarks/bench_population.py, its CPU choices. 4096 elsewhere)."""
    batch_size = batch_size or (512 if x.device.type == "cpu" else 4096)
    was_training = model.training
    model.eval()
    kwargs = {} if members is None else {"members": members}
    try:
        outs = [upcast(model(chunk, **kwargs)) for chunk in x.split(batch_size)]
        PASSES.add(forward=len(x) * (getattr(model, "size", 1) if members is None else len(members)))
        return torch.cat(outs, dim=outs[0].dim() - 2)  # [N, C] for a model, [S, N, C] for a population
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, split, batch_size: int | None = None) -> dict[str, float]:
    """{"loss": mean cross-entropy, "acc": accuracy} of a plain model on a split."""
    logits = predict(model, split.x, batch_size)
    return {"loss": F.cross_entropy(logits, split.y).item(), "acc": (logits.argmax(1) == split.y).float().mean().item()}


def confusion(model: nn.Module, split, num_classes: int) -> torch.Tensor:
    """Row-normalised confusion matrix [C, C]: entry (i, j) = share of class-i examples predicted as j."""
    pred = predict(model, split.x).argmax(1)
    counts = torch.bincount(split.y * num_classes + pred, minlength=num_classes ** 2).view(num_classes, num_classes)
    return counts.float() / counts.sum(1, keepdim=True).clamp_min(1)


@torch.no_grad()
def evaluate_text(model: nn.Module, tokens: torch.Tensor, bptt: int, batch_size: int = 10) -> dict[str, float]:
    """{"loss": mean next-token cross-entropy, "ppl": its exp} of a language model on a token stream [N], read as
    `batch_size` columns window by window with the state carried (eval mode, mode restored)."""
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    for x, y in bptt_windows(batchify(tokens, batch_size), bptt):
        logits, state = model(x, state)
        total += F.cross_entropy(upcast(logits.reshape(y.numel(), -1)), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return {"loss": total / count, "ppl": math.exp(total / count)}


class PassCounter:
    """How many example-passes of student forward and backward the lab has run: the engine, the meta-gradients
    and the teachers' looks at the student all count here, so a method's cost can be charged as a multiple of a
    plain student's. `with counting() as c: ...` gives the passes inside the block."""

    def __init__(self):
        self.forward = 0
        self.backward = 0

    def add(self, forward: int = 0, backward: int = 0) -> None:
        self.forward += int(forward)
        self.backward += int(backward)


PASSES = PassCounter()


class counting:
    """Context manager: the forward and backward example-passes counted inside the block, as a PassCounter."""

    def __enter__(self) -> PassCounter:
        self._start = (PASSES.forward, PASSES.backward)
        self.result = PassCounter()
        return self.result

    def __exit__(self, *exc) -> None:
        self.result.forward = PASSES.forward - self._start[0]
        self.result.backward = PASSES.backward - self._start[1]


# The tour's student (notebook 00): the MNIST MLP 784-500-10 with SGD, momentum and a cosine schedule.
PRESETS = {
    "smoke": StudentConfig(model="mlp", steps=300, batch_size=128, lr=0.1, momentum=0.9, schedule="cosine"),
    "cpu": StudentConfig(model="mlp", steps=6000, batch_size=128, lr=0.1, momentum=0.9, schedule="cosine"),
    "paper": StudentConfig(model="mlp", steps=20_000, batch_size=128, lr=0.1, momentum=0.9, schedule="cosine"),
}
