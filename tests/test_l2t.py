"""Tests of labkit.l2t (Learning to Teach), its batch policies (labkit.l2t_policies) and its views.
Synthetic data (Gaussian blobs): no dataset files needed."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from labkit import data, engine, l2t, repro, seeds
from labkit.plots import l2t as views
from labkit.student import StudentConfig


def blobs(n: int = 1200, c: int = 4, d: int = 12, seed: int = 0, scale: float = 1.2, noise: float = 0.0) -> data.Splits:
    """A C-class problem of Gaussian blobs as [N, 1, 3, 4] 'images'; dev 200 and test 200 carved from it; with
    noise > 0, that share of the training labels is corrupted (symmetric)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(c, d, generator=g) * scale
    y = torch.arange(n) % c
    x = (centres[y] + torch.randn(n, d, generator=g)).view(n, 1, 3, 4)
    splits = data.from_tensors(x[:-200], y[:-200], dev_size=200, test=(x[-200:], y[-200:]), seed=seed)
    return data.noisy_labels(splits, rate=noise, seed=seed) if noise else splits


STUDENT = StudentConfig(model="mlp", model_kwargs={"hidden": (16,)}, steps=30, batch_size=8, lr=0.05, eval_every=5)
CFG = l2t.Config(STUDENT, deployments=2, tau=0.8, max_steps=30, shown=8, episodes=4, group_size=2, teacher_lr=0.05,
                 dev_read=100)


def fixed_teacher(c: int = 4, *, bias: float = 0.0, label_weights=None, margin: float | None = None) -> l2t.Teacher:
    """A hand-set teacher: p(keep) = σ(bias + 20·tanh(label_weights · one-hot)) or, with margin=w, σ(bias + w·tanh(margin))."""
    t = l2t.Teacher(c)
    with torch.no_grad():
        for p in t.parameters():
            p.zero_()
        t.out.bias.fill_(bias)
        if label_weights is not None:
            t.hidden.weight[0, :c] = torch.tensor(label_weights, dtype=torch.float)
            t.out.weight[0, 0] = 20.0
        if margin is not None:
            t.hidden.weight[0, -1], t.out.weight[0, 0] = 3.0, margin
    return t.eval()


# ---------------------------------------------------------------------------------------------- data, features, teacher

def test_halves_are_class_balanced_disjoint_seeded_and_keep_clean_labels():
    splits = blobs(noise=0.3)
    a, b = l2t.halves(splits, 3)
    assert len(a.train) + len(b.train) == len(splits.train) and len(a.dev) + len(b.dev) == len(splits.dev)
    for name in ("train", "dev"):
        ca, cb = (torch.bincount(getattr(h, name).y, minlength=4) for h in (a, b))
        assert torch.equal(ca + cb, torch.bincount(getattr(splits, name).y, minlength=4)) and (ca - cb).abs().max() <= 1
    assert torch.equal(a.test.y, splits.test.y) and torch.equal(b.test.y, splits.test.y)
    rows = {tuple(r) for r in a.train.x.flatten(1).tolist()}
    assert not rows & {tuple(r) for r in b.train.x.flatten(1).tolist()}
    assert a.train.clean_y is not None and 0.2 < float(a.train.corrupted.float().mean()) < 0.4
    assert torch.equal(l2t.halves(splits, 3)[0].train.x, a.train.x) and not torch.equal(l2t.halves(splits, 4)[0].train.x,
                                                                                           a.train.x)


def test_state_features_values_width_and_batched_dims():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 3.0]])
    y, student = torch.tensor([0, 1]), torch.tensor([0.5, 0.7, 0.9])
    f = l2t.state_features(logits, y, student)
    p = torch.softmax(logits, 1)
    assert f.shape == (2, 11) and l2t.Teacher(10).in_features == 25
    assert torch.equal(f[:, :3], torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])) and torch.allclose(f[:, 3:6], student.expand(2, 3))
    assert torch.allclose(f[:, 6:9], p) and torch.allclose(f[:, 9], -torch.log(p[[0, 1], [0, 1]]), atol=1e-6)
    assert torch.allclose(f[0, 10], p[0, 0] - p[0, 1]) and torch.allclose(f[1, 10], p[1, 1] - p[1, 2])
    batched = l2t.state_features(logits.expand(4, 2, 3), y.expand(4, 2), torch.rand(4, 1, 3))
    assert batched.shape == (4, 2, 11)
    with pytest.raises(ValueError, match="logits must be"):
        l2t.state_features(logits, y[:1], student)


