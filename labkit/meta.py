"""Differentiating through unrolled SGD with `torch.func.functional_call`.

A student's weights are held as a dict name -> tensor, so that K steps of SGD become an ordinary
differentiable function of whatever the loss depends on (a loss matrix Φ, a loss network's weights).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]


def params_of(model: nn.Module, *, requires_grad: bool = True) -> Params:
    """A detached copy of the model's parameters as a dict (the starting point of an unroll)."""
    return {name: p.detach().clone().requires_grad_(requires_grad) for name, p in model.named_parameters()}


def unroll_sgd(model: nn.Module, params: Params, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
               loss_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor], *, lr: float,
               momentum: float = 0.0, velocity: Params | None = None, create_graph: bool = True,
               ) -> tuple[Params, Params, list[float]]:
    """K steps of SGD with (heavy-ball) momentum, v <- μ v + g, w <- w - lr v, kept differentiable.

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
        velocity = {n: momentum * velocity[n] + g for n, g in zip(names, grads)}
        params = {n: params[n] - lr * velocity[n] for n in names}
        if not create_graph:
            params = {n: p.detach().requires_grad_() for n, p in params.items()}
            velocity = {n: v.detach() for n, v in velocity.items()}
        losses.append(loss.item())
    return params, velocity, losses
