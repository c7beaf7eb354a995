"""labkit.dlf: the loss family, the surrogates, the teacher, its meta-gradient against finite differences, teacher
training (both RMD modes, resumable), deployment on the engine, the baselines, the sweep, the views' numbers."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from labkit import data, dlf, engine, meta, seeds
from labkit import plots
from labkit.models import build
from labkit.student import StudentConfig


def _splits(n=500, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = 0.4 * torch.randn(C, 1, 4, 4, generator=g)  # overlapping: the dev error stays informative
    y = torch.randint(0, C, (n,), generator=g)
    x = centers[y] + torch.randn(n, 1, 4, 4, generator=g)
    yt = torch.randint(0, C, (200,), generator=g)
    xt = centers[yt] + torch.randn(200, 1, 4, 4, generator=g)
    return data.from_tensors(x, y, dev_size=100, test=(xt, yt), seed=seed, name="blobs")


CFG = dlf.Config(student=StudentConfig(model="mlp", model_kwargs={"hidden": (8,)}, batch_size=16, lr=0.1,
                                       momentum=0.9, pretrain_steps=10, pretrain_lr=0.1, steps=24, eval_every=8),
                 window=4, teacher_updates=5, dev_read=50, deployments=3, tune_count=2, teacher_lr=0.05,
                 teacher_optimizer="adam", init_scale=2.0)


def test_loss_identity_is_monotone_ce_and_batched_equals_per_member():
    logits = torch.randn(2, 32, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (2, 32))
    p_y = F.softmax(logits, -1).gather(-1, y[..., None]).squeeze(-1)
    eye = torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(dlf.dlf_loss(logits, y, eye.expand(2, 5, 5)), -p_y / (1 + p_y))
    phi = torch.randn(2, 5, 5, dtype=torch.float64)
    b = torch.randn(2, 5, dtype=torch.float64)
    each = torch.stack([dlf.dlf_loss(logits[i], y[i], phi[i], b[i]) for i in range(2)])
    torch.testing.assert_close(dlf.dlf_loss(logits, y, phi, b), each)


def test_loss_matches_formula_with_bias():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randint(0, 4, (16,), generator=g)
    phi, b = torch.randn(4, 4, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    log_p = torch.log(F.softmax(logits, 1))
    want = torch.stack([-torch.sigmoid(F.one_hot(y[i], 4).double() @ phi @ log_p[i] + b[y[i]]) for i in range(16)])
    torch.testing.assert_close(dlf.dlf_loss(logits, y, phi, b).double(), want, rtol=1e-6, atol=1e-7)


def test_loss_is_finite_for_extreme_logits_and_mixture():
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], requires_grad=True)
    y = torch.tensor([1, 1])
    phi = torch.eye(3) - 0.5 * (1 - torch.eye(3))
    loss = dlf.student_loss(logits, y, phi, alpha=0.5).mean()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    mixed = dlf.student_loss(logits.detach(), y, phi, alpha=0.3)
    want = 0.3 * F.cross_entropy(logits.detach(), y, reduction="none") + 0.7 * dlf.dlf_loss(logits.detach(), y, phi)
    torch.testing.assert_close(mixed, want)
    with pytest.raises(ValueError, match="alpha"):
        dlf.student_loss(logits, y, phi, alpha=float("nan"))


def test_surrogates():
    y = torch.tensor([0, 1])
    right = torch.tensor([[10.0, 0, 0], [0, 10.0, 0]])
    wrong = torch.tensor([[0, 10.0, 0], [10.0, 0, 0]])
    assert dlf.smooth_error(right, y).item() == pytest.approx(0.0, abs=1e-6)
    assert dlf.smooth_error(wrong, y).item() == pytest.approx(1.0, abs=1e-6)
    assert dlf.expected_error(right, y).item() == pytest.approx(1 - F.softmax(right, 1)[0, 0].item())
    with pytest.raises(ValueError, match="surrogate"):
        replace(CFG, surrogate="accuracy").check()


def test_teacher_starts_at_c_identity_and_gates():
    state = torch.rand(3, 14)
    for gate, bank in (("state", 4), ("progress", 4), ("static", 1)):
        teacher = dlf.DLFTeacher(10, 14, gate=gate, bank=4, init_scale=4.0, seed=0)
        phi, b, a = teacher(state)
        assert phi.shape == (3, 10, 10) and b.shape == (3, 10) and a.shape == (3, bank)
        assert torch.allclose(a.sum(1), torch.ones(3))
        assert (phi - 4 * torch.eye(10)).abs().max() < (0.05 if gate == "state" else 1e-6)
    progress = dlf.DLFTeacher(3, 7, gate="progress", bank=3)
    s = torch.zeros(2, 7)
    s[:, 0] = torch.tensor([0.0, 1.0])
    assert progress.attention(s).tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    with pytest.raises(ValueError, match="bank"):
        dlf.DLFTeacher(10, 14, bank=0)


@pytest.mark.parametrize("mode", meta.META_MODES)
def test_teacher_meta_gradient_matches_finite_differences(mode):
    """The gradient of the smooth dev error w.r.t. every teacher weight, through K steps of SGD with momentum and
    weight decay on the loss mixture, against central finite differences in float64."""
    C, K, lr, mom, wd = 3, 4, 0.5, 0.9, 0.01
    g = torch.Generator().manual_seed(1)
    model = build("mlp", (5,), C, seed=0, hidden=(6,)).double()
    w0 = meta.params_of(model, requires_grad=False)
    batches = [(torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randint(0, C, (8,), generator=g))
               for _ in range(K)]
    dev_x, dev_y = torch.randn(30, 5, generator=g, dtype=torch.float64), torch.randint(0, C, (30,), generator=g)
    teacher = dlf.DLFTeacher(C, 4 + C, gate="state", bank=3, hidden=4, init_noise=0.3, seed=0).double()
    with torch.no_grad():  # leave the zero initialisation so that every weight matters
        for p in teacher.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    states = [torch.rand(1, 4 + C, generator=g, dtype=torch.float64) for _ in range(K)]
    theta = list(teacher.parameters())

    def loss_fn(logits, y, k):
        phi, b, _ = teacher(states[k])
        return dlf.student_loss(logits, y, phi[0], b[0], alpha=0.3).mean()

    def dev_fn(w):
        return dlf.smooth_error(functional_call(model, w, (dev_x,)), dev_y, k=5.0)

    grads, *_ = meta.sgd_meta_grad(model, w0, batches, loss_fn, theta, dev_fn, lr=lr, momentum=mom, mode=mode,
                                   weight_decay=wd)

    def objective():
        w, _, _ = meta.unroll_sgd(model, {n: p.clone().requires_grad_() for n, p in w0.items()}, batches, loss_fn,
                                  lr=lr, momentum=mom, create_graph=False, weight_decay=wd)
        return dev_fn(w).item()

    eps = 1e-6
    for _ in range(3):  # random directions through all teacher weights at once
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
    for mode, keep in (("unroll", False), ("snapshot", False), ("snapshot", True)):
        teacher, trace = dlf.train_teacher(splits, replace(CFG, mode=mode, keep_activations=keep), 0,
                                           progress_bar=False)
        out[(mode, keep)] = torch.cat([p.detach().flatten() for p in teacher.parameters()])
        assert trace.metrics["teacher_updates"] == CFG.teacher_updates
        assert list(trace.series("dev_surrogate")[0]) == [4, 8, 12, 16, 20]
        assert trace.stack("phi")[1].shape == (5, 3, 3)
    ref = out[("unroll", False)]
    for key, value in out.items():
        torch.testing.assert_close(value, ref, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(ref, torch.cat([p.flatten() for p in dlf.untrained_teacher(splits, CFG).parameters()]))


def test_the_teachers_students_restart_after_their_horizon_or_every_window():
    splits = _splits()
    cfg = replace(CFG, teacher_updates=9)  # 24 steps per student, K = 4: 6 windows per student
    assert dlf.train_teacher(splits, cfg, 0, progress_bar=False)[1].metrics["student_runs"] == 2
    assert dlf.train_teacher(splits, replace(cfg, restart=True, teacher_updates=3), 0,
                             progress_bar=False)[1].metrics["student_runs"] == 3


def test_teacher_training_resumes_bit_for_bit(tmp_path, monkeypatch):
    splits = _splits()
    want_teacher, want = dlf.train_teacher(splits, CFG, 0, progress_bar=False)
    calls = {"n": 0}
    real = dlf._window

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(dlf, "_window", dying)
    with pytest.raises(KeyboardInterrupt):
        dlf.train_teacher(splits, CFG, 0, checkpoint_dir=tmp_path, progress_bar=False)
    monkeypatch.setattr(dlf, "_window", real)
    teacher, got = dlf.train_teacher(splits, CFG, 0, checkpoint_dir=tmp_path, progress_bar=False)
    for a, b in zip(want_teacher.parameters(), teacher.parameters()):
        assert torch.equal(a, b)
    assert got.scalars == want.scalars and got.metrics == want.metrics
    with pytest.raises(ValueError, match="another run"):
        dlf.train_teacher(splits, replace(CFG, teacher_lr=0.5), 0, checkpoint_dir=tmp_path, progress_bar=False)


def test_deploy_is_one_population_and_its_members_are_the_solo_students():
    splits = _splits()
    teacher, _ = dlf.train_teacher(splits, CFG, 0, progress_bar=False)
    together = dlf.deploy(teacher, splits, CFG, [0, 1, 2], progress_bar=False)
    alone = dlf.deploy(teacher, splits, CFG, 2, record=False, progress_bar=False)
    torch.testing.assert_close(torch.tensor(together[2].series("loss")[1]), torch.tensor(alone.series("loss")[1]),
                               atol=1e-5, rtol=1e-4)
    steps, phi = together[0].stack("phi")
    assert phi.shape == (CFG.student.steps, 3, 3) and steps[0] == CFG.student.pretrain_steps + 1
    assert together[0].stack("confusion")[1].shape[1:] == (3, 3)
    assert "phi" not in together[1].arrays  # only member 0 records


def test_compare_shares_students_and_batches_across_methods():
    splits = _splits()
    teacher, _ = dlf.train_teacher(splits, CFG, 0, progress_bar=False)
    cfg = replace(CFG, ce_lr=CFG.student.lr)
    res = dlf.compare(teacher, splits, cfg, [0, 1], progress_bar=False)
    assert set(res) == {"ce", "l2t-dlf", "phi0"}
    # the shared CE pre-training: every method's first pretrain_steps losses are the same numbers
    P = CFG.student.pretrain_steps
    for name in ("l2t-dlf", "phi0"):
        assert res[name][1].series("loss")[1][:P].tolist() == res["ce"][1].series("loss")[1][:P].tolist()
    summary = dlf.summary(res, [0, 1], splits, cfg)
    assert summary["baseline"] == "ce" and summary["methods"]["l2t-dlf"]["paired"]["difference"]["n"] == 2
    assert summary["paper"] == "dlf" and summary["metric"] == "test_acc"


def test_teacher_training_students_are_not_deployment_students():
    splits = _splits()
    learner = dlf._new_learner(splits, replace(CFG, student=replace(CFG.student, pretrain_steps=0)), 0, 0, False)
    deployed = engine.Run(splits, CFG.student, [0], role=seeds.DEPLOY)
    w_teach = next(iter(learner.params.values()))
    w_deploy = next(deployed.students.member(0).parameters()).detach()
    assert not torch.equal(w_teach, w_deploy)
    assert not torch.equal(next(learner.run.streams[0]), next(deployed.streams[0]))


def test_no_global_random_state_is_touched():
    splits = _splits()
    state = torch.get_rng_state()
    teacher, _ = dlf.train_teacher(splits, CFG, 0, progress_bar=False)
    dlf.deploy(teacher, splits, CFG, [0], progress_bar=False)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("field,value", [("alpha", float("nan")), ("alpha", 1.0), ("teacher_lr", float("inf")),
                                         ("teacher_lr", -1.0), ("window", 0), ("window", 100), ("gate", "magic"),
                                         ("init_scale", 0.0), ("dev_read", 0), ("ce_lr", float("nan")),
                                         ("deployments", 0), ("k", float("-inf"))])
def test_bad_knobs_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        replace(CFG, **{field: value}).check()


def test_lr_sweep_reads_dev_of_tune_students_only(monkeypatch):
    splits = _splits()
    roles = []
    real = engine.Run.__init__

    def spy(self, *args, **kwargs):
        roles.append(kwargs.get("role"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(engine.Run, "__init__", spy)
    sweep = dlf.lr_sweep(splits, CFG, [0.05, 0.1], progress_bar=False)
    assert set(sweep) == {0.05, 0.1} and all(0 <= v <= 1 for v in sweep.values())
    assert roles and all(r == seeds.TUNE for r in roles)
    assert dlf.best_lr({0.1: 0.5, 0.2: 0.7, 0.3: None}) == 0.2
    with pytest.raises(ValueError, match="diverged"):
        dlf.best_lr({0.1: None})


def test_only_a_teacher_that_reads_dev_makes_the_student_measure_it(monkeypatch):
    splits = _splits()
    calls = {"n": 0}
    real = dlf.predict

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(dlf, "predict", counting)
    cfg = replace(CFG, refresh_every=8)
    dlf.deploy(dlf.untrained_teacher(splits, replace(cfg, gate="progress")), splits, cfg, [0], record=False,
               progress_bar=False)
    assert calls["n"] == 0
    dlf.deploy(dlf.untrained_teacher(splits, replace(cfg, gate="state")), splits, cfg, [0], record=False,
               progress_bar=False)
    assert calls["n"] == cfg.student.steps // 8


def test_phi_dynamics_floor_and_noise_alignment():
    phi0 = 4 * np.eye(3)
    still = np.repeat(phi0[None], 5, 0) + 1e-7
    d = plots.phi_dynamics(still, phi0)
    assert not d["moves"] and d["floor"] == pytest.approx(4 * plots.FLOAT_FLOOR)
    fig = plots.dlf_phi_scrubber(_trace_with_phi(still), list("abc"), phi0)
    assert any("no change" in a.text for a in fig.layout.annotations)
    assert fig.data[0].zmax == pytest.approx(d["floor"])
    moving = still.copy()
    moving[:, 1, 0] += np.linspace(0, 0.5, 5)
    d = plots.phi_dynamics(moving, phi0)
    assert d["moves"] and d["dynamic_range"] == pytest.approx(0.5, abs=1e-6)
    fig = plots.dlf_phi_scrubber(_trace_with_phi(moving), list("abc"), phi0)
    assert not fig.layout.annotations and fig.data[0].zmax == pytest.approx(0.5, abs=1e-6)
    assert len(fig.frames) == 5 and not np.array_equal(fig.frames[0].data[0].z, fig.frames[-1].data[0].z)
    T = data.noise_transition(3, 0.4, "pairflip").numpy()  # 0 -> 1, 1 -> 2, 2 -> 0
    change = np.zeros((3, 3))
    change[1, 0] = change[2, 1] = change[0, 2] = 0.3     # rewards the true class in the noisy label's row
    a = plots.noise_alignment(change, T)
    assert a["on_noise"] == pytest.approx(0.3) and a["elsewhere"] == pytest.approx(0.0) and a["noise_pairs"] == 3


def _trace_with_phi(phi):
    from labkit.trace import Trace

    trace = Trace()
    for t, p in enumerate(phi):
        trace.log_array(t + 1, phi=p)
    return trace
