"""Views of L2T (labkit.l2t): keep/drop decisions, keep rates, accuracy against effective examples."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from ..trace import Trace
from .common import animation_controls, frame_indices



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
