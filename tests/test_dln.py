"""labkit.dln (L2T-DLN) on the engine: the meta-gradients against finite differences (float64), the loss network and
its "bce" start, the teacher's training (seeds, checkpoints, batch norm), deployment through the engine's hooks, the
baselines on the same students, bad knobs, statistics and views."""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import labkit
from labkit import data, dln, engine, repro, seeds, stats
from labkit.plots import dln as views
from labkit.population import population
from labkit.student import StudentConfig


def _toy(n: int = 400, d: int = 12, c: int = 4, seed: int = 0) -> data.Splits:
    """Gaussian classes; no files needed."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(c, d, generator=g) * 2
    y = torch.randint(0, c, (n + 200,), generator=g)
    x = centres[y] + torch.randn(n + 200, d, generator=g)
    return data.from_tensors(x[:n], y[:n], dev_size=100, test=(x[n:], y[n:]), seed=seed)


def _images(augment: bool = True) -> data.Splits:
    """A small 3 x 16 x 16 image set (class c brightens row c), augmented like CIFAR when `augment`."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(300) % 4
    x = torch.randn(300, 3, 16, 16, generator=g) * 0.3
    for c in range(4):
        x[y == c, :, 2 * c, :] += 2.0
    return data.from_tensors(x[:240], y[:240], dev_size=60, test=(x[240:], y[240:]), augment=augment)


CFG = dln.Config(StudentConfig(model="mlp", model_kwargs={"hidden": (16,)}, steps=12, batch_size=20, lr=0.1,
                               momentum=0.0, eval_every=6), deployments=2, window=3, teacher_updates=6,
                 dev_batch_size=50, update_scale=1e-2, grid=7, init_steps=50, dev_size=100, dlf=None)


@pytest.fixture(scope="module")
def taught():
    splits = _toy()
    teacher, trace = dln.train_teacher(splits, CFG, 0, progress_bar=False)
    return splits, teacher, trace


# ------------------------------------------------------------------ the loss network

def test_loss_features_mask_and_values():
    logits = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.5, 0.0]])
    f = dln.loss_features(logits, torch.tensor([1, 0]))
    s = torch.sigmoid(logits)
    assert f.shape == (2, 3, 4) and torch.all(f[0, 1] == 0) and torch.all(f[1, 0] == 0)  # true-class rows are zero
    assert torch.allclose(f[0, 0], torch.stack([s[0, 1], s[0, 0], torch.tensor(1.0), torch.tensor(0.0)]))
    assert torch.allclose(f[1, 2], torch.stack([s[1, 0], s[1, 2], torch.tensor(1.0), torch.tensor(0.0)]))


def test_loss_network_shape_no_bias_and_batched_members():
    w = dln.random_dln(0)
    assert [tuple(t.shape) for t in w] == [(40, 4), (40, 40), (40, 40), (40, 40), (1, 40)]
    assert sum(t.numel() for t in w) == 5000
    assert dln.dln_forward(w, torch.zeros(3, 4)).abs().max() == 0  # bias-free: the masked rows give exactly 0
    two = [torch.stack([a, b]) for a, b in zip(w, dln.random_dln(1))]
    logits, y = torch.randn(2, 5, 3), torch.randint(0, 3, (2, 5))
    per_member = dln.dln_loss(two, logits, y)
    assert per_member.shape == (2,)
    assert torch.allclose(per_member[1], dln.dln_loss(dln.random_dln(1), logits[1], y[1]))


