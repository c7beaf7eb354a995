"""L2T's batch policies on the engine (`engine.Hooks`): which shown examples a student trains on.

`KeepDrop` draws `shown` examples per member from the member's own stream, lets a policy keep some, pools the kept
ones and hands the first M to the step; the policies are `NoTeach`, `RandTeach`, `SelfPaced`, `Oracle` and
`TeacherPolicy` (an L2T `Teacher`, the paper's 25 → 12 → 1 network on the state features g(s)). `labkit.l2t` trains
and deploys the teacher with them; other code (the arena) can hand any of them to an `engine.Run`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import data as datasets, engine, seeds as seeding
from .checks import check_choice, check_float, check_int
from .student import PASSES
from .trace import Trace

STUDENT_FEATURES = 3  # step / T', average training loss / loss_norm, best dev loss / loss_norm
Decision = tuple[torch.Tensor, torch.Tensor]  # keep [S', n] bool, p_keep [S', n]


def state_features(logits: torch.Tensor, y: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """g(s): logits [..., C], labels y [...], student features [..., 3] (broadcast over y) -> [..., 2C + 5] =
    [one-hot label (C) | student (3) | probabilities (C) | −log p_y | p_y − max_{j≠y} p_j]."""
    if logits.shape[:-1] != y.shape or student.shape[-1] != STUDENT_FEATURES:
        raise ValueError(f"logits must be [..., C] over y [...] and student [..., 3]; got {tuple(logits.shape)}, "
                         f"{tuple(y.shape)}, {tuple(student.shape)}")
    logp = F.log_softmax(logits.float(), -1)
    p, onehot = logp.exp(), F.one_hot(y, logits.shape[-1]).float()
    p_other = p.masked_fill(onehot.bool(), float("-inf")).max(-1).values
    return torch.cat([onehot, student.to(p).expand(*y.shape, STUDENT_FEATURES), p, -(logp * onehot).sum(-1, True),
                      (p * onehot).sum(-1, True) - p_other[..., None]], -1)


class Teacher(nn.Module):
    """The paper's policy: g(s) [..., 2C + 5] -> 12 tanh units -> p(keep) [...]. Weights U(−0.01, 0.01), output bias
    logit(init_keep) (public code: 0.88, "not filtering too much data in the early stage")."""

    def __init__(self, num_classes: int = 10, hidden: int = 12, init_keep: float = 0.88, seed: int = 0):
        super().__init__()
        check_float("init_keep", init_keep, 0, 1, low_open=True, high_open=True)
        self.num_classes, self.in_features = check_int("num_classes", num_classes, 2), 2 * num_classes + 5
        # built on the meta device and drawn from a generator: the global random state is never read
        self.hidden = nn.Linear(self.in_features, check_int("hidden", hidden, 1), device="meta").to_empty(device="cpu")
        self.out = nn.Linear(hidden, 1, device="meta").to_empty(device="cpu")
        gen = seeding.generator(seed, "l2t", "teacher")
        for layer in (self.hidden, self.out):
            nn.init.uniform_(layer.weight, -0.01, 0.01, generator=gen)
        nn.init.zeros_(self.hidden.bias)
        nn.init.constant_(self.out.bias, math.log(init_keep / (1 - init_keep)))

    def logit(self, features: torch.Tensor) -> torch.Tensor:
        """features [..., 2C + 5] -> keep logits [...]."""
        if features.dim() < 2 or features.shape[-1] != self.in_features:
            raise ValueError(f"features have shape {tuple(features.shape)}: this teacher takes [..., "
                             f"{self.in_features}] (2C + 5 for C = {self.num_classes} classes)")
        return self.out(torch.tanh(self.hidden(features))).squeeze(-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(features))

    def log_prob(self, features: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """log π(keep | s) [...] of the decisions `keep` [...] (bool)."""
        z = self.logit(features)
        return torch.where(keep, F.logsigmoid(z), F.logsigmoid(-z))


def loss_threshold_teacher(num_classes: int = 10, threshold: float = 0.05, sharpness: float = 20.0) -> Teacher:
    """A hand-set yardstick, not learned and no part of the paper: the paper's network with weights that keep an
    example when the student's loss −log p_y on it is above `threshold` (p = σ(10·tanh(sharpness·(loss − t))))."""
    check_float("threshold", threshold, 0, low_open=True)
    teacher = Teacher(num_classes)
    with torch.no_grad():
        for p in teacher.parameters():
            p.zero_()
        teacher.hidden.weight[0, -2], teacher.hidden.bias[0] = sharpness, -sharpness * threshold
        teacher.out.weight[0, 0] = 10.0
    return teacher.eval()


