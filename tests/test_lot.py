"""LoT: the KL term, the step structure, the teacher-only control, errors. Synthetic data, seconds on a CPU."""
import math

import pytest
import torch
import torch.nn.functional as F

from labkit import lot
from labkit.data import TextSplits, from_tensors


def _images(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].sum((1, 2)) > 0).long() + 2 * (x[:, 0, 4:].sum((1, 2)) > 0).long()   # 4 classes
    xt = torch.randn(128, 1, 8, 8, generator=g)
    yt = (xt[:, 0, :4].sum((1, 2)) > 0).long() + 2 * (xt[:, 0, 4:].sum((1, 2)) > 0).long()
    return from_tensors(x, y, dev_size=32, test=(xt, yt), seed=0, num_classes=4)


def _text(vocab=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    streams = [torch.randint(vocab, (n,), generator=g) for n in (3000, 400, 400)]
    return TextSplits(*streams, vocab=[f"w{i}" for i in range(vocab)], name="synthetic")


SMALL = dict(model="mlp", steps=12, batch_size=32, lr=0.05, eval_every=4, probe_size=64,
             model_kwargs=dict(hidden=(16,)))
SMALL_LM = dict(steps=6, batch_size=4, bptt=5, lr=1.0, emb=8, hidden=8, layers=1, dropout=0.3, eval_every=3,
                eval_tokens=100, probe_tokens=100)


def test_kl_matches_definition_and_gradient_float64():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.randn(5, 7, generator=g, dtype=torch.float64)
    T = 1.5
    ps, qs = F.softmax(p / T, -1), F.softmax(q / T, -1)
    manual = (qs * (qs.log() - ps.log())).sum(-1).mean() * T ** 2
    assert torch.allclose(lot.kl_div_logits(p, q, T), manual)
    assert lot.kl_div_logits(q, q, T).abs() < 1e-12
    # analytic gradient against central finite differences, in float64
    assert torch.autograd.gradcheck(lambda a: lot.kl_div_logits(a, q, T), (p,))
    # [L, B, V] logits are flattened into rows
    assert torch.allclose(lot.kl_div_logits(p.view(5, 1, 7), q.view(5, 1, 7), T), manual)


def test_teacher_gradient_is_ce_plus_alpha_kl_with_students_detached():
    splits = _images()
    teacher = torch.nn.Linear(64, 4).double()
    student = torch.nn.Linear(64, 4).double()
    x, y = splits.train.x[:16].flatten(1).double(), splits.train.y[:16]
    t, s = teacher(x), student(x)
    alpha, T = 0.7, 1.5
    (F.cross_entropy(t, y) + alpha * lot.kl_div_logits(t, s.detach(), T)).backward()
    assert all(p.grad is None for p in student.parameters())      # no gradient into the student
    g_ce = torch.autograd.grad(F.cross_entropy(teacher(x), y), teacher.weight)[0]
    g_kl = torch.autograd.grad(lot.kl_div_logits(teacher(x), s.detach(), T), teacher.weight)[0]
    assert torch.allclose(teacher.weight.grad, g_ce + alpha * g_kl)


@pytest.mark.parametrize("bad, match", [
    (dict(alpha=-0.1), "alpha"), (dict(alpha=float("nan")), "alpha"), (dict(student_steps=0), "student_steps"),
    (dict(temperature=0.0), "temperature"), (dict(temperature=-1.0), "temperature"),
    (dict(num_students=0), "num_students"), (dict(loss="mse"), "loss"), (dict(student_alpha=-1.0), "student_alpha"),
])
def test_bad_parameters_raise(bad, match):
    splits = _images()
    with pytest.raises(ValueError, match=match):
        lot.train_lot(splits, **{**SMALL, **bad})
    with pytest.raises(ValueError, match=match):
        lot.train_lot_lm(_text(), **{**SMALL_LM, **bad})


def test_trace_names_metrics_and_determinism():
    splits = _images()
    a = lot.train_lot(splits, num_students=2, student_steps=3, **SMALL)
    b = lot.train_lot(splits, num_students=2, student_steps=3, **SMALL)
    tr = a.trace
    for name in ("teacher_loss", "teacher_ce", "teacher_kl", "test_acc", "student_loss/0", "student_loss/1",
                 "kl_train/0", "kl_test/1", "kl_batch/1"):
        steps, values = tr.series(name)
        assert len(values) and all(math.isfinite(v) for v in values), name
    assert len(tr.series("teacher_loss")[0]) == 12 and list(tr.series("kl_test/0")[0]) == [0, 4, 8, 12]
    assert tr.metrics["compute_steps"] == 12 * (1 + 3 * 2) and 0 <= tr.metrics["test_acc"] <= 1
    assert tr.scalars == b.trace.scalars                          # a pure function of (parameters, seed)
    c = lot.train_lot(splits, num_students=2, student_steps=3, **{**SMALL, "seed": 1})
    assert c.trace.scalars["teacher_loss"] != tr.scalars["teacher_loss"]


def test_alpha_zero_control_is_exactly_teacher_only_and_alpha_changes_the_teacher():
    splits = _images()
    plain = lot.train_teacher_only(splits, **SMALL)
    watched = lot.train_teacher_only(splits, num_students=1, student_steps=2, **SMALL)
    lot_run = lot.train_lot(splits, alpha=1.0, student_steps=2, **SMALL)
    for p, q in zip(plain.teacher.parameters(), watched.teacher.parameters()):
        assert torch.equal(p, q)                                  # imitators never touch the teacher-only model
    assert plain.trace.series("teacher_loss")[1].tolist() == watched.trace.series("teacher_loss")[1].tolist()
    assert "kl_test/0" in watched.trace.scalars and "kl_test/0" not in plain.trace.scalars
    assert not all(torch.equal(p, q) for p, q in zip(plain.teacher.parameters(), lot_run.teacher.parameters()))
    # the LoT teacher's first step is the teacher-only first step plus alpha * KL (students start elsewhere)
    assert lot_run.trace.series("teacher_ce")[1][0] == pytest.approx(plain.trace.series("teacher_ce")[1][0])
    assert lot_run.trace.series("teacher_kl")[1][0] > 0


def test_student_learns_to_imitate():
    splits = _images()
    run = lot.train_lot(splits, loss="kl", student_steps=4, **{**SMALL, "steps": 40, "eval_every": 40})
    kl = run.trace.series("kl_train/0")[1]
    assert kl[-1] < kl[0]


def test_language_model_lot_and_teacher_only_control():
    text = _text()
    plain = lot.train_teacher_only_lm(text, **SMALL_LM)
    watched = lot.train_teacher_only_lm(text, num_students=1, student_steps=3, **SMALL_LM)
    run = lot.train_lot_lm(text, num_students=2, student_steps=3, **SMALL_LM)
    for p, q in zip(plain.teacher.parameters(), watched.teacher.parameters()):
        assert torch.equal(p, q)                                  # dropout streams are separate too
    tr = run.trace
    for name in ("teacher_loss", "test_ppl", "student_loss/1", "kl_train/1", "kl_test/0"):
        assert all(math.isfinite(v) for v in tr.series(name)[1]), name
    assert 1 < tr.metrics["test_ppl"] < 10 * 30
    assert tr.metrics["compute_steps"] == 6 * (1 + 3 * 2)