def test_teacher_init_width_error_and_log_prob():
    t = l2t.Teacher(10, init_keep=0.88, seed=0)
    p = t(torch.randn(64, 25))
    assert p.shape == (64,) and torch.allclose(p, torch.full_like(p, 0.88), atol=0.01)
    with pytest.raises(ValueError, match="features have shape"):
        t(torch.randn(4, 24))
    f, keep = torch.randn(20, 25), torch.rand(20) < 0.5
    expected = torch.distributions.Bernoulli(probs=t(f)).log_prob(keep.float())
    assert torch.allclose(t.log_prob(f, keep), expected, atol=1e-5)


def test_policy_gradient_of_log_prob_matches_central_differences_float64():
    """REINFORCE differentiates Σ A·log π(a|s) in the teacher's weights: check that gradient in float64."""
    t = l2t.Teacher(3, seed=1).double()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype) * 0.5)
    f, keep = torch.randn(12, 11, dtype=torch.float64), torch.rand(12) < 0.5
    adv = torch.randn(12, dtype=torch.float64)
    loss = lambda: -(adv * t.log_prob(f, keep)).mean()  # noqa: E731
    loss().backward()
    w, eps = t.hidden.weight, 1e-6
    for idx in [(0, 0), (3, 5), (11, 10)]:
        with torch.no_grad():
            w[idx] += eps
            up = loss().item()
            w[idx] -= 2 * eps
            down = loss().item()
            w[idx] += eps
        assert math.isclose(w.grad[idx].item(), (up - down) / (2 * eps), rel_tol=1e-6, abs_tol=1e-9)


def test_loss_threshold_teacher_keeps_high_loss_examples():
    teacher = l2t.loss_threshold_teacher(3, threshold=0.1)
    logits = torch.tensor([[8.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 3.0, 0.0]])  # losses ~0.0007, 1.1, 3.05
    p = teacher(l2t.state_features(logits, torch.tensor([0, 0, 0]), torch.zeros(3)))
    assert p[0] < 0.01 and p[1] > 0.99 and p[2] > 0.99
    with pytest.raises(ValueError, match="threshold="):
        l2t.loss_threshold_teacher(3, threshold=0.0)


def test_reward():
    assert l2t.reward(None, 100) == 0.0 and math.isclose(l2t.reward(50, 100), math.log(2))
    assert l2t.reward(10, 100) > l2t.reward(50, 100)


# ---------------------------------------------------------------------------------------------- config

@pytest.mark.parametrize("knob,value", [("tau", float("nan")), ("tau", 1.0), ("tau", 0.0), ("teacher_lr", float("inf")),
                                        ("teacher_lr", -1e-3), ("baseline_decay", 1.0), ("baseline_decay", float("nan")),
                                        ("init_keep", 0.0), ("loss_norm", float("nan")), ("threshold", -0.1),
                                        ("max_steps", 0), ("shown", 2.5), ("episodes", 3), ("group_size", 0),
                                        ("dev_read", 0), ("deployments", 0), ("max_draws", -1),
                                        ("spl", (3.0, 1.0)), ("spl", (float("nan"), 1.0)), ("transfer_model", "vgg")])
def test_bad_knobs_are_refused_by_name(knob, value):
    with pytest.raises(ValueError, match=knob.split("[")[0]):
        replace(CFG, **{knob: value}).check()


