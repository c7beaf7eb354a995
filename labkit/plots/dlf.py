"""Views of L2T-DLF (labkit.dlf): Φ_t heatmaps (with a floor below which a change is rounding), the teacher's
attention, the class pairs Φ links, and Φ beside a label-noise pattern; and the numbers these views show."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from ..trace import Trace
from .common import heatmap_scrubber



FLOAT_FLOOR = 1000 * float(np.finfo(np.float32).eps)  # ~1.2e-4: changes below FLOAT_FLOOR·|Φ_0| are rounding


def phi_floor(phi0: np.ndarray) -> float:
    """The smallest change of Φ a figure shows as change: FLOAT_FLOOR times Φ_0's scale (its largest entry)."""
    return FLOAT_FLOOR * max(float(np.abs(np.asarray(phi0)).max()), 1.0)


def phi_dynamics(phi: np.ndarray, phi0: np.ndarray) -> dict[str, float]:
    """How much Φ_t changes over a run and how far it is from where the teacher started.

    phi [T, C, C] (a run's Φ_t), phi0 [C, C] (the untrained teacher's Φ). Returns {"dynamic_range": max over
    entries of (max_t − min_t) Φ_t (what the scrubber can show), "static_shift": max |mean_t Φ_t − Φ_0| (what the
    teacher learned that does not depend on t), "largest_change": max |Φ_t − Φ_0| over t and entries, "floor":
    `phi_floor(phi0)`, "diag_mean": mean diagonal of mean_t Φ_t, "moves": dynamic_range > floor}."""
    phi, phi0 = np.asarray(phi, dtype=float), np.asarray(phi0, dtype=float)
    if phi.ndim != 3 or phi.shape[1:] != phi0.shape:
        raise ValueError(f"phi must be [T, C, C] and phi0 [C, C]; got {phi.shape} and {phi0.shape}")
    mean, floor = phi.mean(0), phi_floor(phi0)
    dynamic = float((phi.max(0) - phi.min(0)).max())
    return dict(dynamic_range=dynamic, static_shift=float(np.abs(mean - phi0).max()),
                largest_change=float(np.abs(phi - phi0).max()), floor=floor,
                diag_mean=float(np.diag(mean).mean()), moves=bool(dynamic > floor))


def describe_dynamics(d: dict, phi0: np.ndarray) -> str:
    """One sentence on a `phi_dynamics` result, in units of Φ_0's diagonal."""
    scale = float(np.abs(np.diag(np.asarray(phi0))).mean()) or 1.0
    pct = lambda v: f"{v:.3g} ({100 * v / scale:.2g} % of Φ_0's diagonal)"  # noqa: E731
    moves = (f"Φ_t moves: its largest change of one entry over the run is {pct(d['dynamic_range'])}"
             if d["moves"] else f"Φ_t does not move: every change over the run is below the float floor "
                                f"{d['floor']:.2g}, so the scrubber shows \"no change\"")
    return (f"{moves}; the run's mean Φ differs from Φ_0 by at most {pct(d['static_shift'])}, and Φ_t by at "
            f"most {pct(d['largest_change'])}.")


def phi_pair_changes(phi: np.ndarray, classes: Sequence[str], top: int = 5,
                     early: float = 0.1) -> dict[str, list[tuple[str, str, float]]]:
    """The off-diagonal entries of Φ whose value rises or falls most between the start and the end of a run.

    phi [T, C, C]; start = mean over the first `early` fraction of steps, end = over the last. Returns
    {"rise": [(row class y, column class j, change), ...], "fall": [...]}, `top` each, largest first. Entry
    (y, j) weighs log p_j in the loss of an example of class y: positive rewards probability on j (similarity),
    negative penalises it (discrimination)."""
    phi = np.asarray(phi, dtype=float)
    if phi.ndim != 3 or phi.shape[1] != phi.shape[2] or phi.shape[1] != len(classes):
        raise ValueError(f"phi must be [T, C, C] with C = len(classes) = {len(classes)}; got {phi.shape}")
    n = max(1, int(round(early * len(phi))))
    delta = phi[-n:].mean(0) - phi[:n].mean(0)
    C = len(classes)
    pairs = sorted(((classes[i], classes[j], float(delta[i, j])) for i in range(C) for j in range(C) if i != j),
                   key=lambda p: p[2])
    return {"rise": pairs[::-1][:top], "fall": pairs[:top]}