class KeepDrop(engine.Hooks):
    """A batch policy (one per Run). Each step, every live member whose pool holds fewer than M examples draws `shown`
    from its own stream `run.streams[i]` (only those streams advance: a member gets what it would get alone); the
    policy keeps some (`decide`); the first M pooled make the step. With `looks`, the policy sees the student once per
    draw (a no_grad forward of the population on [S, shown, ...]). A member keeping fewer than M in `max_draws` draws
    stops ("stalled"). With `tau`, its first dev check ≥ τ is `reached` (and ends it with `stop_at_tau`). record
    ("first" | "all" | None): members logging per step index, keep_mask, p_keep, labels (+ corrupted, student_loss,
    margin). Under label noise every member logs keep_rate_corrupted / keep_rate_clean at each dev check."""

    looks = False

    def __init__(self, *, shown: int | None = None, max_draws: int = 50, record: str | None = "first",
                 tau: float | None = None, stop_at_tau: bool = False, max_steps: int | None = None,
                 loss_norm: float = 2.3, generators: Sequence[torch.Generator] | None = None):
        self.shown, self.max_draws, self.record = shown, check_int("max_draws", max_draws, 1), record
        self.tau, self.stop_at_tau, self.max_steps, self.loss_norm = tau, stop_at_tau, max_steps, loss_norm
        self.generators, self.pools, self.run, self._pending = generators, None, None, ()
        check_choice("record", record, ("first", "all", None))

    def _bind(self, run: engine.Run) -> None:
        if self.run is not None and self.run is not run:
            raise ValueError("a KeepDrop policy serves one Run (it holds that run's pools): make a new one")
        S, self.run = len(run.seeds), run
        if self.pools is None:
            self.pools = [torch.empty(0, dtype=torch.long, device=run.device) for _ in range(S)]
            self.best_dev = [math.log(run.splits.num_classes)] * S  # before any check: an untrained student's loss
            self.reached, self.stalled = [None] * S, [None] * S
            self.counts = torch.zeros(S, 7, dtype=torch.float64)  # shown, kept, Σp, corrupted/clean shown and kept
            self.window = torch.zeros(S, 4, dtype=torch.float64)  # corrupted/clean since the last dev check
        self.generators = self.generators or [seeding.generator(s, *run.role, "keep", device=run.device)
                                              for s in run.seeds]
        for g, state in zip(self.generators, self._pending):
            g.set_state(state)
        self._pending = ()
        if self.shown and run.streams[0].batch_size != self.shown:  # draws of `shown` in the stream's own order
            run.streams = [datasets.IndexStream(len(run.splits.train), self.shown, s.seed, run.device, s.position)
                           for s in run.streams]

    def select(self, run: engine.Run, step: int) -> engine.Batch:
        self._bind(run)
        M = run.config.batch_size
        need = [i for i in range(len(run.seeds)) if run.alive[i] and len(self.pools[i]) < M]
        shown: dict[int, list] = {i: [] for i in need if self._records(i)}
        for _ in range(self.max_draws):
            if not need:
                break
            index = torch.stack([next(run.streams[i]) for i in need])  # [S', shown]
            view = self._look(run, step, need, index) if self.looks else None
            keep, p = self.decide(run, need, index, view)
            self._count(run, need, index, keep, p)
            for j, i in enumerate(need):
                self.pools[i] = torch.cat([self.pools[i], index[j][keep[j]]])
                if i in shown:
                    shown[i].append((index[j], keep[j], p[j], None if view is None else view[j]))
            need = [i for i in need if len(self.pools[i]) < M]
        for i in need:
            self.stalled[i] = step
            run.stop(i, f"stalled: the policy kept {len(self.pools[i])} of M = {M} in {self.max_draws} draws")
        self._record(run, step, shown)
        dummy = torch.arange(M, device=run.device)  # ended members still step inside a population: ignored
        batch = torch.stack([self.pools[i][:M] if run.alive[i] else dummy for i in range(len(run.seeds))])
        self.pools = [p[M:] if run.alive[i] else p for i, p in enumerate(self.pools)]
        return run.batch_of(batch)

    def _look(self, run: engine.Run, step: int, need: list[int], index: torch.Tensor) -> torch.Tensor:
        """g(s) [S', shown, 2C + 5] of members `need` on their shown examples index [S', shown]."""
        x, part = run.splits.train.x[index], len(need) < len(run.seeds)
        if part:  # the population maps every member: the others see zeros, ignored
            x = x.new_zeros((len(run.seeds), *x.shape[1:])).index_copy_(0, torch.tensor(need, device=x.device), x)
        was = run.students.training
        with torch.no_grad():
            logits = run.students.eval()(x)
        run.students.train(was)
        PASSES.add(forward=index.numel())  # what the members alone would cost
        T, log_c = self.max_steps or run.config.total_steps, math.log(run.splits.num_classes)
        # in float64 on the CPU, as Python's floats were: the same features, one read-back, and no float64 on the device
        average = run.losses[need, :step].mean(1).cpu().double() if step else torch.full((len(need),), log_c,
                                                                                            dtype=torch.float64)
        best = torch.tensor([self.best_dev[i] for i in need], dtype=torch.float64)
        rows = torch.stack([torch.full_like(average, step / T), average / self.loss_norm, best / self.loss_norm], 1)
        return state_features(logits[need] if part else logits, run.splits.train.y[index],
                              rows.float().to(x.device)[:, None])

    def decide(self, run: engine.Run, members: list[int], index: torch.Tensor, view: torch.Tensor | None) -> Decision:
        """keep [S', n] bool and p_keep [S', n] for the shown examples index [S', n] of `members` (view: their g(s)
        [S', n, 2C + 5] when the policy `looks`, else None)."""
        raise NotImplementedError

    def _records(self, i: int) -> bool:
        return self.record == "all" or (self.record == "first" and i == 0)

    def _count(self, run: engine.Run, members: list[int], index: torch.Tensor, keep: torch.Tensor,
               p: torch.Tensor) -> None:
        """Add one draw (index, keep, p [S', n] of `members`) to counts and window, as [S', 7] sums in one go (why:
        seven small sums a member, each read back to Python, cost an MLP student's step more than its draw did)."""
        bad = run.splits.train.corrupted[index]
        c = torch.stack([torch.ones_like(p), keep, p, bad, keep & bad, ~bad, keep & ~bad], -1).sum(1).cpu().double()
        rows = torch.tensor(members)
        self.counts.index_add_(0, rows, c)
        self.window.index_add_(0, rows, c[:, 3:])

    def _record(self, run: engine.Run, step: int, shown: dict[int, list]) -> None:
        """Per step, the recorded members' shown examples: index, keep_mask, p_keep, labels (+ corrupted, and with a
        look the student's loss and margin)."""
        for i, draws in ((i, d) for i, d in shown.items() if d):
            index, keep, p = (torch.cat([d[k] for d in draws]) for k in range(3))
            extra = dict(corrupted=run.splits.train.corrupted[index]) if run.splits.train.clean_y is not None else {}
            if draws[0][3] is not None:
                view = torch.cat([d[3] for d in draws])
                extra.update(student_loss=view[:, -2], margin=view[:, -1])
            run.traces[i].log_array(step + 1, index=index, keep_mask=keep, p_keep=p, labels=run.splits.train.y[index],
                                    **extra)

    def after_eval(self, run: engine.Run, step: int) -> None:
        for i in (i for i, a in enumerate(run.alive) if a):
            tr = run.traces[i]
            acc, loss = tr.scalars["dev_acc"]["value"][-1], tr.scalars["dev_loss"]["value"][-1]
            self.best_dev[i] = min(self.best_dev[i], loss) if math.isfinite(loss) else self.best_dev[i]
            w = self.window[i].tolist()
            if w[0] and w[2]:  # keep rates of the corrupted and the clean examples shown since the last check
                tr.log(step, keep_rate_corrupted=w[1] / w[0], keep_rate_clean=w[3] / w[2])
            self.window[i].zero_()
            if self.tau is not None and self.reached[i] is None and acc >= self.tau:
                self.reached[i] = step
                if self.stop_at_tau:
                    run.stop(i, f"dev accuracy {acc:.4f} reached τ = {self.tau}")

    def annotate(self, traces: list[Trace]) -> None:
        """Into each member's metrics: keep_rate, p_keep_mean (None: nothing shown), reached_step (the final evaluation
        is a τ check too), effective_examples_to_tau (None: not reached), stalled_at_step, corrupted/clean keep rates.
        A member that trained 0 steps reports no accuracy (None) and says so."""
        for i, tr in enumerate(traces):
            n, kept, p_sum, nc, kc, nk, kk = self.counts[i].tolist()
            m, done, M = tr.metrics, tr.metrics.get("steps_done") or 0, tr.config["batch_size"]
            if self.tau is not None and self.reached[i] is None and done and (m.get("dev_acc") or 0) >= self.tau:
                self.reached[i] = done
            r = self.reached[i]
            m.update(keep_rate=kept / n if n else None, p_keep_mean=p_sum / n if n else None, reached_step=r,
                     stalled_at_step=self.stalled[i], effective_examples=done * M,
                     effective_examples_to_tau=None if r is None else r * M,
                     keep_rate_corrupted=kc / nc if nc else None, keep_rate_clean=kk / nk if nk else None)
            if not done and not tr.diverged:
                m.update(dev_acc=None, dev_loss=None, test_acc=None, test_loss=None)
                tr.note("trained 0 steps: the policy kept fewer than M examples before the first step; no accuracy")

    _STATE = ("pools", "best_dev", "reached", "stalled", "counts", "window")

    def state_dict(self) -> dict:
        if self.pools is None:
            return {}
        return dict({k: getattr(self, k) for k in self._STATE}, generators=[g.get_state() for g in self.generators])

    def load_state_dict(self, state: dict) -> None:
        for k in self._STATE if state else ():
            setattr(self, k, state[k])
        self._pending = state.get("generators", ())  # set once the generators exist (`_bind`)