def test_bad_student_hyperparameters_and_presets():
    with pytest.raises(ValueError, match="lr"):
        replace(CFG, student=replace(STUDENT, lr=float("nan"))).check()
    with pytest.raises(ValueError, match="normalize"):
        replace(CFG, group_size=1, episodes=4, normalize=True).check()
    assert not l2t.PRESETS["cpu"].normalize and l2t.PRESETS["cpu"].init_keep == l2t.PRESETS["paper"].init_keep == 0.88
    for cfg in l2t.PRESETS.values():
        cfg.check()
    paper, cifar = l2t.PRESETS["paper"], l2t.PRESETS["paper_cifar10"]
    assert (paper.tau, paper.max_steps, paper.student.batch_size, paper.student.lr, paper.student.momentum,
            paper.student.weight_decay, paper.episodes, paper.group_size) == (0.93, 10_000, 20, 0.01, 0.9, 1e-4, 300, 1)
    assert cifar.student.schedule == "multistep" and cifar.student.milestones == (32_000, 48_000)
    assert [cifar.student.lr_at(t) for t in (0, 32_000, 48_000)] == pytest.approx([0.1, 0.01, 0.001])
    assert l2t.PRESETS["cpu"].deployments >= 8
    assert l2t.config("cpu", episodes=None, tau=0.8).tau == 0.8 and l2t.config("cpu", tau=None) == l2t.PRESETS["cpu"]


# ---------------------------------------------------------------------------------------------- policies on the engine

def test_teacher_policy_pools_only_kept_examples_and_records_them():
    splits = blobs()
    teacher = fixed_teacher(label_weights=[1.0, 1.0, -1.0, -1.0])  # keep classes 0 and 1 only
    trace = l2t.deploy(teacher, splits, CFG, 0, record="first")
    assert len(trace.arrays["keep_mask"]["step"]) == 30 and list(trace.arrays["keep_mask"]["step"]) == list(range(1, 31))
    for keep, labels, p in zip(*(trace.arrays[k]["value"] for k in ("keep_mask", "labels", "p_keep"))):
        assert np.array_equal(keep, labels < 2) and np.array_equal(keep, p >= 0.5)
    assert 0.4 < trace.metrics["keep_rate"] < 0.6 and trace.metrics["effective_examples"] == 30 * 8
    assert {"student_loss", "margin"} <= set(trace.arrays) and "corrupted" not in trace.arrays


def test_the_steps_train_on_the_pooled_kept_examples():
    splits = blobs()
    seen = []

    class Spy(l2t.TeacherPolicy):
        def select(self, run, step):
            batch = super().select(run, step)
            seen.append(batch.y.clone())
            return batch

    policy = Spy(fixed_teacher(label_weights=[1.0, -1.0, -1.0, 1.0]), **l2t._common(CFG))
    l2t.deploy_policy(policy, splits, CFG, [0, 1])
    y = torch.stack(seen)
    assert y.shape == (30, 2, 8) and set(y.unique().tolist()) == {0, 3}


def test_a_member_of_a_population_draws_what_it_would_draw_alone():
    splits = blobs()
    together = l2t.deploy_policy(l2t.RandTeach([0.3, 0.6, 0.9], **l2t._common(CFG, "all")), splits, CFG, [5, 6, 7])
    alone = l2t.deploy_policy(l2t.RandTeach(0.6, **l2t._common(CFG, "all")), splits, CFG, [6])[0]
    for name in ("index", "keep_mask"):
        a, b = together[1].arrays[name]["value"], alone.arrays[name]["value"]
        assert len(a) == len(b) == 30 and all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(together[0].arrays["index"]["value"][3], alone.arrays["index"]["value"][3])


def test_each_members_keep_counts_are_its_own_recorded_decisions():
    splits = blobs(noise=0.4)
    traces = l2t.deploy_policy(l2t.TeacherPolicy(fixed_teacher(label_weights=[1.0, 0.5, -0.5, -1.0]), sample=True,
                                                 **l2t._common(CFG, "all")), splits, CFG, [0, 1, 2])
    for tr in traces:  # every draw of every step is recorded with record="all"
        keep, p, bad = (np.concatenate(tr.arrays[k]["value"]) for k in ("keep_mask", "p_keep", "corrupted"))
        assert tr.metrics["keep_rate"] == keep.mean() and tr.metrics["p_keep_mean"] == pytest.approx(p.mean(), 1e-6)
        assert tr.metrics["keep_rate_corrupted"] == keep[bad].mean() and tr.metrics["keep_rate_clean"] == keep[~bad].mean()
    assert len({tr.metrics["keep_rate"] for tr in traces}) == 3  # sampled decisions: the members differ


