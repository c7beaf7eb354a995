"""Differentiating through unrolled SGD with `torch.func.functional_call`.

A student's weights are held as a dict name -> tensor, so that K steps of SGD become an ordinary
differentiable function of whatever the loss depends on (a loss matrix Φ, a loss network's weights).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn
from torch.func import functional_call

from .checks import check_choice, check_float
from .student import PASSES

Params = dict[str, torch.Tensor]


def params_of(model: nn.Module, *, requires_grad: bool = True) -> Params:
    """A detached copy of the model's parameters as a dict (the starting point of an unroll)."""
    return {name: p.detach().clone().requires_grad_(requires_grad) for name, p in model.named_parameters()}


def unroll_sgd(model: nn.Module, params: Params, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
               loss_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor], *, lr: float,
               momentum: float = 0.0, velocity: Params | None = None, create_graph: bool = True,
               weight_decay: float = 0.0) -> tuple[Params, Params, list[float]]:
    """K steps of SGD with (heavy-ball) momentum, v <- μ v + g + λw, w <- w - lr v, kept differentiable
    (torch.optim.SGD's rule with weight_decay λ, dampening 0, no Nesterov).

    model: gives the architecture (its own parameters are not used; its buffers are).
    params: starting weights {name: tensor}; batches: K pairs (x [B, ...], y [B]).
    loss_fn(logits [B, C], y [B], step k) -> scalar: the training loss at step k (closes over Φ, a loss network, ...).
    create_graph: keep the graph through every step (needed for the meta-gradient); False for a plain run.
    Returns (params_K, velocity_K, losses) where losses are the K training-loss values (floats).
    """
    names = list(params)
    velocity = dict(velocity) if velocity is not None else {n: torch.zeros_like(p) for n, p in params.items()}
    losses = []
    for k, (x, y) in enumerate(batches):
        loss = loss_fn(functional_call(model, params, (x,)), y, k)
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph)
        PASSES.add(forward=y.numel(), backward=y.numel())
        velocity = {n: momentum * velocity[n] + g + weight_decay * params[n] for n, g in zip(names, grads)}
        params = {n: params[n] - lr * velocity[n] for n in names}
        if not create_graph:
            params = {n: p.detach().requires_grad_() for n, p in params.items()}
            velocity = {n: v.detach() for n, v in velocity.items()}
        losses.append(loss.detach())  # no .item() per step: that would wait for the device at every step
    return params, velocity, torch.stack(losses).tolist() if losses else []


# ---------------------------------------------------------------- exact meta-gradients through K SGD steps

META_MODES = ("unroll", "snapshot")


def _flat_grads(outputs: torch.Tensor, inputs: list[torch.Tensor], *, create_graph: bool = False,
                grad_outputs=None) -> list[torch.Tensor]:
    """autograd.grad with zeros (not None) for inputs that do not reach `outputs`."""
    grads = torch.autograd.grad(outputs, inputs, grad_outputs=grad_outputs, create_graph=create_graph,
                                allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]