class NoTeach(KeepDrop):
    """Keep every example shown: plain SGD."""

    def decide(self, run: engine.Run, members: list[int], index: torch.Tensor, view: torch.Tensor | None) -> Decision:
        return torch.ones_like(index, dtype=torch.bool), torch.ones(index.shape, device=index.device)


class RandTeach(KeepDrop):
    """Keep each example with probability keep_rate: one rate, or one per member (L2T's at the same seed)."""

    def __init__(self, keep_rate: float | Sequence[float], **kwargs):
        super().__init__(**kwargs)
        self.rates = [check_float("keep_rate", r, 0, 1) for r in ([keep_rate] if isinstance(keep_rate, (int, float))
                                                                    else keep_rate)]

    def decide(self, run: engine.Run, members: list[int], index: torch.Tensor, view: torch.Tensor | None) -> Decision:
        rates = self.rates * len(run.seeds) if len(self.rates) == 1 else self.rates
        p = torch.tensor([[rates[i]] for i in members], device=index.device).expand(index.shape)
        return torch.stack([torch.rand(index.shape[1], generator=self.generators[i], device=index.device)
                            for i in members]) < p, p


class SelfPaced(KeepDrop):
    """Self-paced learning: keep the examples whose loss −log p_y is under λ_t, growing linearly from `start` to `end`
    (nats) over the run (an untrained student's losses are near ln C: a start under it starves whole classes)."""

    looks = True

    def __init__(self, start: float, end: float, **kwargs):
        super().__init__(**kwargs)
        self.start, self.end = check_float("start", start, 0), check_float("end", end, start)

    def decide(self, run: engine.Run, members: list[int], index: torch.Tensor, view: torch.Tensor | None) -> Decision:
        frac = min(run.step / max(run.config.total_steps - 1, 1), 1.0)
        keep = view[..., -2] < self.start + (self.end - self.start) * frac
        return keep, keep.float()


