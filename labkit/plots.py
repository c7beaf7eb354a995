"""Pure functions from Traces (or arrays) to plotly Figures. Views never train.

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

from .trace import Trace

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
    fig = go.Figure(data=[heatmap(int(keep[-1]))], frames=frames)
    fig.update_layout(
        title=title, template="plotly_white", xaxis_title=x_title, yaxis_title=y_title,
        xaxis=dict(type="category", side="bottom"), yaxis=dict(type="category", autorange="reversed"),
        margin=dict(b=110),
        **animation_controls([f.name for f in frames], frame_ms=frame_ms, active=len(keep) - 1),
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


# ---- l2t ----

_KEEP_RGB = np.array([0, 160, 60], dtype=np.uint8)    # frame of a kept example
_DROP_RGB = np.array([215, 30, 30], dtype=np.uint8)   # frame of a dropped example (its image is also dimmed)
_L2T_BORDER, _L2T_LABEL_BAND = 3, 12


def l2t_mosaic(images: np.ndarray, keep: np.ndarray, cols: int = 8) -> np.ndarray:
    """RGB mosaic [H, W, 3] uint8 of images [n, 1 or 3, h, w] scaled to [0, 1]: a green frame around each
    kept image, a red frame around each dropped one (dimmed to 35 %), a white band under each for its label."""
    images = np.asarray(images, dtype=float)
    keep = np.asarray(keep, dtype=bool)
    n, ch, h, w = images.shape
    rows = -(-n // cols)
    th, tw = h + 2 * _L2T_BORDER + _L2T_LABEL_BAND, w + 2 * _L2T_BORDER
    out = np.full((rows * th, cols * tw, 3), 255, dtype=np.uint8)
    rgb = np.repeat(images, 3, axis=1) if ch == 1 else images[:, :3]
    rgb = (np.clip(rgb, 0, 1).transpose(0, 2, 3, 1) * 255)
    for i in range(n):
        r, c = divmod(i, cols)
        y0, x0 = r * th, c * tw
        out[y0:y0 + h + 2 * _L2T_BORDER, x0:x0 + tw] = _KEEP_RGB if keep[i] else _DROP_RGB
        tile = rgb[i] if keep[i] else 255 - 0.35 * (255 - rgb[i])  # dropped: faded towards white
        out[y0 + _L2T_BORDER:y0 + _L2T_BORDER + h, x0 + _L2T_BORDER:x0 + _L2T_BORDER + w] = tile.astype(np.uint8)
    return out


def _png_uri(rgb: np.ndarray) -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    # a 64-colour palette (grey levels plus the two frame colours) keeps each frame a few kB
    Image.fromarray(rgb).quantize(colors=64).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _scaled_images(images) -> np.ndarray:
    images = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=float)
    lo, hi = float(images.min()), float(images.max())
    return (images - lo) / (hi - lo or 1.0)


def l2t_keep_frame(trace: Trace, images, i: int, n_images: int = 16, cols: int = 8,
                   classes: Sequence[str] | None = None) -> tuple[str, dict]:
    """The i-th recorded step of an L2T trace as (PNG data URI of the mosaic, text-trace fields):
    the first `n_images` examples shown at that step, kept ones framed green, dropped ones red and dimmed,
    each labelled with its class and p(keep). `images`: [N, C, H, W] of the split the trace's "index" points into
    (already scaled to [0, 1] by `_scaled_images`)."""
    s = trace.arrays
    idx = np.asarray(s["index"]["value"][i])[:n_images]
    keep = np.asarray(s["keep_mask"]["value"][i])[:n_images].astype(bool)
    p = np.asarray(s["p_keep"]["value"][i])[:n_images]
    labels = np.asarray(s["labels"]["value"][i])[:n_images]
    h, w = images.shape[2:]
    th, tw = h + 2 * _L2T_BORDER + _L2T_LABEL_BAND, w + 2 * _L2T_BORDER
    pos = np.arange(len(idx))
    x = (pos % cols) * tw + tw / 2
    y = (pos // cols) * th + h + 2 * _L2T_BORDER + _L2T_LABEL_BAND / 2
    names = [classes[int(c)] if classes else str(int(c)) for c in labels]
    text = [f"{'✓' if k else '✗'}{q:.2f}" for k, q in zip(keep, p)]
    hover = [f"class {nm}<br>{'kept' if k else 'dropped'}<br>p(keep) = {q:.3f}" for nm, k, q in zip(names, keep, p)]
    return _png_uri(l2t_mosaic(images[idx], keep, cols)), dict(x=x, y=y, text=text, hovertext=hover)


def l2t_keep_scrubber(trace: Trace, images, *, n_images: int = 16, cols: int = 8, max_frames: int = 40,
                      classes: Sequence[str] | None = None, title: str = "What the teacher keeps and drops",
                      frame_ms: int = 400) -> go.Figure:
    """Static keep/drop scrubber (animation frames, Play, step slider; works with no kernel).

    trace: an L2T deployment trace recorded with record=True (arrays "index", "keep_mask", "p_keep", "labels");
    images: [N, C, H, W] inputs of the split those indices point into. Each frame shows the first `n_images`
    examples shown to the teacher at one student step: green frame = kept, red frame and faded = dropped,
    with p(keep) written under each.
    """
    if "index" not in trace.arrays or not trace.arrays["index"]["value"]:
        raise ValueError("trace has no recorded keep/drop arrays: deploy(..., record=True) records them")
    images = _scaled_images(images)
    steps = trace.arrays["index"]["step"]
    keep_frames = frame_indices(len(steps), max_frames)

    def data(i: int) -> list:
        uri, text = l2t_keep_frame(trace, images, int(i), n_images, cols, classes)
        return [go.Image(source=uri, hoverinfo="skip"),
                go.Scatter(mode="text", textfont=dict(size=10), hoverinfo="text", **text)]

    frames = [go.Frame(data=data(i), name=str(int(steps[i]))) for i in keep_frames]
    fig = go.Figure(data=frames[0].data, frames=frames)
    fig.update_layout(
        title=title + "<br><sup>green frame: kept · red frame, faded: dropped · number: p(keep)</sup>",
        template="plotly_white", xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x"),
        showlegend=False, height=360, margin=dict(l=10, r=10, t=70, b=110),
        **animation_controls([f.name for f in frames], prefix="student step ", frame_ms=frame_ms, y=-0.02,
                             button_y=-0.05),
    )
    return fig


def l2t_keep_rate_by_class(trace: Trace, num_classes: int, *, bins: int = 20,
                           classes: Sequence[str] | None = None,
                           title: str = "Keep rate by class over training") -> go.Figure:
    """Heatmap [class × window of student steps] of the share of shown examples the teacher kept."""
    steps, masks = trace.arrays["keep_mask"]["step"], trace.arrays["keep_mask"]["value"]
    labels = trace.arrays["labels"]["value"]
    if not steps:
        raise ValueError("trace has no recorded keep/drop arrays: deploy(..., record=True) records them")
    edges = np.linspace(0, len(steps), min(bins, len(steps)) + 1).round().astype(int)
    rate = np.full((num_classes, len(edges) - 1), np.nan)
    centres = []
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        keep = np.concatenate([np.asarray(m, dtype=float) for m in masks[lo:hi]])
        lab = np.concatenate([np.asarray(v) for v in labels[lo:hi]]).astype(int)
        shown = np.bincount(lab, minlength=num_classes)
        kept = np.bincount(lab, weights=keep, minlength=num_classes)
        rate[:, b] = np.where(shown > 0, kept / np.maximum(shown, 1), np.nan)
        centres.append(int(steps[lo]) if hi - lo == 1 else f"{int(steps[lo])}–{int(steps[hi - 1])}")
    fig = go.Figure(go.Heatmap(z=rate, x=[str(c) for c in centres], y=list(classes or range(num_classes)),
                               zmin=0, zmax=1, colorscale="Viridis", colorbar=dict(title="keep rate"),
                               hovertemplate="class %{y}<br>steps %{x}<br>keep rate %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="student steps", yaxis_title="class", template="plotly_white",
                      xaxis=dict(type="category"), yaxis=dict(type="category", autorange="reversed"))
    return fig


def l2t_accuracy_vs_examples(results: dict[str, list[Trace]], *, tau: float | None = None,
                             title: str = "Test accuracy against effective training examples") -> go.Figure:
    """Mean ± std (band) over seeds of test accuracy against the effective training examples, one line per
    method. results: {method: [deployment Trace per seed]}, all with the same evaluation steps."""
    fig = go.Figure()
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    for k, (method, traces) in enumerate(results.items()):
        n = min(len(t.series("test_acc")[1]) for t in traces)
        acc = np.stack([t.series("test_acc")[1][:n] for t in traces])
        x = traces[0].series("effective_at_eval")[1][:n]
        mean, std = acc.mean(0), acc.std(0)
        colour = palette[k % len(palette)]
        fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([mean + std, (mean - std)[::-1]]),
                                 fill="toself", fillcolor=colour, opacity=0.15, line=dict(width=0),
                                 hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(x=x, y=mean, mode="lines", name=f"{method} (n={len(traces)})",
                                 line=dict(color=colour)))
    if tau is not None:
        fig.add_hline(y=tau, line=dict(dash="dash", color="grey"), annotation_text=f"τ = {tau}")
    fig.update_layout(title=title, xaxis_title="effective training examples", yaxis_title="test accuracy",
                      template="plotly_white")
    return fig


def l2t_reward_curve(trace: Trace, *, window: int = 5, title: str = "Teacher training: reward per episode") -> go.Figure:
    """Reward r = −log(i_τ/T') per episode, its moving average over `window` episodes, and the baseline."""
    episodes, rewards = trace.series("reward")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=episodes, y=rewards, mode="markers", name="reward", marker=dict(size=5)))
    if len(rewards) >= window:
        smooth = np.convolve(rewards, np.ones(window) / window, mode="valid")
        fig.add_trace(go.Scatter(x=episodes[window - 1:], y=smooth, mode="lines", name=f"mean of last {window}"))
    b_steps, b_values = trace.series("baseline")
    fig.add_trace(go.Scatter(x=b_steps, y=b_values, mode="lines", name="baseline", line=dict(dash="dot")))
    fig.update_layout(title=title, xaxis_title="episode", yaxis_title="reward −log(i_τ / T')", template="plotly_white")
    return fig



