"""Statistics over seeds, one estimator everywhere: the mean with a 95 % Student-t interval, the *sample* std
(ddof = 1), and paired differences (method − baseline on the same seeds: same initial weights, same batches).

A method "helps" only where the interval of its paired difference excludes 0. Diverged runs (None values) are
left out of the numbers and counted, never averaged in.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

# two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile(df: int) -> float:
    """t_{0.975, df}: the table for df <= 30, then the Cornish-Fisher expansion around z = 1.96 (error < 1e-3)."""
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


@dataclass(frozen=True)
class Estimate:
    """mean ± half-width (95 % t-interval) over n values; `std` is the sample std; `excluded` counts the values
    left out (diverged runs, None)."""

    mean: float
    half_width: float
    std: float
    n: int
    excluded: int = 0

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def excludes_zero(self) -> bool:
        """The interval lies on one side of 0. With no spread at all (identical values) the t-interval has width 0
        and says nothing about the noise: then only a sign shared by at least 6 values counts (a two-sided sign
        test's p < 0.05)."""
        if self.n < 2:
            return False
        if self.std == 0:
            return self.n >= 6 and self.mean != 0
        return self.low > 0 or self.high < 0

    def format(self, digits: int = 2, scale: float = 1.0, unit: str = "", missing: str = "diverged") -> str:
        """'97.61 ± 0.12 % (n = 8)'; with n = 1, no interval is claimed; left-out values are counted as `missing`."""
        if self.n == 0:
            return "no value" + (f" ({self.excluded} {missing})" if self.excluded else "")
        m = f"{self.mean * scale:.{digits}f}"
        body = m if self.n < 2 else f"{m} ± {self.half_width * scale:.{digits}f}"
        extra = f", {self.excluded} {missing}" if self.excluded else ""
        return f"{body}{unit} (n = {self.n}{extra})"

    def as_dict(self) -> dict:
        return asdict(self)


def estimate(values: Sequence[float | None]) -> Estimate:
    """Mean, 95 % t-interval and sample std of `values`; None (a diverged run) is left out and counted."""
    kept = [float(v) for v in values if v is not None]
    if any(not math.isfinite(v) for v in kept):
        raise ValueError(f"values hold NaN or inf ({kept}): a diverged run is None, never a number")
    n, excluded = len(kept), len(values) - len(kept)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, excluded)
    mean = sum(kept) / n
    if n == 1:
        return Estimate(mean, math.nan, math.nan, 1, excluded)
    std = math.sqrt(sum((v - mean) ** 2 for v in kept) / (n - 1))
    return Estimate(mean, t_quantile(n - 1) * std / math.sqrt(n), std, n, excluded)


@dataclass(frozen=True)
class Paired:
    """method − baseline over the seeds where both have a value: the difference's estimate, and the number of
    seeds where the method is better (`higher_is_better` decides which sign is better)."""

    difference: Estimate
    wins: int
    losses: int
    ties: int
    higher_is_better: bool = True

    @property
    def helps(self) -> bool:
        d = self.difference
        return d.excludes_zero() and (d.mean > 0) == self.higher_is_better

    @property
    def hurts(self) -> bool:
        d = self.difference
        return d.excludes_zero() and (d.mean > 0) != self.higher_is_better

    def as_dict(self) -> dict:
        return dict(difference=self.difference.as_dict(), wins=self.wins, losses=self.losses, ties=self.ties,
                    higher_is_better=self.higher_is_better, helps=self.helps, hurts=self.hurts)


def paired(method: Sequence[float | None], baseline: Sequence[float | None], *,
           higher_is_better: bool = True) -> Paired:
    """Paired differences method[i] − baseline[i] (the same seed i); pairs with a None on either side are left
    out and counted in `difference.excluded`."""
    if len(method) != len(baseline):
        raise ValueError(f"method and baseline must have one value per seed: got {len(method)} and {len(baseline)}")
    pairs = [(a, b) for a, b in zip(method, baseline) if a is not None and b is not None]
    diffs = [a - b for a, b in pairs]
    est = estimate(diffs)
    est = Estimate(est.mean, est.half_width, est.std, est.n, len(method) - len(pairs))
    sign = 1 if higher_is_better else -1
    wins = sum(sign * d > 0 for d in diffs)
    losses = sum(sign * d < 0 for d in diffs)
    return Paired(est, wins, losses, len(diffs) - wins - losses, higher_is_better)