def test_spl_keeps_low_loss_and_the_oracle_drops_exactly_the_corrupted():
    splits = blobs(noise=0.4)
    kw = l2t._common(CFG, "all")
    oracle = l2t.deploy_policy(l2t.Oracle(**kw), splits, CFG, [0])[0]
    for keep, bad in zip(oracle.arrays["keep_mask"]["value"], oracle.arrays["corrupted"]["value"]):
        assert np.array_equal(keep, ~bad)
    assert oracle.metrics["keep_rate_corrupted"] == 0.0 and oracle.metrics["keep_rate_clean"] == 1.0
    assert np.all(oracle.series("keep_rate_corrupted")[1] == 0) and np.all(oracle.series("keep_rate_clean")[1] == 1)
    spl = l2t.deploy_policy(l2t.SelfPaced(1.5, 2.5, **kw), splits, CFG, [0])[0]  # ln 4 = 1.39: all pass at first
    for step, loss, keep in zip(spl.arrays["keep_mask"]["step"], spl.arrays["student_loss"]["value"],
                                spl.arrays["keep_mask"]["value"]):
        assert np.array_equal(keep, loss < 1.5 + 1.0 * (step - 1) / 29)  # λ_t grows linearly over the 30 steps
    assert 0 < spl.metrics["keep_rate"] < 1 and spl.metrics["keep_rate_corrupted"] < spl.metrics["keep_rate_clean"]
    noteach = l2t.deploy_policy(l2t.NoTeach(**kw), splits, CFG, [0])[0]
    steps, rate = noteach.series("keep_rate_corrupted")
    assert len(steps) and np.all(rate == 1.0) and noteach.metrics["keep_rate"] == 1.0


def test_a_teacher_that_keeps_nothing_trains_0_steps_and_reports_no_accuracy():
    splits = blobs()
    out = l2t.compare(fixed_teacher(bias=-30.0), splits, CFG, [0, 1], methods=("l2t", "noteach", "randteach"))
    for t in out["l2t"] + out["randteach"]:
        assert t.metrics["steps_done"] == 0 and t.metrics["stalled_at_step"] == 0 and t.metrics["test_acc"] is None
        assert any("trained 0 steps" in m for m in t.messages) and not t.diverged
    assert out["randteach"][0].metrics["keep_rate"] == 0.0
    exps = l2t.summary(out, [0, 1], splits, CFG)
    eff = exps["effective_examples_to_tau"]
    assert eff["methods"]["l2t"]["values"] == [30 * 8, 30 * 8] and eff["reached"]["l2t"] == [False, False]
    assert exps["test_acc"]["methods"]["l2t"]["values"] == [None, None]
    assert exps["test_acc"]["left_out"]["l2t"] == dict(diverged=0, trained_0_steps=2)
    assert "l2t trained 0 steps on 2 seed(s)" in l2t.report(exps)
    fig = views.l2t_accuracy_vs_examples(out)
    assert [d.name for d in fig.data if d.mode == "lines"] == ["noteach (n=2)"]


def test_tau_is_judged_on_dev_not_test_and_deployment_runs_the_whole_budget():
    splits = blobs(scale=3.0)
    bad = replace(splits, test=data.Split(splits.test.x, (splits.test.y + 1) % 4))  # every test label wrong
    trace = l2t.compare(None, bad, CFG, [0], methods=("noteach",))["noteach"][0]
    assert trace.metrics["reached_step"] is not None and trace.metrics["steps_done"] == 30
    assert trace.metrics["effective_examples_to_tau"] == trace.metrics["reached_step"] * 8
    assert max(trace.series("test_acc")[1]) < CFG.tau <= trace.series("dev_acc")[1][-1]


# ---------------------------------------------------------------------------------------------- teacher training

