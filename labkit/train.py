"""fit(), evaluate(), seeding, device choice, progress bars.

`fit` is a plain SGD loop over device-resident tensors: a batch is an index permutation slice,
there is no DataLoader, and the per-step loss stays on the device until the run ends (no sync per step).
"""
from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import Split, Splits, check_int, augment_batch, batches, resolve_device
from .trace import Trace, atomic_write_bytes

SCHEDULES = ("constant", "cosine", "step")
CHECKPOINT_FILE = "fit-checkpoint.pt"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a run is a pure function of its seed."""
    check_int("seed", seed, 0)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def progress(iterable, *, total: int | None = None, desc: str = "", enabled: bool | None = None):
    """`tqdm.auto` progress bar, off when the `CI` environment variable is set (or enabled=False)."""
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = not os.environ.get("CI")
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Logits [N, C] for inputs x [N, ...], in eval mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(chunk) for chunk in x.split(batch_size)])
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, split: Split, batch_size: int = 4096) -> dict[str, float]:
    """{"loss": mean cross-entropy, "acc": accuracy} of `model` on a split."""
    logits = predict(model, split.x, batch_size)
    return {"loss": F.cross_entropy(logits, split.y).item(),
            "acc": (logits.argmax(1) == split.y).float().mean().item()}


def confusion(model: nn.Module, split: Split, num_classes: int) -> torch.Tensor:
    """Row-normalised confusion matrix [C, C]: entry (i, j) = share of class-i examples predicted as j."""
    pred = predict(model, split.x).argmax(1)
    counts = torch.bincount(split.y * num_classes + pred, minlength=num_classes ** 2).view(num_classes, num_classes)
    return counts.float() / counts.sum(1, keepdim=True).clamp_min(1)


def make_schedule(optimizer: torch.optim.Optimizer, schedule: str, steps: int):
    """constant; cosine (to 0 over `steps`); step (x0.1 at 50 % and 75 % of `steps`, He et al.)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is not allowed: choose one of {', '.join(SCHEDULES)}")
    factor = {
        "constant": lambda t: 1.0,
        "cosine": lambda t: 0.5 * (1 + np.cos(np.pi * min(t, steps) / steps)),
        "step": lambda t: 0.1 ** ((t >= steps // 2) + (t >= 3 * steps // 4)),
    }[schedule]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit(model: nn.Module, splits: Splits, *, steps: int, batch_size: int = 128, lr: float = 0.1,
        momentum: float = 0.9, weight_decay: float = 0.0, nesterov: bool = False, schedule: str = "constant",
        seed: int = 0, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        eval_every: int | None = None, record_confusion: bool = False, bf16: bool = False,
        progress_bar: bool | None = None, checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 1000) -> Trace:
    """Train `model` in place with SGD on `splits.train` for `steps` steps; return its Trace.

    loss_fn(logits [B, C], y [B]) -> scalar; cross-entropy by default.
    eval_every: dev evaluation period in steps (default: 10 evaluations per run; 0: only at the end).
    record_confusion: also record the dev confusion matrix [C, C] at each evaluation ("confusion").
    bf16: autocast to bfloat16 on CUDA (ignored on the CPU, with a note in the Trace).
    checkpoint_dir: save model, optimizer and trace every `checkpoint_every` steps, and resume from there.
    The Trace has scalars "loss" (every step), "dev_loss" and "dev_acc", "lr"; metrics test_acc, test_loss, dev_acc.
    """
    check_int("steps", steps, 1)
    check_int("batch_size", batch_size, 1, len(splits.train))
    check_int("seed", seed, 0)
    if lr <= 0:
        raise ValueError(f"lr={lr!r} is not allowed: it must be > 0")
    if eval_every is None:
        eval_every = max(steps // 10, 1)
    check_int("eval_every", eval_every, 0)
    device = splits.device
    model.to(device).train()
    loss_fn = loss_fn or F.cross_entropy
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay,
                                nesterov=nesterov)
    scheduler = make_schedule(optimizer, schedule, steps)
    trace = Trace(config=dict(steps=steps, batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
                              nesterov=nesterov, schedule=schedule, seed=seed, dataset=splits.name,
                              model=type(model).__name__, bf16=bf16, device=str(device)))
    use_bf16 = bf16 and device.type == "cuda"
    if bf16 and not use_bf16:
        trace.note("bf16 autocast asked for on the CPU: ignored, trained in float32")
    losses = torch.zeros(steps, device=device)
    start = 0
    ckpt = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        if state["config"] != trace.config:
            raise ValueError(f"checkpoint_dir={str(checkpoint_dir)!r} holds a run with other parameters "
                             f"({state['config']}); use another folder or delete {ckpt}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        losses[: state["step"]] = state["losses"].to(device)
        trace = Trace(**state["trace"])
        start = state["step"]
    augment_gen = torch.Generator(device=device) if splits.augment else None
    stream = batches(len(splits.train), batch_size, seed=seed, device=device, start=start)
    for step in progress(range(start, steps), total=steps, desc="fit", enabled=progress_bar):
        index = next(stream)
        x, y = splits.train.x[index], splits.train.y[index]
        if augment_gen is not None:
            augment_gen.manual_seed(seed * 100_003 + step)  # per-step seed: resumable, order-independent
            x = augment_batch(x, augment_gen)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses[step] = loss.detach()
        done = step + 1
        if eval_every and done % eval_every == 0 and done < steps:
            _log_dev(trace, model, splits, done, record_confusion, scheduler.get_last_lr()[0])
        if ckpt is not None and checkpoint_every and done % checkpoint_every == 0 and done < steps:
            _save_checkpoint(ckpt, model, optimizer, scheduler, trace, losses, done)
    _log_dev(trace, model, splits, steps, record_confusion, scheduler.get_last_lr()[0])
    trace.log_series("loss", range(1, steps + 1), losses)
    test = evaluate(model, splits.test)
    trace.metrics.update(test_acc=test["acc"], test_loss=test["loss"], dev_acc=trace.last("dev_acc"),
                         dev_loss=trace.last("dev_loss"), steps=steps, examples_seen=steps * batch_size)
    if not np.isfinite(test["loss"]):
        trace.note(f"training diverged: test loss is {test['loss']}; try a smaller lr (lr={lr})")
    if ckpt is not None:
        ckpt.unlink(missing_ok=True)
    return trace


def _log_dev(trace: Trace, model: nn.Module, splits: Splits, step: int, record_confusion: bool, lr: float) -> None:
    dev = evaluate(model, splits.dev)
    trace.log(step, dev_loss=dev["loss"], dev_acc=dev["acc"], lr=lr)
    if record_confusion:
        trace.log_array(step, confusion=confusion(model, splits.dev, splits.num_classes))


def _save_checkpoint(path: Path, model, optimizer, scheduler, trace: Trace, losses: torch.Tensor, step: int) -> None:
    state = dict(model=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                 losses=losses[:step].cpu(), step=step, config=trace.config,
                 trace=dict(config=trace.config, scalars=trace.scalars, arrays=trace.arrays,
                            metrics=trace.metrics, messages=trace.messages))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())
