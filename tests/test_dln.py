"""Tests for labkit.dln (L2T-DLN): the meta-gradients against finite differences, the loop, bad input, views."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from labkit import data, dln, models, plots
from labkit.meta import params_of


def _synthetic(n: int = 400, d: int = 12, c: int = 4, seed: int = 0) -> data.Splits:
    """Linearly separable-ish Gaussian classes; no files needed."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(c, d, generator=g) * 2
    y = torch.randint(0, c, (n,), generator=g)
    x = centres[y] + torch.randn(n, d, generator=g)
    yt = torch.randint(0, c, (200,), generator=g)
    xt = centres[yt] + torch.randn(200, d, generator=g)
    return data.from_tensors(x, y, dev_size=100, test=(xt, yt), seed=seed)


def _double_problem(K: int = 3, seed: int = 0):
    """A float64 student (MLP 6-5-3), the paper's DLN, K train batches and a dev batch."""
    g = torch.Generator().manual_seed(seed)
    model = models.build("mlp", (6,), 3, seed=seed, hidden=(5,)).double()
    params = params_of(model)
    train = [(torch.randn(8, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g))
             for _ in range(K)]
    dev = (torch.randn(10, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (10,), generator=g))
    net = dln.LossNetwork(seed=seed).double()
    weights = {n: p.detach().clone() for n, p in net.named_parameters()}
    return model, params, net, weights, train, dev


# ------------------------------------------------------------------ the loss network

def test_loss_features_mask_and_values():
    logits = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.5, 0.0]])
    y = torch.tensor([1, 0])
    f = dln.loss_features(logits, y)
    assert f.shape == (2, 3, 4)
    s = torch.sigmoid(logits)
    assert torch.all(f[0, 1] == 0) and torch.all(f[1, 0] == 0)  # true-class rows are zero
    assert torch.allclose(f[0, 0], torch.stack([s[0, 1], s[0, 0], torch.tensor(1.0), torch.tensor(0.0)]))
    assert torch.allclose(f[1, 2], torch.stack([s[1, 0], s[1, 2], torch.tensor(1.0), torch.tensor(0.0)]))


def test_loss_network_shape_and_no_bias():
    net = dln.LossNetwork(seed=0)
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert shapes == [(40, 4), (40, 40), (40, 40), (40, 40), (1, 40)]
    assert sum(p.numel() for p in net.parameters()) == 5000
    assert net(torch.zeros(3, 4)).abs().max().item() == 0.0  # bias-free: the masked rows give exactly 0


@pytest.mark.parametrize("seed", [0, 1])
def test_bce_init_is_a_sensible_loss(seed):
    """init="bce": the fitted DLN falls with σ(z_y) and rises with σ(z_j) everywhere on the grid, tracks the
    one-vs-rest BCE target, and (unlike the raw kaiming draw it starts from) is not an arbitrary surface."""
    net = dln.make_loss_network("bce", 10, seed=seed)
    surface = dln.loss_surface(net, grid=21).numpy()  # rows σ(z_y), columns σ(z_j)
    assert np.all(np.diff(surface, axis=0) < 0), "not decreasing in σ(z_y)"
    assert np.all(np.diff(surface, axis=1) > 0), "not increasing in σ(z_j)"
    g = torch.linspace(0, 1, 21)
    target = dln.bce_target(g[:, None], g[None, :], 10).numpy()
    assert net.init_fit["rmse"] < 0.1 * net.init_fit["target_rms"]
    assert np.abs(surface - target)[1:-1, 1:-1].max() < 2.0  # target spans ~0..46 on the grid
    # the fit starts from the public code's random draw with the same seed and is deterministic
    again = dln.make_loss_network("bce", 10, seed=seed)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), again.parameters()))
    raw = dln.make_loss_network("random", 10, seed=seed)
    assert raw.init_fit is None
    assert all(torch.equal(a, b) for a, b in zip(raw.parameters(), dln.LossNetwork(seed=seed).parameters()))
    # on a student's logits, the initial DLN loss ranks a confident right answer far below a confident wrong one
    y = torch.tensor([2])
    right, wrong = torch.full((1, 10), -4.0), torch.full((1, 10), -4.0)
    right[0, 2], wrong[0, 5] = 4.0, 4.0
    assert dln.dln_loss(net, None, right, y) < 0.2 * dln.dln_loss(net, None, wrong, y)


def test_bad_init():
    with pytest.raises(ValueError, match="init='xavier'"):
        dln.make_loss_network("xavier")
    with pytest.raises(ValueError, match="init='xavier'"):
        dln.train_teacher(_synthetic(), init="xavier", K=1, teacher_steps=1, progress_bar=False)