@pytest.mark.parametrize("seed", [0, 1])
def test_bce_init_is_a_sensible_loss(seed):
    """init="bce": the fit falls with σ(z_y) and rises with σ(z_j) everywhere on the grid, tracks the one-vs-rest BCE
    target, starts from the public code's random draw of the same seed and is deterministic."""
    w, fit = dln.initial_dln("bce", 10, seed=seed)
    surface = dln.loss_surface(w, grid=21).numpy()  # rows σ(z_y), columns σ(z_j)
    assert np.all(np.diff(surface, axis=0) < 0) and np.all(np.diff(surface, axis=1) > 0)
    g = torch.linspace(0, 1, 21)
    assert fit["rmse"] < 0.1 * fit["target_rms"]
    assert np.abs(surface - dln.bce_target(g[:, None], g[None, :], 10).numpy())[1:-1, 1:-1].max() < 2.0
    again, _ = dln.initial_dln("bce", 10, seed=seed)
    assert all(torch.equal(a, b) for a, b in zip(w, again))
    raw, none = dln.initial_dln("random", 10, seed=seed)
    assert none is None and all(torch.equal(a, b) for a, b in zip(raw, dln.random_dln(seed)))
    right, wrong, y = torch.full((1, 10), -4.0), torch.full((1, 10), -4.0), torch.tensor([2])
    right[0, 2], wrong[0, 5] = 4.0, 4.0  # a confident right answer costs far less than a confident wrong one
    assert dln.dln_loss(w, right, y) < 0.2 * dln.dln_loss(w, wrong, y)


def test_preprocess_gradients():
    out = dln.preprocess_gradients(torch.tensor([1.0, -1e-2, 1e-6, -1e-6, 0.0]))
    assert out.shape == (5, 2)
    assert torch.allclose(out[0], torch.tensor([0.0, 1.0]), atol=1e-6)
    assert torch.allclose(out[1], torch.tensor([float(np.log(1e-2)) / 10, -1.0]), atol=1e-5)
    assert out[2, 0] == -1 and torch.isclose(out[2, 1], torch.tensor(float(np.exp(10)) * 1e-6))
    assert out[4, 0] == -1 and out[4, 1] == 0


# ------------------------------------------------------------------ meta-gradients against finite differences

def _double_problem(K: int = 3, seed: int = 0):
    """Two float64 students (MLP 6-5-3) as one stacked population, a DLN per member, K batches and a dev batch."""
    g = torch.Generator().manual_seed(seed)
    model = population("mlp", (6,), 3, [seed, seed + 1], hidden=(5,)).double()
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    batches = [(torch.randn(2, 8, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (2, 8), generator=g))
               for _ in range(K)]
    dev = (torch.randn(2, 10, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (2, 10), generator=g))
    weights = [torch.stack([a, b]) for a, b in zip(dln.random_dln(seed, torch.float64),
                                                     dln.random_dln(seed + 7, torch.float64))]
    return model, params, weights, batches, dev


def _rel_err(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_meta_gradient_through_the_loss_network_matches_finite_differences(momentum):
    model, params, weights, batches, dev = _double_problem()
    _, grads, _ = dln.meta_gradient(model, params, weights, batches, dev, lr=0.5, momentum=momentum)
    assert all(g[i].abs().sum() > 0 for g in grads for i in range(2))

    def f(w):
        return dln.dev_loss_after_unroll(model, params, w, batches, dev, lr=0.5, momentum=momentum)[0].sum().item()

    gen = torch.Generator().manual_seed(1)
    eps = 1e-7  # the DLN is piecewise linear: a small step crosses no LeakyReLU kink; float64 has room for it
    for _ in range(3):  # random directions through all 2 x 5 000 weights
        d = [torch.randn(w.shape, generator=gen, dtype=torch.float64) for w in weights]
        analytic = sum((g * v).sum().item() for g, v in zip(grads, d))
        numeric = (f([w + eps * v for w, v in zip(weights, d)]) - f([w - eps * v for w, v in zip(weights, d)])) / (2 * eps)
        assert _rel_err(analytic, numeric) < 1e-6, (analytic, numeric)
    # members are independent: member 1's DLN does not move member 0's dev loss
    other = [w.clone() for w in weights]
    other[2][1] += 0.5
    moved = dln.dev_loss_after_unroll(model, params, other, batches, dev, lr=0.5, momentum=momentum)[0]
    base = dln.dev_loss_after_unroll(model, params, weights, batches, dev, lr=0.5, momentum=momentum)[0]
    assert moved[0] == base[0] and moved[1] != base[1]


def test_lstm_meta_gradient_matches_finite_differences():
    """The gradient that trains the LSTM: dev CE after the second unroll, through w' = w - s·u(g; θ) (`propose`)."""
    model, params, weights, batches, dev = _double_problem(K=2, seed=3)
    lstm = dln.LSTMTeacher(hidden=8, seed=0).double()
    _, g, _ = dln.meta_gradient(model, params, weights, batches, dev, lr=0.5)
    state = lstm.initial_state(2 * 5000, dtype=torch.float64)
    ok = torch.ones(2, dtype=torch.bool)

    def dev_of() -> torch.Tensor:
        new, _ = dln.propose(lstm, g, weights, state, 0.05, ok)  # a scale far above rounding
        return dln.dev_loss_after_unroll(model, params, new, batches, dev, lr=0.5)[0].sum()

    theta = list(lstm.parameters())
    grads = torch.autograd.grad(dev_of(), theta)
    gen, eps = torch.Generator().manual_seed(2), 1e-7
    for _ in range(3):
        d = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in theta]
        analytic = sum((a * v).sum().item() for a, v in zip(grads, d))
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                for p, v in zip(theta, d):
                    p.add_(sign * eps * v)
            values.append(dev_of().item())
            with torch.no_grad():
                for p, v in zip(theta, d):
                    p.sub_(sign * eps * v)
        assert _rel_err(analytic, (values[0] - values[1]) / (2 * eps)) < 1e-6


