"""Trace: the one record every run writes and every view reads.

A Trace holds
- `config`: the run's parameters (JSON-able),
- scalars: named series of (step, value), e.g. "loss", "dev_acc",
- arrays: named series of (step, ndarray), e.g. "phi" [C, C] per step, "keep_mask" [B] per step,
- `metrics`: the final numbers, and `messages`: what went wrong or was skipped, in words.

`save(dir)` writes one file, `trace.npz`, atomically; `Trace.load(dir)` reads it back exactly.
"""
from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TRACE_FILE = "trace.npz"


def _torch():
    """torch where this process imported it, else None. Why not import it: a tensor can only exist where torch was
    imported, and the runner's process (`labkit reproduce`, `labkit report`) writes files without ever needing it."""
    return sys.modules.get("torch")


def atomic_write_bytes(path: str | Path, data: bytes, *, sync: bool = True) -> None:
    """Write `data` to `path` so that a reader sees the old file or the whole new one, never a part.
    sync=False skips the fsync: still safe against a killed process, not against a power cut (checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def progress(iterable=None, *, total: int | None = None, desc: str = "", enabled: bool | None = None,
             initial: int = 0):
    """`tqdm.auto` progress bar of a run, off when the `CI` environment variable is set (or enabled=False); here
    beside the Trace, not in the engine, so that the runner's process shows one without importing torch."""
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = not os.environ.get("CI")
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False, initial=initial)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomic JSON write (used for metrics.json)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n").encode())


def _jsonable(value: Any) -> Any:
    torch = _torch()
    if torch is not None and isinstance(value, torch.Tensor):
        value = _to_numpy(value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()   # a Python scalar for a 0-d array or a numpy scalar
    if isinstance(value, Path) or (torch is not None and isinstance(value, torch.device)):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _to_numpy(value: Any) -> np.ndarray:
    torch = _torch()
    if torch is not None and isinstance(value, torch.Tensor):
        value = value.detach()
        if value.dtype == torch.bfloat16:
            value = value.float()
        return value.cpu().numpy()
    return np.asarray(value)


@dataclass
class Trace:
    config: dict = field(default_factory=dict)
    scalars: dict[str, dict[str, list]] = field(default_factory=dict)  # name -> {"step": [...], "value": [...]}
    arrays: dict[str, dict[str, list]] = field(default_factory=dict)   # name -> {"step": [...], "value": [ndarray]}
    metrics: dict = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ writing
    def log(self, step: int, **values: float) -> None:
        """Record scalars at `step`: trace.log(100, loss=0.3, dev_acc=0.97)."""
        for name, value in values.items():
            series = self.scalars.setdefault(name, {"step": [], "value": []})
            series["step"].append(int(step))
            series["value"].append(float(value))

    def log_series(self, name: str, steps, values) -> None:
        """Record a whole scalar series at once (e.g. per-step losses kept as a tensor during training)."""
        series = self.scalars.setdefault(name, {"step": [], "value": []})
        series["step"].extend(int(s) for s in _to_numpy(steps).ravel())
        series["value"].extend(float(v) for v in _to_numpy(values).ravel())

    def log_array(self, step: int, **arrays: Any) -> None:
        """Record arrays at `step`: trace.log_array(t, phi=phi_t) with phi_t [C, C]."""
        for name, value in arrays.items():
            series = self.arrays.setdefault(name, {"step": [], "value": []})
            series["step"].append(int(step))
            series["value"].append(_to_numpy(value).copy())

    def note(self, message: str) -> None:
        """Record, in words, something a reader must know (a skipped update, a diverged episode)."""
        self.messages.append(str(message))

    # ------------------------------------------------------------------ reading
    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps [T] int64, values [T] float64) of a scalar series."""
        if name not in self.scalars:
            raise KeyError(f"no scalar {name!r} in this trace; it has {sorted(self.scalars)}")
        s = self.scalars[name]
        return np.asarray(s["step"], dtype=np.int64), np.asarray(s["value"], dtype=np.float64)

    def stack(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps [T], values [T, ...]) of an array series whose entries share one shape."""
        if name not in self.arrays:
            raise KeyError(f"no array {name!r} in this trace; it has {sorted(self.arrays)}")
        s = self.arrays[name]
        return np.asarray(s["step"], dtype=np.int64), np.stack(s["value"]) if s["value"] else np.empty((0,))

    def concat(self, name: str) -> np.ndarray:
        """[N] float64: the entries of an array series of varying length [n_t] (e.g. one per shown example),
        concatenated over steps."""
        if name not in self.arrays:
            raise KeyError(f"no array {name!r} in this trace; it has {sorted(self.arrays)}")
        return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in self.arrays[name]["value"]] or
                              [np.empty(0)])

    def truncate(self, step: int) -> None:
        """Forget every entry logged after `step` (a diverged run keeps nothing past its last good step)."""
        for store in (self.scalars, self.arrays):
            for s in store.values():
                keep = [i for i, t in enumerate(s["step"]) if t <= step]
                s["step"], s["value"] = [s["step"][i] for i in keep], [s["value"][i] for i in keep]

    @property
    def diverged(self) -> bool:
        """True when the run stopped on a non-finite or exploding loss (metrics["diverged_at_step"])."""
        return self.metrics.get("diverged_at_step") is not None

    def last(self, name: str) -> float:
        return self.scalars[name]["value"][-1]

    # ------------------------------------------------------------------ files
    def to_bytes(self) -> bytes:
        """The whole trace as the bytes of one compressed .npz (what `save` writes; checkpoints embed it)."""
        meta = {"config": self.config, "metrics": self.metrics, "messages": self.messages, "scalars": self.scalars,
                "arrays": {name: {"step": s["step"], "count": len(s["value"])} for name, s in self.arrays.items()}}
        payload = {"__meta__": np.frombuffer(json.dumps(meta, default=_jsonable).encode(), dtype=np.uint8)}
        for name, s in self.arrays.items():
            for i, value in enumerate(s["value"]):
                payload[f"{name}/{i}"] = value
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **payload)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Trace":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls._from_npz(z)

    @classmethod
    def _from_npz(cls, z) -> "Trace":
        meta = json.loads(z["__meta__"].tobytes().decode())
        arrays = {name: {"step": s["step"], "value": [z[f"{name}/{i}"] for i in range(s["count"])]}
                  for name, s in meta["arrays"].items()}
        return cls(config=meta["config"], scalars=meta["scalars"], arrays=arrays, metrics=meta["metrics"],
                   messages=meta["messages"])

    def save(self, directory: str | Path) -> Path:
        """Write `<directory>/trace.npz` atomically; returns its path."""
        path = Path(directory) / TRACE_FILE
        atomic_write_bytes(path, self.to_bytes())
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "Trace":
        path = Path(directory)
        path = path if path.suffix == ".npz" else path / TRACE_FILE
        with np.load(path, allow_pickle=False) as z:
            return cls._from_npz(z)


def metric_values(results: dict[str, list[Trace]], key: str) -> dict[str, list]:
    """{method: [trace.metrics[key] per seed]} of a method comparison (None where a run diverged or lacks it)."""
    return {name: [t.metrics.get(key) for t in traces] for name, traces in results.items()}
