from __future__ import annotations

import numpy as np
import pytest
import torch

from labkit import trace as tr
from labkit.trace import Trace


def make_trace() -> Trace:
    t = Trace(config={"lr": 0.1, "model": "mlp", "steps": 3})
    t.log_series("loss", [1, 2, 3], torch.tensor([2.3, 1.0 / 3.0, 0.1]))
    t.log(3, dev_acc=0.973456789012345)
    for step in (1, 2, 3):
        t.log_array(step, phi=torch.eye(3) * step + 1e-9, keep_mask=np.array([True, False, step == 2]))
    t.note("episode 2 diverged: skipped")
    t.metrics["test_acc"] = 0.98
    return t


def test_round_trip_is_exact(tmp_path):
    t = make_trace()
    t.save(tmp_path)
    back = Trace.load(tmp_path)
    assert back.config == t.config and back.metrics == t.metrics and back.messages == t.messages
    assert back.scalars == t.scalars  # floats survive JSON exactly (repr round-trips)
    for name in ("phi", "keep_mask"):
        steps, values = back.stack(name)
        steps0, values0 = t.stack(name)
        assert (steps == steps0).all() and values.dtype == values0.dtype and (values == values0).all()


def test_a_killed_write_leaves_the_old_file(tmp_path, monkeypatch):
    t = make_trace()
    t.save(tmp_path)
    t.metrics["test_acc"] = 0.5

    def die(*args, **kwargs):
        raise KeyboardInterrupt  # killed mid-write: after the temp file was opened, before the rename

    monkeypatch.setattr(tr.os, "replace", die)
    with pytest.raises(KeyboardInterrupt):
        t.save(tmp_path)
    assert Trace.load(tmp_path).metrics["test_acc"] == 0.98
    assert [p.name for p in tmp_path.iterdir()] == ["trace.npz"]  # no temp file left behind


def test_write_json_atomic(tmp_path):
    tr.write_json(tmp_path / "metrics.json", {"acc": np.float32(0.5), "t": torch.tensor(2.0), "xs": np.arange(2)})
    import json

    assert json.loads((tmp_path / "metrics.json").read_text()) == {"acc": 0.5, "t": 2.0, "xs": [0, 1]}


def test_reading_unknown_names_says_what_exists():
    t = make_trace()
    with pytest.raises(KeyError, match="dev_acc"):
        t.series("acc")
    with pytest.raises(KeyError, match="phi"):
        t.stack("psi")
    with pytest.raises(KeyError, match="phi"):
        t.concat("psi")


def test_concat_joins_arrays_of_varying_length():
    t = tr.Trace()
    t.log_array(1, keep=np.array([1.0, 0.0, 1.0]))
    t.log_array(2, keep=torch.tensor([0.5]))
    np.testing.assert_array_equal(t.concat("keep"), [1.0, 0.0, 1.0, 0.5])
