"""The engine: THE student loop. Every student in the lab trains here.

A `Run` trains S students (one per seed; one batched model where the architecture allows it, `labkit.population`)
for `config.total_steps` steps: batches drawn on the device, augmentation when `splits.augment`, the optimizer and
its schedule, evaluations, the non-finite guard, a Trace per member, checkpoint/resume. A method plugs in through
`Hooks` (as minGPT's Trainer callbacks; CurML's small algorithm interface): `select` (the batch policy),
`objective` (the loss, per example [S, B] or per member [S]), `after_step`, `after_eval`. Member i's streams come
from `seeds.derive(seeds[i], *role, ...)`: the same seed and role give the same student in every method, and a
teacher's training students (role "teach") share no stream with deployment students ("deploy").
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from . import checkpoint
from . import seeds as seeding
from .checks import check_int
from .data import IndexStream, Splits, TextSplits, WindowStream, augment_batch, batchify
from .population import Looped, Population, population
from .student import PASSES, StudentConfig, confusion, cross_entropy, evaluate_text, predict
from .trace import Trace, progress

CHECKPOINT_FILE = "engine.pt"


@dataclass
class Batch:
    """One step's training examples for every member: x [S, B, ...], y [S, B]; `index` [S, B] into splits.train;
    `weight` [S, B] per-example weights summing to 1 per member (None: the mean); `restart` [S] (text streams:
    the recurrent state resets)."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    restart: torch.Tensor | None = None


