"""Shared views: the offline notebook renderer, curves, the heatmap scrubber and its animation controls.

Scrubbers here are static: animation frames, a Play button and a step slider, so they work in a
saved notebook or an exported HTML page with no kernel. The live-kernel versions are in `widgets.py`.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.io._base_renderers import NotebookRenderer  # plotly's own class, to subclass

from ..trace import Trace

RENDERER = "plotly_mimetype+labkit_notebook"

# plotly's "notebook" renderer puts a <script src="https://cdnjs.../mathjax..."> into every figure's
# HTML (include_mathjax="cdn" is hard-coded): a network fetch per figure in an offline page. Our figures
# use no LaTeX, so the "labkit_notebook" renderer is the same renderer with those CDN tags removed.
_CDN_SCRIPT = re.compile(r'<script[^>]*\bsrc="https?://[^"]*"[^>]*>\s*</script>')


class _OfflineNotebookRenderer(NotebookRenderer):
    """plotly's "notebook" renderer (plotly.js embedded once, at activation) without CDN script tags."""

    def to_mimebundle(self, fig_dict):
        bundle = super().to_mimebundle(fig_dict)
        bundle["text/html"] = _CDN_SCRIPT.sub("", bundle["text/html"])
        return bundle


def setup_notebook() -> None:
    """Render figures both as plotly JSON (JupyterLab) and as HTML with plotly.js embedded once per
    notebook and no CDN <script src> (so a saved notebook and its HTML export show and scrub figures
    offline: `labkit.repro.export_html` checks that the page fetches nothing)."""
    if "labkit_notebook" not in pio.renderers:
        pio.renderers["labkit_notebook"] = _OfflineNotebookRenderer()
    pio.renderers.default = RENDERER


def _diverged_note(fig: go.Figure, text: str) -> None:
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                       font=dict(color="#b2182b", size=14), bgcolor="rgba(255,255,255,0.8)")


def curves(trace: Trace, names: Sequence[str], *, title: str = "", x_title: str = "step",
           y_title: str = "", labels: Sequence[str] | None = None) -> go.Figure:
    """Line plot of scalar series of a trace, one line per name. A diverged run is drawn as no curve at all,
    with the step where it diverged written on the figure: its numbers are not data."""
    fig = go.Figure()
    if trace.diverged:
        _diverged_note(fig, f"diverged at step {trace.metrics['diverged_at_step']}: not drawn")
    else:
        for i, name in enumerate(names):
            steps, values = trace.series(name)
            fig.add_trace(go.Scatter(x=steps, y=values, mode="lines", name=labels[i] if labels else name))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, template="plotly_white")
    return fig


def method_curves(runs: dict[str, Sequence[Trace]], name: str, *, title: str = "", x_title: str = "step",
                  y_title: str = "") -> go.Figure:
    """One line per method: the mean over seeds of scalar series `name`, with a band of ± one sample std.
    runs: method -> Traces (one per seed, logged at the same steps). Diverged seeds are left out and the legend
    says how many; a method whose every seed diverged is named, not drawn."""
    fig = go.Figure()
    lost = []
    for k, (label, traces) in enumerate(runs.items()):
        kept = [t for t in traces if not t.diverged]
        gone = len(traces) - len(kept)
        if not kept:
            lost.append(f"{label}: every seed diverged")
            continue
        steps, _ = kept[0].series(name)
        values = np.stack([t.series(name)[1] for t in kept])
        mean = values.mean(0)
        std = values.std(0, ddof=1) if len(kept) > 1 else np.zeros_like(mean)
        color = PALETTE[k % len(PALETTE)]
        fig.add_trace(go.Scatter(x=np.r_[steps, steps[::-1]], y=np.r_[mean + std, (mean - std)[::-1]],
                                 fill="toself", line=dict(width=0), fillcolor=color, opacity=0.15,
                                 hoverinfo="skip", showlegend=False))
        suffix = f" ({len(kept)} seeds" + (f"; {gone} diverged, not drawn)" if gone else ")")
        fig.add_trace(go.Scatter(x=steps, y=mean, mode="lines", name=label + suffix, line=dict(color=color)))
    if lost:
        _diverged_note(fig, "; ".join(lost))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title or name, template="plotly_white")
    return fig


PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


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


def animation_controls(names: Sequence[str], *, prefix: str = "step ", frame_ms: int = 150, active: int = 0,
                       y: float = -0.05, button_y: float = -0.12) -> dict:
    """Layout entries (`updatemenus`, `sliders`) for a Play/Pause button and a slider over frames `names`."""
    slider_steps = [dict(method="animate", label=name,
                         args=[[name], dict(mode="immediate", frame=dict(duration=0, redraw=True),
                                            transition=dict(duration=0))]) for name in names]
    play = dict(label="Play", method="animate",
                args=[None, dict(frame=dict(duration=frame_ms, redraw=True), fromcurrent=True, transition=dict(duration=0))])
    pause = dict(label="Pause", method="animate", args=[[None], dict(mode="immediate", frame=dict(duration=0, redraw=False))])
    return dict(updatemenus=[dict(type="buttons", direction="left", x=0.0, y=button_y,
                                  xanchor="left", yanchor="top", buttons=[play, pause])],
                sliders=[dict(active=active, steps=slider_steps, x=0.12, len=0.88, y=y, yanchor="top",
                              currentvalue=dict(prefix=prefix))])


