"""Views of L2T (labkit.l2t): keep/drop decisions, keep rates (by class; corrupted against clean), accuracy against
effective examples, the teacher's reward. Pure functions of Traces; a diverged run (or one that trained 0 steps) is
never drawn as a curve: it is left out and counted in the legend."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from ..stats import t_quantile
from ..trace import Trace
from .common import animation_controls, frame_indices

_KEEP_RGB = np.array([0, 160, 60], dtype=np.uint8)     # frame of a kept example
_DROP_RGB = np.array([215, 30, 30], dtype=np.uint8)    # frame of a dropped example (its image is also faded)
_NOISY_RGB = np.array([255, 170, 0], dtype=np.uint8)   # label band of an example whose label was corrupted
_BORDER, _LABEL_BAND = 3, 12
_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]
_NO_RECORD = "trace has no recorded keep/drop arrays: deploy with record='first' (or 'all') records them"


def l2t_mosaic(images: np.ndarray, keep: np.ndarray, cols: int = 8, corrupted: np.ndarray | None = None) -> np.ndarray:
    """RGB mosaic [H, W, 3] uint8 of images [n, 1 or 3, h, w] in [0, 1]: a green frame around each kept image, a red
    frame around each dropped one (faded to 35 %), a band under each: white, or orange when its label is corrupted."""
    images, keep = np.asarray(images, dtype=float), np.asarray(keep, dtype=bool)
    corrupted = np.zeros(len(keep), bool) if corrupted is None else np.asarray(corrupted, dtype=bool)
    n, ch, h, w = images.shape
    th, tw = h + 2 * _BORDER + _LABEL_BAND, w + 2 * _BORDER
    out = np.full((-(-n // cols) * th, cols * tw, 3), 255, dtype=np.uint8)
    rgb = np.clip(np.repeat(images, 3, axis=1) if ch == 1 else images[:, :3], 0, 1).transpose(0, 2, 3, 1) * 255
    for i in range(n):
        y0, x0 = (i // cols) * th, (i % cols) * tw
        out[y0:y0 + h + 2 * _BORDER, x0:x0 + tw] = _KEEP_RGB if keep[i] else _DROP_RGB
        if corrupted[i]:
            out[y0 + h + 2 * _BORDER:y0 + th, x0:x0 + tw] = _NOISY_RGB
        tile = rgb[i] if keep[i] else 255 - 0.35 * (255 - rgb[i])
        out[y0 + _BORDER:y0 + _BORDER + h, x0 + _BORDER:x0 + _BORDER + w] = tile.astype(np.uint8)
    return out


def _png_uri(rgb: np.ndarray) -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).quantize(colors=64).save(buffer, format="PNG", optimize=True)  # a few kB per frame
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def scaled_images(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Images [N, C, H, W] (tensor or array) scaled to [0, 1] as one block (for the mosaics)."""
    images = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=float)
    lo, hi = float(images.min()), float(images.max())
    return (images - lo) / (hi - lo or 1.0)


