"""Pure functions from Traces (or arrays) to plotly Figures. Views never train.

Scrubbers here are static: animation frames, a Play button and a step slider, so they work in a
saved notebook or an exported HTML page with no kernel. The live-kernel versions are in `widgets.py`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from .trace import Trace

RENDERER = "plotly_mimetype+notebook"


def setup_notebook() -> None:
    """Render figures both as plotly JSON (JupyterLab) and as HTML with plotly.js embedded once per
    notebook (so a saved notebook and its HTML export show and scrub figures offline, with no CDN)."""
    pio.renderers.default = RENDERER


def curves(trace: Trace, names: Sequence[str], *, title: str = "", x_title: str = "step",
           y_title: str = "", labels: Sequence[str] | None = None) -> go.Figure:
    """Line plot of scalar series of a trace, one line per name."""
    fig = go.Figure()
    for i, name in enumerate(names):
        steps, values = trace.series(name)
        fig.add_trace(go.Scatter(x=steps, y=values, mode="lines", name=labels[i] if labels else name))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, template="plotly_white")
    return fig


def frame_indices(count: int, max_frames: int) -> np.ndarray:
    """At most `max_frames` indices spread evenly over range(count), first and last included."""
    if count <= max_frames:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, max_frames).round().astype(int))


def color_range(values: np.ndarray, symmetric: bool) -> tuple[float, float]:
    """One colour scale for all steps, so change over steps shows as change in colour."""
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if symmetric:
        bound = max(abs(lo), abs(hi)) or 1.0
        return -bound, bound
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def heatmap_scrubber(steps: Sequence[int], values: np.ndarray, *, x_labels: Sequence[str] | None = None,
                     y_labels: Sequence[str] | None = None, title: str = "", x_title: str = "",
                     y_title: str = "", colorscale: str = "Viridis", symmetric: bool = False,
                     zrange: tuple[float, float] | None = None, max_frames: int = 60,
                     frame_ms: int = 150) -> go.Figure:
    """A heatmap per step with Play and a step slider, as plotly animation frames.

    steps: [T] step numbers; values: [T, R, C] arrays (e.g. Φ_t, a confusion matrix, a loss surface).
    symmetric: centre the colour scale on 0 (for signed values such as Φ_t − I).
    zrange: fixed (zmin, zmax); by default the range over all steps.
    At most `max_frames` frames are kept, evenly spread, so a saved notebook stays small.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 3 or len(values) != len(steps) or len(steps) == 0:
        raise ValueError(f"values must be [T, R, C] with T = len(steps) > 0; got shape {values.shape} "
                         f"and {len(steps)} steps")
    zmin, zmax = zrange if zrange is not None else color_range(values, symmetric)
    x_labels = list(x_labels) if x_labels is not None else list(range(values.shape[2]))
    y_labels = list(y_labels) if y_labels is not None else list(range(values.shape[1]))
    keep = frame_indices(len(steps), max_frames)

    def heatmap(i: int) -> go.Heatmap:
        return go.Heatmap(z=values[i], x=x_labels, y=y_labels, zmin=zmin, zmax=zmax, colorscale=colorscale,
                          hovertemplate=f"{y_title or 'row'} %{{y}}<br>{x_title or 'column'} %{{x}}<br>%{{z:.4f}}<extra></extra>")

    frames = [go.Frame(data=[heatmap(i)], name=str(int(steps[i]))) for i in keep]
    slider_steps = [dict(method="animate", label=str(int(steps[i])),
                         args=[[str(int(steps[i]))], dict(mode="immediate", frame=dict(duration=0, redraw=True),
                                                        transition=dict(duration=0))]) for i in keep]
    fig = go.Figure(data=[heatmap(int(keep[-1]))], frames=frames)
    fig.update_layout(
        title=title, template="plotly_white", xaxis_title=x_title, yaxis_title=y_title,
        xaxis=dict(type="category", side="bottom"), yaxis=dict(type="category", autorange="reversed"),
        updatemenus=[dict(type="buttons", direction="left", x=0.0, y=-0.12, xanchor="left", yanchor="top",
                          buttons=[dict(label="Play", method="animate",
                                        args=[None, dict(frame=dict(duration=frame_ms, redraw=True),
                                                         fromcurrent=True, transition=dict(duration=0))]),
                                   dict(label="Pause", method="animate",
                                        args=[[None], dict(mode="immediate", frame=dict(duration=0, redraw=False))])])],
        sliders=[dict(active=len(keep) - 1, steps=slider_steps, x=0.12, len=0.88, y=-0.05, yanchor="top",
                      currentvalue=dict(prefix="step "))],
        margin=dict(b=110),
    )
    return fig


def trace_heatmap_scrubber(trace: Trace, name: str, **kwargs) -> go.Figure:
    """`heatmap_scrubber` over the array series `name` of a trace (e.g. "confusion", "phi")."""
    steps, values = trace.stack(name)
    return heatmap_scrubber(steps, values, **kwargs)


def mean_std_bars(table: dict[str, Sequence[float]], *, title: str = "", y_title: str = "") -> go.Figure:
    """Bar chart of mean ± std over seeds: table maps a method's name to its per-seed values."""
    names = list(table)
    means = [float(np.mean(table[n])) for n in names]
    stds = [float(np.std(table[n])) for n in names]
    fig = go.Figure(go.Bar(x=names, y=means, error_y=dict(type="data", array=stds)))
    fig.update_layout(title=title, yaxis_title=y_title, template="plotly_white")
    return fig
