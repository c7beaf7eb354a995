"""labkit.dlf: the bilinear loss, the surrogates, the teacher, teacher training (both RMD modes), deployment."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from labkit import data, dlf, meta
from labkit.models import build


def _splits(n=400, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = 2 * torch.randn(C, 1, 4, 4, generator=g)
    y = torch.randint(0, C, (n,), generator=g)
    x = centers[y] + torch.randn(n, 1, 4, 4, generator=g)
    yt = torch.randint(0, C, (200,), generator=g)
    xt = centers[yt] + torch.randn(200, 1, 4, 4, generator=g)
    return data.from_tensors(x, y, dev_size=100, test=(xt, yt), seed=seed, name="blobs")


SMALL = dict(model="mlp", hidden=(8,), batch_size=16, lr=0.1, momentum=0.9, dev_size=50)


def test_loss_identity_is_monotone_ce():
    logits = torch.randn(32, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (32,))
    p_y = F.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    got = dlf.dlf_loss(logits, y, torch.eye(5, dtype=torch.float64), reduction="none")
    torch.testing.assert_close(got, -p_y / (1 + p_y))


def test_loss_matches_formula_with_bias():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randint(0, 4, (16,), generator=g)
    phi, b = torch.randn(4, 4, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    log_p = torch.log(F.softmax(logits, 1))
    want = torch.stack([-torch.sigmoid(F.one_hot(y[i], 4).double() @ phi @ log_p[i] + b[y[i]]) for i in range(16)])
    torch.testing.assert_close(dlf.dlf_loss(logits, y, phi, b, reduction="none"), want)
    assert dlf.dlf_loss(logits, y, phi, b).item() == pytest.approx(want.mean().item())


def test_loss_is_finite_for_extreme_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], requires_grad=True)
    y = torch.tensor([1, 1])
    phi = torch.eye(3) - 0.5 * (1 - torch.eye(3))
    loss = dlf.dlf_loss(logits, y, phi)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="reduction"):
        dlf.dlf_loss(logits, y, phi, reduction="sum")


def test_surrogates():
    y = torch.tensor([0, 1])
    right = torch.tensor([[10.0, 0, 0], [0, 10.0, 0]])
    wrong = torch.tensor([[0, 10.0, 0], [10.0, 0, 0]])
    assert dlf.smooth_error(right, y).item() == pytest.approx(0.0, abs=1e-6)
    assert dlf.smooth_error(wrong, y).item() == pytest.approx(1.0, abs=1e-6)
    assert dlf.expected_error(right, y).item() == pytest.approx(1 - F.softmax(right, 1)[0, 0].item())
    with pytest.raises(ValueError, match="surrogate"):
        dlf.train_teacher(_splits(), surrogate="accuracy", **SMALL)


def test_teacher_starts_near_identity_and_attends():
    teacher = dlf.DLFTeacher(10, 14, bank=4, seed=0)
    phi, b, a = teacher(torch.rand(14))
    assert phi.shape == (10, 10) and b.shape == (10,) and a.shape == (4,)
    assert (phi - torch.eye(10)).abs().max() < 0.05
    assert a.sum().item() == pytest.approx(1.0) and torch.allclose(a, torch.full((4,), 0.25))
    static = dlf.DLFTeacher(10, 14, static=True, bias=False)
    phi, b, a = static(torch.rand(14))
    assert b is None and a.shape == (1,) and torch.equal(phi, torch.eye(10))
    with pytest.raises(ValueError, match="bank"):
        dlf.DLFTeacher(10, 14, bank=0)


@pytest.mark.parametrize("mode", meta.META_MODES)
def test_teacher_meta_gradient_matches_finite_differences(mode):
    """The gradient of the smooth dev error w.r.t. all teacher weights, through K momentum-SGD steps on l_Φ."""
    torch.manual_seed(0)
    C, K, lr, mom = 3, 4, 0.5, 0.9
    g = torch.Generator().manual_seed(1)
    model = build("mlp", (5,), C, seed=0, hidden=(6,)).double()
    w0 = meta.params_of(model, requires_grad=False)
    batches = [(torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randint(0, C, (8,), generator=g))
               for _ in range(K)]
    dev_x, dev_y = torch.randn(30, 5, generator=g, dtype=torch.float64), torch.randint(0, C, (30,), generator=g)
    teacher = dlf.DLFTeacher(C, 4 + C, bank=3, hidden=4, init_noise=0.3, seed=0).double()
    with torch.no_grad():  # leave the zero initialisation so that every weight matters
        for p in teacher.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    states = [torch.rand(4 + C, generator=g, dtype=torch.float64) for _ in range(K)]
    theta = list(teacher.parameters())

    def loss_fn(logits, y, k):
        phi, b, _ = teacher(states[k])
        return dlf.dlf_loss(logits, y, phi, b)

    def dev_fn(w):
        return dlf.smooth_error(functional_call(model, w, (dev_x,)), dev_y, k=5.0)

    grads, *_ = meta.sgd_meta_grad(model, w0, batches, loss_fn, theta, dev_fn, lr=lr, momentum=mom, mode=mode)

    def objective():
        w, _, _ = meta.unroll_sgd(model, {n: p.clone().requires_grad_() for n, p in w0.items()}, batches, loss_fn,
                                  lr=lr, momentum=mom, create_graph=False)
        return dev_fn(w).item()

    eps = 1e-6
    for trial in range(3):  # random directions through all teacher weights at once
        d = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in theta]
        with torch.no_grad():
            for p, di in zip(theta, d):
                p.add_(eps * di)
        f_plus = objective()
        with torch.no_grad():
            for p, di in zip(theta, d):
                p.sub_(2 * eps * di)
        f_minus = objective()
        with torch.no_grad():
            for p, di in zip(theta, d):
                p.add_(eps * di)
        fd = (f_plus - f_minus) / (2 * eps)
        got = sum((gi * di).sum() for gi, di in zip(grads, d)).item()
        assert abs(fd) > 1e-5
        assert abs(got - fd) / abs(fd) < 1e-6, f"{mode}: {got} vs finite differences {fd}"


def test_train_teacher_trace_and_modes_agree():
    splits = _splits()
    out = {}
    for mode in meta.META_MODES:
        teacher, trace = dlf.train_teacher(splits, window=5, updates=3, horizon=10, pretrain_steps=2, mode=mode,
                                           seed=0, progress_bar=False, **SMALL)
        out[mode] = (teacher, trace)
        steps, phi = trace.stack("phi")
        assert phi.shape == (15, 3, 3) and list(steps) == list(range(15))
        assert trace.stack("attention")[1].shape == (15, 4)
        assert trace.stack("state")[1].shape == (15, 7)
        s, v = trace.series("dev_surrogate")
        assert list(s) == [5, 10, 15] and np.all((v >= 0) & (v < 1))
        assert np.all((trace.series("dev_acc")[1] >= 0) & (trace.series("dev_acc")[1] <= 1))
        assert trace.metrics["student_runs"] == 2  # horizon 10 = 2 windows, then a fresh student
        assert not np.allclose(phi[0], phi[-1])  # the teacher moved
    a, b = (out[m][1] for m in meta.META_MODES)
    np.testing.assert_allclose(a.stack("phi")[1], b.stack("phi")[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.series("dev_surrogate")[1], b.series("dev_surrogate")[1], rtol=1e-4, atol=1e-5)


def test_restart_uses_a_fresh_student_per_window():
    _, trace = dlf.train_teacher(_splits(), window=4, updates=3, horizon=4, restart=True, pretrain_steps=0,
                                 static=True, seed=0, progress_bar=False, **SMALL)
    assert trace.metrics["student_runs"] == 3
    assert trace.stack("attention")[1].shape == (12, 1)
    # progress feature restarts at 0 with every episode
    np.testing.assert_allclose(trace.stack("state")[1][:, 0], np.tile(np.arange(4) / 4, 3), atol=1e-6)


def test_deploy_and_ce_are_deterministic_and_comparable():
    splits = _splits()
    teacher, _ = dlf.train_teacher(splits, window=5, updates=2, horizon=10, pretrain_steps=0, seed=0,
                                   progress_bar=False, **SMALL)
    kw = dict(steps=20, pretrain_steps=5, eval_every=10, refresh_every=5, progress_bar=False, **SMALL)
    a = dlf.deploy(teacher, splits, seed=3, **kw)
    b = dlf.deploy(teacher, splits, seed=3, **kw)
    assert a.metrics["test_err"] == b.metrics["test_err"]
    np.testing.assert_array_equal(a.stack("phi")[1], b.stack("phi")[1])
    assert a.stack("phi")[1].shape == (20, 3, 3)
    assert a.stack("confusion")[1].shape == (2, 3, 3)
    assert a.metrics["steps"] == 25
    res = dlf.compare(teacher, splits, [0, 1], **kw)
    summary = dlf.summarize(res)
    for key in ("ce_test_err_mean", "ce_test_err_std", "dlf_test_err_mean", "dlf_test_err_std"):
        assert math.isfinite(summary[key]) and 0 <= summary[key] <= 100
    assert len(summary["ce_test_err"]) == 2 and "phi" not in res["dlf_traces"][1].arrays
    with pytest.raises(ValueError, match="teacher"):
        dlf.deploy("ce", splits, **kw)


def test_ce_and_dlf_share_the_protocol():
    """Same steps, optimizer, data order and seed: the configs differ only in the method."""
    splits = _splits()
    teacher = dlf.DLFTeacher(3, 7, static=True)
    kw = dict(steps=3, pretrain_steps=2, eval_every=0, progress_bar=False, record=False, **SMALL)
    ce, dl = dlf.train_ce(splits, seed=2, **kw), dlf.deploy(teacher, splits, seed=2, refresh_every=1, **kw)
    diff = {k for k in ce.config if ce.config[k] != dl.config.get(k)}
    assert diff == {"method"}, diff


def test_bad_parameters_raise():
    splits = _splits()
    with pytest.raises(ValueError, match="mode"):
        dlf.train_teacher(splits, mode="forward", **SMALL)
    with pytest.raises(ValueError, match="horizon"):
        dlf.train_teacher(splits, window=10, horizon=5, **SMALL)
    with pytest.raises(ValueError, match="window"):
        dlf.train_teacher(splits, window=0, **SMALL)
    with pytest.raises(ValueError, match="dev_size"):
        dlf.train_teacher(splits, **{**SMALL, "dev_size": 10_000})
    with pytest.raises(ValueError, match="pretrain_lr"):
        dlf.train_teacher(splits, pretrain_lr=0.0, **SMALL)
    with pytest.raises(ValueError, match="alpha"):
        dlf.train_teacher(splits, alpha=1.0, **SMALL)
    with pytest.raises(ValueError, match="teacher_optimizer"):
        dlf.train_teacher(splits, teacher_optimizer="rmsprop", **SMALL)
    with pytest.raises(ValueError, match="alpha"):
        dlf.deploy(dlf.untrained_teacher(splits), splits, alpha=2.0, **SMALL)


def test_phi_pair_changes():
    phi = np.tile(np.eye(3), (10, 1, 1))
    phi[5:, 0, 2] = 0.7   # class 0 learns similarity to class 2
    phi[5:, 1, 0] = -0.4  # class 1 learns to push class 0 down
    out = dlf.phi_pair_changes(phi, ["a", "b", "c"], top=1)
    assert out["rise"] == [("a", "c", pytest.approx(0.7))]
    assert out["fall"] == [("b", "a", pytest.approx(-0.4))]
    with pytest.raises(ValueError, match="phi"):
        dlf.phi_pair_changes(phi, ["a", "b"])


def test_views_read_the_trace():
    from labkit import plots
    from labkit.trace import Trace

    trace = Trace()
    for t in range(5):
        phi = np.eye(3)
        phi[0, 1] = 0.1 * t
        trace.log_array(t, phi=phi, attention=np.array([0.5, 0.5]))
    trace.log_array(5, confusion=np.eye(3))
    fig = plots.dlf_phi_scrubber(trace, ["a", "b", "c"])
    assert len(fig.frames) == 5 and fig.data[0].zmin == -0.4 and fig.data[0].zmax == 0.4  # fixed, symmetric scale
    assert list(fig.data[0].x) == ["a", "b", "c"] and list(fig.data[0].y) == ["a", "b", "c"]
    assert len(plots.dlf_attention_curves(trace).data) == 2
    changes = dlf.phi_pair_changes(trace.stack("phi")[1], ["a", "b", "c"], top=2)
    fig = plots.dlf_pairs_and_confusion(changes, trace.stack("confusion")[1][-1], ["a", "b", "c"])
    assert fig.data[0].x[0] == pytest.approx(0.4)


def test_student_loss_combines_ce_and_dlf():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randint(0, 4, (16,), generator=g)
    phi = 3 * torch.eye(4, dtype=torch.float64)
    mix = dlf.student_loss(logits, y, phi, None, 0.5)
    want = 0.5 * F.cross_entropy(logits, y) + 0.5 * dlf.dlf_loss(logits, y, phi)
    assert mix.item() == pytest.approx(want.item())
    assert dlf.student_loss(logits, y, phi, None, 0.0).item() == pytest.approx(dlf.dlf_loss(logits, y, phi).item())
    with pytest.raises(ValueError, match="alpha"):
        dlf.student_loss(logits, y, phi, None, 1.5)


def test_init_scale_sets_phi0_and_its_slope():
    teacher = dlf.DLFTeacher(5, 9, static=True, init_scale=4.0)
    phi, _, _ = teacher(torch.rand(9))
    torch.testing.assert_close(phi, 4 * torch.eye(5))
    # slope of -l in log p_y is c·σ'(c log p_y): c/4 for a confident example (p_y -> 1), vanishing for p_y -> 0
    logits = torch.tensor([[3.0, 0, 0, 0, 0], [-3.0, 0, 0, 0, 0]], dtype=torch.float64, requires_grad=True)
    dlf.dlf_loss(logits, torch.tensor([0, 0]), phi.detach().double(), reduction="none").sum().backward()
    q = F.softmax(logits.detach(), 1)[:, 0]
    z = 4 * torch.log(q)
    slope = 4 * torch.sigmoid(z) * (1 - torch.sigmoid(z))  # c·σ'(c log p_y)
    torch.testing.assert_close(logits.grad[:, 0], -slope * (1 - q))
    assert slope[0] > 0.5 and slope[1] < 1e-3  # confident: near c/4 = 1; wrong: ~0 (hence alpha·CE)
    with pytest.raises(ValueError, match="init_scale"):
        dlf.DLFTeacher(5, 9, init_scale=0.0)


def test_pretrain_lr_is_shared_and_method_lr_applies_after():
    """Same pre-training (pretrain_lr) then each method's own lr: identical after pre-training, different after."""
    splits = _splits()
    kw = dict(SMALL, steps=0 + 3, pretrain_steps=4, pretrain_lr=0.1, eval_every=0, progress_bar=False, record=False)
    a = dlf.train_ce(splits, seed=1, **{**kw, "lr": 0.1})
    b = dlf.train_ce(splits, seed=1, **{**kw, "lr": 0.01})
    c = dlf.train_ce(splits, seed=1, **{**kw, "lr": 0.01})
    assert a.metrics["test_loss"] != b.metrics["test_loss"] and b.metrics["test_loss"] == c.metrics["test_loss"]
    assert b.config["pretrain_lr"] == 0.1 and b.config["lr"] == 0.01


