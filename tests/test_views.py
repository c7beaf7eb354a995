from __future__ import annotations

import numpy as np
import pytest

from labkit import plots, widgets
from labkit.trace import Trace


def scrubbed_values():
    rng = np.random.default_rng(0)
    return [0, 10, 20, 30], rng.random((4, 3, 3))


def test_static_scrubber_has_a_frame_per_step_and_a_fixed_scale():
    steps, values = scrubbed_values()
    fig = plots.heatmap_scrubber(steps, values, x_labels=list("abc"), y_labels=list("abc"))
    assert [f.name for f in fig.frames] == ["0", "10", "20", "30"]
    assert all(np.array_equal(np.asarray(f.data[0].z), v) for f, v in zip(fig.frames, values))
    assert {(f.data[0].zmin, f.data[0].zmax) for f in fig.frames} == {(values.min(), values.max())}
    slider = fig.layout.sliders[0]
    assert [s.args[0][0] for s in slider.steps] == ["0", "10", "20", "30"]
    assert fig.layout.updatemenus[0].buttons[0].label == "Play"


def test_static_scrubber_thins_long_runs():
    fig = plots.heatmap_scrubber(list(range(1000)), np.zeros((1000, 2, 2)), max_frames=50)
    names = [f.name for f in fig.frames]
    assert len(names) <= 50 and names[0] == "0" and names[-1] == "999"


def test_static_scrubber_bad_shapes():
    with pytest.raises(ValueError, match=r"\[T, R, C\]"):
        plots.heatmap_scrubber([0, 1], np.zeros((3, 2, 2)))


def test_widget_slider_changes_the_figure():
    steps, values = scrubbed_values()
    scrubber = widgets.HeatmapScrubber(steps, values)
    shown = np.asarray(scrubber.figure.data[0].z)
    assert np.array_equal(shown, values[-1])
    scrubber.slider.value = 1
    assert np.array_equal(np.asarray(scrubber.figure.data[0].z), values[1])
    assert scrubber.label.value == "step 10"
    assert (scrubber.figure.data[0].zmin, scrubber.figure.data[0].zmax) == (values.min(), values.max())


def test_curves_from_a_trace():
    t = Trace()
    t.log_series("loss", [1, 2, 3], [3.0, 2.0, 1.0])
    fig = plots.curves(t, ["loss"])
    assert list(fig.data[0].y) == [3.0, 2.0, 1.0]


def test_live_is_false_outside_a_kernel(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("LABKIT_STATIC", raising=False)
    assert widgets.live() is False
