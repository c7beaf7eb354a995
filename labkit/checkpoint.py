"""Checkpoints: written atomically, read with `torch.load(weights_only=True)` (tensors, numbers, strings and
containers only: a checkpoint cannot run code). The engine's `Run.state_dict()` and every teacher-training loop
store their state through here."""
from __future__ import annotations

import io
from pathlib import Path

import torch

from .trace import Trace, atomic_write_bytes


def save(path: str | Path, state: dict) -> None:
    """Write a checkpoint atomically: a killed process leaves the old file or the whole new one (no fsync: this
    guards against a killed process, not a power cut)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue(), sync=False)


def load(path: str | Path, device: torch.device | str = "cpu") -> dict:
    return torch.load(path, map_location=device, weights_only=True)


def plain(value):
    """Tuples as lists, recursively: a config compares equal after a round trip through a checkpoint."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def check_same(saved: dict, current: dict, path: str | Path) -> None:
    """Refuse to resume from a checkpoint of another run (its config differs), naming the file."""
    if plain(saved) != plain(current):
        raise ValueError(f"{path} holds another run (its config is {saved}; this run's is {current}): use another "
                         f"checkpoint_dir or delete the checkpoint")


def trace_tensor(trace: Trace) -> torch.Tensor:
    """A Trace as a uint8 tensor (its .npz bytes), so a checkpoint can hold it."""
    return torch.frombuffer(bytearray(trace.to_bytes()), dtype=torch.uint8)


def trace_from_tensor(t: torch.Tensor) -> Trace:
    return Trace.from_bytes(t.numpy().tobytes())