def l2t_keep_vs_feature(trace: Trace, feature: str = "margin", *, max_points: int = 4000, seed: int = 0,
                        title: str = "") -> go.Figure:
    """What the deployed teacher learned: p(keep) of each shown example against one thing the teacher saw
    ("margin" p_y − max_{j≠y} p_j, or "student_loss" −log p_y), coloured by the student step; the dashed line
    is the deployment rule's 0.5. trace: an L2T deployment recorded with record=True (a random subset of at most
    `max_points` examples is drawn, seeded)."""
    if feature not in trace.arrays:
        raise ValueError(f"feature={feature!r} is not in this trace: record an l2t deployment (record=True); "
                         f"arrays: {sorted(trace.arrays)}")
    p, x = trace.concat("p_keep"), trace.concat(feature)
    step = np.concatenate([np.full(len(v), s) for s, v in zip(trace.arrays["p_keep"]["step"],
                                                                trace.arrays["p_keep"]["value"])])
    pick = np.random.default_rng(seed).permutation(len(p))[:max_points]
    fig = go.Figure(go.Scatter(x=x[pick], y=p[pick], mode="markers",
                                 marker=dict(size=4, color=step[pick], colorscale="Viridis", opacity=0.6,
                                             colorbar=dict(title="student step")),
                                 hovertemplate=f"{feature} %{{x:.3f}}<br>p(keep) %{{y:.3f}}<extra></extra>"))
    fig.add_hline(y=0.5, line=dict(dash="dash", color="grey"), annotation_text="keep if p ≥ 0.5")
    names = {"margin": "margin p_y − max_{j≠y} p_j", "student_loss": "student loss −log p_y"}
    fig.update_layout(title=title or f"What the teacher learned: p(keep) against the {names.get(feature, feature)}",
                      xaxis_title=names.get(feature, feature), yaxis_title="p(keep)", template="plotly_white")
    return fig

