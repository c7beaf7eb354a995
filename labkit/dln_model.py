"""The pieces of L2T-DLN's model (the method is `labkit.dln`): the dynamic loss network (DLN), its "bce" start, the
coordinate-wise LSTM teacher and the two meta-gradients. Everything is batched over a population of S students.

A DLN is held as its 5 weight matrices (bias-free LeakyReLU MLP 4 -> 40 -> 40 -> 40 -> 40 -> 1): [out, in] each for
one network, [S, out, in] for one network per member. For example b and class j its input row is [σ(z_y), σ(z_j),
1, 0] (σ the sigmoid of the logits z), zeroed on the true class j = y (with no biases a zero row gives exactly 0);
the student's loss is the mean output over the B x C rows. As the public code (`1017137588qqcom/L2T-DLN`).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .checks import check_choice, check_int
from .meta import Params, unroll_sgd
from .student import PASSES, cross_entropy, upcast

INPUT_WIDTH, HIDDEN, SLOPE = 4, (40, 40, 40, 40), 0.01
PREPROC_FACTOR = 10.0  # p in the gradient preprocessing of Andrychowicz et al. (2016)
LSTM_BLOCK = 2048  # LSTM rows per block on a CPU
INITS = ("random", "bce")
Weights = list  # the DLN's 5 weight tensors, [out, in] each, or [S, out, in] for S members


# ---------------------------------------------------------------- the loss network

def dln_forward(weights: Weights, feats: torch.Tensor) -> torch.Tensor:
    """feats [N, 4] with weights [out, in], or [S, N, 4] with weights [S, out, in] -> outputs [(S,) N, 1]."""
    h = feats
    for w in weights[:-1]:
        h = F.leaky_relu(h @ w.transpose(-1, -2), SLOPE)
    return h @ weights[-1].transpose(-1, -2)


def random_dln(seed: int, dtype: torch.dtype = torch.float32) -> Weights:
    """The public code's DLN: kaiming-normal weights (mode fan_out, LeakyReLU gain), from a generator of `seed`."""
    gen, sizes = torch.Generator().manual_seed(seed), (INPUT_WIDTH, *HIDDEN, 1)
    return [nn.init.kaiming_normal_(torch.empty(b, a, dtype=dtype), mode="fan_out", nonlinearity="leaky_relu",
                                    generator=gen) for a, b in zip(sizes, sizes[1:])]


def bce_target(s_y: torch.Tensor, s_j: torch.Tensor, num_classes: int, scale: float | None = None,
               eps: float = 1e-2) -> torch.Tensor:
    """The row loss init="bce" fits: scale · (-log σ_y / (C - 1) - log(1 - σ_j)). Summed over a sample's C - 1 rows
    it is scale x the one-vs-rest BCE on the sigmoids; the DLN loss is a mean over B x C rows, so scale = C (the
    default) makes it that BCE per sample. σ's clamped to [eps, 1 - eps] (finite on the closed square)."""
    scale = float(num_classes) if scale is None else scale
    s_y, s_j = s_y.clamp(eps, 1 - eps), s_j.clamp(eps, 1 - eps)
    return scale * (-torch.log(s_y) / (num_classes - 1) - torch.log1p(-s_j))


def _rows(s_y: torch.Tensor, s_j: torch.Tensor) -> torch.Tensor:
    return torch.stack([s_y, s_j, torch.ones_like(s_y), torch.zeros_like(s_y)], -1).reshape(-1, INPUT_WIDTH)