class Oracle(KeepDrop):
    """Drop exactly the corrupted examples (`splits.train.corrupted`): the upper reference under label noise."""

    def decide(self, run: engine.Run, members: list[int], index: torch.Tensor, view: torch.Tensor | None) -> Decision:
        keep = ~run.splits.train.corrupted[index]
        return keep, keep.float()


class TeacherPolicy(KeepDrop):
    """An L2T teacher's decisions: p(keep) = teacher(g(s)); keep when p ≥ 0.5, or sampled (sample=True, from each
    member's generator). collect=True keeps every decision's (g(s), keep) per member, for REINFORCE."""

    looks = True

    def __init__(self, teacher: Teacher, *, sample: bool = False, collect: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.teacher, self.sample, self.collect, self.decisions = teacher, sample, collect, {}

    def _bind(self, run: engine.Run) -> None:
        if self.run is None:
            self.teacher.to(run.device)
        super()._bind(run)

    def decide(self, run: engine.Run, members: list[int], index: torch.Tensor, view: torch.Tensor | None) -> Decision:
        with torch.no_grad():
            p = self.teacher(view)
        keep = p >= 0.5 if not self.sample else torch.stack(
            [torch.rand(index.shape[1], generator=self.generators[i], device=p.device) for i in members]) < p
        for j, i in enumerate(members if self.collect else ()):
            self.decisions.setdefault(i, []).append((view[j], keep[j]))
        return keep, p