# ------------------------------------------------------------------ knobs

@pytest.mark.parametrize("field,value", [("window", 0), ("window", 5), ("teacher_updates", -1), ("deployments", 0),
                                         ("update_scale", float("nan")), ("update_scale", float("inf")),
                                         ("update_scale", -1e-3), ("lstm_lr", float("nan")), ("lstm_lr", 0.0),
                                         ("bce_scale", float("-inf")), ("init", "xavier"), ("grid", 1),
                                         ("dev_batch_size", 101), ("dlf", "gpu"), ("dataset", "imagenet")])
def test_bad_knobs_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=f"{field}="):
        dataclasses.replace(CFG, **{field: value}).check()


@pytest.mark.parametrize("field,value", [("optimizer", "adam"), ("schedule", "cosine"), ("weight_decay", 1e-4),
                                         ("pretrain_steps", 3), ("lr", float("nan")), ("momentum", -0.1)])
def test_student_settings_the_probe_cannot_reproduce_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(CFG, student=dataclasses.replace(CFG.student, **{field: value})).check()


def test_presets_are_valid_and_smoke_is_small():
    for cfg in dln.PRESETS.values():
        cfg.check()
    smoke, cpu, paper = (dln.PRESETS[k] for k in ("smoke", "cpu", "paper"))
    assert cpu.deployments >= 8 and smoke.student.steps <= 30
    assert (paper.window, paper.teacher_updates, paper.student.batch_size, paper.update_scale, paper.init) == \
           (15, 2500, 25, 1e-3, "random")


# ------------------------------------------------------------------ teacher training

def test_teacher_training_trace_and_the_lstm_learns(taught):
    splits, teacher, trace = taught
    steps, surf = trace.stack("loss_surface")
    assert surf.shape == (7, 7, 7) and list(steps) == list(range(7)) and np.isfinite(surf).all()
    assert min(np.abs(surf[i + 1] - surf[i]).max() for i in range(6)) > 0  # the teacher moves the loss every update
    _, u = trace.series("update_norm")
    assert len(u) == 6 and np.all(u > 0) and np.all(u <= 1e-2 * np.sqrt(5000))
    assert list(trace.series("episode")[1]) == [0, 0, 0, 0, 1, 1]  # 12 steps per student, K = 3: 4 updates each
    assert trace.metrics["skipped_updates"] == 0 and not trace.messages and 0 <= trace.metrics["dev_acc"] <= 1
    fresh = dln.LSTMTeacher(seed=seeds.derive(0, seeds.TEACH, "lstm"))
    assert any(not torch.equal(a, b) for a, b in zip(fresh.parameters(), teacher.lstm.parameters()))
    assert not any(p.requires_grad for p in teacher.lstm.parameters())


