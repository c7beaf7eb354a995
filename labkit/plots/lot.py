"""Views of LoT (labkit.lot): imitation-KL curves, a teacher metric over steps, the dev sweep. Pure functions of
Traces: a diverged run is never drawn as a curve (it is counted on the figure), and bands are 95 % t-intervals
over seeds (the sample std, as `labkit.stats`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from ..stats import t_quantile
from ..trace import Trace
from .common import _diverged_note

PALETTE = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _band(traces: Sequence[Trace], name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(steps [T], mean [T], half-width of the 95 % t-interval [T] (0 for one seed), n) of a scalar series over
    the traces that hold it and did not diverge, at the steps all of them logged."""
    kept = [t for t in traces if not t.diverged and name in t.scalars]
    if not kept:
        return np.empty(0), np.empty(0), np.empty(0), 0
    steps = sorted(set.intersection(*(set(t.series(name)[0].tolist()) for t in kept)))
    values = np.stack([[dict(zip(*t.series(name)))[s] for s in steps] for t in kept])  # [n, T]
    n = len(kept)
    half = t_quantile(n - 1) * values.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(len(steps))
    return np.asarray(steps), values.mean(0), half, n


def _add_band(fig: go.Figure, steps, mean, half, *, name: str, color: str, dash: str = "solid", row=None,
              showlegend: bool = True, fmt: str = ".4f") -> None:
    where = dict(row=row, col=1) if row else {}
    fig.add_trace(go.Scatter(x=np.r_[steps, steps[::-1]], y=np.r_[mean + half, (mean - half)[::-1]], fill="toself",
                             line=dict(width=0), fillcolor=color, opacity=0.15, hoverinfo="skip", showlegend=False,
                             legendgroup=name), **where)
    fig.add_trace(go.Scatter(x=steps, y=mean, mode="lines+markers", name=name, legendgroup=name,
                             showlegend=showlegend, line=dict(color=color, dash=dash),
                             hovertemplate=f"{name}<br>step %{{x}}<br>%{{y:{fmt}}}<extra></extra>"), **where)


def _diverged_count(runs: dict[str, Sequence[Trace]]) -> str:
    counts = {label: sum(t.diverged for t in traces) for label, traces in runs.items()}
    return ", ".join(f"{label}: {c} of {len(runs[label])} runs diverged (not drawn)" for label, c in counts.items() if c)


def lot_kl_curves(runs: dict[str, Sequence[Trace]], *, title: str = "Imitation KL: LoT vs teacher-only",
                  log_y: bool = True) -> go.Figure:
    """KL(teacher ‖ student) on a probe of training data (top) and of test data (bottom) through training, one
    colour per method and one dash per student, mean and 95 % band over seeds, with a range slider.

    runs: label -> Traces (one per seed) holding "kl_train/<k>" and "kl_test/<k>" (co-evolving students,
    `lot.compare`) or "kl_train" and "kl_test" (fresh imitators of a frozen model, `lot.deploy`); methods without
    them (the equal-compute run) are skipped."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("on training data", "on test data"))
    for m, (label, traces) in enumerate(runs.items()):
        names = sorted({n[len("kl_train"):] for t in traces for n in t.scalars if n.startswith("kl_train")})
        for k, suffix in enumerate(names):
            for row, split in ((1, "kl_train"), (2, "kl_test")):
                steps, mean, half, n = _band(traces, split + suffix)
                if n:
                    name = f"{label}, student {suffix[1:]}" if suffix else label
                    _add_band(fig, steps, mean, half, name=f"{name} (n = {n})", color=PALETTE[m % len(PALETTE)],
                              dash=["solid", "dot", "dash", "dashdot"][k % 4], row=row, showlegend=row == 1)
    note = _diverged_count(runs)
    if note:
        _diverged_note(fig, note)
    fig.update_yaxes(title_text="KL(teacher ‖ student)", type="log" if log_y else "linear")
    fig.update_xaxes(title_text="step", row=2, col=1, rangeslider=dict(visible=True, thickness=0.06))
    fig.update_layout(title=title, template="plotly_white", height=640, hovermode="x unified")
    return fig


def lot_metric_curves(runs: dict[str, Sequence[Trace]], name: str = "dev_acc", *, title: str = "",
                      y_title: str = "") -> go.Figure:
    """A teacher metric logged at each evaluation ("dev_acc", "dev_ppl", "teacher_kl", ...) over steps, mean and
    95 % band over seeds per method, with a range slider; diverged runs are counted, not drawn."""
    fig = go.Figure()
    for m, (label, traces) in enumerate(runs.items()):
        steps, mean, half, n = _band(traces, name)
        if n:
            _add_band(fig, steps, mean, half, name=f"{label} (n = {n})", color=PALETTE[m % len(PALETTE)])
    note = _diverged_count(runs)
    if note:
        _diverged_note(fig, note)
    fig.update_xaxes(title_text="step", rangeslider=dict(visible=True, thickness=0.06))
    fig.update_layout(title=title or f"Teacher {name}", yaxis_title=y_title or name, template="plotly_white")
    return fig


def lot_sweep_heatmap(sweep: dict, *, title: str = "") -> go.Figure:
    """A `lot.sweep` result as an annotated heatmap: mean paired difference LoT − teacher-only on dev per (N, α)
    (accuracy in points, perplexity as is), with its 95 % half-width; the cell dev prefers is outlined."""
    acc = sweep["metric"].endswith("acc")
    scale = 100.0 if acc else 1.0
    diff = np.array([[np.nan if d["difference"]["n"] == 0 else d["difference"]["mean"] * scale for d in row]
                     for row in sweep["difference"]])
    half = np.array([[d["difference"]["half_width"] * scale for d in row] for row in sweep["difference"]])
    text = [[f"{v:+.2f} ± {h:.2f}" for v, h in zip(rv, rh)] for rv, rh in zip(diff, half)]
    xs, ys = [str(a) for a in sweep["alphas"]], [str(n) for n in sweep["ns"]]
    fig = go.Figure(go.Heatmap(z=diff, x=xs, y=ys, colorscale="RdBu" if acc else "RdBu_r", zmid=0, text=text,
                               texttemplate="%{text}", colorbar=dict(title="Δ points" if acc else "Δ ppl")))
    c, r = xs.index(str(sweep["chosen"]["alpha"])), ys.index(str(sweep["chosen"]["student_steps"]))
    fig.add_shape(type="rect", x0=c - 0.5, x1=c + 0.5, y0=r - 0.5, y1=r + 0.5, line=dict(color="black", width=3))
    fig.update_layout(title=title or f"LoT − teacher-only on dev ({sweep['metric']}, {len(sweep['seeds'])} tuning "
                                     f"seeds, {sweep['steps']} steps); outlined: dev's choice",
                      xaxis_title="α (teacher's KL weight)", yaxis_title="N (student steps per teacher step)",
                      template="plotly_white", xaxis=dict(type="category"), yaxis=dict(type="category"))
    return fig
