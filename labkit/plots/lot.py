"""Views of LoT (labkit.lot): KL imitation curves and sweeps."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from ..trace import Trace



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