def verdict(name: str, baseline: str, p: Paired, *, scale: float = 100.0, unit: str = " points") -> str:
    """One honest sentence: does `name` help against `baseline` on these seeds?"""
    d = p.difference
    if d.n < 2:
        return f"{name} vs {baseline}: fewer than 2 paired seeds, no comparison can be made."
    what = ("helps" if p.helps else "hurts" if p.hurts else "does not separate from")
    diff = d.format(2, scale, unit)
    return (f"{name} {what} {baseline}: paired difference {diff}, 95 % interval "
            f"[{d.low * scale:+.2f}, {d.high * scale:+.2f}]; better on {p.wins} of {d.n} seeds"
            + ("" if what != "does not separate from" else " (the interval includes 0)") + ".")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (cells are escaped for '|')."""
    esc = [[str(c).replace("|", "\\|") for c in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in esc])


def summarize(values: dict[str, Sequence[float | None]], seeds: Sequence[int], *, baseline: str,
              higher_is_better: bool = True, missing: str = "diverged") -> dict:
    """The comparison every notebook and the report read: per method its per-seed values, their estimate and
    (for every method but the baseline) the paired difference to the baseline. values: method -> one value per
    seed (None: no value, for the reason `missing` names: "diverged", "not reached", ...)."""
    if baseline not in values:
        raise ValueError(f"baseline={baseline!r} is not one of the methods {list(values)}")
    for name, v in values.items():
        if len(v) != len(seeds):
            raise ValueError(f"{name} has {len(v)} values for {len(seeds)} seeds")
    base = list(values[baseline])
    methods = {name: dict(values=list(v), estimate=estimate(v).as_dict(),
                          paired=None if name == baseline else paired(v, base, higher_is_better=higher_is_better).as_dict())
               for name, v in values.items()}
    return dict(baseline=baseline, higher_is_better=higher_is_better, seeds=list(seeds), methods=methods,
                missing=missing)


def _estimate(d: dict) -> Estimate:
    return Estimate(**d)


def table(summary: dict, *, scale: float = 100.0, unit: str = " %", digits: int = 2,
          diff_unit: str = " points") -> str:
    """A Markdown table of a `summarize` result: mean ± 95 % interval per method, the paired difference to the
    baseline and the seeds it wins."""
    rows, missing = [], summary.get("missing", "diverged")
    for name, m in summary["methods"].items():
        est = _estimate(m["estimate"]).format(digits, scale, unit, missing)
        if m["paired"] is None:
            rows.append([name, est, "(baseline)", ""])
            continue
        p = m["paired"]
        d = _estimate(p["difference"])
        mark = " **helps**" if p["helps"] else " **hurts**" if p["hurts"] else ""
        rows.append([name, est, d.format(digits, scale, diff_unit, missing) + mark, f"{p['wins']} of {d.n}"])
    return markdown_table(["method", "mean ± 95 % interval", f"paired − {summary['baseline']}", "better on"], rows)


def verdicts(summary: dict, names: dict[str, str] | None = None, *, scale: float = 100.0,
             unit: str = " points") -> list[str]:
    """One `verdict` sentence per non-baseline method of a `summarize` result (names: display names)."""
    names = names or {}
    out = []
    for name, m in summary["methods"].items():
        if m["paired"] is None:
            continue
        p = m["paired"]
        pr = Paired(_estimate(p["difference"]), p["wins"], p["losses"], p["ties"], p["higher_is_better"])
        out.append(verdict(names.get(name, name), names.get(summary["baseline"], summary["baseline"]), pr,
                           scale=scale, unit=unit))
    return out
