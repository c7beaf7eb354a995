"""Scenarios: the training split only, exact rates, seeded, recorded."""
from __future__ import annotations

import pytest
import torch

from labkit import data


def _splits(n=2000, C=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % C
    x = torch.randn(n, 1, 4, 4, generator=g)
    return data.from_tensors(x[:-300], y[:-300], dev_size=200, test=(x[-300:], y[-300:]), seed=seed)


@pytest.mark.parametrize("kind", ["symmetric", "pairflip"])
def test_label_noise_rate_is_exact_per_class_and_only_on_train(kind):
    splits = _splits()
    noisy = data.noisy_labels(splits, 0.4, kind=kind, seed=3)
    assert torch.equal(noisy.dev.y, splits.dev.y) and torch.equal(noisy.test.y, splits.test.y)
    assert torch.equal(noisy.dev.x, splits.dev.x) and torch.equal(noisy.train.x, splits.train.x)
    assert torch.equal(noisy.train.clean_y, splits.train.y)
    for c in range(10):
        members = splits.train.y == c
        bad = int(noisy.train.corrupted[members].sum())
        assert abs(bad - 0.4 * int(members.sum())) <= 1  # within one example per class
    if kind == "pairflip":
        moved = noisy.train.corrupted
        assert torch.equal(noisy.train.y[moved], (splits.train.y[moved] + 1) % 10)
    record = noisy.scenario[-1]
    assert record["kind"] == "noisy_labels" and record["corrupted"] == int(noisy.train.corrupted.sum())


def test_label_noise_is_a_pure_function_of_its_seed():
    splits = _splits()
    a, b = (data.noisy_labels(splits, 0.3, seed=1) for _ in range(2))
    assert torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.train.y, data.noisy_labels(splits, 0.3, seed=2).train.y)


def test_noise_from_a_transition_matrix_and_bad_matrices():
    splits = _splits()
    T = torch.eye(10, dtype=torch.float64)
    T[2, 2], T[2, 7] = 0.5, 0.5  # class 2 half mislabelled as 7
    noisy = data.noisy_labels(splits, transition=T, seed=0)
    flipped = noisy.train.corrupted
    assert set(splits.train.y[flipped].tolist()) == {2} and set(noisy.train.y[flipped].tolist()) == {7}
    with pytest.raises(ValueError, match="transition"):
        data.noisy_labels(splits, transition=torch.ones(10, 10), seed=0)
    with pytest.raises(ValueError, match="rate"):
        data.noisy_labels(splits, float("nan"))
    with pytest.raises(ValueError, match="either rate"):
        data.noisy_labels(splits)


def test_imbalance_ratio_as_asked_and_composition():
    splits = _splits()
    tail = data.imbalanced(splits, 10.0, seed=0)
    counts = torch.bincount(tail.train.y, minlength=10)
    assert counts[0] / counts[-1] == pytest.approx(10.0, rel=0.05)
    assert (counts[:-1] >= counts[1:]).all() and len(tail.dev) == len(splits.dev)
    small = data.subsample(tail, 100, seed=0)
    assert len(small.train) == 100 and [r["kind"] for r in small.scenario] == ["imbalanced", "subsample"]
    noisy = data.noisy_labels(small, 0.2, seed=0)
    assert len(noisy.scenario) == 3 and noisy.train.clean_y is not None
    with pytest.raises(ValueError, match="ratio"):
        data.imbalanced(splits, 0.5)


def test_subsample_is_class_balanced_and_apply_scenario():
    splits = _splits()
    small = data.subsample(splits, 103, seed=0)
    counts = torch.bincount(small.train.y, minlength=10)
    assert counts.sum() == 103 and counts.max() - counts.min() <= 1
    same = data.apply_scenario(splits, {"kind": "subsample", "size": 103, "seed": 0})
    assert torch.equal(same.train.y, small.train.y)
    pair = data.apply_scenario(splits, {"kind": "noisy_labels", "rate": 0.2, "noise": "pairflip", "seed": 0})
    assert pair.scenario[-1]["noise"] == "pairflip"
    assert data.apply_scenario(splits, None) is splits
    with pytest.raises(ValueError, match="scenario kind"):
        data.apply_scenario(splits, {"kind": "shuffle"})