def test_phi_dynamics_and_scrubber_references():
    from labkit import plots
    from labkit.trace import Trace

    phi = np.tile(2 * np.eye(3), (6, 1, 1))
    phi[:, 0, 1] = np.linspace(0, 0.01, 6)  # a small change over time
    d = dlf.phi_dynamics(phi, 2 * np.eye(3))
    assert d["dynamic_range"] == pytest.approx(0.01) and d["static_shift"] == pytest.approx(0.005)
    assert d["diag_mean"] == pytest.approx(2.0) and d["dynamic_rms"] > 0
    trace = Trace()
    for t in range(6):
        trace.log_array(t, phi=phi[t])
    fig = plots.dlf_phi_scrubber(trace, ["a", "b", "c"], reference="mean")
    assert fig.data[0].zmax == pytest.approx(0.005) and fig.data[0].zmin == pytest.approx(-0.005)
    first = np.asarray(fig.frames[0].data[0].z, dtype=float)
    assert first[0, 1] == pytest.approx(-0.005) and first[0, 0] == pytest.approx(0.0)
    fig = plots.dlf_phi_scrubber(trace, ["a", "b", "c"], reference="start")
    assert np.asarray(fig.frames[-1].data[0].z, dtype=float)[0, 1] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="reference"):
        plots.dlf_phi_scrubber(trace, ["a", "b", "c"], reference="median")