def test_students_train_only_through_the_engine():
    """Every optimizer step on a student's parameters happens in labkit/engine.py; the teacher's in labkit/l2t.py."""
    import inspect

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    callers = []

    def hook(optimizer, args, kwargs):
        frames = [f.filename for f in inspect.stack()[1:] if "/labkit/" in f.filename]
        callers.append((frames[0].rsplit("/labkit/", 1)[1], type(optimizer).__name__))

    handle = register_optimizer_step_pre_hook(hook)
    try:
        splits = blobs()
        teacher, _ = l2t.train_teacher(l2t.halves(splits, 0)[0], CFG, 0, progress_bar=False)
        l2t.compare(teacher, l2t.halves(splits, 0)[1], CFG, [0, 1])
        l2t.tau_for(splits, CFG, 0, students=2)
    finally:
        handle.remove()
    assert ("l2t.py", "Adam") in callers and ("engine.py", "SGD") in callers
    assert set(callers) == {("l2t.py", "Adam"), ("engine.py", "SGD")}
    assert sum(c == ("l2t.py", "Adam") for c in callers) == CFG.teacher_updates


def test_no_global_random_state_is_touched():
    splits = blobs(noise=0.2)
    state = torch.get_rng_state()
    teacher, _ = l2t.train_teacher(splits, CFG, 0, progress_bar=False)
    l2t.compare(teacher, splits, CFG, [0])
    l2t.tau_for(splits, CFG, 0, students=2)
    assert torch.equal(state, torch.get_rng_state())


def test_teacher_training_and_deployment_students_differ_in_weights_and_batches(monkeypatch):
    runs = []
    original = engine.Run.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        runs.append((self.role, next(self.students.parameters()).detach().clone(), next(self.streams[0]).clone()))

    monkeypatch.setattr(engine.Run, "__init__", spy)
    splits = blobs()
    teacher, _ = l2t.train_teacher(splits, CFG, 0, progress_bar=False)
    l2t.deploy(teacher, splits, CFG, seeds.deployment_seeds(0, 2))  # seed 0's deployment seeds start at 0
    teach = [r for r in runs if r[0][0] == seeds.TEACH]
    deploy = [r for r in runs if r[0] == (seeds.DEPLOY,)]
    assert len(teach) == CFG.teacher_updates and len(deploy) == 1
    for _, w, batch in teach:
        assert not torch.equal(w[0], deploy[0][1][0]) and not torch.equal(batch, deploy[0][2])
    assert not torch.equal(teach[0][1], teach[1][1])  # every group has a new student


def test_groups_share_the_student_common_random_numbers():
    # An always-keep start (p = 1 to float precision) makes the members of a group the same run: equal rewards,
    # zero advantages, an unchanged teacher; the next group is another student.
    cfg = replace(CFG, init_keep=1 - 1e-7, episodes=6)
    teacher, trace = l2t.train_teacher(blobs(), cfg, 0, progress_bar=False)
    episodes, rewards = trace.series("reward")
    assert list(episodes) == list(range(6)) and np.allclose(rewards[0::2], rewards[1::2])
    assert np.allclose(trace.series("advantage")[1], 0) and np.allclose(trace.series("baseline")[1], rewards)
    fresh = l2t.Teacher(4, init_keep=cfg.init_keep, seed=seeds.derive(0, seeds.TEACH, "teacher", "init"))
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), teacher.parameters()))


@pytest.mark.parametrize("normalize", [False, True])
def test_group_advantages_are_centred_and_normalised_and_the_teacher_moves(normalize):
    cfg = replace(CFG, episodes=9, group_size=3, tau=0.85, init_keep=0.5, normalize=normalize)
    teacher, trace = l2t.train_teacher(blobs(), cfg, 0, progress_bar=False)
    adv, rew = (trace.series(n)[1].reshape(3, 3) for n in ("advantage", "reward"))
    assert np.allclose(adv.sum(1), 0, atol=1e-9)
    for a, r in zip(adv, rew):
        if r.std() > 1e-8:
            assert np.allclose(a, (r - r.mean()) / (r.std(ddof=1) if normalize else 1.0))
    assert (rew.std(1) > 0).any()
    fresh = l2t.Teacher(4, init_keep=cfg.init_keep, seed=seeds.derive(0, seeds.TEACH, "teacher", "init"))
    assert any(not torch.equal(a, b) for a, b in zip(fresh.parameters(), teacher.parameters()))