def test_bce_init_run_records_it_and_deploy_starts_from_it():
    splits = _synthetic()
    teacher, trace = dln.train_teacher(splits, student="mlp", student_kwargs={"hidden": (16,)}, teacher_steps=2, K=2,
                                       batch_size=20, dev_batch_size=50, grid=5, seed=0, init="bce",
                                       init_steps=100, progress_bar=False)
    assert trace.config["init"] == "bce" and trace.config["init_fit"]["rmse"] > 0
    fitted = dln.make_loss_network("bce", splits.num_classes, seed=1, init_steps=100)  # seed + 1, as the run
    assert all(torch.equal(teacher.initial_weights[n], p) for n, p in fitted.named_parameters())
    steps, surf = trace.stack("loss_surface")
    assert np.all(np.diff(surf[0], axis=1) > 0)
    given = dln.train_teacher(splits, student="mlp", student_kwargs={"hidden": (16,)}, teacher_steps=1, K=1,
                              batch_size=20, dev_batch_size=50, grid=5, seed=0, init="bce",
                              loss_net=dln.LossNetwork(seed=1), progress_bar=False)[1]
    assert given.config["init"] == "given"


def test_preprocess_gradients():
    g = torch.tensor([1.0, -1e-2, 1e-6, -1e-6, 0.0])
    out = dln.preprocess_gradients(g)
    assert out.shape == (5, 2)
    assert torch.allclose(out[0], torch.tensor([0.0, 1.0]), atol=1e-6)
    assert torch.allclose(out[1], torch.tensor([float(np.log(1e-2)) / 10, -1.0]), atol=1e-5)
    assert out[2, 0] == -1 and torch.isclose(out[2, 1], torch.tensor(float(np.exp(10)) * 1e-6))
    assert out[4, 0] == -1 and out[4, 1] == 0


# ------------------------------------------------------------------ meta-gradients against finite differences