def test_lr_sweep_and_compare_with_own_ce_lr():
    splits = _splits()
    kw = dict(SMALL, steps=6, pretrain_steps=2, refresh_every=3, alpha=0.5)
    kw.pop("lr")
    ce = dlf.lr_sweep(splits, [0.05, 0.2], seeds=[0, 1], **kw)
    fixed = dlf.lr_sweep(splits, [0.05, 0.2], teacher=dlf.untrained_teacher(splits, init_scale=2.0), **kw)
    assert set(ce) == set(fixed) == {0.05, 0.2} and all(0 <= v <= 1 for v in [*ce.values(), *fixed.values()])
    # several seeds: the mean of the one-seed sweeps
    one_seed = [dlf.lr_sweep(splits, [0.05], seeds=[s], **kw)[0.05] for s in (0, 1)]
    assert ce[0.05] == pytest.approx(np.mean(one_seed))
    res = dlf.compare(dlf.untrained_teacher(splits), splits, [0], ce_lr=0.2, lr=0.05, eval_every=0,
                      progress_bar=False, **{k: v for k, v in kw.items()})
    assert res["ce_traces"][0].config["lr"] == 0.2 and res["dlf_traces"][0].config["lr"] == 0.05
    assert res["dlf_traces"][0].config["alpha"] == 0.5 and "alpha" not in res["ce_traces"][0].config
    with pytest.raises(ValueError, match="lrs"):
        dlf.lr_sweep(splits, [], **kw)
    with pytest.raises(ValueError, match="seeds"):
        dlf.lr_sweep(splits, [0.05], seeds=[], **kw)