def l2t_keep_frame(trace: Trace, images: np.ndarray, i: int, n_images: int = 16, cols: int = 8,
                   classes: Sequence[str] | None = None) -> tuple[str, dict]:
    """The i-th recorded step of a trace as (PNG data URI of the mosaic, text-trace fields): its first `n_images`
    shown examples, kept ones framed green, dropped ones red and faded, each with ✓/✗ and p(keep) (and "noisy" on an
    orange band where the label was corrupted). images: [N, C, H, W] in [0, 1] of the split "index" points into."""
    a = trace.arrays
    idx, keep, p, labels = (np.asarray(a[k]["value"][i])[:n_images] for k in ("index", "keep_mask", "p_keep", "labels"))
    keep = keep.astype(bool)
    bad = np.asarray(a["corrupted"]["value"][i])[:n_images].astype(bool) if "corrupted" in a else np.zeros_like(keep)
    h, w = images.shape[2:]
    th, tw = h + 2 * _BORDER + _LABEL_BAND, w + 2 * _BORDER
    pos = np.arange(len(idx))
    names = [classes[int(c)] if classes else str(int(c)) for c in labels]
    text = [f"{'✓' if k else '✗'}{q:.2f}{' noisy' if b else ''}" for k, q, b in zip(keep, p, bad)]
    hover = [f"label {nm}{' (corrupted)' if b else ''}<br>{'kept' if k else 'dropped'}<br>p(keep) = {q:.3f}"
             for nm, k, q, b in zip(names, keep, p, bad)]
    return _png_uri(l2t_mosaic(images[idx], keep, cols, bad)), dict(
        x=(pos % cols) * tw + tw / 2, y=(pos // cols) * th + h + 2 * _BORDER + _LABEL_BAND / 2, text=text,
        hovertext=hover)


def l2t_keep_scrubber(trace: Trace, images: np.ndarray | torch.Tensor, *, n_images: int = 16, cols: int = 8,
                      max_frames: int = 40, classes: Sequence[str] | None = None,
                      title: str = "What the teacher keeps and drops", frame_ms: int = 400) -> go.Figure:
    """Static keep/drop scrubber (animation frames, Play, a step slider; works with no kernel) over a recorded member
    of a deployment (arrays index, keep_mask, p_keep, labels[, corrupted]); images: the split "index" points into."""
    if "index" not in trace.arrays or not trace.arrays["index"]["value"]:
        raise ValueError(_NO_RECORD)
    images, steps = scaled_images(images), trace.arrays["index"]["step"]

    def data(i: int) -> list:
        uri, text = l2t_keep_frame(trace, images, int(i), n_images, cols, classes)
        return [go.Image(source=uri, hoverinfo="skip"), go.Scatter(mode="text", textfont=dict(size=10),
                                                                    hoverinfo="text", **text)]

    frames = [go.Frame(data=data(i), name=str(int(steps[i]))) for i in frame_indices(len(steps), max_frames)]
    legend = "green frame: kept · red frame, faded: dropped · number: p(keep)"
    legend += " · orange band: corrupted label" if "corrupted" in trace.arrays else ""
    fig = go.Figure(data=frames[0].data, frames=frames)
    fig.update_layout(title=f"{title}<br><sup>{legend}</sup>", template="plotly_white", xaxis=dict(visible=False),
                      yaxis=dict(visible=False, scaleanchor="x"), showlegend=False, height=360,
                      margin=dict(l=10, r=10, t=70, b=110),
                      **animation_controls([f.name for f in frames], prefix="student step ", frame_ms=frame_ms,
                                           y=-0.02, button_y=-0.05))
    return fig


def l2t_keep_rate_by_class(trace: Trace, num_classes: int, *, bins: int = 20, classes: Sequence[str] | None = None,
                           title: str = "Keep rate by class over training") -> go.Figure:
    """Heatmap [class × window of student steps] of the share of shown examples kept (a recorded member)."""
    steps, masks, labels = (trace.arrays.get(k, {}).get(f, []) for k, f in
                            (("keep_mask", "step"), ("keep_mask", "value"), ("labels", "value")))
    if not steps:
        raise ValueError(_NO_RECORD)
    edges = np.linspace(0, len(steps), min(bins, len(steps)) + 1).round().astype(int)
    rate, centres = np.full((num_classes, len(edges) - 1), np.nan), []
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        keep = np.concatenate([np.asarray(m, dtype=float) for m in masks[lo:hi]])
        lab = np.concatenate([np.asarray(v) for v in labels[lo:hi]]).astype(int)
        shown, kept = np.bincount(lab, minlength=num_classes), np.bincount(lab, weights=keep, minlength=num_classes)
        rate[:, b] = np.where(shown > 0, kept / np.maximum(shown, 1), np.nan)
        centres.append(f"{int(steps[lo])}–{int(steps[hi - 1])}" if hi - lo > 1 else str(int(steps[lo])))
    fig = go.Figure(go.Heatmap(z=rate, x=centres, y=list(classes or range(num_classes)), zmin=0, zmax=1,
                               colorscale="Viridis", colorbar=dict(title="keep rate"),
                               hovertemplate="class %{y}<br>steps %{x}<br>keep rate %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="student steps", yaxis_title="class", template="plotly_white",
                      xaxis=dict(type="category"), yaxis=dict(type="category", autorange="reversed"))
    return fig


def _band(traces: Sequence[Trace], name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """(steps, mean, 95 % t half-width, n, left out) of a scalar series over the runs that have it whole: diverged
    runs, runs that trained 0 steps and runs cut short (stalled) are left out and counted."""
    ok = [t for t in traces if not t.diverged and t.metrics.get("steps_done") and name in t.scalars]
    full = max((len(t.scalars[name]["step"]) for t in ok), default=0)
    ok = [t for t in ok if len(t.scalars[name]["step"]) == full]
    if not ok or not full:
        return np.empty(0), np.empty(0), np.empty(0), 0, len(traces)
    values = np.stack([t.series(name)[1] for t in ok])
    n = len(ok)
    half = t_quantile(n - 1) * values.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(full)
    return ok[0].series(name)[0], values.mean(0), half, n, len(traces) - n


def l2t_accuracy_vs_examples(results: dict[str, list[Trace]], *, name: str = "test_acc", tau: float | None = None,
                             title: str = "Test accuracy against effective training examples") -> go.Figure:
    """The paper's picture: mean over seeds of `name` against effective training examples (step × M), with a 95 %
    t-interval band, one line per method; runs diverged, stalled or of 0 steps are left out (counted in the legend)."""
    fig = go.Figure()
    for k, (method, traces) in enumerate(results.items()):
        steps, mean, half, n, out = _band(traces, name)
        if not n:
            continue
        x, colour = steps * traces[0].config["batch_size"], _PALETTE[k % len(_PALETTE)]
        fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([mean + half, (mean - half)[::-1]]),
                                 fill="toself", fillcolor=colour, opacity=0.15, line=dict(width=0), hoverinfo="skip",
                                 showlegend=False))
        fig.add_trace(go.Scatter(x=x, y=mean, mode="lines", line=dict(color=colour),
                                 name=f"{method} (n={n}{f', {out} left out' if out else ''})"))
    if tau is not None:
        fig.add_hline(y=tau, line=dict(dash="dash", color="grey"), annotation_text=f"τ = {tau}")
    fig.update_layout(title=title, xaxis_title="effective training examples", yaxis_title=name.replace("_", " "),
                      template="plotly_white")
    return fig


def l2t_corrupted_keep_rate(results: dict[str, list[Trace]], *, title: str = "Keep rate of corrupted and clean "
                            "examples through the students' training") -> go.Figure:
    """Per method, mean over seeds (95 % t band) of the keep rate of the corrupted (dashed) and the clean (solid)
    examples shown between dev checks, against the student step (label-noise runs; NoTeach keeps all, the Oracle
    keeps exactly the clean ones)."""
    fig = go.Figure()
    for k, (method, traces) in enumerate(results.items()):
        for name, dash in (("keep_rate_clean", "solid"), ("keep_rate_corrupted", "dash")):
            steps, mean, half, n, out = _band(traces, name)
            if n:
                fig.add_trace(go.Scatter(x=steps, y=mean, mode="lines", line=dict(color=_PALETTE[k % 7], dash=dash),
                                         error_y=dict(type="data", array=half, thickness=0.6),
                                         name=f"{method}: {name[10:]} (n={n})"))
    fig.update_layout(title=title, xaxis_title="student step", yaxis_title="keep rate", yaxis_range=[-0.02, 1.02],
                      template="plotly_white")
    return fig


def l2t_teacher_keep_rates(trace: Trace, *, window: int = 8,
                           title: str = "Teacher training: keep rates per episode") -> go.Figure:
    """Keep rate (all, and corrupted / clean under label noise) of each teacher-training episode, with its moving
    average over `window` episodes: what the teacher learns to drop as it trains."""
    fig = go.Figure()
    for k, name in enumerate(n for n in ("keep_rate", "keep_rate_clean", "keep_rate_corrupted") if n in trace.scalars):
        episodes, v = trace.series(name)
        fig.add_trace(go.Scatter(x=episodes, y=v, mode="markers", marker=dict(size=4, color=_PALETTE[k]),
                                 opacity=0.4, name=name))
        if len(v) >= window:
            fig.add_trace(go.Scatter(x=episodes[window - 1:], y=np.convolve(v, np.ones(window) / window, "valid"),
                                     mode="lines", line=dict(color=_PALETTE[k]), name=f"{name}, mean of {window}"))
    fig.update_layout(title=title, xaxis_title="episode", yaxis_title="keep rate", template="plotly_white")
    return fig


def l2t_reward_curve(trace: Trace, *, window: int = 8, title: str = "Teacher training: reward per episode") -> go.Figure:
    """Reward r = −log(i_τ/T') per episode, its moving average over `window` episodes, and the baseline."""
    episodes, rewards = trace.series("reward")
    fig = go.Figure(go.Scatter(x=episodes, y=rewards, mode="markers", name="reward", marker=dict(size=5)))
    if len(rewards) >= window:
        fig.add_trace(go.Scatter(x=episodes[window - 1:], y=np.convolve(rewards, np.ones(window) / window, "valid"),
                                 mode="lines", name=f"mean of last {window}"))
    b_episodes, baseline = trace.series("baseline")
    fig.add_trace(go.Scatter(x=b_episodes, y=baseline, mode="lines", name="baseline", line=dict(dash="dot")))
    fig.update_layout(title=title, xaxis_title="episode", yaxis_title="reward −log(i_τ / T')", template="plotly_white")
    return fig


def l2t_keep_vs_feature(trace: Trace, feature: str = "margin", *, max_points: int = 4000, seed: int = 0,
                        title: str = "") -> go.Figure:
    """p(keep) of each shown example against one thing the teacher saw ("margin" p_y − max_{j≠y} p_j, or
    "student_loss" −log p_y), coloured by student step; dashed: the deployment rule's 0.5. A recorded member of an
    l2t deployment; at most `max_points` examples, a subset drawn with a seeded numpy generator."""
    if feature not in trace.arrays:
        raise ValueError(f"feature={feature!r} is not in this trace: record an l2t deployment; "
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