def _rel_err(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_meta_gradient_through_loss_network_matches_finite_differences(momentum):
    model, params, net, weights, train, dev = _double_problem(K=3)
    dev_value, grads = dln.meta_gradient(model, params, net, weights, train, dev, lr=0.5, momentum=momentum)
    assert all(g.abs().sum() > 0 for g in grads.values())

    def f(w):
        with torch.enable_grad():
            value, *_ = dln.dev_loss_after_unroll(model, params, net, w, train, dev, lr=0.5, momentum=momentum)
        return value.item()

    g = torch.Generator().manual_seed(1)
    # A small step: the DLN is piecewise linear (LeakyReLU), and a larger step crosses kinks in some of its
    # 160 units x 24 rows x K steps; float64 leaves ample precision at 1e-7.
    eps = 1e-7
    for _ in range(3):  # random directions through all 5 000 weights
        d = {n: torch.randn(w.shape, generator=g, dtype=torch.float64) for n, w in weights.items()}
        analytic = sum((grads[n] * d[n]).sum().item() for n in weights)
        numeric = (f({n: weights[n] + eps * d[n] for n in weights})
                   - f({n: weights[n] - eps * d[n] for n in weights})) / (2 * eps)
        assert _rel_err(analytic, numeric) < 1e-6, (analytic, numeric)
    # and single coordinates: the largest gradient entry of the first and of the last layer
    for name in ("layers.0.weight", "layers.4.weight"):
        idx = np.unravel_index(int(grads[name].abs().argmax()), grads[name].shape)
        e = {n: torch.zeros_like(w) for n, w in weights.items()}
        e[name][idx] = 1.0
        h = 1e-6
        numeric = (f({n: weights[n] + h * e[n] for n in weights})
                   - f({n: weights[n] - h * e[n] for n in weights})) / (2 * h)
        assert _rel_err(grads[name][idx].item(), numeric) < 1e-6


def test_lstm_meta_gradient_matches_finite_differences():
    """The gradient that trains the LSTM: dev CE after the second unroll, through w' = w - s·u(g; θ)."""
    model, params, net, weights, train, dev = _double_problem(K=2, seed=3)
    torch.manual_seed(0)
    lstm = dln.LSTMTeacher(hidden=8).double()
    _, g_dict = dln.meta_gradient(model, params, net, weights, train, dev, lr=0.5)
    g = torch.cat([v.reshape(-1) for v in g_dict.values()])
    state = lstm.initial_state(g.numel(), dtype=torch.float64)
    flat_w = torch.cat([w.reshape(-1) for w in weights.values()])
    scale = 0.05  # large enough that the LSTM's effect on the dev loss is far above rounding

    def dev_of(theta):
        u, _ = functional_call(lstm, theta, (g, state))
        new = dln._unflat(flat_w - scale * u, weights)
        value, *_ = dln.dev_loss_after_unroll(model, params, net, new, train, dev, lr=0.5)
        return value

    theta = {n: p.detach().clone().requires_grad_() for n, p in lstm.named_parameters()}
    grads = torch.autograd.grad(dev_of(theta), list(theta.values()))
    grads = dict(zip(theta, grads))
    gen = torch.Generator().manual_seed(2)
    eps = 1e-7
    for _ in range(3):
        d = {n: torch.randn(p.shape, generator=gen, dtype=torch.float64) for n, p in theta.items()}
        analytic = sum((grads[n] * d[n]).sum().item() for n in theta)
        plus = dev_of({n: theta[n].detach() + eps * d[n] for n in theta}).item()
        minus = dev_of({n: theta[n].detach() - eps * d[n] for n in theta}).item()
        assert _rel_err(analytic, (plus - minus) / (2 * eps)) < 1e-6


# ------------------------------------------------------------------ the loop

@pytest.fixture(scope="module")
def run():
    splits = _synthetic()
    teacher, trace = dln.train_teacher(splits, student="mlp", student_kwargs={"hidden": (16,)}, teacher_steps=6, K=2,
                                       batch_size=20, dev_batch_size=50, grid=7, seed=0, progress_bar=False,
                                       update_scale=1e-2)
    return splits, teacher, trace


def test_trace_contents_and_surface_changes(run):
    splits, teacher, trace = run
    steps, surf = trace.stack("loss_surface")
    assert surf.shape == (7, 7, 7) and list(steps) == list(range(7))
    assert np.isfinite(surf).all()
    # the loss surface changes over teacher steps, and keeps changing
    diffs = [np.abs(surf[i + 1] - surf[i]).max() for i in range(6)]
    assert min(diffs) > 1e-5
    assert np.abs(surf[-1] - surf[0]).max() > 1e-3
    s, u = trace.series("update_norm")
    assert len(u) == 6 and np.all(u > 0) and np.all(u <= 1e-2 * np.sqrt(5000))
    for name in ("dev_acc", "dev_loss", "dev_batch_loss", "grad_norm"):
        assert np.isfinite(trace.series(name)[1]).all()
    assert 0 <= trace.metrics["test_acc"] <= 1 and trace.metrics["skipped_steps"] == 0
    assert trace.metrics["student_steps"] == 12 and not trace.messages


def test_run_is_a_pure_function_of_seed(run):
    splits, _, trace = run
    _, again = dln.train_teacher(splits, student="mlp", student_kwargs={"hidden": (16,)}, teacher_steps=6, K=2,
                                 batch_size=20, dev_batch_size=50, grid=7, seed=0, progress_bar=False,
                                 update_scale=1e-2)
    assert np.array_equal(trace.stack("loss_surface")[1], again.stack("loss_surface")[1])
    assert trace.metrics["test_acc"] == again.metrics["test_acc"]


def test_lstm_is_trained_and_deploy_keeps_it_frozen(run):
    splits, teacher, _ = run
    torch.manual_seed(2)  # the fresh LSTM of seed 0 is drawn with seed + 2
    fresh = dln.LSTMTeacher()
    assert any(not torch.equal(a, b) for a, b in zip(fresh.parameters(), teacher.lstm.parameters()))
    before = [p.detach().clone() for p in teacher.lstm.parameters()]
    trace = dln.deploy(teacher, splits, student="mlp", student_kwargs={"hidden": (16,)}, teacher_steps=3,
                       batch_size=20, dev_batch_size=50, grid=5, seed=1, progress_bar=False)
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.lstm.parameters()))
    assert trace.config["learn"] is False and trace.metrics["student_steps"] == 3 * teacher.config["K"]
    assert trace.stack("loss_surface")[1].shape == (4, 5, 5)


