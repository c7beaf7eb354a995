from __future__ import annotations

import pytest
import torch

import labkit
from labkit import data, models, train

from conftest import needs_mnist


def blobs(n=600, seed=0):
    """A small separable 4-class problem: a model that trains must solve it."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    centres = torch.randn(4, 1, 6, 6, generator=g) * 2
    x = centres[y] + torch.randn(n, 1, 6, 6, generator=g) * 0.5
    return data.from_tensors(x[:500], y[:500], dev_size=100, test=(x[500:], y[500:]), seed=seed)


def test_fit_learns_and_records_a_trace():
    splits = blobs()
    model = models.build("mlp", splits.in_shape, splits.num_classes, seed=0, hidden=(32,))
    before = train.evaluate(model, splits.test)["acc"]
    trace = labkit.fit(model, splits, steps=200, batch_size=32, lr=0.05, seed=0, record_confusion=True,
                       progress_bar=False)
    after = labkit.evaluate(model, splits.test)
    assert after["acc"] > 0.95 > before
    steps, losses = trace.series("loss")
    assert len(steps) == 200 and steps[0] == 1 and losses[-10:].mean() < losses[:10].mean()
    dev_steps, _ = trace.series("dev_acc")
    assert dev_steps.tolist() == list(range(20, 201, 20))
    conf_steps, conf = trace.stack("confusion")
    assert conf.shape == (10, 4, 4) and abs(conf[-1].sum(1) - 1).max() < 1e-6
    assert trace.metrics["test_acc"] == pytest.approx(after["acc"])


def test_fit_is_a_pure_function_of_the_seed():
    splits = blobs()
    runs = []
    for seed in (0, 0, 1):
        model = models.build("mlp", splits.in_shape, splits.num_classes, seed=0, hidden=(16,))
        runs.append(labkit.fit(model, splits, steps=50, batch_size=16, seed=seed, progress_bar=False).series("loss")[1])
    assert (runs[0] == runs[1]).all() and not (runs[0] == runs[2]).all()


def test_fit_checkpoints_and_resumes_exactly(tmp_path, monkeypatch):
    splits = blobs()
    build = lambda: models.build("mlp", splits.in_shape, splits.num_classes, seed=0, hidden=(16,))
    reference = labkit.fit(build(), splits, steps=60, batch_size=16, seed=0, progress_bar=False)

    # A run killed after step 40 (its last checkpoint) ...
    real_save, saves = train._save_checkpoint, []

    def save_then_die(path, model, optimizer, scheduler, trace, losses, step):
        real_save(path, model, optimizer, scheduler, trace, losses, step)
        saves.append(step)
        if step == 40:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        labkit.fit(build(), splits, steps=60, batch_size=16, seed=0, progress_bar=False,
                   checkpoint_dir=tmp_path, checkpoint_every=20)
    monkeypatch.setattr(train, "_save_checkpoint", real_save)
    assert saves == [20, 40]
    # ... and resumed gives the same numbers as the uninterrupted run, and removes its checkpoint.
    resumed = labkit.fit(build(), splits, steps=60, batch_size=16, seed=0, progress_bar=False,
                         checkpoint_dir=tmp_path, checkpoint_every=20)
    assert resumed.series("loss")[1].tolist() == reference.series("loss")[1].tolist()
    assert resumed.metrics["test_loss"] == reference.metrics["test_loss"]
    assert not (tmp_path / train.CHECKPOINT_FILE).exists()


def test_fit_bad_input():
    splits = blobs()
    model = models.build("mlp", splits.in_shape, splits.num_classes, hidden=(8,))
    with pytest.raises(ValueError, match=r"steps=0 .* >= 1"):
        labkit.fit(model, splits, steps=0)
    with pytest.raises(ValueError, match="batch_size=1000"):
        labkit.fit(model, splits, steps=5, batch_size=1000)
    with pytest.raises(ValueError, match="lr=-1"):
        labkit.fit(model, splits, steps=5, lr=-1)
    with pytest.raises(ValueError, match="schedule='linear'.*constant, cosine, step"):
        labkit.fit(model, splits, steps=5, schedule="linear")


def test_bf16_on_cpu_is_noted_not_silent():
    splits = blobs()
    model = models.build("mlp", splits.in_shape, splits.num_classes, hidden=(8,))
    trace = labkit.fit(model, splits, steps=5, bf16=True, progress_bar=False)
    assert any("bf16" in m for m in trace.messages)


def test_schedules():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = train.make_schedule(opt, "step", 100)
    lrs = []
    for _ in range(100):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == 1.0 and lrs[49] == 1.0 and lrs[50] == pytest.approx(0.1) and lrs[75] == pytest.approx(0.01)


@needs_mnist
def test_readme_example_runs_as_written():
    splits = labkit.data.load("mnist", dev_size=5000, seed=0, device="cpu")
    model = labkit.models.build("mlp", in_shape=splits.in_shape, num_classes=splits.num_classes)
    trace = labkit.fit(model, splits, steps=2000, batch_size=128, lr=0.1, momentum=0.9, seed=0)
    result = labkit.evaluate(model, splits.test)
    assert set(result) == {"loss", "acc"} and result["acc"] > 0.96
    assert isinstance(trace, labkit.Trace)