# ---- dln ----

def _dln_grid_labels(trace: Trace) -> list[str]:
    grid = trace.config.get("grid_values")
    if grid is None:
        grid = np.linspace(0, 1, trace.stack("loss_surface")[1].shape[-1])
    return [f"{g:.2f}" for g in grid]


def dln_surface_scrubber(trace: Trace, *, max_frames: int = 60,
                         title: str = "The learned loss: DLN([σ(z_y), σ(z_j), 1, 0]) over teacher steps") -> go.Figure:
    """Heatmap scrubber over the L2T-DLN trace's "loss_surface" [T, G, G] (rows σ(z_y), columns σ(z_j)),
    one frame per teacher step (step 0: before training), one colour scale for all steps."""
    steps, values = trace.stack("loss_surface")
    labels = _dln_grid_labels(trace)
    return heatmap_scrubber(steps, values, x_labels=labels, y_labels=labels, title=title,
                            x_title="σ(z_j), a wrong class", y_title="σ(z_y), the true class",
                            colorscale="RdBu_r", max_frames=max_frames)


def dln_surface_slices(trace: Trace, *, sigma_j: float = 0.5, count: int = 5,
                       title: str = "") -> go.Figure:
    """The loss as a function of σ(z_y) at a fixed wrong-class σ(z_j), at `count` teacher steps spread evenly:
    a decreasing curve rewards confidence in the true class."""
    steps, values = trace.stack("loss_surface")
    grid = np.asarray(trace.config.get("grid_values", np.linspace(0, 1, values.shape[-1])))
    col = int(np.abs(grid - sigma_j).argmin())
    fig = go.Figure()
    for i in frame_indices(len(steps), count):
        fig.add_trace(go.Scatter(x=grid, y=values[i, :, col], mode="lines", name=f"teacher step {int(steps[i])}"))
    fig.update_layout(title=title or f"DLN output against σ(z_y), at σ(z_j) = {grid[col]:.2f}",
                      xaxis_title="σ(z_y)", yaxis_title="DLN output", template="plotly_white")
    return fig