def test_teacher_training_is_a_pure_function_of_the_seed(taught):
    splits, teacher, trace = taught
    again, trace2 = dln.train_teacher(splits, CFG, 0, progress_bar=False)
    assert trace.scalars == trace2.scalars and trace.metrics == trace2.metrics
    assert all(torch.equal(a, b) for a, b in zip(teacher.lstm.parameters(), again.lstm.parameters()))
    _, other = dln.train_teacher(splits, CFG, 1, progress_bar=False)
    assert other.scalars["update_norm"] != trace.scalars["update_norm"]


class _Kill(Exception):
    pass


def _kill_at(monkeypatch, name: str, n: int):
    real, calls = getattr(dln, name), [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise _Kill()
        return real(*args, **kwargs)

    monkeypatch.setattr(dln, name, wrapped)


def test_a_killed_teacher_training_resumes_bit_for_bit(taught, tmp_path, monkeypatch):
    splits, teacher, trace = taught
    with monkeypatch.context() as m:
        _kill_at(m, "meta_gradient", 6)  # inside update 6, after the checkpoint of update 4 (every 2)
        with pytest.raises(_Kill):
            dln.train_teacher(splits, CFG, 0, checkpoint_dir=tmp_path, checkpoint_every=2, progress_bar=False)
    assert (tmp_path / dln.CHECKPOINT_FILE).exists()
    with pytest.raises(ValueError, match="another run"):
        dln.train_teacher(splits, CFG, 1, checkpoint_dir=tmp_path, progress_bar=False)
    resumed, got = dln.train_teacher(splits, CFG, 0, checkpoint_dir=tmp_path, checkpoint_every=2, progress_bar=False)
    assert all(torch.equal(a, b) for a, b in zip(teacher.lstm.parameters(), resumed.lstm.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(teacher.weights, resumed.weights))
    assert got.scalars == trace.scalars and got.metrics == trace.metrics and got.messages == trace.messages
    assert np.array_equal(got.stack("loss_surface")[1], trace.stack("loss_surface")[1])
    assert not (tmp_path / dln.CHECKPOINT_FILE).exists()


def test_teacher_and_deployment_students_differ_in_weights_and_batches(taught, monkeypatch):
    splits, teacher, _ = taught
    seen = []
    real = dln.meta_gradient
    monkeypatch.setattr(dln, "meta_gradient", lambda model, params, w, batches, *a, **k: (
        seen.append((torch.cat([p.detach().flatten() for p in params.values()]), batches[0][0])),
        real(model, params, w, batches, *a, **k))[1])
    dln.train_teacher(splits, dataclasses.replace(CFG, teacher_updates=1), 0, progress_bar=False)
    dln.deploy(teacher, splits, CFG, 0, progress_bar=False)
    (w_teach, x_teach), (w_deploy, x_deploy) = seen[0], seen[1]
    assert not torch.equal(w_teach, w_deploy) and not torch.equal(x_teach, x_deploy[0])


def test_no_global_random_state_is_touched(taught):
    splits, teacher, _ = taught
    state = torch.get_rng_state()
    dln.train_teacher(splits, dataclasses.replace(CFG, teacher_updates=2), 3, progress_bar=False)
    dln.compare(teacher, splits, CFG, [5], progress_bar=False)
    dln.initial_dln("bce", 4, init_steps=5)
    assert torch.equal(state, torch.get_rng_state())


def test_student_optimizer_steps_happen_only_in_the_engine(taught):
    """Every optimizer step that moves a student is taken inside labkit/engine.py; dln.py steps only the LSTM's Adam
    (the teacher) and the "bce" fit of the loss network."""
    splits, _, _ = taught
    calls = []

    def hook(optimizer, args, kwargs):
        frame = next(f for f in inspect.stack()[1:] if "torch/optim" not in f.filename)
        calls.append((Path(frame.filename).name, frame.function, {id(p) for g in optimizer.param_groups
                                                                   for p in g["params"]}))

    handle = register_optimizer_step_pre_hook(hook)
    try:
        teacher, _ = dln.train_teacher(splits, CFG, 4, progress_bar=False)
        dln.compare(teacher, splits, CFG, [0, 1], progress_bar=False)
    finally:
        handle.remove()
    lstm, mine = {id(p) for p in teacher.lstm.parameters()}, {id(p) for p in teacher.parameters()}
    outside = [(f, fn) for f, fn, ids in calls if f != "engine.py" and not (fn == "update" and ids <= lstm)
               and not (fn == "fit_dln" and ids <= mine)]
    assert not outside and sum(f == "engine.py" for f, _, _ in calls) == 3 * CFG.student.steps
    assert sum(f == "dln.py" and fn == "update" for f, fn, _ in calls) == CFG.teacher_updates


def test_batch_norm_statistics_move_once_per_student_step():
    """ResNet-8: the probe unroll and the eval-mode dev passes leave the running statistics alone; the second unroll
    (teacher training) and the engine's steps (deployment) move them once per step."""
    splits = _images(augment=False)
    cfg = dataclasses.replace(CFG, student=dataclasses.replace(CFG.student, model="resnet8", model_kwargs={},
                                                               batch_size=8, steps=6),
                              teacher_updates=1, dev_batch_size=20, dev_size=60)
    teacher, _ = dln.train_teacher(splits, cfg, 0, progress_bar=False)
    teaching = dln._Teaching(splits, cfg, 0)
    before = {n: b.clone() for n, b in teaching.run.students.named_buffers()}
    teaching.update()
    tracked = [b for n, b in teaching.run.students.named_buffers() if n.endswith("num_batches_tracked")]
    assert tracked and all(int(b) == cfg.window for b in tracked)
    assert any(not torch.equal(b, before[n]) for n, b in teaching.run.students.named_buffers())
    hooks = dln.DLNHooks(teacher, cfg, splits, [0])
    run = engine.Run(splits, cfg.student, [0], hooks=hooks)
    engine.train(run, progress_bar=False)
    assert all(int(b) == cfg.student.steps for n, b in run.students.named_buffers() if n.endswith("num_batches_tracked"))


# ------------------------------------------------------------------ deployment and the baselines

def _still_lstm(teacher: dln.DLNTeacher) -> dln.DLNTeacher:
    """The teacher with its last cell zeroed: u = 0, the DLN never moves (L2T-DLN must then equal no-teacher)."""
    lstm = dln.LSTMTeacher(seed=0)
    lstm.load_state_dict(teacher.lstm.state_dict())
    with torch.no_grad():
        for p in lstm.cells[-1].parameters():
            p.zero_()
    return dataclasses.replace(teacher, lstm=lstm.requires_grad_(False))


def test_deployment_probes_the_batches_the_engine_trains_on(taught, monkeypatch):
    """With augmentation (LeNet): the window's K batches the probe unrolls are the ones the engine's next K steps
    train on; with a still LSTM, L2T-DLN is exactly the no-teacher run (same students, batches, loss)."""
    _, teacher, _ = taught
    splits = _images(augment=True)
    cfg = dataclasses.replace(CFG, student=dataclasses.replace(CFG.student, model="lenet", model_kwargs={},
                                                               batch_size=8, steps=6), dev_batch_size=20, dev_size=60)
    teacher = _still_lstm(dln.train_teacher(splits, dataclasses.replace(cfg, teacher_updates=1), 0,
                                            progress_bar=False)[0])
    probed, trained = [], []
    real_mg, real_obj = dln.meta_gradient, dln.DLNHooks.objective
    monkeypatch.setattr(dln, "meta_gradient", lambda m, p, w, b, *a, **k: (probed.extend(x for x, _ in b),
                                                                         real_mg(m, p, w, b, *a, **k))[1])
    monkeypatch.setattr(dln.DLNHooks, "objective", lambda self, logits, batch, step: (
        trained.append(batch.x) if self.teach else None, real_obj(self, logits, batch, step))[1])
    out = dln.compare(teacher, splits, cfg, [3, 4], baselines=("no-teacher",), progress_bar=False)
    assert len(probed) == len(trained) == cfg.student.steps
    assert all(torch.equal(a, b) for a, b in zip(probed, trained))
    for a, b in zip(out["l2t-dln"], out["no-teacher"]):
        assert a.scalars["loss"] == b.scalars["loss"] and a.metrics["test_acc"] == b.metrics["test_acc"]


def test_deploy_keeps_the_lstm_frozen_and_members_apart(taught):
    splits, teacher, _ = taught
    before = [p.clone() for p in teacher.lstm.parameters()]
    a, b = dln.deploy(teacher, splits, CFG, [7, 8], progress_bar=False)
    assert all(torch.equal(x, y) for x, y in zip(before, teacher.lstm.parameters()))
    assert a.scalars["update_norm"] != b.scalars["update_norm"]  # each member its own DLN and memory
    steps, surf = a.stack("loss_surface")
    assert list(steps) == [0, 3, 6, 9, 12] and surf.shape == (5, 7, 7) and a.config["method"] == "l2t-dln"
    one = dln.deploy(teacher, splits, CFG, 7, progress_bar=False)  # an int seed: one Trace (a looped population
    assert one.metrics["test_acc"] == pytest.approx(a.metrics["test_acc"], abs=0.01)  # of one: float rounding)
    run = engine.Run(splits, CFG.student, [7, 8, 7], hooks=dln.DLNHooks(teacher, CFG, splits, [7, 8, 7]))
    x, _, z = engine.train(run, progress_bar=False)
    for name in ("loss", "update_norm", "dev_batch_loss"):  # the same seed is the same student (float rounding aside)
        assert np.allclose(x.series(name)[1], z.series(name)[1], rtol=1e-4)
    assert x.series("loss")[1][0] == z.series("loss")[1][0]


def test_a_killed_deployment_resumes_bit_for_bit(taught, tmp_path, monkeypatch):
    """The hooks' state (each member's DLN, LSTM memory, the window drawn, dev streams) goes through the engine's
    checkpoint: killed mid-window and resumed, the run ends with the uninterrupted numbers."""
    splits, teacher, _ = taught

    def run(directory=None):
        r = engine.Run(splits, CFG.student, [0, 1], hooks=dln.DLNHooks(teacher, CFG, splits, [0, 1]))
        return r, engine.train(r, checkpoint_dir=directory, checkpoint_every=4, progress_bar=False)

    whole, want = run()
    with monkeypatch.context() as m:
        _kill_at(m, "meta_gradient", 3)  # the window at step 6; the last checkpoint was at step 4, mid-window
        with pytest.raises(_Kill):
            run(tmp_path)
    again, got = run(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(whole.students.parameters(), again.students.parameters()))
    assert all(w.scalars == g.scalars and w.metrics == g.metrics for w, g in zip(want, got))


def test_compare_runs_every_method_on_the_same_students(taught):
    splits, teacher, _ = taught
    out = dln.compare(teacher, splits, CFG, [0, 1], progress_bar=False)
    assert set(out) == {"l2t-dln", "ce", "no-teacher"}
    for traces in out.values():
        assert [t.config["seed"] for t in traces] == [0, 1] and all(t.config["role"] == ["deploy"] for t in traces)
        assert all(t.metrics["steps_done"] == CFG.student.steps for t in traces)
    ce = engine.Run(splits, CFG.student, [0, 1])  # the deployment students every method starts from
    d = engine.Run(splits, CFG.student, [0, 1], hooks=dln.DLNHooks(teacher, CFG, splits, [0, 1]))
    assert all(torch.equal(a, b) for a, b in zip(ce.students.parameters(), d.students.parameters()))
    assert torch.equal(ce.draw().index, dln._peek(d, CFG.window)[0].index)
    s = dln.summary(out, [0, 1], _named("toy"), CFG)
    assert s["baseline"] == "ce" and s["paper"] == "dln" and set(s["methods"]) == set(out)
    repro.check_metrics(dict(notebook="03", preset="smoke", seed=0, experiments={"main": s}))
    assert len(stats.verdicts(s, dln.NAMES)) == 2 and "| ce |" in stats.table(s)


def test_diverged_students_are_none_never_numbers(taught):
    splits, teacher, _ = taught
    broken = dataclasses.replace(teacher, initial_weights=[w.clone() for w in teacher.initial_weights])
    broken.initial_weights[2][0, 0] = float("nan")  # every member's loss is NaN from the first step
    out = dln.compare(broken, splits, CFG, [0, 1], baselines=("ce", "no-teacher"), progress_bar=False)
    assert all(t.diverged and t.metrics["test_acc"] is None for t in out["l2t-dln"] + out["no-teacher"])
    s = dln.summary(out, [0, 1], _named("toy"), CFG)
    assert s["methods"]["l2t-dln"]["estimate"]["excluded"] == 2 and s["methods"]["l2t-dln"]["estimate"]["n"] == 0
    fig = views.dln_compare_curves(out, names=dln.NAMES)
    drawn = {t.name: len(t.x) for t in fig.data}
    assert drawn["L2T-DLN (2 diverged, not drawn)"] == 0 and drawn["CE, mean of 2"] > 0


def test_a_non_finite_teacher_update_is_skipped_with_a_note(taught):
    splits, _, _ = taught
    teaching = dln._Teaching(splits, CFG, 0)
    teaching.initial[2][0, 0] = float("nan")
    teaching.episode(0)
    start = {n: p.clone() for n, p in teaching.params.items()}
    teaching.update()
    assert teaching.skipped == 1 and "skipped" in teaching.trace.messages[0] and "non-finite" in teaching.trace.messages[0]
    assert all(torch.equal(start[n], p) for n, p in teaching.params.items())
    assert all(h.abs().sum() == 0 for h, _ in teaching.state)


@pytest.mark.skipif(dln.dlf_baseline_missing(dln.PRESETS["smoke"]) is not None, reason="labkit.dlf's contract")
def test_the_dlf_baseline_runs_on_the_same_students_and_budget(taught):
    splits, teacher, _ = taught
    out = dln.compare(teacher, splits, dataclasses.replace(CFG, dlf="smoke"), [0, 1], baselines=("l2t-dlf",),
                      progress_bar=False)
    assert [t.config["seed"] for t in out["l2t-dlf"]] == [0, 1]
    assert all(t.metrics["steps_done"] == CFG.student.steps for t in out["l2t-dlf"])


# ------------------------------------------------------------------ views

def test_views(taught):
    splits, teacher, trace = taught
    fig = labkit.plots.dln_surface_scrubber(trace)
    assert len(fig.frames) == 7 and fig.frames[0].data[0].zmin == fig.frames[-1].data[0].zmin
    assert not np.allclose(np.asarray(fig.frames[0].data[0].z), np.asarray(fig.frames[-1].data[0].z))
    assert len(labkit.plots.dln_update_sizes(trace).data) == 6
    assert len(labkit.plots.dln_surface_slices(trace, count=3).data) == 3
    report = views.dln_teacher_report(trace)
    assert len(report) == 3 and "of 6 proposals" in report[0]
    out = dln.compare(teacher, splits, CFG, [0, 1], baselines=("ce",), progress_bar=False)
    bars = views.dln_result_bars(dln.summary(out, [0, 1], _named("toy"), CFG), names=dln.NAMES)
    assert len(bars.data) == 4 and bars.data[0].x[0] == "L2T-DLN"
    deployed = labkit.plots.dln_surface_scrubber(out["l2t-dln"][0])
    assert [f.name for f in deployed.frames] == ["0", "3", "6", "9", "12"]


def test_live_scrubber_slider_changes_the_heatmap(taught):
    widgets = pytest.importorskip("labkit.widgets")
    steps, values = taught[2].stack("loss_surface")
    scrubber = widgets.HeatmapScrubber(steps, values, title="DLN")
    last = np.array(scrubber.figure.data[0].z, dtype=float)
    scrubber.slider.value = 0
    first = np.array(scrubber.figure.data[0].z, dtype=float)
    assert np.allclose(first, values[0]) and not np.allclose(first, last)


def _named(name):
    """A stand-in for Splits where only the name and the scenario are read."""
    from types import SimpleNamespace
    return SimpleNamespace(name=name, scenario=[])
