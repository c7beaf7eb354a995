"""The pieces of L2T-DLF's model (the method is `labkit.dlf`): the loss family l_Φ, the dev surrogates, the
students' state s_t and the teacher μ_θ. Everything is batched over a population of S students."""
from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import seeds as seeding
from .checks import check_choice, check_float, check_int
from .student import upcast

if TYPE_CHECKING:
    import numpy as np

SURROGATES = ("smooth_error", "expected_error")
GATES = ("state", "progress", "static")


# ---------------------------------------------------------------- loss and surrogates

def dlf_loss(logits: torch.Tensor, y: torch.Tensor, phi: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example l_Φ(p, y) = −σ(yᵀ Φ log p + b_y).

    logits [B, C] with phi [C, C] and bias [C], or a population's logits [S, B, C] with phi [S, C, C] and bias
    [S, C]; y [B] or [S, B]. Row y of Φ weighs the log-probabilities of all classes for an example of class y.
    Returns [B] or [S, B]. With Φ = I and no bias this is −p_y / (1 + p_y), a monotone transform of CE.
    """
    log_p = F.log_softmax(upcast(logits), dim=-1)  # stable: never log(softmax)
    if phi.dim() == 2:
        rows, b = phi[y], (bias[y] if bias is not None else 0.0)
    else:
        member = torch.arange(phi.shape[0], device=phi.device)[:, None]
        rows, b = phi[member, y], (bias[member, y] if bias is not None else 0.0)
    return -torch.sigmoid((rows * log_p).sum(-1) + b)


def student_loss(logits: torch.Tensor, y: torch.Tensor, phi: torch.Tensor, bias: torch.Tensor | None = None,
                 alpha: float = 0.0) -> torch.Tensor:
    """Per-example α·CE + (1 − α)·l_Φ (shapes as `dlf_loss`). α = 0: the paper's pure l_Φ; α = 1: cross-entropy.
    The CE part keeps a gradient on misclassified examples, where σ'(yᵀΦ log p) vanishes."""
    check_float("alpha", alpha, 0, 1)
    out = dlf_loss(logits, y, phi, bias)
    if alpha == 0:
        return out
    ce = F.cross_entropy(upcast(logits.reshape(-1, logits.shape[-1])), y.reshape(-1), reduction="none")
    return alpha * ce.view(y.shape) + (1 - alpha) * out


def smooth_error(logits: torch.Tensor, y: torch.Tensor, k: float = 50.0) -> torch.Tensor:
    """The official demo's smooth 0/1 error: mean of 2σ(k·(max_j p_j − p_y)) − 1 ∈ [0, 1). logits [N, C]."""
    p = F.softmax(upcast(logits), dim=1)
    margin = p.max(1).values - p.gather(1, y[:, None]).squeeze(1)
    return (2 * torch.sigmoid(k * margin) - 1).mean()


def expected_error(logits: torch.Tensor, y: torch.Tensor, k: float = 50.0) -> torch.Tensor:
    """1 − expected accuracy, 1 − mean p_y (k is ignored; same signature as `smooth_error`)."""
    return 1 - F.softmax(upcast(logits), dim=1).gather(1, y[:, None]).mean()


def surrogate(name: str) -> Callable[..., torch.Tensor]:
    return smooth_error if check_choice("surrogate", name, SURROGATES) == "smooth_error" else expected_error


# ---------------------------------------------------------------- the students' state

class StudentState:
    """s_t of S students, [S, 4 + C]: [t / horizon, recent train loss / ln C, recent train accuracy, dev accuracy,
    per-class dev accuracy (C)]. Recent = exponential moving average (factor `decay`) over the student's own
    training batches; dev = the last `refresh_dev` measurement (1/C until one is made)."""

    def __init__(self, size: int, num_classes: int, horizon: int, decay: float = 0.9,
                 device: torch.device | str = "cpu"):
        self.num_classes, self.horizon, self.decay = num_classes, horizon, decay
        self.values = torch.full((size, 4 + num_classes), 1.0 / num_classes, device=device)
        self.values[:, 1] = 1.0

    def features(self, t: int) -> torch.Tensor:
        """s_t [S, 4 + C] (a copy: the teacher's input must not change under it)."""
        out = self.values.clone()
        out[:, 0] = min(t / self.horizon, 1.0)
        return out

    @torch.no_grad()
    def observe(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Fold one training batch per member (logits [S, B, C], y [S, B]) into the recent loss and accuracy."""
        ce = F.cross_entropy(upcast(logits.flatten(0, 1)), y.flatten(), reduction="none").view(y.shape).mean(1)
        acc = (logits.argmax(-1) == y).float().mean(1)
        v, d = self.values, self.decay
        v[:, 1] = d * v[:, 1] + (1 - d) * (ce / math.log(self.num_classes)).clamp(max=3.0)
        v[:, 2] = d * v[:, 2] + (1 - d) * acc

    @torch.no_grad()
    def refresh_dev(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Dev accuracy and per-class dev accuracy from dev logits [S, N, C] and labels [N]."""
        hit = (logits.argmax(-1) == y).float()                              # [S, N]
        counts = torch.bincount(y, minlength=self.num_classes).clamp_min(1).float()
        per_class = torch.zeros(len(hit), self.num_classes, device=hit.device).index_add_(1, y, hit) / counts
        self.values[:, 3], self.values[:, 4:] = hit.mean(1), per_class


# ---------------------------------------------------------------- the teacher

class DLFTeacher(nn.Module):
    """μ_θ: s_t [S, D] -> (Φ_t [S, C, C], b [S, C] or None, attention [S, M]).

    Φ_t = Σ_k a_k(s_t) M_k over a bank of M learnable C×C matrices, every M_k starting at c·I (c = `init_scale`):
    Φ_0 = c·I, a monotone transform of cross-entropy. gate: "static" (one matrix, no input: the demo without
    `--dynamic`), "progress" (fixed hat functions of s_t[0] = t / horizon centred on k / (M − 1): M_k is the loss
    of phase k, and every window updates the matrices of its own phase, so Φ_t becomes phase-dependent), "state"
    (a learned attention softmax(W₂ tanh(W₁ s + c₁) + c₂), W₂ = 0 at the start; its matrices get near-identical
    gradients while they are near-identical, so they get noise of scale `init_noise` (default 0.01) to differ).
    """

    def __init__(self, num_classes: int, state_dim: int, *, gate: str = "progress", bank: int = 4, hidden: int = 32,
                 bias: bool = True, init_scale: float = 1.0, init_noise: float | None = None, seed: int = 0):
        super().__init__()
        check_choice("gate", gate, GATES)
        check_int("num_classes", num_classes, 2)
        check_int("bank", bank, 1)
        check_float("init_scale", init_scale, 0, low_open=True)
        self.num_classes, self.gate = num_classes, gate
        bank = 1 if gate == "static" else bank
        gen = seeding.generator(seed, "teacher", "init")
        noise = 0.01 if (init_noise is None and gate == "state" and bank > 1) else (init_noise or 0.0)
        eye = init_scale * torch.eye(num_classes).expand(bank, num_classes, num_classes)
        self.bank = nn.Parameter(eye + noise * torch.randn(bank, num_classes, num_classes, generator=gen))
        self.register_buffer("start_bank", self.bank.detach().clone())  # Φ_0's bank, for `at_start`
        self.bias = nn.Parameter(torch.zeros(num_classes)) if bias else None
        self.attend = None
        if gate == "state":
            first, last = nn.Linear(state_dim, hidden), nn.Linear(hidden, bank)
            with torch.no_grad():
                first.weight.copy_(torch.randn(hidden, state_dim, generator=gen) / math.sqrt(state_dim))
                first.bias.zero_()
                last.weight.zero_()
                last.bias.zero_()
            self.attend = nn.Sequential(first, nn.Tanh(), last)

    @property
    def reads_dev_state(self) -> bool:
        """Only the learned attention reads the dev part of s_t: only then must a student measure its dev accuracy."""
        return self.attend is not None

    def attention(self, state: torch.Tensor) -> torch.Tensor:
        """a(s_t) [S, M] for states [S, D]."""
        M = self.bank.shape[0]
        if self.gate == "static":
            return torch.ones(len(state), 1, device=self.bank.device, dtype=self.bank.dtype)
        if self.gate == "progress":
            centres = torch.linspace(0, 1, M, device=self.bank.device, dtype=self.bank.dtype)
            progress = state[:, :1].to(self.bank).clamp(0, 1)
            return (1 - (progress - centres).abs() * (M - 1)).clamp_min(0)
        return torch.softmax(self.attend(state.to(self.bank)), dim=-1)

    def forward(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        a = self.attention(state)
        phi = torch.einsum("sm,mij->sij", a, self.bank)
        bias = None if self.bias is None else self.bias.expand(len(state), -1)
        return phi, bias, a

    def phi0(self) -> "np.ndarray":
        """Φ_0 [C, C], the matrix before any update (the bank's start under the untrained gate's weights)."""
        return self.start_bank.mean(0).detach().cpu().numpy()

    def at_start(self) -> "DLFTeacher":
        """A frozen copy of this teacher as it was before any update: Φ fixed at Φ_0 (the ablation that separates
        the loss family from what the teacher learned)."""
        start = copy.deepcopy(self)
        with torch.no_grad():
            start.bank.copy_(self.start_bank)
            if start.bias is not None:
                start.bias.zero_()
        return start.eval()