def fit_dln(weights: Weights, num_classes: int, *, steps: int = 500, lr: float = 1e-2, scale: float | None = None,
            points: int = 4096, seed: int = 0) -> dict:
    """Fit a DLN [out, in] x 5 in place to `bce_target` (init="bce", a labkit deviation; about a second on a core).
    Inputs: `points` σ-pairs, half uniform on [0, 1]², half sigmoids of logits uniform on [-8, 8]² (where a trained
    student's sit); objective: MSE plus 1000 x a squared hinge (margin 0.02) on the output's finite differences over
    a 41 x 41 grid, so the fit falls with σ_y and rises with σ_j everywhere on the grid, even where the target's slope
    is below the fit's error. Adam, cosine lr, full batch; deterministic. Returns {"rmse", "target_rms"}."""
    check_int("num_classes", num_classes, 2)
    check_int("init_steps", steps, 0)
    gen = torch.Generator().manual_seed(seed)
    s = torch.cat([torch.rand(points // 2, 2, generator=gen, dtype=torch.float64),
                   torch.sigmoid(torch.rand(points - points // 2, 2, generator=gen, dtype=torch.float64) * 16 - 8)])
    s = s.to(weights[0])
    feats, target = _rows(s[:, 0], s[:, 1]), bce_target(s[:, :1], s[:, 1:], num_classes, scale)
    g = torch.linspace(0, 1, 41).to(s)
    grid = _rows(*torch.meshgrid(g, g, indexing="ij"))
    for w in weights:
        w.requires_grad_(True)
    opt = torch.optim.Adam(weights, lr=lr)  # fits the loss network, not a student
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            surface = dln_forward(weights, grid).reshape(41, 41)  # rows σ_y, columns σ_j
            hinge = (F.relu(surface[1:] - surface[:-1] + 0.02).pow(2).mean()
                     + F.relu(surface[:, :-1] - surface[:, 1:] + 0.02).pow(2).mean())
            (F.mse_loss(dln_forward(weights, feats), target) + 1000.0 * hinge).backward()
            opt.step()
            schedule.step()
    for w in weights:
        w.requires_grad_(False).grad = None
    with torch.no_grad():
        rmse = float(F.mse_loss(dln_forward(weights, feats), target).sqrt())
    return {"rmse": rmse, "target_rms": float(target.pow(2).mean().sqrt())}


def initial_dln(init: str = "random", num_classes: int = 10, *, seed: int = 0, init_steps: int = 500,
                bce_scale: float | None = None) -> tuple[Weights, dict | None]:
    """A fresh DLN [out, in] x 5 and its fit: "random" is `random_dln(seed)` (fit None); "bce" fits that same draw
    to `bce_target` with scale `bce_scale` (None: C), so the student's first steps descend a sensible loss."""
    check_choice("init", init, INITS)
    weights = random_dln(seed)
    fit = fit_dln(weights, num_classes, steps=init_steps, scale=bce_scale, seed=seed) if init == "bce" else None
    return weights, fit


def loss_features(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """logits [..., B, C], labels y [..., B] -> DLN rows [..., B, C, 4]: [σ(z_y), σ(z_j), 1, 0], zero where j = y."""
    s = torch.sigmoid(upcast(logits))
    wrong = 1.0 - F.one_hot(y, logits.shape[-1]).to(s.dtype)
    s_true = s.gather(-1, y.unsqueeze(-1)).expand_as(s)
    return torch.stack([s_true, s, torch.ones_like(s), torch.zeros_like(s)], dim=-1) * wrong.unsqueeze(-1)


def dln_loss(weights: Weights, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The student's loss, the mean DLN output over the B x C rows: logits [B, C] with weights [out, in] -> a scalar;
    logits [S, B, C] with weights [S, out, in] -> one loss per member [S]."""
    return dln_forward(weights, loss_features(logits, y).flatten(-3, -2)).mean((-2, -1))


def loss_surface(weights: Weights, grid: int = 21) -> torch.Tensor:
    """The DLN's output on a G x G grid, [G, G] (or [S, G, G] for S members): entry [a, b] is DLN([g_a, g_b, 1, 0]),
    g = linspace(0, 1, G); rows σ(z_y) (the true class), columns σ(z_j) (a wrong class)."""
    check_int("grid", grid, 2)
    g = torch.linspace(0, 1, grid, dtype=weights[0].dtype, device=weights[0].device)
    feats = _rows(*torch.meshgrid(g, g, indexing="ij"))
    if weights[0].dim() == 3:
        feats = feats.expand(len(weights[0]), -1, -1)
    with torch.no_grad():
        return dln_forward(weights, feats).reshape(*feats.shape[:-2], grid, grid)


def surface_slopes(surface: np.ndarray) -> tuple[float, float]:
    """(mean ∂loss/∂σ(z_y), mean ∂loss/∂σ(z_j)) of a [G, G] surface: a loss that teaches classification falls with
    σ(z_y) (< 0) and rises with σ(z_j) (> 0)."""
    surface = np.asarray(surface, dtype=float)
    g = surface.shape[-1] - 1
    return float(np.diff(surface, axis=0).mean() * g), float(np.diff(surface, axis=1).mean() * g)


def flat_weights(weights: Weights) -> torch.Tensor:
    """[S, out, in] x 5 -> [S, P] (P = 5 000 for the paper's DLN)."""
    return torch.cat([w.flatten(1) for w in weights], 1)


def unflat_weights(flat: torch.Tensor, like: Weights) -> Weights:
    """[S, P] -> [S, out, in] x 5 shaped as `like`."""
    return [part.view_as(w) for part, w in zip(flat.split([w[0].numel() for w in like], 1), like)]


# ---------------------------------------------------------------- the teacher

def preprocess_gradients(g: torch.Tensor, p: float = PREPROC_FACTOR) -> torch.Tensor:
    """g [N] -> [N, 2]: (log|g| / p, sign g) where |g| >= e^-p, else (-1, e^p g) (Andrychowicz et al. 2016)."""
    g = g.reshape(-1)
    big = g.abs() >= math.exp(-p)
    first = torch.where(big, torch.log(g.abs() + 1e-8) / p, torch.full_like(g, -1.0))
    return torch.stack([first, torch.where(big, torch.sign(g), math.exp(p) * g)], dim=1)


class LSTMTeacher(nn.Module):
    """Coordinate-wise LSTMCell stack 2 -> hidden x (layers - 1) -> 1 (the public code: 64, 4 cells): one DLN weight
    of one member is one row; rows never mix, so S members' P weights are N = S·P rows of one call.
    forward(g [N], state) -> (u [N] in (-1, 1), new state); state: one (h, c) per cell, each [N, width]."""

    def __init__(self, hidden: int = 64, layers: int = 4, *, seed: int = 0):
        super().__init__()
        sizes = [2] + [hidden] * (layers - 1) + [1]
        with torch.random.fork_rng(devices=[]):  # LSTMCell's constructor draws from the global generator: fork it
            self.cells = nn.ModuleList(nn.LSTMCell(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # torch's own LSTMCell init, U(-1/√hidden, 1/√hidden), drawn from our generator
            for cell in self.cells:
                for p in cell.parameters():
                    p.uniform_(-cell.hidden_size ** -0.5, cell.hidden_size ** -0.5, generator=gen)

    def initial_state(self, num_coords: int, device=None, dtype=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Zero memory for `num_coords` coordinates."""
        return [(torch.zeros(num_coords, c.hidden_size, device=device, dtype=dtype),) * 2 for c in self.cells]

    def forward(self, g: torch.Tensor, state: list[tuple[torch.Tensor, torch.Tensor]]):
        # rows in cache-sized blocks on a CPU: ~2.5x faster than one [N, 4·hidden] pass, the same numbers
        block = g.numel() if g.is_cuda else LSTM_BLOCK
        outs, states = [], []
        for i in range(0, g.numel(), block):
            x, new = preprocess_gradients(g[i:i + block]), []
            for cell, (h, c) in zip(self.cells, state):
                x, c = cell(x, (h[i:i + block], c[i:i + block]))
                new.append((x, c))
            outs.append(x.reshape(-1))
            states.append(new)
        return torch.cat(outs), [tuple(torch.cat([s[j][k] for s in states]) for k in (0, 1))
                                 for j in range(len(self.cells))]


def propose(lstm: LSTMTeacher, g: Weights, weights: Weights, state: list, scale: float,
            ok: torch.Tensor) -> tuple[Weights, list]:
    """The LSTM's proposal w - scale · u(g) for S members: g, weights [S, out, in] x 5; returns (new weights, new
    memory), differentiable in the LSTM's weights. Members where ok [S] is False (a non-finite probe, a diverged
    student) keep their weights and memory."""
    flat_g = flat_weights(g)
    u, new_state = lstm(torch.where(ok[:, None], flat_g, 0.0).reshape(-1), state)
    step = torch.where(ok[:, None], -scale * u.view_as(flat_g), 0.0)
    rows = ok.repeat_interleave(flat_g.shape[1])[:, None]
    new_state = [(torch.where(rows, h, h0), torch.where(rows, c, c0)) for (h, c), (h0, c0) in zip(new_state, state)]
    return unflat_weights(flat_weights(weights) + step, weights), new_state


# ---------------------------------------------------------------- the meta-gradients

def dev_ce(model: nn.Module, params: Params, dev: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """CE per member [S] on dev = (x [S, Bd, ...], y [S, Bd]) at weights `params`, in eval mode: batch-norm layers
    normalise with their running statistics and leave them as they are."""
    was = model.training
    model.eval()
    try:
        logits = functional_call(model, params, (dev[0],))
    finally:
        model.train(was)
    PASSES.add(forward=dev[1].numel())
    return cross_entropy(logits, dev[1]).mean(-1)


def dev_loss_after_unroll(model: nn.Module, params: Params, weights: Weights, batches: Sequence, dev: tuple, *,
                          lr: float, momentum: float = 0.0, velocity: Params | None = None,
                          create_graph: bool = True) -> tuple[torch.Tensor, Params, Params, list[float]]:
    """Dev CE per member [S] after K = len(batches) SGD steps of a population on its DLN losses, differentiable in
    `weights` [S, out, in] x 5 (and `params`) with create_graph. model: a population, x [S, B, ...] -> [S, B, C];
    batches: K pairs (x [S, B, ...], y [S, B]). Members share no weight, so the summed loss gives each its own
    gradient. Returns (dev [S], params_K, velocity_K, the K summed training losses)."""
    def train_loss(logits, y, k):
        return dln_loss(weights, logits, y).sum()

    params_k, velocity_k, losses = unroll_sgd(model, params, batches, train_loss, lr=lr, momentum=momentum,
                                              velocity=velocity, create_graph=create_graph)
    return dev_ce(model, params_k, dev), params_k, velocity_k, losses


def meta_gradient(model: nn.Module, params: Params, weights: Weights, batches: Sequence, dev: tuple, *, lr: float,
                  momentum: float = 0.0, velocity: Params | None = None) -> tuple[torch.Tensor, Weights, list[float]]:
    """The probe: (dev CE [S], g = ∂ dev CE / ∂ weights [S, out, in] x 5, training losses) through the K-step unroll
    from `params`. A probe leaves the model's buffers (batch-norm running statistics) as they were."""
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    w = [t.detach().requires_grad_() for t in weights]
    start = {n: p.detach().requires_grad_() for n, p in params.items()}
    try:
        dev, _, _, losses = dev_loss_after_unroll(model, start, w, batches, dev, lr=lr, momentum=momentum,
                                                  velocity=velocity)
        grads = torch.autograd.grad(dev.sum(), w)
    finally:
        restore_buffers(model, buffers)
    return dev.detach(), [g.detach() for g in grads], losses


def restore_buffers(model: nn.Module, buffers: dict[str, torch.Tensor]) -> None:
    """Put the model's buffers back to `buffers` (a probe's or a skipped update's batch-norm statistics)."""
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.copy_(buffers[n])