def sgd_meta_grad(model: nn.Module, params: Params, batches: list[tuple[torch.Tensor, torch.Tensor]],
                  loss_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
                  meta_params: list[torch.Tensor], dev_fn: Callable[[Params], torch.Tensor], *, lr: float,
                  momentum: float = 0.0, velocity: Params | None = None, mode: str = "snapshot",
                  keep_activations: bool = False, weight_decay: float = 0.0,
                  ) -> tuple[list[torch.Tensor], Params, Params, float, list[float]]:
    """The exact gradient of a dev objective after K steps of SGD with momentum, w.r.t. `meta_params`.

    The K steps are v_{t+1} = μ v_t + ∇_w L_t(w_t; θ),  w_{t+1} = w_t - lr v_{t+1}  (torch.optim.SGD's rule,
    dampening 0, no Nesterov), where L_t = loss_fn(logits, y, t) depends on θ = meta_params (e.g. Φ_t computed
    from a teacher's weights). The objective is D = dev_fn(w_K) (a scalar, e.g. a smooth dev error).

    mode "unroll": autograd through all K steps (`unroll_sgd` with create_graph): memory grows with K times the
        activations of a step plus the double-backward graph.
    mode "snapshot": run the K steps without a graph, keep w_t of each step (memory K·P numbers, no activations;
        the reverse sweep does not need v_t), then sweep backwards with one Hessian-vector product per step (Maclaurin et al. 2015 style):
            ḡ = v̄_{t+1} - lr w̄_{t+1};  w̄_t = w̄_{t+1} + ∂(∇_w L_t · ḡ)/∂w_t + λ ḡ;  θ̄ += ∂(∇_w L_t · ḡ)/∂θ;  v̄_t = μ ḡ.
    keep_activations (snapshot mode only): take each step's gradient with its graph in the forward sweep and keep
        it, so that the reverse sweep neither recomputes the forward pass nor the gradient (one vector-Jacobian
        product per step): the same numbers, about a forward and a backward pass per step faster, at the memory of
        K steps' activations and gradient graphs (small for an MLP, large for conv nets).
    Both modes give the same numbers up to floating-point rounding (tested against finite differences).

    model: the architecture (its parameters are not used, its buffers are); params: w_0 {name: [shape]};
    batches: K pairs (x [B, ...], y [B]); velocity: v_0 (zeros if None).
    Returns (grads [same shapes as meta_params], w_K detached, v_K detached, D as a float, the K training losses).
    """
    check_choice("mode", mode, META_MODES)
    check_float("lr", lr, 0, low_open=True)
    check_float("momentum", momentum, 0, 1, high_open=True)
    check_float("weight_decay", weight_decay, 0)
    names = list(params)
    if mode == "unroll":
        start = {n: p.detach().requires_grad_() for n, p in params.items()}
        w_k, v_k, losses = unroll_sgd(model, start, batches, loss_fn, lr=lr, momentum=momentum,
                                      velocity=velocity, create_graph=True, weight_decay=weight_decay)
        dev = dev_fn(w_k)
        grads = _flat_grads(dev, meta_params)
        return (grads, {n: p.detach() for n, p in w_k.items()}, {n: v.detach() for n, v in v_k.items()},
                dev.item(), losses)

    w_t, v, snapshots, kept, losses = _forward_sweep(model, params, batches, loss_fn, lr, momentum, velocity,
                                                     keep_activations, weight_decay)
    w_final = [p.detach().requires_grad_() for p in w_t]
    dev = dev_fn(dict(zip(names, w_final)))
    theta_bar = _reverse_sweep(model, names, batches, loss_fn, meta_params, snapshots, kept,
                               _flat_grads(dev, w_final), lr, momentum, weight_decay)
    return (theta_bar, dict(zip(names, w_t)), dict(zip(names, v)), dev.item(),
            torch.stack(losses).tolist() if losses else [])


def _forward_sweep(model, params, batches, loss_fn, lr, momentum, velocity, keep_activations, weight_decay):
    """Snapshot mode's forward: the K steps without a graph, keeping w_t. w_t is never written in place (each
    snapshot is the step's own tensors, no copy); v is our own copy, updated in place (the reverse sweep does not
    read v_t). With keep_activations each step's forward graph is kept too."""
    names = list(params)
    w_t = [params[n].detach() for n in names]
    v = ([velocity[n].detach().clone() for n in names] if velocity is not None
         else [torch.zeros_like(p) for p in w_t])
    snapshots: list[list[torch.Tensor] | None] = []
    kept: list[tuple[list[torch.Tensor], list[torch.Tensor]] | None] = []  # (∇_w L_k with its graph, w_k leaves)
    losses = []
    for k, (x, y) in enumerate(batches):
        snapshots.append(w_t)
        inputs = [p.detach().requires_grad_() for p in w_t]
        loss = loss_fn(functional_call(model, dict(zip(names, inputs)), (x,)), y, k)
        # keep_activations: the gradient is taken with its graph once, here, and the reverse sweep differentiates
        # it again without recomputing the forward pass or the gradient
        grads = torch.autograd.grad(loss, inputs, create_graph=keep_activations)
        PASSES.add(forward=y.numel(), backward=y.numel())
        kept.append((grads, inputs) if keep_activations else None)
        grads = [g.detach() for g in grads]
        with torch.no_grad():
            torch._foreach_mul_(v, momentum)
            torch._foreach_add_(v, grads)
            if weight_decay:
                torch._foreach_add_(v, w_t, alpha=weight_decay)
            w_t = torch._foreach_add(w_t, v, alpha=-lr)
        losses.append(loss.detach())  # as in unroll_sgd: read once at the end
    return w_t, v, snapshots, kept, losses


