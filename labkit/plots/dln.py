"""Views of L2T-DLN (labkit.dln): the loss network's surface, the LSTM's updates, the methods' curves and results.
A diverged run (metrics["diverged_at_step"]) is never drawn as a curve: it is left out and counted in the legend."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from ..dln_model import surface_slopes
from ..trace import Trace
from .common import frame_indices, heatmap_scrubber


def _dln_grid_labels(trace: Trace) -> list[str]:
    grid = trace.config.get("grid_values")
    if grid is None:
        grid = np.linspace(0, 1, trace.stack("loss_surface")[1].shape[-1])
    return [f"{g:.2f}" for g in grid]


def _step_name(trace: Trace) -> str:
    return "teacher update" if str(trace.config.get("method", "")).endswith("teacher") else "student step"


def dln_surface_scrubber(trace: Trace, *, max_frames: int = 60, title: str = "") -> go.Figure:
    """Heatmap scrubber over a trace's "loss_surface" [T, G, G] (rows σ(z_y), columns σ(z_j)), one frame per logged
    step (step 0: the initial DLN; a teacher trace: per teacher update; a deployment: per window end), one colour
    scale for all steps."""
    steps, values = trace.stack("loss_surface")
    labels = _dln_grid_labels(trace)
    title = title or f"The learned loss DLN([σ(z_y), σ(z_j), 1, 0]), by {_step_name(trace)}"
    return heatmap_scrubber(steps, values, x_labels=labels, y_labels=labels, title=title,
                            x_title="σ(z_j), a wrong class", y_title="σ(z_y), the true class",
                            colorscale="RdBu_r", max_frames=max_frames)


def dln_surface_slices(trace: Trace, *, sigma_j: float = 0.5, count: int = 5, title: str = "") -> go.Figure:
    """The loss against σ(z_y) at a fixed wrong-class σ(z_j), at `count` logged steps spread evenly: a decreasing
    curve rewards confidence in the true class."""
    steps, values = trace.stack("loss_surface")
    grid = np.asarray(trace.config.get("grid_values", np.linspace(0, 1, values.shape[-1])))
    col = int(np.abs(grid - sigma_j).argmin())
    fig = go.Figure()
    for i in frame_indices(len(steps), count):
        name = f"{_step_name(trace)} {int(steps[i])}"
        fig.add_trace(go.Scatter(x=grid, y=values[i, :, col], mode="lines", name=name))
    fig.update_layout(title=title or f"DLN output against σ(z_y), at σ(z_j) = {grid[col]:.2f}",
                      xaxis_title="σ(z_y)", yaxis_title="DLN output", template="plotly_white")
    return fig


def dln_update_sizes(trace: Trace, *, title: str = "The LSTM's updates to the DLN weights") -> go.Figure:
    """‖Δw‖ of the LSTM's update to the DLN weights at each proposal, overall and (a teacher trace) per DLN layer;
    log y axis. ‖Δw‖ <= update_scale · √5000: the LSTM's output is bounded by 1 per coordinate."""
    fig = go.Figure()
    steps, total = trace.series("update_norm")
    fig.add_trace(go.Scatter(x=steps, y=total, mode="lines", name="‖Δw‖ (all 5 layers)", line=dict(width=3)))
    if "update_norm_by_layer" in trace.arrays:
        lsteps, layers = trace.stack("update_norm_by_layer")
        for j in range(layers.shape[1]):
            fig.add_trace(go.Scatter(x=lsteps, y=layers[:, j], mode="lines", name=f"layer {j + 1}", line=dict(width=1)))
    fig.update_layout(title=title, xaxis_title=_step_name(trace), yaxis_title="update norm", yaxis_type="log",
                      template="plotly_white")
    return fig


def dln_compare_curves(results: dict[str, Sequence[Trace]], *, name: str = "dev_acc", names: dict | None = None,
                       title: str = "") -> go.Figure:
    """One scalar series (e.g. dev accuracy) per method against student steps: the mean over the seeds that did not
    diverge (all engine traces share the evaluation steps); diverged seeds are counted in the legend, never drawn."""
    fig = go.Figure()
    for method, traces in results.items():
        traces = [traces] if isinstance(traces, Trace) else list(traces)
        kept = [t for t in traces if not t.diverged and name in t.scalars]
        label = (names or {}).get(method, method)
        if len(kept) < len(traces):
            label += f" ({len(traces) - len(kept)} diverged, not drawn)"
        if not kept:
            fig.add_trace(go.Scatter(x=[], y=[], mode="lines", name=label))
            continue
        steps = kept[0].series(name)[0]
        values = np.array([t.series(name)[1] for t in kept if np.array_equal(t.series(name)[0], steps)])
        fig.add_trace(go.Scatter(x=steps, y=values.mean(0), mode="lines+markers",
                                 name=f"{label}, mean of {len(values)}"))
    fig.update_layout(title=title or name, xaxis_title="student steps", yaxis_title=name, template="plotly_white")
    return fig


def dln_result_bars(summary: dict, *, names: dict | None = None, scale: float = 100.0, title: str = "",
                    y_title: str = "test accuracy (%)") -> go.Figure:
    """A `dln.summary` (stats.summarize) as bars: mean with its 95 % t-interval per method, every seed's value as a
    dot (diverged seeds are None: not drawn, counted in the label)."""
    fig = go.Figure()
    for method, m in summary["methods"].items():
        est, values = m["estimate"], [v for v in m["values"] if v is not None]
        label = (names or {}).get(method, method) + (f" ({est['excluded']} diverged)" if est["excluded"] else "")
        half = est["half_width"] * scale if est["n"] >= 2 else 0.0
        fig.add_trace(go.Bar(x=[label], y=[est["mean"] * scale], error_y=dict(type="data", array=[half]),
                             name=label, showlegend=False))
        fig.add_trace(go.Scatter(x=[label] * len(values), y=[v * scale for v in values], mode="markers",
                                 marker=dict(color="black", size=5), showlegend=False))
    fig.update_layout(title=title or f"{summary.get('metric', '')}: mean ± 95 % t-interval over seeds, dots = seeds",
                      yaxis_title=y_title, template="plotly_white")
    return fig


def dln_teacher_report(trace: Trace) -> list[str]:
    """Sentences on what the LSTM did in one run (a teacher trace or a deployment trace): how often the new DLN left
    a lower dev-batch CE than the probe of the old one on the same batches, and the surface's slopes first and last."""
    out = []
    if "dev_batch_loss" in trace.scalars:
        s_before, before = trace.series("dev_batch_loss_before")
        s_after, after = trace.series("dev_batch_loss")
        d = after - before[np.isin(s_before, s_after)]
        out.append(f"the new DLN left a lower dev-batch CE than the old one (same start, batches and dev batch) in "
                   f"{np.mean(d < 0):.0%} of {len(d)} proposals (mean change {np.mean(d):+.4f})")
    steps, surfaces = trace.stack("loss_surface")
    for i in sorted({0, len(steps) - 1}):
        dy, dj = surface_slopes(surfaces[i])
        out.append(f"{_step_name(trace)} {int(steps[i])}: mean ∂loss/∂σ(z_y) = {dy:+.3f} (negative teaches), "
                   f"mean ∂loss/∂σ(z_j) = {dj:+.3f} (positive teaches)")
    return out
