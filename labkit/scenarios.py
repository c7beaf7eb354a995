"""Data scenarios: what teaching is for. Each changes the *training* split only (dev and test stay clean, a
small trusted dev set as in the data-reweighting literature), is seeded, composes with `load` and
`from_tensors` and with the other scenarios, and records what it changed in `splits.scenario` (and, for label
noise, the original labels in `train.clean_y`). Public through `labkit.data`.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from . import seeds as seeding
from .checks import check_choice, check_float, check_int
from .data import Split, Splits, TextSplits

def _with_train(splits: Splits, train: Split, record: dict) -> Splits:
    if isinstance(splits, TextSplits):
        raise ValueError("scenarios apply to classification Splits, not to a text corpus")
    return replace(splits, train=train, scenario=splits.scenario + (record,))


def _exact_counts(total: int, weights: torch.Tensor) -> torch.Tensor:
    """Split `total` into integer counts proportional to `weights` [K] (largest remainder): they sum to total."""
    share = weights.double() / weights.sum() * total
    counts = share.floor().long()
    counts[torch.argsort(share - counts, descending=True)[: total - int(counts.sum())]] += 1
    return counts


def noise_transition(num_classes: int, rate: float, kind: str = "symmetric") -> torch.Tensor:
    """The label-noise transition matrix T [C, C] (row y: the distribution of the noisy label of class y).
    symmetric: 1 − rate on the diagonal, rate/(C − 1) elsewhere; pairflip: rate to the next class, y → y + 1 mod C."""
    check_int("num_classes", num_classes, 2)
    check_float("rate", rate, 0, 1, high_open=True)
    check_choice("kind", kind, ("symmetric", "pairflip"))
    eye = torch.eye(num_classes, dtype=torch.float64)
    other = (1 - eye) / (num_classes - 1) if kind == "symmetric" else torch.roll(eye, 1, dims=1)
    return (1 - rate) * eye + rate * other


def noisy_labels(splits: Splits, rate: float | None = None, *, kind: str = "symmetric",
                 transition: torch.Tensor | None = None, seed: int = 0) -> Splits:
    """Corrupt training labels: for each class y, exactly round((1 − T[y, y]) · n_y) of its n_y examples (chosen by
    the stream `seed`/"noise") get a wrong label, split among the classes j ≠ y in proportion to T[y, j].

    Give `rate` and `kind` ("symmetric" or "pairflip", see `noise_transition`) or a transition matrix T [C, C]
    whose rows sum to 1. dev and test keep their clean labels; `train.clean_y` keeps the original labels and
    `train.corrupted` marks the corrupted examples.
    """
    C = splits.num_classes
    if (rate is None) == (transition is None):
        raise ValueError("give either rate (with kind) or transition, not both and not neither")
    T = noise_transition(C, rate, kind) if transition is None else torch.as_tensor(transition, dtype=torch.float64)
    if T.shape != (C, C) or not torch.isfinite(T).all() or (T < 0).any() or not torch.allclose(T.sum(1), torch.ones(C, dtype=T.dtype)):
        raise ValueError(f"transition must be a [C, C] = [{C}, {C}] matrix of finite non-negative rows summing to 1")
    train = splits.train
    clean = train.y if train.clean_y is None else train.clean_y
    before = train.y.cpu()
    y = before.clone()
    gen = seeding.generator(seed, "noise")
    for c in range(C):  # select by the labels before this scenario: a label just flipped to c is not flipped again
        idx = torch.nonzero(before == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        off = T[c].clone()
        off[c] = 0
        n_bad = round(float(T[c].sum() - T[c, c]) * len(idx))
        if n_bad == 0 or off.sum() == 0:
            continue
        targets = torch.repeat_interleave(torch.arange(C), _exact_counts(n_bad, off))
        y[idx[:n_bad]] = targets[torch.randperm(n_bad, generator=gen)]
    y = y.to(train.y.device)
    record = dict(kind="noisy_labels", noise=kind if transition is None else "transition", rate=rate, seed=seed,
                  transition=T.tolist(), corrupted=int((y != clean).sum()), train_size=len(y))
    return _with_train(splits, Split(train.x, y, clean), record)


def _keep(splits: Splits, per_class: torch.Tensor, seed: int, role: str) -> Split:
    """The training split keeping the first per_class[c] examples of each class c in a seeded order."""
    y = splits.train.y.cpu()
    gen = seeding.generator(seed, role)
    keep = []
    for c in range(splits.num_classes):
        idx = torch.nonzero(y == c).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=gen)][: int(per_class[c])])
    order = torch.cat(keep)
    order = order[torch.randperm(len(order), generator=gen)].to(splits.train.y.device)
    return splits.train[order]


def imbalanced(splits: Splits, ratio: float, *, seed: int = 0) -> Splits:
    """Long-tailed training split: class c keeps round(m · ratio^(−c/(C−1))) examples, m the smallest class count,
    so class 0 has `ratio` times as many examples as class C − 1 (Cao et al. 2019's profile)."""
    check_float("ratio", ratio, 1)
    C = splits.num_classes
    counts = torch.bincount(splits.train.y.cpu(), minlength=C)
    m = int(counts.min())
    per_class = torch.tensor([round(m * ratio ** (-c / (C - 1))) for c in range(C)])
    if per_class.min() < 1:
        raise ValueError(f"ratio={ratio!r} is not allowed here: the rarest class would keep no example "
                         f"(the smallest class has {m}); choose ratio <= {m}")
    train = _keep(splits, per_class, seed, "imbalance")
    record = dict(kind="imbalanced", ratio=ratio, seed=seed, class_counts=per_class.tolist(), train_size=len(train))
    return _with_train(splits, train, record)


def subsample(splits: Splits, size: int, *, seed: int = 0) -> Splits:
    """A small training split: `size` examples, class-balanced (size // C per class, the remainder to the first
    classes), drawn by the stream `seed`/"subsample"."""
    C = splits.num_classes
    counts = torch.bincount(splits.train.y.cpu(), minlength=C)
    check_int("size", size, C, int(counts.sum()))
    per_class = torch.full((C,), size // C) + (torch.arange(C) < size % C).long()
    if (per_class > counts).any():
        raise ValueError(f"size={size!r} is not allowed: a class has only {int(counts.min())} examples")
    train = _keep(splits, per_class, seed, "subsample")
    record = dict(kind="subsample", size=size, seed=seed, class_counts=per_class.tolist(), train_size=len(train))
    return _with_train(splits, train, record)


SCENARIOS = {"noisy_labels": noisy_labels, "imbalanced": imbalanced, "subsample": subsample}


def apply_scenario(splits: Splits, spec: dict | None) -> Splits:
    """Apply a scenario given as a dict {"kind": name, **its arguments} (None or {}: unchanged), e.g.
    {"kind": "noisy_labels", "rate": 0.4, "noise": "pairflip"}; see `SCENARIOS`."""
    if not spec:
        return splits
    spec = dict(spec)
    kind = check_choice("scenario kind", spec.pop("kind", None), SCENARIOS)
    if kind == "noisy_labels" and "noise" in spec:
        spec["kind"] = spec.pop("noise")
    return SCENARIOS[kind](splits, **spec)