def _reverse_sweep(model, names, batches, loss_fn, meta_params, snapshots, kept, w_bar, lr, momentum, weight_decay):
    """Snapshot mode's reverse sweep: one vector-Jacobian product per step, from the last step to the first."""
    # the sweep recomputes each step's forward; BatchNorm would update its running buffers a second time
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    theta_bar = [torch.zeros_like(t) for t in meta_params]
    g_bar: list[torch.Tensor] = []
    for k in range(len(batches) - 1, -1, -1):
        x, y = batches[k]
        with torch.no_grad():  # ḡ_k = v̄_{k+1} − lr w̄_{k+1}, the adjoint of ∇_w L_k, with v̄_{k+1} = μ ḡ_{k+1}, v̄_K = 0
            if g_bar:
                torch._foreach_mul_(g_bar, momentum)
                torch._foreach_add_(g_bar, w_bar, alpha=-lr)
            else:
                g_bar = torch._foreach_mul(w_bar, -lr)
        if kept[k] is not None:  # step k's gradient and its graph are still there: no recomputation
            grads, inputs = kept[k]
            kept[k] = None
            PASSES.add(backward=y.numel())  # the vector-Jacobian product
        else:
            inputs = [p.detach().requires_grad_() for p in snapshots[k]]
            loss = loss_fn(functional_call(model, dict(zip(names, inputs)), (x,)), y, k)
            grads = torch.autograd.grad(loss, inputs, create_graph=True)
            PASSES.add(forward=y.numel(), backward=2 * y.numel())  # the gradient again, and its product
        # one vector-Jacobian product of ∇_w L_k with ḡ gives both ∂(∇_w L_k · ḡ)/∂w_k and ∂(∇_w L_k · ḡ)/∂θ
        back = _flat_grads(grads, inputs + list(meta_params), grad_outputs=g_bar)
        with torch.no_grad():
            torch._foreach_add_(w_bar, back[:len(names)])
            if weight_decay:
                torch._foreach_add_(w_bar, g_bar, alpha=weight_decay)
            torch._foreach_add_(theta_bar, back[len(names):])
        snapshots[k] = None  # free as we go
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.copy_(buffers[n])
    return theta_bar


# ---------------------------------------------------------------- learning to reweight (Ren et al., ICML 2018)

def example_weight_grads(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, dev_x: torch.Tensor,
                         dev_y: torch.Tensor, *, lr: float,
                         per_example: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """∂/∂ε of the dev loss after one SGD step on the ε-weighted training loss, at ε = 0.

    The look-ahead is w'(ε) = w − lr ∇_w Σ_i ε_i ℓ_i(w) and the objective L_dev(w'(ε)); at ε = 0, w' = w, so the
    gradient is exactly −lr ⟨∇L_dev(w), ∇ℓ_i(w)⟩ for every example i: one dev gradient, then one forward-mode
    product of the per-example losses along it (torch.func.jvp), instead of a double backward.
    model: the architecture (a Population too: member slices never mix); params {name: tensor};
    x [.., B, ...], y [.., B] the training batch; dev_x, dev_y a dev batch; per_example(logits, y) -> [.., B]
    (the dev loss is its mean, summed over members). Returns [.., B].
    """
    check_float("lr", lr, 0, low_open=True)
    detached = {n: p.detach() for n, p in params.items()}
    with torch.enable_grad():
        leaves = {n: p.requires_grad_() for n, p in ((n, p.clone()) for n, p in detached.items())}
        dev_loss = per_example(functional_call(model, leaves, (dev_x,)), dev_y).mean(-1).sum()
        dev_grads = torch.autograd.grad(dev_loss, list(leaves.values()))
    PASSES.add(forward=dev_y.numel(), backward=dev_y.numel())
    tangents = dict(zip(leaves, (g.detach() for g in dev_grads)))
    _, directional = torch.func.jvp(lambda p: per_example(functional_call(model, p, (x,)), y), (detached,),
                                    (tangents,))
    PASSES.add(forward=2 * y.numel())  # a forward-mode pass costs about two forwards
    return -lr * directional