def dln_update_sizes(trace: Trace, *, title: str = "The LSTM's proposed DLN updates, per teacher step") -> go.Figure:
    """‖Δw‖ of the LSTM's update to the DLN weights per teacher step, overall and per DLN layer (log y axis)."""
    fig = go.Figure()
    steps, total = trace.series("update_norm")
    fig.add_trace(go.Scatter(x=steps, y=total, mode="lines", name="‖Δw‖ (all 5 layers)", line=dict(width=3)))
    if "update_norm_by_layer" in trace.arrays:
        lsteps, layers = trace.stack("update_norm_by_layer")
        for j in range(layers.shape[1]):
            fig.add_trace(go.Scatter(x=lsteps, y=layers[:, j], mode="lines", name=f"layer {j + 1}",
                                     line=dict(width=1)))
    fig.update_layout(title=title, xaxis_title="teacher step", yaxis_title="update norm", yaxis_type="log",
                      template="plotly_white")
    return fig


def dln_compare_curves(traces: dict[str, Trace], *, name: str = "dev_acc", title: str = "") -> go.Figure:
    """One scalar series (e.g. dev accuracy) of several methods against student steps.

    traces maps a method to its Trace; an L2T-DLN trace (steps = teacher steps) is put on the student-step
    axis with its config["K"], an L2T-DLF trace is shifted by its CE pre-training steps; others are as they are."""
    fig = go.Figure()
    for label, tr in traces.items():
        steps, values = tr.series(name)
        if tr.config.get("method") == "l2t-dln":
            steps = steps * int(tr.config["K"])
        elif tr.config.get("method") == "l2t-dlf":  # labkit.dlf counts its steps after the CE pre-training
            steps = steps + int(tr.config.get("pretrain_steps", 0))
        fig.add_trace(go.Scatter(x=steps, y=values, mode="lines+markers", name=label))
    fig.update_layout(title=title or name, xaxis_title="student SGD steps", yaxis_title=name,
                      template="plotly_white")
    return fig


# ---- dlf ----