def test_the_paper_form_ema_baseline_and_episodes_stop_at_tau():
    cfg = replace(CFG, group_size=1, episodes=4, normalize=False, baseline_decay=0.5, tau=0.7)
    _, trace = l2t.train_teacher(blobs(scale=2.0), cfg, 0, progress_bar=False)
    r, b = trace.series("reward")[1], trace.series("baseline")[1]
    want = [r[0]]
    for x in r[:-1]:
        want.append(0.5 * want[-1] + 0.5 * x)
    assert np.allclose(b, want) and trace.series("advantage")[1][0] == 0.0
    steps = trace.series("steps_to_tau")[1]
    assert np.all(trace.series("reached")[1] == 1) and np.all(steps < cfg.max_steps)
    assert np.allclose(r, -np.log(steps / cfg.max_steps))


def test_a_diverged_episode_is_noted_and_left_out_of_the_update():
    cfg = replace(CFG, student=replace(STUDENT, lr=1e7), episodes=2)
    teacher, trace = l2t.train_teacher(blobs(), cfg, 0, progress_bar=False)
    assert any("diverged at step" in m for m in trace.messages)
    assert any("left out of the update" in m for m in trace.messages) and "reward" not in trace.scalars
    fresh = l2t.Teacher(4, init_keep=cfg.init_keep, seed=seeds.derive(0, seeds.TEACH, "teacher", "init"))
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), teacher.parameters()))
    assert "no episode" in l2t.teacher_report(trace)


class _Killed(Exception):
    pass


