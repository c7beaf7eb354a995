"""Tests of labkit.l2t (Learning to Teach) and its views. Synthetic data: no dataset files needed."""
import math

import numpy as np
import pytest
import torch

from labkit import l2t, plots
from labkit.data import Split


def _blobs(n=600, c=4, d=12, seed=0, scale=3.0):
    """A small separable C-class problem: Gaussian blobs as [N, 1, 3, 4] 'images'."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(c, d, generator=g) * scale
    y = torch.arange(n) % c
    x = centres[y] + torch.randn(n, d, generator=g)
    return Split(x.view(n, 1, 3, 4), y)


SETUP = l2t.Setup(batch_size=8, shown=8, tau=0.8, max_steps=40, lr=0.05, dev_every=5, eval_size=200)


def test_split_halves_class_balanced_and_disjoint():
    data = _blobs(400, c=4)
    a, b = l2t.split_halves(data, seed=3)
    assert len(a) + len(b) == 400
    assert torch.bincount(a.y).tolist() == [50] * 4 and torch.bincount(b.y).tolist() == [50] * 4
    rows = {tuple(r) for r in a.x.flatten(1).tolist()}
    assert not rows & {tuple(r) for r in b.x.flatten(1).tolist()}
    a2, _ = l2t.split_halves(data, seed=3)
    assert torch.equal(a.x, a2.x)
    a3, _ = l2t.split_halves(data, seed=4)
    assert not torch.equal(a.x, a3.x)


def test_state_features_values_and_width():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 3.0]])
    y = torch.tensor([0, 1])
    student = torch.tensor([0.5, 0.7, 0.9])
    f = l2t.state_features(logits, y, student)
    assert f.shape == (2, l2t.feature_dim(3)) == (2, 11)
    assert l2t.feature_dim(10) == 25
    p = torch.softmax(logits, 1)
    assert torch.equal(f[:, :3], torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
    assert torch.allclose(f[:, 3:6], student.expand(2, 3))
    assert torch.allclose(f[:, 6:9], p)
    assert torch.allclose(f[:, 9], -torch.log(p[[0, 1], [0, 1]]), atol=1e-6)
    assert torch.allclose(f[0, 10], p[0, 0] - p[0, 1]) and torch.allclose(f[1, 10], p[1, 1] - p[1, 2])


def test_teacher_init_and_width_error():
    t = l2t.Teacher(10, seed=0)
    p = t(torch.randn(64, 25))
    assert p.shape == (64,) and torch.allclose(p, torch.full_like(p, 0.88), atol=0.01)
    with pytest.raises(ValueError, match="features have shape"):
        t(torch.randn(4, 24))
    with pytest.raises(ValueError, match="features have shape"):
        t(torch.randn(25))


def test_log_prob_matches_bernoulli():
    t = l2t.Teacher(3, seed=1)
    f = torch.randn(20, 11)
    keep = torch.rand(20) < 0.5
    p = t(f)
    expected = torch.distributions.Bernoulli(probs=p).log_prob(keep.float())
    assert torch.allclose(t.log_prob(f, keep), expected, atol=1e-5)


@pytest.mark.parametrize("tau", [0.0, 1.0, 1.5, -0.1])
def test_bad_tau(tau):
    with pytest.raises(ValueError, match="tau="):
        l2t.Setup(tau=tau).check()


@pytest.mark.parametrize("m", [0, -3])
def test_bad_batch_size(m):
    data = _blobs(100)
    with pytest.raises(ValueError, match="batch_size="):
        l2t.deploy("noteach", data, data, data, setup=l2t.Setup(batch_size=m), steps=5, num_classes=4)


def test_bad_method_and_missing_teacher():
    data = _blobs(100)
    with pytest.raises(ValueError, match="method="):
        l2t.deploy("bogus", data, data, data, setup=SETUP, steps=5, num_classes=4)
    with pytest.raises(ValueError, match="needs a teacher"):
        l2t.deploy("l2t", data, data, data, setup=SETUP, steps=5, num_classes=4)


def test_reward():
    assert l2t.reward(None, 100) == 0.0
    assert math.isclose(l2t.reward(50, 100), math.log(2))
    assert l2t.reward(10, 100) > l2t.reward(50, 100)


def test_deploy_trace_contents_and_pooling():
    train, dev = _blobs(600, seed=0), _blobs(200, seed=1)
    teacher = l2t.Teacher(4, seed=0)
    with torch.no_grad():
        teacher.out.bias.fill_(0.0)
        teacher.out.weight.zero_()
        teacher.hidden.weight.zero_()
        # keep only classes 0 and 1: p(keep) = sigmoid(±big) from the one-hot label
        teacher.hidden.weight[0, :4] = torch.tensor([1.0, 1.0, -1.0, -1.0])
        teacher.out.weight[0, 0] = 20.0
    trace = l2t.deploy("l2t", train, dev, dev, setup=SETUP, steps=12, num_classes=4, teacher=teacher, record=True)
    steps, eff = trace.series("effective_examples")
    assert list(steps) == list(range(1, 13)) and list(eff) == [8 * s for s in steps]
    assert len(trace.arrays["keep_mask"]["value"]) == 12
    for keep, labels, p in zip(*(trace.arrays[k]["value"] for k in ("keep_mask", "labels", "p_keep"))):
        assert keep.shape == labels.shape == p.shape
        assert np.array_equal(keep, labels < 2) and np.array_equal(keep, p >= 0.5)
    assert 0.4 < trace.metrics["keep_rate"] < 0.6
    noteach = l2t.deploy("noteach", train, dev, dev, setup=SETUP, steps=12, num_classes=4)
    assert noteach.metrics["keep_rate"] == 1.0


def test_train_teacher_updates_and_reward_series():
    train, dev = _blobs(600, seed=0), _blobs(200, seed=1)
    teacher0 = l2t.Teacher(4, seed=0)
    before = [p.detach().clone() for p in teacher0.parameters()]
    teacher, trace = l2t.train_teacher(train, dev, setup=SETUP, episodes=4, num_classes=4, teacher=teacher0,
                                       teacher_lr=0.05, progress_bar=False)
    episodes, rewards = trace.series("reward")
    assert list(episodes) == [0, 1, 2, 3] and np.all(np.isfinite(rewards)) and np.all(rewards >= 0)
    assert "reward_first_quarter" in trace.metrics and "reward_last_quarter" in trace.metrics
    # the first episode sets the baseline (advantage 0); later episodes with r != b move the teacher
    if np.any(np.abs(trace.series("advantage")[1]) > 0):
        assert any(not torch.equal(a, b) for a, b in zip(before, teacher.parameters()))


def test_diverged_episode_is_noted_and_update_skipped():
    train, dev = _blobs(200, seed=0), _blobs(100, seed=1)
    train = Split(train.x.clone(), train.y)
    train.x[::3] = float("nan")  # a third of the inputs are NaN: the student's loss goes non-finite
    teacher0 = l2t.Teacher(4, seed=0)
    before = [p.detach().clone() for p in teacher0.parameters()]
    teacher, trace = l2t.train_teacher(train, dev, setup=SETUP, episodes=2, num_classes=4, teacher=teacher0,
                                       teacher_lr=0.1, progress_bar=False)
    assert any("diverged" in m for m in trace.messages)
    assert any("update is skipped" in m for m in trace.messages)
    assert "reward" not in trace.scalars
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))


def test_deploy_divergence_noted():
    train, dev = _blobs(200, seed=0), _blobs(100, seed=1)
    train = Split(train.x.clone(), train.y)
    train.x[::5] = float("inf")  # some inputs are infinite: the training loss becomes non-finite
    trace = l2t.deploy("noteach", train, dev, dev, setup=SETUP, steps=30, num_classes=4)
    assert trace.metrics["diverged"] and any("diverged" in m for m in trace.messages)
    assert trace.metrics["steps_done"] < 30


def test_randteach_and_spl_run():
    train, dev = _blobs(600, seed=0), _blobs(200, seed=1)
    out = l2t.compare(train, dev, dev, teacher=l2t.Teacher(4, seed=0), setup=SETUP, steps=20, seeds=[0, 1],
                      num_classes=4, record_seed=0, progress_bar=False)
    assert set(out) == set(l2t.METHODS) and all(len(v) == 2 for v in out.values())
    table = l2t.summarize(out)
    rand_rate = out["randteach"][0].metrics["keep_rate"]
    assert 0.7 < rand_rate <= 1.0
    for row in table.values():
        assert np.isfinite(row["mean"]) and row["std"] >= 0 and 0 <= row["test_acc"] <= 1
    spl = out["spl"][0]
    assert spl.metrics["keep_rate"] <= 1.0
    fig = plots.l2t_accuracy_vs_examples(out, tau=SETUP.tau)
    assert len(fig.data) == 2 * len(l2t.METHODS)


def _recorded_trace():
    train, dev = _blobs(600, seed=0, scale=0.7), _blobs(200, seed=1, scale=0.7)
    teacher = l2t.Teacher(4, seed=0)
    with torch.no_grad():  # keep by the margin feature: changes over training, so frames differ
        teacher.hidden.weight.zero_()
        teacher.hidden.weight[0, -1] = 3.0
        teacher.out.weight.fill_(0.0)
        teacher.out.weight[0, 0] = -2.0
        teacher.out.bias.fill_(1.5)
    trace = l2t.deploy("l2t", train, dev, dev, setup=SETUP, steps=15, num_classes=4, teacher=teacher, record=True)
    return trace, train.x


def test_static_scrubber_frames_differ():
    trace, images = _recorded_trace()
    fig = plots.l2t_keep_scrubber(trace, images, n_images=8, cols=4, max_frames=10)
    assert len(fig.frames) == 10 and len(fig.layout.sliders[0].steps) == 10
    sources = [f.data[0].source for f in fig.frames]
    texts = [tuple(f.data[1].text) for f in fig.frames]
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert len(set(sources)) > 1 and len(set(texts)) > 1
    heat = plots.l2t_keep_rate_by_class(trace, 4, bins=5)
    z = np.asarray(heat.data[0].z, dtype=float)
    assert z.shape == (4, 5) and np.nanmin(z) >= 0 and np.nanmax(z) <= 1


def test_mosaic_marks_kept_and_dropped():
    images = np.full((2, 1, 4, 4), 0.0)
    mosaic = plots.l2t_mosaic(images, np.array([True, False]), cols=2)
    tile_w = 4 + 2 * 3
    assert tuple(mosaic[0, 0]) == (0, 160, 60) and tuple(mosaic[0, tile_w]) == (215, 30, 30)
    assert mosaic[4, 4, 0] == 0 and mosaic[4, tile_w + 4, 0] > 100  # the dropped tile is faded


def test_live_scrubber_slider_changes_view():
    widgets = pytest.importorskip("labkit.widgets")
    trace, images = _recorded_trace()
    scrubber = widgets.KeepDropScrubber(trace, images, n_images=8, cols=4)
    source0, text0 = scrubber.figure.data[0].source, tuple(scrubber.figure.data[1].text)
    changed = False
    for i in range(1, scrubber.slider.max + 1):
        scrubber.slider.value = i
        assert scrubber.label.value == f"student step {int(scrubber.steps[i])}"
        if scrubber.figure.data[0].source != source0 and tuple(scrubber.figure.data[1].text) != text0:
            changed = True
            break
    assert changed
    idx = scrubber.slider.value
    uri, text = plots.l2t_keep_frame(trace, scrubber.images, idx, 8, 4)
    assert scrubber.figure.data[0].source == uri and tuple(scrubber.figure.data[1].text) == tuple(text["text"])


def _always_keep_teacher(c=4):
    teacher = l2t.Teacher(c, seed=0)
    with torch.no_grad():
        teacher.out.bias.fill_(30.0)  # p(keep) = 1 to float precision: every sampled decision is "keep"
    return teacher


def test_groups_share_the_student_seed_common_random_numbers():
    # An always-keep teacher makes the episodes of a group identical runs (same student seed, same data),
    # so every group has equal rewards and zero advantages; different groups use different student seeds.
    train, dev = _blobs(600, seed=0, scale=0.8), _blobs(200, seed=1, scale=0.8)
    teacher0 = _always_keep_teacher()
    before = [p.detach().clone() for p in teacher0.parameters()]
    teacher, trace = l2t.train_teacher(train, dev, setup=SETUP, episodes=6, num_classes=4, teacher=teacher0,
                                       teacher_lr=0.05, group_size=2, normalize=True, progress_bar=False)
    episodes, rewards = trace.series("reward")
    assert list(episodes) == list(range(6))
    assert np.allclose(rewards[0::2], rewards[1::2])
    assert np.allclose(trace.series("advantage")[1], 0) and np.allclose(trace.series("baseline")[1], rewards)
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    assert trace.config["group_size"] == 2


def test_group_advantages_are_centred_and_normalised():
    train, dev = _blobs(600, seed=0, scale=0.8), _blobs(200, seed=1, scale=0.8)
    teacher0 = l2t.Teacher(4, seed=0, init_keep=0.5)  # many drops: the episodes of a group differ
    _, trace = l2t.train_teacher(train, dev, setup=SETUP, episodes=6, num_classes=4, teacher=teacher0,
                                 teacher_lr=0.05, group_size=3, normalize=True, progress_bar=False)
    adv = trace.series("advantage")[1].reshape(2, 3)
    rew = trace.series("reward")[1].reshape(2, 3)
    assert np.allclose(adv.sum(1), 0, atol=1e-9)
    for a, r in zip(adv, rew):
        if r.std() > 1e-8:
            assert np.allclose(a, (r - r.mean()) / r.std())
    with pytest.raises(ValueError, match="group_size="):
        l2t.train_teacher(train, dev, setup=SETUP, episodes=2, num_classes=4, group_size=3, progress_bar=False)


def test_deploy_judges_tau_on_dev_not_test():
    data = _blobs(800, seed=0)  # one problem: train and dev share the class centres
    train, dev = data[:600], data[600:]
    bad_test = Split(dev.x, (dev.y + 1) % 4)  # every label wrong: test accuracy near 0
    trace = l2t.deploy("noteach", train, dev, bad_test, setup=SETUP, steps=40, num_classes=4)
    assert trace.metrics["reached_step"] is not None
    assert max(trace.series("test_acc")[1]) < SETUP.tau <= trace.series("dev_acc")[1][-1]


def test_keep_profile_and_feature_plot():
    trace, _ = _recorded_trace()
    rows = l2t.keep_profile(trace, "margin")
    total = sum(len(v) for v in trace.arrays["keep_mask"]["value"])
    assert sum(r["shown"] for r in rows) == total
    for r in rows:
        if r["shown"]:
            assert 0 <= r["p_keep"] <= 1 and 0 <= r["kept"] <= 1
    # the hand-set teacher keeps by low margin: p(keep) falls from the lowest to the highest margin bin
    filled = [r for r in rows if r["shown"]]
    assert filled[0]["p_keep"] > filled[-1]["p_keep"]
    fig = plots.l2t_keep_vs_feature(trace, "margin", max_points=50)
    assert len(fig.data[0].x) == min(50, total)
    with pytest.raises(ValueError, match="feature="):
        plots.l2t_keep_vs_feature(trace, "bogus")


def test_loss_threshold_teacher_keeps_high_loss_examples():
    teacher = l2t.loss_threshold_teacher(3, threshold=0.1)
    logits = torch.tensor([[8.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 3.0, 0.0]])  # losses ~0.0007, 1.1, 3.05
    f = l2t.state_features(logits, torch.tensor([0, 0, 0]), torch.zeros(3))
    p = teacher(f)
    assert p[0] < 0.01 and p[1] > 0.99 and p[2] > 0.99
    with pytest.raises(ValueError, match="threshold="):
        l2t.loss_threshold_teacher(3, threshold=0.0)


def test_teacher_that_drops_everything_stalls_and_counts_the_whole_budget():
    train, dev = _blobs(600, seed=0), _blobs(200, seed=1)
    teacher = l2t.Teacher(4, seed=0)
    with torch.no_grad():
        teacher.out.bias.fill_(-30.0)  # p(keep) ~ 0: deployed, it keeps nothing
    out = l2t.compare(train, dev, dev, teacher=teacher, setup=SETUP, steps=20, seeds=[0], num_classes=4,
                      methods=("l2t", "noteach", "randteach"), record_seed=0, progress_bar=False)
    run = out["l2t"][0]
    assert run.metrics["steps_done"] == 0 and run.metrics["keep_rate"] == 0.0
    assert any("kept only 0" in m for m in run.messages)
    table = l2t.summarize(out)
    assert table["l2t"]["mean"] == 20 * SETUP.batch_size and table["l2t"]["reached"] == 0
    assert table["randteach"]["keep_rate"] == 0.0