class Hooks:
    """How a method shapes its students' training. Override what you need; the defaults are plain cross-entropy
    on the batches the streams give. `state_dict` / `load_state_dict` carry the hooks' own state through a
    checkpoint (tensors, numbers, strings, lists and dicts of them)."""

    def select(self, run: "Run", step: int) -> Batch:
        return run.draw()

    def objective(self, logits: torch.Tensor, batch: Batch, step: int) -> torch.Tensor:
        return cross_entropy(logits, batch.y)

    def after_step(self, run: "Run", step: int, loss: torch.Tensor) -> None:
        pass

    def after_eval(self, run: "Run", step: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Run:
    """S students (one per seed) in training: the state of one pass of the loop. `train` drives it; a method
    that interleaves several runs (LoT: the deployed model and its imitators) calls `step` itself.

    splits: Splits (images) or TextSplits (a bptt window stream per member). role: the students' role
    (`seeds.DEPLOY`, ("teach", "episode", 3), ...). Members with the same seed are the same student (same
    initial weights and batch order: common random numbers, as L2T's episode groups use). students: a Population
    (or one nn.Module) to train in place instead of building the config's model from the seeds.
    """

    def __init__(self, splits: Splits | TextSplits, config: StudentConfig, seeds: Sequence[int], *,
                 role: str | tuple = seeding.DEPLOY, hooks: Hooks | None = None,
                 students: Population | nn.Module | None = None):
        self.config = config.check()
        self.seeds = seeding.check_seeds("seeds", seeds, distinct=False)
        self.role = (role,) if isinstance(role, str) else tuple(role)
        self.splits, self.hooks = splits, hooks or Hooks()
        self.text = isinstance(splits, TextSplits)
        self.device = splits.device
        self.students = self._students(students)
        S, n = len(self.seeds), self.config.total_steps
        if self.students.size != S:
            raise ValueError(f"students has {self.students.size} members for {S} seeds")
        self.optimizer = self._optimizer()
        self.lr_mult = [1.0] * S
        self.streams = self._streams()
        self.traces = [Trace(config=dict(asdict(self.config), seed=s, role=list(self.role),
                                         dataset=getattr(splits, "name", "custom"), device=str(self.device)))
                       for s in self.seeds]
        self.step = 0
        self.losses = torch.zeros(S, n, device=self.device)
        self.alive = [True] * S
        self.ended_at: list[int | None] = [None] * S
        self.diverged_at: list[int | None] = [None] * S
        self.first_loss: torch.Tensor | None = None
        self.best_dev = [math.inf] * S
        self._last_examples = 0  # examples of the last forward, counted as backward passes by `update`
        self._dropout = _has_dropout(self.students)

    # ------------------------------------------------------------------ set-up
    def stream_seed(self, i: int, *what) -> int:
        """The derived seed of member i's stream `what` ("init", "batches", "augment", ...)."""
        return seeding.derive(self.seeds[i], *self.role, *what)

    def _students(self, given) -> Population:
        if given is not None:
            return given if isinstance(given, Population) else Looped([given.to(self.device)], self._example_dims())
        c = self.config
        shape, classes = (None, self.splits.num_tokens) if self.text else (self.splits.in_shape,
                                                                           self.splits.num_classes)
        # per-member learning rates (plateau) need members of their own; text models loop anyway
        batched = False if (self.text or c.schedule == "plateau") else None
        return population(c.model, shape, classes, [self.stream_seed(i, "init") for i in range(len(self.seeds))],
                          device=self.device, batched=batched, **c.model_kwargs)

    def _example_dims(self) -> int:
        return 0 if self.text else len(self.splits.in_shape)

    def _optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        if c.schedule == "plateau":
            if not isinstance(self.students, Looped):
                raise ValueError("schedule='plateau' needs members of their own: build the students unbatched")
            params = [{"params": list(m.parameters())} for m in self.students.members]
        else:
            params = [{"params": list(self.students.parameters())}]
        if c.optimizer == "adam":
            return torch.optim.Adam(params, lr=c.lr_at(0), weight_decay=c.weight_decay)
        return torch.optim.SGD(params, lr=c.lr_at(0), momentum=c.momentum, weight_decay=c.weight_decay,
                               nesterov=c.nesterov and c.momentum > 0)

    def _streams(self) -> list:
        c = self.config
        if self.text:
            train = batchify(self.splits.train, c.batch_size)
            windows = (train.size(0) - 1) // c.bptt
            return [WindowStream(train, c.bptt, offset=self.stream_seed(i, "offset") % max(windows, 1))
                    for i in range(len(self.seeds))]
        check_int("batch_size", c.batch_size, 1, len(self.splits.train))
        return [IndexStream(len(self.splits.train), c.batch_size, self.stream_seed(i, "batches"), self.device)
                for i in range(len(self.seeds))]

    # ------------------------------------------------------------------ one step
    def draw(self) -> Batch:
        """The next batch of every member's own stream."""
        if self.text:
            windows = [next(s) for s in self.streams]
            return Batch(torch.stack([w[0] for w in windows]), torch.stack([w[1] for w in windows]).flatten(1),
                         restart=torch.tensor([w[2] for w in windows]))
        return self.batch_of(torch.stack([next(s) for s in self.streams]))

    def draw_ahead(self, k: int) -> list[Batch]:
        """The next k batches, as k steps would draw them, counted as k steps that the students take outside the
        engine: `labkit.meta` takes them functionally while it differentiates through them (DLF and DLN teacher
        training). The engine's own optimizer does not move."""
        out = []
        for _ in range(k):
            out.append(self.draw())
            self.step += 1
        return out

    def batch_of(self, index: torch.Tensor, weight: torch.Tensor | None = None) -> Batch:
        """The training examples at `index` [S, B] (augmented per member when `splits.augment`)."""
        x, y = self.splits.train.x[index], self.splits.train.y[index]
        if self.splits.augment:
            x = torch.stack([augment_batch(x[i], seeding.generator(self.seeds[i], *self.role, "augment", self.step,
                                                                   device=self.device)) for i in range(len(x))])
        return Batch(x, y, index, weight)

    def forward(self, x: torch.Tensor, restart: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [S, B, C] of every member on x [S, B, ...] (or [B, ...] shared), in training mode."""
        kwargs = {}
        if isinstance(self.students, Looped):
            if self.students.stateful:
                kwargs["restart"] = restart
            if self._dropout:
                kwargs["dropout_seeds"] = [self.stream_seed(i, "dropout", self.step) for i in range(len(self.seeds))]
        if not self.students.training:  # train() walks every module: only when an evaluation switched it off
            self.students.train()
        self._last_examples = self._examples(x)  # counted as backward passes by the `update` that follows
        PASSES.add(forward=self._last_examples)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.config.bf16 and self.device.type == "cuda"):
            return self.students(x, **kwargs)

    def run_steps(self, n: int, *, after: Callable[[], None] | None = None, progress_bar: bool | None = None,
                  desc: str = "") -> None:
        """Take up to n steps of the loop (an evaluation every `config.eval_every` steps, then `after()`), fewer
        if every member ends; the run stays open (`finish` closes it)."""
        total, every = self.config.total_steps, self.config.evaluations
        end = min(self.step + n, total)
        bar = progress(total=end, desc=desc or self.config.model, enabled=progress_bar, initial=self.step)
        while self.step < end and any(self.alive):
            self.step_once()
            bar.update()
            if every and self.step % every == 0 and self.step < total:
                self.evaluate()
            if after is not None and self.step < total:
                after()
        bar.close()

    def _examples(self, x: torch.Tensor) -> int:
        """Example-passes of a forward on x, summed over the members (a text example is one token)."""
        batch_dims = 2 if self.text else 1
        shared = x.dim() == self.students.example_dims + batch_dims
        per_member = x.shape[:batch_dims].numel() if shared else x.shape[1:1 + batch_dims].numel()
        return per_member * self.students.size

    def step_once(self) -> torch.Tensor:
        """One training step of every member: select, forward, objective, update, after_step. Returns loss [S]."""
        t = self.step
        batch = self.hooks.select(self, t)
        logits = self.forward(batch.x, batch.restart)
        per = cross_entropy(logits, batch.y) if t < self.config.pretrain_steps else \
            self.hooks.objective(logits, batch, t)
        loss = reduce(per, batch.weight)
        self.update(loss)
        self.hooks.after_step(self, t, loss.detach())
        return loss

    def update(self, loss: torch.Tensor) -> None:
        """One optimizer step on the members' losses [S] (each member's gradient is its own loss's), after the
        non-finite guard; records the losses and advances `step`."""
        t, value = self.step, loss.detach().float()
        self.losses[:, t] = value
        if self.first_loss is None:
            self.first_loss = value.abs().clamp(min=1.0)
            self._bad_step = torch.full_like(value, -1)
        bad = ~torch.isfinite(value) | (value.abs() > self.config.diverge_factor * self.first_loss)
        self._bad_step = torch.where(bad & (self._bad_step < 0), torch.full_like(value, t + 1), self._bad_step)
        lr = self.config.lr_at(t)
        groups = self.optimizer.param_groups
        for i, group in enumerate(groups):
            group["lr"] = lr * (self.lr_mult[i] if len(groups) > 1 else 1.0)
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        PASSES.add(backward=self._last_examples)
        if self.config.clip is not None:
            self.students.clip_grad_norms_(self.config.clip)
        self.optimizer.step()
        self.step += 1
        if self.device.type != "cuda" or self.step % 25 == 0:  # a CPU check is free; on a GPU it syncs
            self.check_guard()

    def check_guard(self) -> None:
        """Members whose loss went non-finite or past the bound since the last check stop, as diverged."""
        if self.first_loss is None:
            return
        for i in torch.nonzero(self._bad_step > 0).flatten().tolist():
            if self.diverged_at[i] is None and self.alive[i]:
                step = int(self._bad_step[i])
                self._end(i, step - 1)
                self.diverged_at[i] = step
                value = float(self.losses[i, step - 1])
                tr = self.traces[i]
                tr.truncate(step - 1)
                tr.metrics.update(diverged_at_step=step, dev_acc=None, dev_loss=None, test_acc=None, test_loss=None)
                tr.note(f"diverged at step {step}: training loss {value:.4g} (bound: non-finite or over "
                        f"{self.config.diverge_factor:g} x max(1, |first loss|) = {float(self.config.diverge_factor * self.first_loss[i]):.4g}); "
                        f"the run stopped there and the steps after it are not logged; try a smaller lr "
                        f"(lr={self.config.lr})")

    def _end(self, i: int, steps_done: int) -> None:
        self.alive[i] = False
        self.ended_at[i] = steps_done

    def stop(self, i: int, why: str) -> None:
        """End member i now, not diverged (e.g. L2T: τ reached): its final metrics are measured at this step."""
        if not self.alive[i]:
            return
        self._end(i, self.step)
        self.traces[i].note(f"stopped at step {self.step}: {why}")
        self._final_metrics([i])

    # ------------------------------------------------------------------ evaluation and the end
    def measure(self, split_name: str, size: int | None = None,
                members: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """{"loss": [S], "acc": [S]} (text: {"loss", "ppl"}) of the members listed (None: all; the others' entries
        are NaN) on the first `size` examples (None: all) of splits.<split_name>, in eval mode."""
        S, split, c = len(self.seeds), getattr(self.splits, split_name), self.config
        which, split = list(range(S)) if members is None else list(members), split if size is None else split[:size]
        if self.text:
            loss = torch.tensor([evaluate_text(self.students.member(i), split, c.bptt)["loss"] for i in which])
            values = {"loss": loss, "ppl": loss.exp()}
        else:
            logits = predict(self.students, split.x, members=None if which == list(range(S)) else which)
            loss = cross_entropy(logits, split.y.expand(len(logits), -1)).mean(1)
            values = {"loss": loss.cpu(), "acc": (logits.argmax(-1) == split.y).float().mean(1).cpu()}
        return {k: torch.full((S,), math.nan).index_put_((torch.tensor(which),), v.float()) for k, v in values.items()}

    def evaluate(self) -> None:
        """Log dev (and, with eval_test, test) metrics of every live member at this step; then after_eval."""
        self.check_guard()
        live = [i for i, a in enumerate(self.alive) if a]
        if not live:
            return
        c = self.config
        results = {f"dev_{k}": v for k, v in self.measure("dev", c.eval_size, live).items()}
        if c.eval_test and (c.test_every is None or self.step % c.test_every == 0):
            results.update({f"test_{k}": v for k, v in self.measure("test", c.eval_size, live).items()})
        for i in live:
            lr = c.lr_at(max(self.step - 1, 0)) * self.lr_mult[i]
            self.traces[i].log(self.step, lr=lr, **{k: float(v[i]) for k, v in results.items()})
            if c.schedule == "plateau" and self.step > c.pretrain_steps:
                dev = float(results["dev_loss"][i])
                if dev >= self.best_dev[i]:
                    self.lr_mult[i] *= 0.25
                self.best_dev[i] = min(self.best_dev[i], dev)
        self._record_confusion()
        self.hooks.after_eval(self, self.step)

    def _record_confusion(self) -> None:
        if self.config.record_confusion and self.alive[0] and not self.text:
            self.traces[0].log_array(self.step, confusion=confusion(self.students.member(0), self.splits.dev,
                                                                    self.splits.num_classes))

    def _final_metrics(self, members: list[int]) -> None:
        dev, test = self.measure("dev", members=members), self.measure("test", members=members)
        for i in members:
            tr, done = self.traces[i], self.step
            tr.log(done, **{f"dev_{k}": float(v[i]) for k, v in dev.items()})
            tr.metrics.update({f"dev_{k}": float(v[i]) for k, v in dev.items()})
            tr.metrics.update({f"test_{k}": float(v[i]) for k, v in test.items()})
            tr.metrics.update(steps_done=done, diverged_at_step=None)
            if not self.text:
                tr.metrics["examples_seen"] = done * self.config.batch_size

    def finish(self) -> list[Trace]:
        """Final metrics of the members still training (whole dev and test splits) and every member's loss
        series up to where it ended; returns the Traces, one per member."""
        self.check_guard()
        live = [i for i, a in enumerate(self.alive) if a]
        if live:
            self._record_confusion()
            self._final_metrics(live)
        losses = self.losses.cpu()
        for i, tr in enumerate(self.traces):
            end = self.ended_at[i] if self.ended_at[i] is not None else self.step
            if end and "loss" not in tr.scalars:
                tr.log_series("loss", range(1, end + 1), losses[i, :end])
        return self.traces

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue bit for bit (CPU): tensors, numbers and lists only."""
        return dict(config=asdict(self.config), seeds=list(self.seeds), role=list(self.role), step=self.step,
                    students=self.students.state_dict(), optimizer=self.optimizer.state_dict(),
                    lr_mult=list(self.lr_mult), best_dev=list(self.best_dev),
                    streams=[s.position for s in self.streams], losses=self.losses[:, :self.step].cpu(),
                    alive=list(self.alive), ended_at=list(self.ended_at), diverged_at=list(self.diverged_at),
                    first_loss=self.first_loss, bad_step=getattr(self, "_bad_step", None),
                    traces=[checkpoint.trace_tensor(t) for t in self.traces],
                    hooks=self.hooks.state_dict())

    def load_state_dict(self, state: dict) -> None:
        mine = dict(config=asdict(self.config), seeds=list(self.seeds), role=list(self.role))
        checkpoint.check_same({k: state[k] for k in mine}, mine, "the checkpoint")
        self.students.load_state_dict(state["students"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.lr_mult, self.best_dev = state["step"], list(state["lr_mult"]), list(state["best_dev"])
        for s, p in zip(self.streams, state["streams"]):
            s.position = p
        self.losses[:, :self.step] = state["losses"].to(self.device)
        self.alive, self.ended_at = list(state["alive"]), list(state["ended_at"])
        self.diverged_at, self.first_loss = list(state["diverged_at"]), state["first_loss"]
        if state["bad_step"] is not None:
            self._bad_step = state["bad_step"].to(self.device)
            self.first_loss = self.first_loss.to(self.device)
        self.traces = [checkpoint.trace_from_tensor(t) for t in state["traces"]]
        self.hooks.load_state_dict(state["hooks"])


def reduce(per: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """A member's loss [S] from per-example losses [S, B]: the mean, or Σ weight·loss when weights are given."""
    if per.dim() == 1:
        if weight is not None:
            raise ValueError("per-example weights need a per-example objective ([S, B]), not one loss per member")
        return per
    return per.mean(1) if weight is None else (per * weight).sum(1)


def _has_dropout(module: nn.Module) -> bool:
    return any((isinstance(m, nn.Dropout) and m.p > 0) or (isinstance(m, nn.RNNBase) and m.dropout > 0)
               for m in module.modules())


# checkpoints are written and read by labkit.checkpoint; these names stay for the methods' loops
save_checkpoint, load_checkpoint = checkpoint.save, checkpoint.load


# ---------------------------------------------------------------------- the loop

def train(run: Run, *, checkpoint_dir: str | Path | None = None, checkpoint_every: int = 1000,
          progress_bar: bool | None = None, desc: str = "") -> list[Trace]:
    """Drive `run` to its end: a step of every member, an evaluation every `config.eval_every` steps, a
    checkpoint every `checkpoint_every` steps into `checkpoint_dir` (resumed from when it holds one of the same
    run; deleted at the end). Stops early when every member has ended. Returns the Traces, one per member."""
    path = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    if path is not None and path.exists():
        run.load_state_dict(load_checkpoint(path, run.device))
    check_int("checkpoint_every", checkpoint_every, 1)

    def save() -> None:
        if path is not None and run.step % checkpoint_every == 0:
            save_checkpoint(path, run.state_dict())

    run.run_steps(run.config.total_steps - run.step, after=save, progress_bar=progress_bar, desc=desc)
    traces = run.finish()
    if path is not None:
        path.unlink(missing_ok=True)
    return traces


def fit(model: nn.Module | str, splits: Splits | TextSplits, config: StudentConfig | None = None, *, seed: int = 0,
        hooks: Hooks | None = None, checkpoint_dir: str | Path | None = None, progress_bar: bool | None = None,
        **overrides) -> Trace:
    """Train one student with cross-entropy (or `hooks`) through the engine; return its Trace.

    model: an nn.Module, trained in place, or a model name (built from the seed contract: `seed`/"deploy"/"init").
    config: a StudentConfig; keyword `overrides` replace its fields (`fit(model, splits, steps=2000, lr=0.1)`).
    The batch order is the stream `seed`/"deploy"/"batches": the deployment student of that seed in every method.
    """
    from dataclasses import replace

    config = replace(config or StudentConfig(), **overrides)
    if isinstance(model, str):
        config, model = replace(config, model=model), None
    else:
        model = model.to(splits.device)
    run = Run(splits, config, [seed], hooks=hooks, students=model)
    return train(run, checkpoint_dir=checkpoint_dir, progress_bar=progress_bar, desc="fit")[0]