def test_progress_gate_makes_phase_matrices():
    teacher = dlf.DLFTeacher(3, 7, bank=3, gate="progress", init_scale=2.0, seed=0)
    assert teacher.attend is None
    state = torch.zeros(7)
    for p, want in ((0.0, [1, 0, 0]), (0.25, [0.5, 0.5, 0]), (1.0, [0, 0, 1])):
        state[0] = p
        torch.testing.assert_close(teacher(state)[2], torch.tensor(want, dtype=torch.float32))
    # no initial noise where no attention needs its symmetry broken: Φ_0 is exactly c·I at every phase
    assert all(torch.equal(m, 2.0 * torch.eye(3)) for m in teacher.bank.detach())
    with pytest.raises(ValueError, match="gate"):
        dlf.DLFTeacher(3, 7, gate="time")
    # trained through windows, the phases' matrices move differently: Φ_t changes over the run (expected error:
    # this easy problem's dev set is all correct, where the smooth error's gradient is 0)
    _, trace = dlf.train_teacher(_splits(), window=5, updates=4, horizon=20, pretrain_steps=2, gate="progress",
                                 bank=3, init_scale=2.0, alpha=0.5, teacher_lr=0.05, seed=0, progress_bar=False,
                                 surrogate="expected_error", **SMALL)
    d = dlf.phi_dynamics(trace.stack("phi")[1])
    assert d["dynamic_range"] > 0.01 and trace.config["gate"] == "progress"


