"""The lab's checks of parameters: each raises a ValueError that names the parameter, its value and what is
allowed. NaN and inf are caught here (a comparison such as `lr <= 0` is False for NaN and lets it through)."""
from __future__ import annotations

import math
from typing import Iterable


def check_int(name: str, value, low: int, high: int | None = None) -> int:
    """An integer in [low, high] (high None: no upper bound); bools and floats are refused."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name}={value!r} is not allowed: it must be an integer {allowed}")
    return value


def check_float(name: str, value, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number in the interval given by low/high (open ends with low_open/high_open)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        left = "" if low is None else f"{'>' if low_open else '>='} {low}"
        right = "" if high is None else f"{'<' if high_open else '<='} {high}"
        allowed = " and ".join(p for p in (left, right) if p)
        raise ValueError(f"{name}={value!r} is not allowed: it must be a finite number" +
                         (f" {allowed}" if allowed else ""))
    return float(value)


def check_choice(name: str, value, choices: Iterable) -> object:
    """One of `choices`."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not allowed: choose one of {', '.join(map(repr, choices))}")
    return value
