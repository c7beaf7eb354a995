"""labkit.meta: exact meta-gradients through K steps of SGD with momentum, checked against finite differences."""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from labkit import meta
from labkit.models import build


def _problem(momentum: float, K: int = 4, seed: int = 0):
    """A tiny float64 MLP student, K batches, and a loss that depends on θ = (A [C, C], c [C])."""
    g = torch.Generator().manual_seed(seed)
    model = build("mlp", (6,), 3, seed=seed, hidden=(5,)).double()
    params = meta.params_of(model, requires_grad=False)
    batches = [(torch.randn(8, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g))
               for _ in range(K)]
    A = (torch.eye(3, dtype=torch.float64) + 0.3 * torch.randn(3, 3, generator=g, dtype=torch.float64))
    c = 0.1 * torch.randn(3, generator=g, dtype=torch.float64)
    dev_x, dev_y = torch.randn(20, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (20,), generator=g)
    velocity = {n: 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64) for n, p in params.items()}

    def make(theta):
        A, c = theta

        def loss_fn(logits, y, k):
            log_p = F.log_softmax(logits, 1)
            # step-dependent, as a dynamic loss is
            return -torch.sigmoid((1 + 0.1 * k) * (A[y] * log_p).sum(1) + c[y]).mean()

        return loss_fn

    def dev_fn(w):
        return F.cross_entropy(functional_call(model, w, (dev_x,)), dev_y)

    return model, params, velocity, batches, [A, c], make, dev_fn


def _objective(model, params, velocity, batches, make, dev_fn, theta, lr, momentum):
    with torch.enable_grad():
        w, _, _ = meta.unroll_sgd(model, {n: p.clone().requires_grad_() for n, p in params.items()}, batches,
                                  make(theta), lr=lr, momentum=momentum, velocity=velocity, create_graph=False)
    return dev_fn(w).item()


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("mode,keep", [("unroll", False), ("snapshot", False), ("snapshot", True)])
def test_meta_grad_matches_finite_differences(mode, keep, momentum):
    model, params, velocity, batches, theta, make, dev_fn = _problem(momentum)
    lr = 0.5
    theta = [t.clone().requires_grad_() for t in theta]
    grads, w_k, v_k, dev, _ = meta.sgd_meta_grad(model, params, batches, make(theta), theta, dev_fn, lr=lr,
                                                 momentum=momentum, velocity=velocity, mode=mode,
                                                 keep_activations=keep)
    base = [t.detach().clone() for t in theta]
    eps = 1e-6
    fd = []
    for i, t in enumerate(base):
        g = torch.zeros_like(t)
        for j in range(t.numel()):
            plus = [b.clone() for b in base]
            minus = [b.clone() for b in base]
            plus[i].view(-1)[j] += eps
            minus[i].view(-1)[j] -= eps
            g.view(-1)[j] = (_objective(model, params, velocity, batches, make, dev_fn, plus, lr, momentum)
                             - _objective(model, params, velocity, batches, make, dev_fn, minus, lr, momentum)) / (2 * eps)
        fd.append(g)
    got, want = torch.cat([g.flatten() for g in grads]), torch.cat([g.flatten() for g in fd])
    rel = (got - want).norm() / want.norm()
    assert want.norm() > 1e-4  # the check is not vacuous
    assert rel < 1e-6, f"{mode}, momentum {momentum}: relative error {rel:.2e}"
    assert dev == pytest.approx(_objective(model, params, velocity, batches, make, dev_fn, base, lr, momentum), rel=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_modes_agree(momentum):
    model, params, velocity, batches, theta, make, dev_fn = _problem(momentum, K=6, seed=1)
    theta = [t.clone().requires_grad_() for t in theta]
    out = {mode: meta.sgd_meta_grad(model, params, batches, make(theta), theta, dev_fn, lr=0.3,
                                    momentum=momentum, velocity=velocity, mode=mode) for mode in meta.META_MODES}
    (ga, wa, va, da, la), (gb, wb, vb, db, lb) = out["unroll"], out["snapshot"]
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)
    for n in wa:
        torch.testing.assert_close(wa[n], wb[n], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(va[n], vb[n], rtol=1e-12, atol=1e-12)
    assert da == pytest.approx(db, rel=1e-12) and la == pytest.approx(lb, rel=1e-12)


def test_unroll_sgd_matches_torch_sgd():
    """unroll_sgd's update is torch.optim.SGD's (dampening 0, no Nesterov)."""
    model, params, velocity, batches, theta, make, dev_fn = _problem(0.9)
    loss_fn = make([t.detach() for t in theta])
    w, _, _ = meta.unroll_sgd(model, {n: p.clone().requires_grad_() for n, p in params.items()}, batches, loss_fn,
                              lr=0.2, momentum=0.9, create_graph=False)
    ref = build("mlp", (6,), 3, seed=0, hidden=(5,)).double()
    opt = torch.optim.SGD(ref.parameters(), lr=0.2, momentum=0.9)
    for k, (x, y) in enumerate(batches):
        opt.zero_grad()
        loss_fn(ref(x), y, k).backward()
        opt.step()
    for n, p in ref.named_parameters():
        torch.testing.assert_close(w[n].detach(), p.detach(), rtol=1e-12, atol=1e-12)


def test_bad_mode_and_lr_raise():
    model, params, velocity, batches, theta, make, dev_fn = _problem(0.0, K=1)
    with pytest.raises(ValueError, match="mode"):
        meta.sgd_meta_grad(model, params, batches, make(theta), theta, dev_fn, lr=0.1, mode="forward")
    with pytest.raises(ValueError, match="lr"):
        meta.sgd_meta_grad(model, params, batches, make(theta), theta, dev_fn, lr=0.0)
    with pytest.raises(ValueError, match="momentum"):
        meta.sgd_meta_grad(model, params, batches, make(theta), theta, dev_fn, lr=0.1, momentum=1.0)


def test_keep_activations_gives_the_same_numbers():
    model, params, velocity, batches, theta, make, dev_fn = _problem(0.9, K=5, seed=2)
    theta = [t.clone().requires_grad_() for t in theta]
    a, b = (meta.sgd_meta_grad(model, params, batches, make(theta), theta, dev_fn, lr=0.3, momentum=0.9,
                               velocity=velocity, mode="snapshot", keep_activations=keep) for keep in (False, True))
    for ga, gb in zip(a[0], b[0]):
        torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-14)
    for n in a[1]:
        torch.testing.assert_close(a[1][n], b[1][n], rtol=0, atol=0)
    assert a[3] == b[3]


@pytest.mark.parametrize("mode", meta.META_MODES)
def test_inputs_are_left_untouched(mode):
    """The caller's weights and velocity are not written (snapshot mode updates its own copy of v in place)."""
    model, params, velocity, batches, theta, make, dev_fn = _problem(0.9, K=3, seed=3)
    theta = [t.clone().requires_grad_() for t in theta]
    before = ({n: p.clone() for n, p in params.items()}, {n: v.clone() for n, v in velocity.items()})
    _, w_k, v_k, _, _ = meta.sgd_meta_grad(model, params, batches, make(theta), theta, dev_fn, lr=0.3,
                                           momentum=0.9, velocity=velocity, mode=mode)
    for n in params:
        assert torch.equal(params[n], before[0][n]) and torch.equal(velocity[n], before[1][n])
        assert not torch.equal(w_k[n], params[n]) and not torch.equal(v_k[n], velocity[n])
