from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from labkit import models

CASES = [("mlp", (1, 28, 28), 10), ("lenet", (1, 28, 28), 10), ("resnet8", (3, 32, 32), 10),
         ("resnet20", (3, 32, 32), 100), ("preresnet20", (3, 32, 32), 10), ("preresnet56", (3, 32, 32), 100)]


@pytest.mark.parametrize("name,in_shape,num_classes", CASES)
def test_forward_and_functional_call(name, in_shape, num_classes):
    model = models.build(name, in_shape, num_classes, seed=0)
    x = torch.randn(4, *in_shape)
    out = model(x)
    assert out.shape == (4, num_classes)
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    out_f = functional_call(model, params, (x,))
    torch.testing.assert_close(out_f, model(x))
    # gradients flow to every parameter through functional_call
    grads = torch.autograd.grad(out_f.square().sum(), list(params.values()), allow_unused=True)
    assert all(g is not None for g in grads)


def test_published_sizes():
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(models.build("mlp", (1, 28, 28), 10)) == 784 * 500 + 500 + 500 * 10 + 10
    assert count(models.build("lenet", (1, 28, 28), 10)) == 431_080  # the L2T-DLF demo's LeNet, ~431k
    # He et al. 2016, Table 6: ResNet-20 0.27M, ResNet-32 0.46M, ResNet-56 0.85M parameters
    assert round(count(models.build("resnet20", (3, 32, 32), 10)) / 1e6, 2) == 0.27
    assert round(count(models.build("resnet32", (3, 32, 32), 10)) / 1e6, 2) == 0.46
    assert round(count(models.build("resnet56", (3, 32, 32), 10)) / 1e6, 2) == 0.85


def test_seeded_build_is_deterministic_and_leaves_global_rng():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = models.build("mlp", (1, 28, 28), 10, seed=3), models.build("mlp", (1, 28, 28), 10, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert torch.equal(state, torch.get_rng_state())
    c, d = models.build("mlp", (1, 28, 28), 10, seed=4), models.build("mlp", (1, 28, 28), 10)  # default seed 0
    assert not torch.equal(c.out.weight, d.out.weight) and torch.equal(state, torch.get_rng_state())


def test_lstm_lm_shapes():
    model = models.build("lstm_lm", num_classes=50, emb=16, hidden=16, layers=2)
    logits, state = model(torch.randint(0, 50, (7, 3)))
    assert logits.shape == (7, 3, 50) and state[0].shape == (2, 3, 16)


def test_bad_input():
    with pytest.raises(ValueError, match=r"name='vgg'.*mlp, lenet, resnet8"):
        models.build("vgg", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="num_classes=1"):
        models.build("mlp", (1, 28, 28), 1)
    with pytest.raises(ValueError, match=r"in_shape=\(784,\).*lenet"):
        models.build("lenet", (784,), 10)
