"""LoT on the engine: the KL term and the losses (float64, finite differences), α = 0 is exactly teacher-only,
imitators learn, the seed contract, resumable training, dev-only sweeps, divergence, the LM path. Synthetic
data, seconds on a CPU."""
import inspect
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from labkit import engine, lot, papers, plots, seeds, stats
from labkit.data import TextSplits, from_tensors
from labkit.student import StudentConfig
from torch.optim.optimizer import register_optimizer_step_pre_hook


def _images(n=256, seed=0):
    """4 classes from the signs of two half-image sums: learnable by an MLP."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + 128, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].sum((1, 2)) > 0).long() + 2 * (x[:, 0, 4:].sum((1, 2)) > 0).long()
    return from_tensors(x[:n], y[:n], dev_size=32, test=(x[n:], y[n:]), seed=0, num_classes=4)


def _text(vocab=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    streams = [torch.randint(vocab, (n,), generator=g) for n in (3000, 400, 400)]
    return TextSplits(*streams, vocab=[f"w{i}" for i in range(vocab)], name="ptb")


CFG = lot.Config(StudentConfig(model="mlp", model_kwargs={"hidden": (16,)}, steps=12, batch_size=32, lr=0.05,
                               eval_every=4), deployments=2, probe_size=64, student_steps=2)
LM = lot.Config(StudentConfig(model="lstm_lm", model_kwargs=dict(emb=8, hidden=8, layers=1, dropout=0.3), steps=6,
                              batch_size=4, bptt=5, lr=1.0, momentum=0.0, clip=0.25, eval_every=3),
                dataset="ptb", probe_size=100, deployments=2, student_steps=3, equal_compute=False)


def _weights(model):
    return [p.detach().clone() for p in model.parameters()]


def test_kl_matches_definition_and_its_gradient_float64():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(2, 5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.randn(2, 5, 7, generator=g, dtype=torch.float64)
    T = 1.5
    ps, qs = F.softmax(p / T, -1), F.softmax(q / T, -1)
    manual = (qs * (qs.log() - ps.log())).sum(-1).mean(-1) * T ** 2
    torch.testing.assert_close(lot.kl_per_member(p, q, T), manual)
    official = F.kl_div(F.log_softmax(p[0] / T, -1), F.log_softmax(q[0] / T, -1), reduction="batchmean",
                        log_target=True) * T ** 2                  # the official kl_div_logits, member 0
    torch.testing.assert_close(lot.kl_per_member(p, q, T)[0], official)
    assert lot.kl_per_member(q, q, T).abs().max() < 1e-12
    assert torch.autograd.gradcheck(lambda a: lot.kl_per_member(a, q, T), (p,))  # central differences


def test_teacher_loss_is_ce_plus_alpha_kl_with_imitators_detached_float64():
    g = torch.Generator().manual_seed(1)
    t = torch.randn(2, 6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.randn(2, 6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(4, (2, 6), generator=g)
    loss, ce, kl = lot.teacher_loss(t, [s], y, 0.7, 1.5)
    loss.sum().backward()
    assert s.grad is None                                           # no gradient into the imitator
    want = F.cross_entropy(t.detach().flatten(0, 1), y.flatten(), reduction="none").view(2, 6).mean(1)
    torch.testing.assert_close(ce, want)
    torch.testing.assert_close(loss.detach(), want + 0.7 * lot.kl_per_member(t.detach(), s.detach(), 1.5))
    f = lambda a: lot.teacher_loss(a, [s.detach()], y, 0.7, 1.5)[0].sum()  # noqa: E731
    assert torch.autograd.gradcheck(f, (t.detach().requires_grad_(),))
    per, _, none = lot.teacher_loss(t, [s], y, 0.0, 1.5)             # α = 0: the plain per-example CE
    assert none is None and per.shape == (2, 6)
    kl = lot.kl_per_member(s, t.detach(), 1.5)
    torch.testing.assert_close(lot.imitator_loss(s, t, y, "kl", 0.5, 1.5), kl)
    ce = F.cross_entropy(s.flatten(0, 1), y.flatten(), reduction="none").view(2, 6).mean(1)
    torch.testing.assert_close(lot.imitator_loss(s, t, y, "kl_ce", 0.5, 1.5), ce + 0.5 * kl)
    g = lambda a: lot.imitator_loss(a, t.detach(), y, "kl_ce", 0.5, 1.5).sum()  # noqa: E731
    assert torch.autograd.gradcheck(g, (s.detach().requires_grad_(),))


@pytest.mark.parametrize("knob,value", [
    ("alpha", -0.1), ("alpha", float("nan")), ("alpha", float("inf")), ("student_alpha", -1.0),
    ("student_alpha", float("nan")), ("student_steps", 0), ("student_steps", 1.5), ("temperature", 0.0),
    ("temperature", float("inf")), ("num_students", 0), ("loss", "mse"),
    ("deployments", 0), ("probe_size", 0), ("sweep_alphas", (float("nan"),)), ("student_model", "vgg"),
    ("sweep_ns", (0,)), ("test_size", -1),
    ("student_schedule", "linear")])
def test_bad_knobs_are_refused_by_name(knob, value):
    with pytest.raises(ValueError, match=knob):
        replace(CFG, **{knob: value})
    with pytest.raises(ValueError, match="lr"):
        replace(CFG, student=replace(CFG.student, lr=float("nan")))
    with pytest.raises(ValueError, match="pretrain_steps"):
        replace(CFG, student=replace(CFG.student, pretrain_steps=2))


def test_presets_are_valid_and_knobs_override():
    for family in lot.SETTINGS.values():
        assert set(family) == {"smoke", "cpu", "paper"}
        for cfg in family.values():
            assert cfg.check() is cfg and lot.imitator_config(cfg).steps == cfg.student.steps * cfg.student_steps
    assert lot.PRESETS["cpu"].deployments >= 8
    cfg = lot.preset("cpu", alpha=1.0, student_steps=None)
    assert cfg.alpha == 1.0 and cfg.student_steps == lot.PRESETS["cpu"].student_steps
    assert lot.LM_PRESETS["paper"].student_schedule == "plateau" and lot.LM_PRESETS["paper"].student.schedule == "cosine"
    with pytest.raises(ValueError, match="setting"):
        lot.preset("cpu", "resnet")


def test_alpha_zero_control_is_exactly_the_plain_model_and_alpha_changes_it():
    splits = _images()
    results = lot.compare(splits, CFG, [0, 1], progress_bar=False)
    plain = engine.Run(splits, CFG.student, [0, 1], role=seeds.DEPLOY)  # the lab's deployment students
    want = engine.train(plain, progress_bar=False)
    for w, got in zip(want, results[lot.CONTROL]):
        assert w.scalars["loss"] == got.scalars["loss"] and w.metrics["test_acc"] == got.metrics["test_acc"]
    lot_model, _ = lot.train_teacher(splits, CFG, 5)
    control, trace = lot.train_teacher(splits, lot.control(CFG), 5)
    alone = engine.Run(splits, CFG.student, [5], role=(seeds.TEACH, "lot"))
    engine.train(alone, progress_bar=False)
    assert all(torch.equal(a, b) for a, b in zip(control.parameters(), alone.students.member(0).parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(control.parameters(), lot_model.parameters()))
    assert "kl_test/0" in trace.scalars and "teacher_kl" not in trace.scalars   # measured, never fed back
    lot_tr = results[lot.LOT][0]
    assert lot_tr.series("teacher_ce")[1][0] == results[lot.CONTROL][0].series("teacher_ce")[1][0]  # same start
    assert lot_tr.series("teacher_kl")[1][0] > 0 and lot_tr.config["alpha"] == CFG.alpha
    long = results[lot.LONG][0]
    assert long.metrics["steps_done"] == 12 * (1 + 2) and long.scalars["loss"]["value"][:12] == want[0].scalars["loss"]["value"]


def test_trace_names_metrics_and_determinism():
    splits = _images()
    cfg = replace(CFG, num_students=2, student_steps=3, equal_compute=False)
    a = lot.compare(splits, cfg, [0, 1], progress_bar=False)[lot.LOT]
    b = lot.compare(splits, cfg, [0, 1], progress_bar=False)[lot.LOT]
    tr = a[0]
    for name in ("loss", "teacher_ce", "teacher_kl", "dev_acc", "kl_train/0", "kl_test/1"):
        assert len(tr.series(name)[1]) and all(math.isfinite(v) for v in tr.series(name)[1]), name
    assert list(tr.series("kl_test/0")[0]) == [4, 8, 12] and len(tr.series("teacher_ce")[0]) == 12
    assert tr.metrics["compute_steps"] == 12 * (1 + 3 * 2) and 0 <= tr.metrics["test_acc"] <= 1
    assert tr.metrics["kl_test"] == pytest.approx((tr.metrics["kl_test/0"] + tr.metrics["kl_test/1"]) / 2)
    assert all(x.scalars == y.scalars and x.metrics == y.metrics for x, y in zip(a, b))  # (parameters, seed)
    assert a[0].scalars["loss"] != a[1].scalars["loss"]


def test_imitators_learn_to_imitate_a_frozen_model():
    splits = _images()
    cfg = replace(CFG, loss="kl", student=replace(CFG.student, steps=40, eval_every=10))
    model, _ = lot.train_teacher(splits, cfg, 0)
    before = _weights(model)
    traces = lot.deploy(model, splits, cfg, [0, 1], progress_bar=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # frozen
    for tr in traces:
        kl = tr.series("kl_train")[1]
        assert kl[-1] < kl[0] and tr.metrics["kl_train"] == kl[-1]
    one = lot.deploy(model, splits, cfg, 0, progress_bar=False)
    # an int seed -> one Trace, the same student (alone it is not stacked: equal up to float rounding)
    assert isinstance(one, lot.Trace) and one.config["seed"] == 0
    torch.testing.assert_close(one.series("kl_train")[1], traces[0].series("kl_train")[1], rtol=1e-4, atol=1e-6)


class _Recording(engine.Run):
    made: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.init = _weights(self.students)
        self.first_batch = self.streams[0].__class__(len(self.splits.train), self.config.batch_size,
                                                     self.stream_seed(0, "batches")).__next__()
        _Recording.made.append(self)


def test_teacher_training_and_deployment_students_share_no_stream(monkeypatch):
    splits = _images()
    _Recording.made = []
    monkeypatch.setattr(engine, "Run", _Recording)
    model, _ = lot.train_teacher(splits, CFG, 0)
    lot.deploy(model, splits, CFG, [0], progress_bar=False)
    lot.compare(splits, replace(CFG, equal_compute=False), [0], progress_bar=False)
    roles = [r.role for r in _Recording.made]
    assert roles[0][0] == seeds.TEACH and roles[1][0] == seeds.TEACH and roles[2][0] == seeds.DEPLOY
    teach_student, deploy_student, deploy_model = _Recording.made[1], _Recording.made[2], _Recording.made[3]
    for a, b in ((teach_student, deploy_student), (_Recording.made[0], deploy_model)):
        assert not all(torch.equal(x, y) for x, y in zip(a.init, b.init))
        assert not torch.equal(a.first_batch, b.first_batch)


def test_two_notebook_seeds_give_disjoint_deployment_seeds():
    cfg = lot.PRESETS["cpu"]
    a, b = seeds.deployment_seeds(0, cfg.deployments), seeds.deployment_seeds(1, cfg.deployments)
    assert len(a) == cfg.deployments and set(a).isdisjoint(b)
    traces = lot.compare(_images(), replace(CFG, equal_compute=False), b[:2], progress_bar=False)[lot.LOT]
    assert [t.config["seed"] for t in traces] == b[:2]


def test_no_global_random_state_is_touched():
    state = torch.get_rng_state()
    lot.compare(_text(), LM, [0], progress_bar=False)
    model, _ = lot.train_teacher(_images(), CFG, 0)
    lot.deploy(model, _images(), CFG, [0], progress_bar=False)
    assert torch.equal(state, torch.get_rng_state())


def test_students_step_only_inside_the_engine():
    callers = []

    def hook(optimizer, args, kwargs):
        frame = next(f for f in inspect.stack()[1:] if "torch" not in Path(f.filename).parts)
        callers.append(Path(frame.filename).name)

    handle = register_optimizer_step_pre_hook(hook)
    try:
        splits = _images()
        lot.compare(splits, CFG, [0], progress_bar=False)
        model, _ = lot.train_teacher(splits, CFG, 0)
        lot.deploy(model, splits, CFG, [0], progress_bar=False)
        lot.sweep(splits, CFG, [0.5], [2], [0], progress_bar=False)
    finally:
        handle.remove()
    assert callers and set(callers) == {"engine.py"}


class _Killed(Exception):
    pass


@pytest.mark.parametrize("kind", ["vision", "text"])
def test_a_killed_train_teacher_resumes_bit_for_bit(tmp_path, monkeypatch, kind):
    splits, cfg = (_images(), replace(CFG, num_students=2)) if kind == "vision" else (_text(), LM)
    want_model, want = lot.train_teacher(splits, cfg, 0)
    real, calls = lot.teacher_loss, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == (10 if kind == "vision" else 5):
            raise _Killed()
        return real(*args, **kwargs)

    monkeypatch.setattr(lot, "teacher_loss", dying)
    with pytest.raises(_Killed):
        lot.train_teacher(splits, cfg, 0, checkpoint_dir=tmp_path)
    assert (tmp_path / engine.CHECKPOINT_FILE).exists()
    monkeypatch.setattr(lot, "teacher_loss", real)
    got_model, got = lot.train_teacher(splits, cfg, 0, checkpoint_dir=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(want_model.parameters(), got_model.parameters()))
    assert want.scalars == got.scalars and want.metrics == got.metrics
    assert not (tmp_path / engine.CHECKPOINT_FILE).exists()


def test_sweep_reads_dev_only_and_chooses_on_dev():
    splits = _images()
    garbage = replace(splits, test=replace(splits.test, x=torch.randn_like(splits.test.x), y=splits.test.y.flip(0)))
    a = lot.sweep(splits, CFG, [0.5, 2.0], [1, 2], [0, 1], progress_bar=False)
    b = lot.sweep(garbage, CFG, [0.5, 2.0], [1, 2], [0, 1], progress_bar=False)
    assert a == b and a["metric"] == "dev_acc"
    means = [[d["difference"]["mean"] for d in row] for row in a["difference"]]
    r, c = max(((r, c) for r in range(2) for c in range(2)), key=lambda rc: means[rc[0]][rc[1]])
    assert a["chosen"] == dict(alpha=[0.5, 2.0][c], student_steps=[1, 2][r])
    assert means[r][c] == pytest.approx(sum(x - y for x, y in zip(a["values"][r][c], a["baseline"])) / 2)


def test_diverged_runs_are_none_in_the_summary_and_not_drawn():
    splits = _images()
    cfg = replace(CFG, equal_compute=False, student=replace(CFG.student, lr=1e5))
    results = lot.compare(splits, cfg, [0, 1], progress_bar=False)
    assert all(t.diverged and t.metrics["test_acc"] is None and t.metrics["kl_test"] is None
               for t in results[lot.LOT])
    exp = lot.summary(results, [0, 1], splits)
    assert exp["methods"][lot.LOT]["values"] == [None, None] and exp["methods"][lot.LOT]["estimate"]["excluded"] == 2
    assert "no value" in stats.table(exp)
    fig = plots.lot_kl_curves(results)
    assert not [t for t in fig.data if t.name and t.name.startswith(lot.LOT)]
    assert any("diverged" in a.text for a in fig.layout.annotations)


def test_summary_imitability_and_figures():
    splits = _images()
    results = lot.compare(splits, CFG, [0, 1], progress_bar=False)
    exp = lot.summary(results, [0, 1], splits)
    assert exp["metric"] == "test_acc" and exp["baseline"] == lot.CONTROL and exp["model"] == "mlp/mlp"
    assert exp["methods"][lot.LOT]["values"] == [t.metrics["test_acc"] for t in results[lot.LOT]]
    imit = lot.imitability(results, [0, 1])
    assert set(imit["kl_test"]["methods"]) == {lot.LOT, lot.CONTROL} and imit["kl_test"]["higher_is_better"] is False
    assert papers.beside(exp) == []                                 # MNIST is not in the paper
    cifar = papers.beside(dict(exp, dataset="cifar100", model="preresnet20/preresnet20"))  # names match labkit.papers
    assert {r["method"] for r in cifar} == {lot.LOT, lot.CONTROL}
    assert len(plots.lot_kl_curves(results).data) > 0 and len(plots.lot_metric_curves(results, "dev_acc").data) > 0
    sw = lot.sweep(splits, CFG, [0.5, 2.0], [1, 2], [0, 1], progress_bar=False)
    assert plots.lot_sweep_heatmap(sw).data[0].z.shape == (2, 2)


def test_language_model_path_best_dev_checkpoint_and_control():
    text = _text()
    results = lot.compare(text, LM, [0, 1], progress_bar=False)
    plain = engine.train(engine.Run(text, LM.student, [0, 1]), progress_bar=False)
    for w, got in zip(plain, results[lot.CONTROL]):                  # dropout streams are separate too
        assert w.scalars["loss"] == got.scalars["loss"] and w.metrics["test_ppl"] == got.metrics["test_ppl"]
    tr = results[lot.LOT][0]
    for name in ("teacher_kl", "dev_ppl", "kl_train/0", "kl_test/0"):
        assert all(math.isfinite(v) for v in tr.series(name)[1]), name
    dev = dict(zip(*tr.series("dev_ppl")))
    assert tr.metrics["best_dev_ppl"] == min(dev.values()) and dev[tr.metrics["best_dev_step"]] == min(dev.values())
    assert 1 < tr.metrics["test_ppl_best_dev"] < 30 * 10 and tr.metrics["compute_steps"] == 6 * (1 + 3)
    exp = lot.summary(results, [0, 1], text)
    assert exp["metric"] == "test_ppl" and exp["higher_is_better"] is False
    assert exp["methods"][lot.LOT]["values"] == [t.metrics["test_ppl_best_dev"] for t in results[lot.LOT]]
    model, _ = lot.train_teacher(text, LM, 0)
    assert all(math.isfinite(t.metrics["kl_test"]) for t in lot.deploy(model, text, LM, [0, 1], progress_bar=False))