def heatmap_scrubber(steps: Sequence[int], values: np.ndarray, *, x_labels: Sequence[str] | None = None,
                     y_labels: Sequence[str] | None = None, title: str = "", x_title: str = "",
                     y_title: str = "", colorscale: str = "Viridis", symmetric: bool = False,
                     zrange: tuple[float, float] | None = None, floor: float = 0.0, max_frames: int = 60,
                     frame_ms: int = 150) -> go.Figure:
    """A heatmap per step with Play and a step slider, as plotly animation frames.

    steps: [T] step numbers; values: [T, R, C] arrays (e.g. Φ_t, a confusion matrix, a loss surface).
    symmetric: centre the colour scale on 0 (for signed values such as a change Φ_t − Φ_0).
    zrange: fixed (zmin, zmax); by default the range over all steps. floor (symmetric only): the colour scale
    never spans less than ±floor, and when every |value| is below it the figure says "no change" rather than
    stretching the scale over float rounding. At most `max_frames` frames are kept, evenly spread.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 3 or len(values) != len(steps) or len(steps) == 0:
        raise ValueError(f"values must be [T, R, C] with T = len(steps) > 0; got shape {values.shape} "
                         f"and {len(steps)} steps")
    zmin, zmax = zrange if zrange is not None else color_range(values, symmetric)
    largest = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.0
    if symmetric and zrange is None and floor > 0:
        zmin, zmax = -max(zmax, floor), max(zmax, floor)
    x_labels = list(x_labels) if x_labels is not None else list(range(values.shape[2]))
    y_labels = list(y_labels) if y_labels is not None else list(range(values.shape[1]))
    keep = frame_indices(len(steps), max_frames)

    def heatmap(i: int) -> go.Heatmap:
        return go.Heatmap(z=values[i], x=x_labels, y=y_labels, zmin=zmin, zmax=zmax, colorscale=colorscale,
                          hovertemplate=f"{y_title or 'row'} %{{y}}<br>{x_title or 'column'} %{{x}}<br>%{{z:.4g}}<extra></extra>")

    frames = [go.Frame(data=[heatmap(i)], name=str(int(steps[i]))) for i in keep]
    fig = go.Figure(data=[heatmap(int(keep[-1]))], frames=frames)
    fig.update_layout(
        title=title, template="plotly_white", xaxis_title=x_title, yaxis_title=y_title,
        xaxis=dict(type="category", side="bottom"), yaxis=dict(type="category", autorange="reversed"),
        margin=dict(b=110),
        **animation_controls([f.name for f in frames], frame_ms=frame_ms, active=len(keep) - 1),
    )
    if symmetric and floor > 0 and largest < floor:
        fig.add_annotation(text=f"no change: the largest |value| ({largest:.2g}) is below the floor {floor:.2g}",
                           xref="paper", yref="paper", x=0.5, y=1.06, showarrow=False, font=dict(color="#444"))
    return fig


def confusion_scrubber(steps: Sequence[int], confusion: np.ndarray, classes: Sequence[str], *,
                       title: str = "Dev errors: which classes are taken for which", **kwargs) -> go.Figure:
    """The errors of a confusion matrix [T, C, C] (row-normalised) scrubbed over steps: the diagonal (the correct
    share, near 1) is hidden so that it does not set the colour scale and every error shows."""
    errors = np.array(confusion, dtype=float)
    idx = np.arange(errors.shape[-1])
    errors[:, idx, idx] = np.nan
    return heatmap_scrubber(steps, errors, x_labels=list(classes), y_labels=list(classes), title=title,
                            x_title="predicted class", y_title="true class", colorscale="Reds", **kwargs)


def trace_heatmap_scrubber(trace: Trace, name: str, **kwargs) -> go.Figure:
    """`heatmap_scrubber` over the array series `name` of a trace (e.g. "confusion", "phi")."""
    steps, values = trace.stack(name)
    return heatmap_scrubber(steps, values, **kwargs)


def interval_bars(summary: dict, *, scale: float = 100.0, title: str = "", y_title: str = "") -> go.Figure:
    """A `labkit.stats.summarize` result as bars: each method's mean with its 95 % interval (diverged seeds left
    out, counted in the label); the baseline is drawn in grey."""
    names, means, halves, colors = [], [], [], []
    for name, m in summary["methods"].items():
        est = m["estimate"]
        if est["n"] == 0:
            names.append(f"{name} (no value)")
            means.append(0.0)
            halves.append(0.0)
        else:
            names.append(name + (f" ({est['excluded']} diverged)" if est["excluded"] else ""))
            means.append(est["mean"] * scale)
            halves.append((est["half_width"] if est["n"] > 1 else 0.0) * scale)
        colors.append("#999999" if name == summary["baseline"] else PALETTE[0])
    fig = go.Figure(go.Bar(x=names, y=means, marker_color=colors, error_y=dict(type="data", array=halves)))
    fig.update_layout(title=title, yaxis_title=y_title, template="plotly_white")
    return fig