def test_ce_baseline_sees_the_same_batches():
    """CE baseline = the DLN run with the loss swapped: with the same seed both start from the same student and
    draw the same first batch, so after one step on the same loss they would agree (checked through fit)."""
    splits = _synthetic()
    ce = dln.train_ce(splits, student="mlp", student_kwargs={"hidden": (16,)}, steps=4, batch_size=20, seed=3,
                      progress_bar=False)
    model = models.build("mlp", splits.in_shape, splits.num_classes, seed=3, hidden=(16,))
    stream = data.batches(len(splits.train), 20, seed=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(4):
        i = next(stream)
        loss = F.cross_entropy(model(splits.train.x[i]), splits.train.y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    from labkit.train import evaluate
    assert evaluate(model, splits.test)["acc"] == ce.metrics["test_acc"]
    assert ce.metrics["test_err"] == pytest.approx(100 * (1 - ce.metrics["test_acc"]))


def test_no_teacher_control_trains_on_the_runs_initial_dln():
    """train_fixed_loss = plain SGD on the initial DLN of train_teacher(seed) (seed + 1), on the same batches."""
    splits = _synthetic()
    fx = dln.train_fixed_loss(splits, student="mlp", student_kwargs={"hidden": (16,)}, steps=4, batch_size=20,
                              init="bce", init_steps=50, seed=3, progress_bar=False)
    net = dln.make_loss_network("bce", splits.num_classes, seed=4, init_steps=50)
    model = models.build("mlp", splits.in_shape, splits.num_classes, seed=3, hidden=(16,))
    stream = data.batches(len(splits.train), 20, seed=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(4):
        i = next(stream)
        loss = dln.dln_loss(net, None, model(splits.train.x[i]), splits.train.y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    from labkit.train import evaluate
    assert evaluate(model, splits.test)["acc"] == fx.metrics["test_acc"]
    assert fx.config["method"] == "fixed-dln" and fx.config["init_fit"]["rmse"] > 0


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("K", [0, -3, 1.5])
def test_bad_K(K):
    with pytest.raises(ValueError, match="K="):
        dln.train_teacher(_synthetic(), K=K, teacher_steps=1, progress_bar=False)


def test_wrong_loss_network_width():
    with pytest.raises(ValueError, match="input width=3"):
        dln.train_teacher(_synthetic(), loss_net=dln.LossNetwork(in_features=3), K=1, teacher_steps=1,
                          progress_bar=False)


def test_unknown_student():
    with pytest.raises(ValueError, match="student='vgg'"):
        dln.train_teacher(_synthetic(), student="vgg", K=1, teacher_steps=1, progress_bar=False)
    with pytest.raises(ValueError, match="student="):
        dln.train_ce(_synthetic(), student="vgg", steps=1)


def test_unknown_preset():
    with pytest.raises(ValueError, match="preset="):
        dln.preset("gpu")
    assert dln.preset("cpu")["K"] > 0


def test_non_finite_loss_skips_the_teacher_step_with_a_note():
    splits = _synthetic()
    net = dln.LossNetwork(seed=0)
    with torch.no_grad():
        net.layers[2].weight[0, 0] = float("nan")
    model0 = models.build("mlp", splits.in_shape, splits.num_classes, seed=0, hidden=(16,))
    teacher, trace, model = dln.train_teacher(splits, student="mlp", student_kwargs={"hidden": (16,)},
                                              teacher_steps=3, K=2, batch_size=20, dev_batch_size=50, grid=5,
                                              loss_net=net, seed=0, progress_bar=False, return_student=True)
    assert trace.metrics["skipped_steps"] == 3
    assert len(trace.messages) == 3 and all("skipped" in m and "non-finite" in m for m in trace.messages)
    # nothing was committed: the student is still its initial self, the LSTM's memory is still zero
    assert all(torch.equal(a, b) for a, b in zip(model0.parameters(), model.parameters()))
    assert all(h.abs().sum() == 0 for h, _ in teacher.state)
    assert np.isfinite(trace.metrics["test_acc"])


# ------------------------------------------------------------------ views

def test_surface_scrubber_figure(run):
    _, _, trace = run
    fig = plots.dln_surface_scrubber(trace)
    assert len(fig.frames) == 7
    z0, z_last = np.asarray(fig.frames[0].data[0].z), np.asarray(fig.frames[-1].data[0].z)
    assert not np.allclose(z0, z_last)
    assert fig.frames[0].data[0].zmin == fig.frames[-1].data[0].zmin  # one colour scale for all steps
    assert len(fig.layout.sliders[0].steps) == 7
    assert len(plots.dln_update_sizes(trace).data) == 6
    assert len(plots.dln_surface_slices(trace, count=3).data) == 3


def test_live_scrubber_slider_changes_the_heatmap(run):
    widgets = pytest.importorskip("labkit.widgets")
    _, _, trace = run
    steps, values = trace.stack("loss_surface")
    scrubber = widgets.HeatmapScrubber(steps, values, title="DLN")
    last = np.array(scrubber.figure.data[0].z, dtype=float)
    scrubber.slider.value = 0
    first = np.array(scrubber.figure.data[0].z, dtype=float)
    assert np.allclose(first, values[0]) and not np.allclose(first, last)
    assert scrubber.label.value == "step 0"
