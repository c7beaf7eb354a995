"""Views of L2T-DLN (labkit.dln): the loss network's surface and the LSTM's updates."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..trace import Trace
from .common import heatmap_scrubber



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
