"""labkit.reweight (L2RW): the example-weight meta-gradient against finite differences; weights under label noise."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.func import functional_call

from labkit import data, engine, meta, reweight
from labkit.population import population
from labkit.student import StudentConfig


def _per_example(logits, y):
    return engine.cross_entropy(logits, y)


@pytest.mark.parametrize("batched", [False, True])
def test_example_weight_gradient_matches_finite_differences(batched):
    """∂/∂ε_i of L_dev(w − lr ∇_w Σ ε_i ℓ_i(w)) at ε = 0, against central differences in float64 (relative error
    < 1e-6), for a plain model and for a stacked population of 2 (members' slices do not mix)."""
    g = torch.Generator().manual_seed(0)
    S, B, b = 2, 6, 10
    model = population("mlp", (5,), 3, [1, 2], batched=batched, hidden=(4,)).double()
    params = {n: p.detach() for n, p in model.named_parameters()}
    x = torch.randn(S, B, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (S, B), generator=g)
    dev_x, dev_y = torch.randn(S, b, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (S, b), generator=g)
    lr = 0.7
    got = meta.example_weight_grads(model, params, x, y, dev_x, dev_y, lr=lr, per_example=_per_example)

    def objective(eps):  # the look-ahead, written out with autograd
        p = {n: t.clone().requires_grad_() for n, t in params.items()}
        weighted = (eps * _per_example(functional_call(model, p, (x,)), y)).sum()
        grads = torch.autograd.grad(weighted, list(p.values()))
        ahead = {n: t - lr * gi for (n, t), gi in zip(p.items(), grads)}
        return _per_example(functional_call(model, ahead, (dev_x,)), dev_y).mean(-1).sum().item()

    h = 1e-6
    fd = torch.zeros(S, B, dtype=torch.float64)
    for s in range(S):
        for i in range(B):
            e = torch.zeros(S, B, dtype=torch.float64)
            e[s, i] = h
            fd[s, i] = (objective(e) - objective(-e)) / (2 * h)
    assert fd.abs().max() > 1e-4  # not vacuous
    assert ((got - fd).norm() / fd.norm()).item() < 1e-6


def _noisy(seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(1200) % 4
    x = torch.randn(1200, 1, 6, 6, generator=g) * 0.5
    for c in range(4):
        x[y == c, :, c, :] += 2.0
    splits = data.from_tensors(x[:1000], y[:1000], dev_size=100, test=(x[1000:], y[1000:]), seed=seed)
    return data.noisy_labels(splits, 0.4, kind="symmetric", seed=seed)


CFG = reweight.Config(student=StudentConfig(model="mlp", model_kwargs={"hidden": (16,)}, steps=150, batch_size=32,
                                            lr=0.1, eval_every=50), dev_batch=50, deployments=2)


def test_reweighting_puts_less_weight_on_corrupted_examples():
    splits = _noisy()
    teacher, _ = reweight.train_teacher(splits, CFG, 0)
    res = reweight.compare(teacher, splits, CFG, [0, 1], progress_bar=False)
    for trace in res["l2rw"]:
        _, bad = trace.series("weight_corrupted")
        _, good = trace.series("weight_clean")
        assert bad[50:].mean() < 0.5 * good[50:].mean()
        assert trace.metrics["test_acc"] > 0.8
    summary = reweight.summary(res, [0, 1], splits, CFG)
    assert set(summary["methods"]) == {"ce", "l2rw"}


def test_weights_are_normalised_per_member_and_zero_when_nothing_helps():
    splits = _noisy()
    run = engine.Run(splits, CFG.student, [0, 1], hooks=reweight.ReweightHooks(splits, 20))
    batch = run.hooks.select(run, 0)
    assert batch.weight.shape == (2, 32) and (batch.weight >= 0).all()
    sums = batch.weight.sum(1)
    assert all(abs(s - 1) < 1e-5 or s == 0 for s in sums.tolist())


def test_a_killed_reweighting_run_resumes_bit_for_bit(tmp_path):
    splits = _noisy()
    cfg = replace(CFG.student, steps=30, eval_every=10)
    want = engine.train(engine.Run(splits, cfg, [0], hooks=reweight.ReweightHooks(splits, 20)), progress_bar=False)

    class Kill(reweight.ReweightHooks):
        def after_step(self, run, step, loss):
            if step == 17:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.train(engine.Run(splits, cfg, [0], hooks=Kill(splits, 20)), checkpoint_dir=tmp_path,
                     checkpoint_every=5, progress_bar=False)
    got = engine.train(engine.Run(splits, cfg, [0], hooks=reweight.ReweightHooks(splits, 20)), checkpoint_dir=tmp_path,
                       checkpoint_every=5, progress_bar=False)
    assert got[0].scalars == want[0].scalars and got[0].metrics == want[0].metrics


def test_bad_dev_batch_is_refused():
    with pytest.raises(ValueError, match="dev_batch"):
        replace(CFG, dev_batch=0).check()