def dlf_phi_scrubber(trace: Trace, classes: Sequence[str], *, minus_identity: bool = True, max_frames: int = 60,
                 title: str = "", reference: str | None = None) -> go.Figure:
    """Φ_t of an L2T-DLF run (array "phi", [T, C, C]) scrubbed over student steps, classes on both axes.

    Row y, column j: the weight of log p_j in the loss of an example of class y. What is subtracted
    (`reference`; None: "identity" if minus_identity else "none"):
    - "identity": Φ_t − I (red > 0: p_j is rewarded, "similar"; blue < 0: p_j is penalised, "discriminate");
    - "mean": Φ_t − mean_t Φ_t, only the part that changes over time (the dynamic part), on its own scale,
      so that small but real changes are visible;
    - "start": Φ_t − Φ_{first step}; "none": Φ_t.
    The colour scale is fixed over the steps (symmetric about 0 unless "none")."""
    steps, phi = trace.stack("phi")
    ref = reference or ("identity" if minus_identity else "none")
    refs = {"identity": lambda: np.eye(phi.shape[-1]), "mean": lambda: phi.mean(0), "start": lambda: phi[0],
            "none": lambda: 0.0}
    if ref not in refs:
        raise ValueError(f"reference={reference!r} is not allowed: choose one of {', '.join(refs)}")
    values = phi - refs[ref]()
    names = {"identity": "Φ_t − I", "mean": "Φ_t − mean over t", "start": "Φ_t − Φ_0", "none": "Φ_t"}
    return heatmap_scrubber(steps, values, x_labels=list(classes), y_labels=list(classes),
                            title=title or f"{names[ref]} over student steps",
                            x_title="class j (log p_j)", y_title="true class y", colorscale="RdBu_r",
                            symmetric=ref != "none", max_frames=max_frames)


def dlf_attention_curves(trace: Trace, *, title: str = "Teacher attention over the matrix bank") -> go.Figure:
    """The attention weights a_k(s_t) (array "attention", [T, M]) as stacked areas over student steps."""
    steps, attention = trace.stack("attention")
    fig = go.Figure()
    for k in range(attention.shape[1]):
        fig.add_trace(go.Scatter(x=steps, y=attention[:, k], mode="lines", stackgroup="a", name=f"M_{k}"))
    fig.update_layout(title=title, xaxis_title="student step", yaxis_title="attention", template="plotly_white",
                      yaxis_range=[0, 1])
    return fig


def dlf_pairs_and_confusion(changes: dict, confusion: np.ndarray, classes: Sequence[str], *,
                            title: str = "") -> go.Figure:
    """Left: the off-diagonal Φ entries that rise or fall most over training (`labkit.dlf.phi_pair_changes`);
    right: the dev confusion matrix [C, C] (row-normalised, diagonal hidden), so the pairs can be checked
    against the classes the student actually confuses."""
    from plotly.subplots import make_subplots

    pairs = list(changes["rise"]) + list(changes["fall"])[::-1]
    labels = [f"y={a}, j={b}" for a, b, _ in pairs]
    deltas = [d for _, _, d in pairs]
    conf = np.array(confusion, dtype=float)
    np.fill_diagonal(conf, np.nan)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55],
                        subplot_titles=("change of Φ[y, j] (end − start)", "dev confusion (off-diagonal)"))
    fig.add_trace(go.Bar(x=deltas, y=labels, orientation="h", showlegend=False,
                         marker_color=["#d6604d" if d > 0 else "#4393c3" for d in deltas]), row=1, col=1)
    fig.add_trace(go.Heatmap(z=conf, x=list(classes), y=list(classes), colorscale="Reds", showscale=True,
                             hovertemplate="true %{y} → predicted %{x}: %{z:.4f}<extra></extra>"), row=1, col=2)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_yaxes(autorange="reversed", type="category", title_text="true class", row=1, col=2)
    fig.update_xaxes(type="category", title_text="predicted class", row=1, col=2)
    fig.update_layout(title=title or "Which class pairs the learned loss links or separates", template="plotly_white",
                      height=420)
    return fig


# ---- lot ----