def noise_alignment(change: np.ndarray, transition: np.ndarray) -> dict[str, float]:
    """Does the learned change of Φ follow the label noise? change [C, C] (e.g. mean_t Φ_t − Φ_0), transition
    T [C, C] (T[y, j]: a class-y example is labelled j). An example *labelled* j is a noisy class-y one when
    T[y, j] > 0, so a loss that corrects the noise rewards p_y in the row of label j: entry (j, y) of Φ, the
    transpose of the noise pattern. Returns the mean change over those off-diagonal entries ("on_noise") and over
    the other off-diagonal entries ("elsewhere")."""
    change, T = np.asarray(change, dtype=float), np.asarray(transition, dtype=float)
    off = ~np.eye(len(T), dtype=bool)
    noise = (T.T > 0) & off
    return dict(on_noise=float(change[noise].mean()) if noise.any() else float("nan"),
                elsewhere=float(change[off & ~noise].mean()), noise_pairs=int(noise.sum()))


def dlf_phi_scrubber(trace: Trace, classes: Sequence[str], phi0: np.ndarray, *, reference: str = "start",
                     max_frames: int = 60, title: str = "") -> go.Figure:
    """Φ_t of an L2T-DLF run (array "phi", [T, C, C]) scrubbed over student steps, classes on both axes.

    Row y, column j: the weight of log p_j in the loss of an example of class y. reference: "start" shows
    Φ_t − Φ_0 (what the teacher changed: red > 0 rewards p_j, "similar"; blue < 0 penalises it,
    "discriminate"), "mean" shows Φ_t − mean_t Φ_t (only the part that changes over the run), "none" shows Φ_t.
    The colour scale is one for all steps; a change scale never spans less than ±`phi_floor(phi0)`, and a run
    whose change stays below it says "no change" instead of magnifying float rounding."""
    steps, phi = trace.stack("phi")
    phi0 = np.asarray(phi0, dtype=float)
    refs = {"start": phi0, "mean": phi.mean(0), "none": 0.0}
    if reference not in refs:
        raise ValueError(f"reference={reference!r} is not allowed: choose one of {', '.join(refs)}")
    names = {"start": "Φ_t − Φ_0", "mean": "Φ_t − its mean over the run", "none": "Φ_t"}
    return heatmap_scrubber(steps, phi - refs[reference], x_labels=list(classes), y_labels=list(classes),
                            title=title or f"{names[reference]} over student steps",
                            x_title="class j (log p_j)", y_title="true class y", colorscale="RdBu_r",
                            symmetric=reference != "none", floor=phi_floor(phi0) if reference != "none" else 0.0,
                            max_frames=max_frames)


def dlf_phi_vs_noise(change: np.ndarray, transition: np.ndarray, classes: Sequence[str], *,
                     title: str = "What the loss learned beside how the labels were corrupted") -> go.Figure:
    """Left: the learned change of Φ [C, C] (e.g. mean_t Φ_t − Φ_0, diagonal hidden); right: the transpose of
    the noise transition matrix (entry (j, y) = T[y, j], off-diagonal): where a noise-correcting loss would
    reward p_y for an example labelled j."""
    from plotly.subplots import make_subplots

    change = np.array(change, dtype=float)
    noise = np.array(transition, dtype=float).T.copy()
    np.fill_diagonal(change, np.nan)
    np.fill_diagonal(noise, np.nan)
    bound = float(np.nanmax(np.abs(change))) or 1.0
    fig = make_subplots(rows=1, cols=2, subplot_titles=("learned change of Φ[label, j]", "noise: Tᵀ[label, true]"))
    fig.add_trace(go.Heatmap(z=change, x=list(classes), y=list(classes), zmin=-bound, zmax=bound,
                             colorscale="RdBu_r", colorbar=dict(x=0.45)), row=1, col=1)
    fig.add_trace(go.Heatmap(z=noise, x=list(classes), y=list(classes), colorscale="Reds", colorbar=dict(x=1.0)),
                  row=1, col=2)
    for col in (1, 2):
        fig.update_yaxes(autorange="reversed", type="category", title_text="label y", row=1, col=col)
        fig.update_xaxes(type="category", title_text="class j", row=1, col=col)
    fig.update_layout(title=title, template="plotly_white", height=420)
    return fig


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
