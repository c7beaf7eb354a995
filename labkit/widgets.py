"""ipywidgets scrubbers for a live kernel: the only module that imports ipywidgets.

The saved-notebook versions (animation frames, no kernel) are in `labkit.plots`: notebooks always show those, and
add these only where `live()` says a widget manager will draw them. These update a `go.FigureWidget` in place as
the slider moves. Wherever a widget cannot render (Colab without its custom widget manager, papermill, an exported
HTML page) a scrubber shows a one-line note instead of a bare text repr.
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go

from .plots import color_range


def live() -> bool:
    """True in an interactive Jupyter kernel whose front end draws third-party widgets. False in plain Python,
    when `LABKIT_STATIC` or `CI` is set (headless runs: a saved FigureWidget would embed the 5 MB plotly bundle in
    every output), and in Colab (its widget manager draws plotly's FigureWidget only after
    `google.colab.output.enable_custom_widget_manager()`: then set `LABKIT_LIVE=1`)."""
    if os.environ.get("LABKIT_LIVE"):
        return True
    if os.environ.get("LABKIT_STATIC") or os.environ.get("CI") or "google.colab" in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class Box(W.VBox):
    """A VBox whose saved form, where no widget manager draws it, is a short note rather than 'VBox(children=…)'."""

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        note = "live scrubber: it needs a running kernel; the figure above shows the same frames"
        data["text/plain"] = f"({note})"
        data["text/html"] = f"<p><em>({note})</em></p>"
        return bundle


class HeatmapScrubber:
    """A Play button and a step slider driving a heatmap FigureWidget over values [T, R, C].

    `.slider` (IntSlider over frame indices), `.play`, `.figure` (FigureWidget), `.widget` (display this).
    Setting `slider.value = i` shows step `steps[i]`.
    """

    def __init__(self, steps: Sequence[int], values: np.ndarray, *, x_labels: Sequence[str] | None = None,
                 y_labels: Sequence[str] | None = None, title: str = "", x_title: str = "", y_title: str = "",
                 colorscale: str = "Viridis", symmetric: bool = False, hide_diagonal: bool = False,
                 interval_ms: int = 200):
        self.steps = np.asarray(steps)
        self.values = np.array(values, dtype=float)
        if hide_diagonal and self.values.ndim == 3:  # a confusion matrix's errors: the diagonal would set the scale
            idx = np.arange(min(self.values.shape[1:]))
            self.values[:, idx, idx] = np.nan
        if self.values.ndim != 3 or len(self.values) != len(self.steps) or len(self.steps) == 0:
            raise ValueError(f"values must be [T, R, C] with T = len(steps) > 0; got shape {self.values.shape} "
                             f"and {len(self.steps)} steps")
        zmin, zmax = color_range(self.values, symmetric)
        x_labels = list(x_labels) if x_labels is not None else list(range(self.values.shape[2]))
        y_labels = list(y_labels) if y_labels is not None else list(range(self.values.shape[1]))
        last = len(self.steps) - 1
        self.figure = go.FigureWidget(
            data=[go.Heatmap(z=self.values[last], x=x_labels, y=y_labels, zmin=zmin, zmax=zmax, colorscale=colorscale)],
            layout=dict(title=title, xaxis_title=x_title, yaxis_title=y_title, template="plotly_white",
                        xaxis=dict(type="category"), yaxis=dict(type="category", autorange="reversed")))
        self.slider = W.IntSlider(value=last, min=0, max=last, description="frame", continuous_update=True,
                                  readout=False)
        self.label = W.Label(f"step {int(self.steps[last])}")
        self.play = W.Play(value=last, min=0, max=last, interval=interval_ms, description="Play")
        W.jslink((self.play, "value"), (self.slider, "value"))
        self.slider.observe(self._show, names="value")
        self.widget = Box([W.HBox([self.play, self.slider, self.label]), self.figure])

    def _show(self, change: dict) -> None:
        i = int(change["new"])
        with self.figure.batch_update():
            self.figure.data[0].z = self.values[i]
        self.label.value = f"step {int(self.steps[i])}"

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


# ---- l2t ----

class KeepDropScrubber:
    """Live keep/drop scrubber over a recorded member of an L2T deployment (arrays index, keep_mask, p_keep, labels
    and, under label noise, corrupted).

    A Play button and a step slider; the figure shows the first `n_images` examples shown at that student step
    (green frame = kept, red frame and faded = dropped, orange band = corrupted label) with p(keep) under each.
    `.slider` (IntSlider over recorded steps), `.play`, `.figure` (FigureWidget), `.widget` (display this).
    images: [N, C, H, W] inputs of the split the trace's "index" arrays point into.
    """

    def __init__(self, trace, images, *, n_images: int = 16, cols: int = 8, classes: Sequence[str] | None = None,
                 title: str = "What the teacher keeps and drops", interval_ms: int = 400):
        from .plots.l2t import l2t_keep_frame, scaled_images

        if "index" not in trace.arrays or not trace.arrays["index"]["value"]:
            raise ValueError("trace has no recorded keep/drop arrays: deploy with record='first' (or 'all') records them")
        self.trace, self.images = trace, scaled_images(images)
        self._frame = lambda i: l2t_keep_frame(trace, self.images, i, n_images, cols, classes)
        self.steps = np.asarray(trace.arrays["index"]["step"])
        uri, text = self._frame(0)
        legend = "green frame: kept · red frame, faded: dropped · number: p(keep)"
        legend += " · orange band: corrupted label" if "corrupted" in trace.arrays else ""
        self.figure = go.FigureWidget(
            data=[go.Image(source=uri, hoverinfo="skip"),
                  go.Scatter(mode="text", textfont=dict(size=10), hoverinfo="text", **text)],
            layout=dict(title=f"{title}<br><sup>{legend}</sup>", template="plotly_white", xaxis=dict(visible=False),
                        yaxis=dict(visible=False, scaleanchor="x"), showlegend=False, height=360,
                        margin=dict(l=10, r=10, t=70, b=10)))
        last = len(self.steps) - 1
        self.slider = W.IntSlider(value=0, min=0, max=last, description="frame", continuous_update=True, readout=False)
        self.label = W.Label(f"student step {int(self.steps[0])}")
        self.play = W.Play(value=0, min=0, max=last, interval=interval_ms, description="Play")
        W.jslink((self.play, "value"), (self.slider, "value"))
        self.slider.observe(self._show, names="value")
        self.widget = Box([W.HBox([self.play, self.slider, self.label]), self.figure])

    def _show(self, change: dict) -> None:
        i = int(change["new"])
        uri, text = self._frame(i)
        with self.figure.batch_update():
            self.figure.data[0].source = uri
            for key, value in text.items():
                setattr(self.figure.data[1], key, value)
        self.label.value = f"student step {int(self.steps[i])}"

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