def _mean_std_series(traces: Sequence[Trace], name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps [T], mean [T], std [T]) of a scalar series over seeds (traces logged at the same steps)."""
    steps, _ = traces[0].series(name)
    values = np.stack([t.series(name)[1] for t in traces])
    return steps, values.mean(0), values.std(0)


def lot_kl_curves(runs: dict[str, Sequence[Trace]], *, students: Sequence[int] | None = None,
                  title: str = "Imitation KL of each student: LoT teacher vs teacher-only",
                  log_y: bool = True) -> go.Figure:
    """The LoT imitation curves: KL of each student to its teacher on training data (top) and test data
    (bottom), one colour per method, mean ± std over the given seeds, with a range slider to zoom the steps.

    runs: method label -> Traces (one per seed) holding "kl_train/<i>" and "kl_test/<i>".
    """
    from plotly.subplots import make_subplots

    palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("on training data", "on test data"))
    for m, (label, traces) in enumerate(runs.items()):
        traces = list(traces)
        count = traces[0].config.get("num_students", 1)
        for i in (students if students is not None else range(count)):
            for row, split in ((1, "kl_train"), (2, "kl_test")):
                steps, mean, std = _mean_std_series(traces, f"{split}/{i}")
                color = palette[m % len(palette)]
                dash = ["solid", "dot", "dash", "dashdot"][i % 4]
                name = f"{label}, student {i}"
                fig.add_trace(go.Scatter(x=np.r_[steps, steps[::-1]], y=np.r_[mean + std, (mean - std)[::-1]],
                                         fill="toself", line=dict(width=0), fillcolor=color, opacity=0.15,
                                         hoverinfo="skip", showlegend=False, legendgroup=name), row=row, col=1)
                fig.add_trace(go.Scatter(x=steps, y=mean, mode="lines+markers", name=name, legendgroup=name,
                                         showlegend=row == 1, line=dict(color=color, dash=dash),
                                         hovertemplate=f"{name}<br>step %{{x}}<br>KL %{{y:.4f}}<extra></extra>"),
                              row=row, col=1)
    fig.update_yaxes(title_text="KL(teacher ‖ student)", type="log" if log_y else "linear")
    fig.update_xaxes(title_text="teacher step", row=2, col=1, rangeslider=dict(visible=True, thickness=0.06))
    fig.update_layout(title=title, template="plotly_white", height=640, hovermode="x unified")
    return fig


def lot_metric_curves(runs: dict[str, Sequence[Trace]], name: str = "test_acc", *, title: str = "",
                      y_title: str = "") -> go.Figure:
    """A teacher metric ("test_acc" or "test_ppl") over teacher steps, mean ± std over seeds per method,
    with a range slider."""
    palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"]
    fig = go.Figure()
    for m, (label, traces) in enumerate(runs.items()):
        steps, mean, std = _mean_std_series(list(traces), name)
        color = palette[m % len(palette)]
        fig.add_trace(go.Scatter(x=steps, y=mean, mode="lines+markers", name=label, line=dict(color=color),
                                 error_y=dict(type="data", array=std, visible=len(traces) > 1)))
    fig.update_xaxes(title_text="teacher step", rangeslider=dict(visible=True, thickness=0.06))
    fig.update_layout(title=title or f"Teacher {name}", yaxis_title=y_title or name, template="plotly_white")
    return fig


def lot_sweep_heatmap(alphas: Sequence[float], ns: Sequence[int], values: np.ndarray, *,
                      title: str = "LoT sweep: teacher test accuracy gain over teacher-only",
                      z_title: str = "Δ acc (points)") -> go.Figure:
    """values [len(ns), len(alphas)]: one number per (N, alpha), shown as an annotated heatmap."""
    values = np.asarray(values, dtype=float)
    fig = go.Figure(go.Heatmap(z=values, x=[str(a) for a in alphas], y=[str(n) for n in ns], colorscale="RdBu",
                               zmid=0, text=np.round(values, 2), texttemplate="%{text}",
                               colorbar=dict(title=z_title)))
    fig.update_layout(title=title, xaxis_title="α (teacher's KL weight)", yaxis_title="N (student steps per teacher step)",
                      template="plotly_white", xaxis=dict(type="category"), yaxis=dict(type="category"))
    return fig