def test_a_killed_teacher_training_resumes_bit_for_bit(tmp_path, monkeypatch):
    cfg = replace(CFG, episodes=8, tau=0.85)
    splits = blobs(noise=0.2)
    want_teacher, want = l2t.train_teacher(splits, cfg, 0, progress_bar=False)
    calls, original = [0], l2t._reinforce

    def dies_at_the_third(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            raise _Killed()
        return original(*args, **kwargs)

    monkeypatch.setattr(l2t, "_reinforce", dies_at_the_third)
    with pytest.raises(_Killed):
        l2t.train_teacher(splits, cfg, 0, checkpoint_dir=tmp_path, progress_bar=False)
    assert engine.load_checkpoint(tmp_path / l2t.CHECKPOINT_FILE)["group"] == 2
    monkeypatch.setattr(l2t, "_reinforce", original)
    got_teacher, got = l2t.train_teacher(splits, cfg, 0, checkpoint_dir=tmp_path, progress_bar=False)
    assert all(torch.equal(a, b) for a, b in zip(want_teacher.parameters(), got_teacher.parameters()))
    assert got.scalars == want.scalars and got.metrics == want.metrics and got.messages == want.messages
    again_teacher, again = l2t.train_teacher(splits, cfg, 0, checkpoint_dir=tmp_path)  # finished: no new episode
    assert again.scalars == want.scalars and torch.equal(again_teacher.out.bias, want_teacher.out.bias)
    with pytest.raises(ValueError, match="another teacher"):
        l2t.train_teacher(splits, replace(cfg, teacher_lr=0.01), 0, checkpoint_dir=tmp_path)


def test_a_policy_checkpointed_mid_run_resumes_bit_for_bit(tmp_path):
    """A deployment run checkpointed by the engine mid-run (pools, generators, counts in the hook's state) ends with
    the numbers of an uninterrupted one."""
    splits = blobs()

    def run(kill_at: int | None = None):
        policy = l2t.RandTeach(0.5, **l2t._common(CFG, "all"))
        r = engine.Run(splits, replace(STUDENT, eval_test=True), [0, 1], hooks=policy)
        if kill_at:
            r.run_steps(kill_at)
            return engine.save_checkpoint(tmp_path / engine.CHECKPOINT_FILE, r.state_dict())
        traces = engine.train(r, checkpoint_dir=tmp_path, progress_bar=False)
        policy.annotate(traces)
        return traces

    want = run()
    run(kill_at=13)
    got = run()
    for w, g in zip(want, got):
        assert w.scalars == g.scalars and w.metrics == g.metrics
        assert all(np.array_equal(a, b) for a, b in zip(w.arrays["index"]["value"], g.arrays["index"]["value"]))


# ---------------------------------------------------------------------------------------------- results

def test_compare_summary_and_metrics_invariants(tmp_path):
    splits = blobs(noise=0.3)
    teacher_side, student_side = l2t.halves(splits, 0)
    teacher, trace = l2t.train_teacher(teacher_side, CFG, 0, progress_bar=False)
    out = l2t.compare(teacher, student_side, CFG, [0, 1])
    assert list(out) == list(l2t.METHODS) and all(len(v) == 2 for v in out.values())  # the oracle joins under noise
    assert all(t.metrics["keep_rate"] is not None for t in out["l2t_sampled"])
    assert "keep rate (examples shown per example kept)" in l2t.report(l2t.summary(out, [0, 1], student_side, CFG))
    for a, b in zip(out["l2t"], out["randteach"]):  # RandTeach drops at L2T's rate, at random
        assert abs(a.metrics["keep_rate"] - b.metrics["keep_rate"]) < 0.1
    exps = {**l2t.summary(out, [0, 1], student_side, CFG),
            **l2t.summary(out, [0, 1], student_side, CFG, name="again")}
    metrics = repro.write_metrics(tmp_path, notebook="01", preset="smoke", seed=0, experiments=exps,
                                  scenario=student_side.scenario)
    assert exps["test_acc"]["scenario"] == list(splits.scenario) and exps["test_acc"]["dataset"] == "custom"
    eff = metrics["experiments"]["effective_examples_to_tau"]
    assert eff["metric"] == "effective_examples_to_tau" and eff["paper"] == "l2t" and eff["baseline"] == "noteach"
    assert eff["methods"]["l2t"]["paired"] is not None and set(eff["reached"]) == set(l2t.METHODS)
    assert "again_test_acc" in metrics["experiments"] and metrics["scenario"][0]["kind"] == "noisy_labels"
    text = l2t.report(exps)
    assert "reached τ: l2t" in text and "| noteach |" in text
    assert "keep_rate_corrupted" in l2t.teacher_report(trace)
    rows = l2t.keep_profile(out["l2t"][0], "margin")
    assert sum(r["shown"] for r in rows) == sum(len(v) for v in out["l2t"][0].arrays["keep_mask"]["value"])


def test_summary_leaves_diverged_runs_out():
    splits = blobs()
    out = l2t.compare(None, splits, replace(CFG, student=replace(STUDENT, lr=1e7)), [0, 1], methods=("noteach",))
    assert all(t.diverged for t in out["noteach"])
    exp = l2t.summary(out, [0, 1], splits, CFG)
    assert exp["effective_examples_to_tau"]["methods"]["noteach"]["values"] == [None, None]
    assert exp["test_acc"]["methods"]["noteach"]["estimate"]["excluded"] == 2
    assert not views.l2t_accuracy_vs_examples(out).data  # a diverged run is never drawn


def test_tau_for_reads_dev_only_and_noteach_reaches_it():
    splits = blobs(noise=0.4)
    tau = l2t.tau_for(splits, CFG, 0, at=0.6, students=3)
    assert 0 < tau < 1
    other_test = replace(splits, test=data.Split(splits.test.x, (splits.test.y + 1) % 4))
    assert l2t.tau_for(other_test, CFG, 0, at=0.6, students=3) == tau
    clean = blobs()  # a clean, easy problem: accuracy rises with the steps, and so does τ with `at`
    assert l2t.tau_for(clean, CFG, 0, at=0.2, students=3) < l2t.tau_for(clean, CFG, 0, at=0.8, students=3)
    with pytest.raises(ValueError, match="at="):
        l2t.tau_for(splits, CFG, 0, at=float("nan"))


# ---------------------------------------------------------------------------------------------- views

def _recorded(noise: float = 0.0):
    splits = blobs(scale=0.7, noise=noise)
    trace = l2t.deploy(fixed_teacher(bias=1.5, margin=-2.0), splits, CFG, 0)  # keeps low-margin examples
    return trace, splits.train.x


def test_static_scrubber_frames_differ_and_mark_corrupted_labels():
    trace, images = _recorded(noise=0.4)
    fig = views.l2t_keep_scrubber(trace, images, n_images=8, cols=4, max_frames=10)
    assert len(fig.frames) == 10 and len(fig.layout.sliders[0].steps) == 10
    sources, texts = [f.data[0].source for f in fig.frames], [tuple(f.data[1].text) for f in fig.frames]
    assert all(s.startswith("data:image/png;base64,") for s in sources) and len(set(sources)) > 1
    assert any("noisy" in t for text in texts for t in text) and "corrupted" in fig.layout.title.text
    heat = views.l2t_keep_rate_by_class(trace, 4, bins=5)
    z = np.asarray(heat.data[0].z, dtype=float)
    assert z.shape == (4, 5) and np.nanmin(z) >= 0 and np.nanmax(z) <= 1
    with pytest.raises(ValueError, match="record"):
        views.l2t_keep_scrubber(l2t.deploy(fixed_teacher(), blobs(), CFG, 0, record=None), images)


def test_mosaic_marks_kept_dropped_and_corrupted():
    mosaic = views.l2t_mosaic(np.zeros((2, 1, 4, 4)), np.array([True, False]), cols=2, corrupted=np.array([False, True]))
    tile_w = 4 + 2 * 3
    assert tuple(mosaic[0, 0]) == (0, 160, 60) and tuple(mosaic[0, tile_w]) == (215, 30, 30)
    assert mosaic[4, 4, 0] == 0 and mosaic[4, tile_w + 4, 0] > 100  # the dropped tile is faded
    assert tuple(mosaic[-1, 0]) == (255, 255, 255) and tuple(mosaic[-1, tile_w]) == (255, 170, 0)


def test_keep_rate_views_and_reward_curve():
    splits = blobs(noise=0.4)
    teacher, trace = l2t.train_teacher(splits, replace(CFG, episodes=8), 0, progress_bar=False)
    out = l2t.compare(teacher, splits, CFG, [0, 1], methods=("l2t", "noteach", "oracle"))
    fig = views.l2t_corrupted_keep_rate(out)
    names = [d.name for d in fig.data]
    assert "noteach: corrupted (n=2)" in names and "oracle: clean (n=2)" in names
    noteach = next(d for d in fig.data if d.name == "noteach: corrupted (n=2)")
    assert np.allclose(noteach.y, 1.0)
    assert {d.name for d in views.l2t_teacher_keep_rates(trace, window=4).data} >= {"keep_rate_corrupted", "keep_rate"}
    assert len(views.l2t_reward_curve(trace, window=4).data) == 3
    acc = views.l2t_accuracy_vs_examples(out, tau=CFG.tau)
    # the last periodic test read, at step 20 (test_every 20; the final evaluation's test read is a metric only)
    assert len(acc.data) == 6 and acc.data[1].x.tolist() == [20 * 8]


def test_keep_vs_feature_and_profile():
    trace, _ = _recorded()
    rows = l2t.keep_profile(trace, "margin")
    assert l2t.keep_profile_table(trace).count("\n") == len(rows) + 1
    filled = [r for r in rows if r["shown"]]
    assert filled[0]["p_keep"] > filled[-1]["p_keep"]  # the hand-set teacher keeps by low margin
    fig = views.l2t_keep_vs_feature(trace, "margin", max_points=50)
    assert len(fig.data[0].x) == 50
    with pytest.raises(ValueError, match="feature="):
        views.l2t_keep_vs_feature(trace, "bogus")


def test_live_scrubber_slider_changes_view():
    widgets = pytest.importorskip("labkit.widgets")
    trace, images = _recorded(noise=0.4)
    scrubber = widgets.KeepDropScrubber(trace, images, n_images=8, cols=4)
    source0 = scrubber.figure.data[0].source
    scrubber.slider.value = scrubber.slider.max
    assert scrubber.label.value == f"student step {int(scrubber.steps[-1])}" and scrubber.figure.data[0].source != source0
    uri, text = views.l2t_keep_frame(trace, scrubber.images, scrubber.slider.max, 8, 4)
    assert scrubber.figure.data[0].source == uri and tuple(scrubber.figure.data[1].text) == tuple(text["text"])