def test_untrained_teacher_is_the_trained_teachers_start():
    splits = _splits()
    teacher, trace = dlf.train_teacher(splits, window=3, updates=2, horizon=6, pretrain_steps=1, bank=3, gate="progress",
                                       init_scale=2.0, seed=4, teacher_lr=0.05, progress_bar=False, **SMALL)
    start = dlf.untrained_teacher(splits, trace.config)  # keys that are not DLFTeacher's are ignored
    again = dlf.DLFTeacher(3, 7, bank=3, gate="progress", init_scale=2.0, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(start.bank, teacher.bank)  # the trained one moved away from it
    assert dlf.untrained_teacher(splits, trace.config, init_scale=3.0).bank[0, 0, 0].item() == 3.0  # kwargs win


def test_only_a_teacher_that_reads_dev_makes_the_student_measure_it():
    splits = _splits()
    static, progress_gate = dlf.DLFTeacher(3, 7, static=True), dlf.DLFTeacher(3, 7, gate="progress")
    attention = dlf.DLFTeacher(3, 7, gate="state")
    assert (static.reads_dev_state, progress_gate.reads_dev_state, attention.reads_dev_state) == (False, False, True)
    kw = dict(SMALL, steps=6, pretrain_steps=2, refresh_every=2, eval_every=0, progress_bar=False)
    for teacher, measured in ((static, False), (attention, True)):
        dev_acc = dlf.deploy(teacher, splits, **kw).stack("state")[1][:, 3]  # s_t[3]: the dev accuracy
        assert (not np.allclose(dev_acc, 1 / 3)) == measured
