"""L2T-DLF: Learning to Teach with Dynamic Loss Functions (Wu et al., NeurIPS 2018).

The student minimises l_Φ(p, y) = -σ(yᵀ Φ_t log p + b_y); a teacher μ_θ maps the student's state s_t to Φ_t
at every step. The teacher is trained by reverse-mode differentiation (`labkit.meta.sgd_meta_grad`) of a smooth
dev error through windows of K student SGD steps.

Pieces, in reading order:
- `dlf_loss`: the bilinear loss, batched, on log-softmax (never the log of a softmax).
- `smooth_error`, `expected_error`: the differentiable dev surrogates (`SURROGATES`).
- `StudentState`: the teacher's input s_t (progress, recent train loss/acc, dev acc, per-class dev acc).
- `DLFTeacher`: Φ_t = Σ_k a_k(s_t) M_k, attention over a bank of C×C matrices; `static=True`: one matrix.
- `train_teacher`: windows of K steps, one teacher step per window; the student continues (truncated,
  as the official demo) or restarts every window (the paper's Algorithm 1, with window = the whole run).
- `deploy`: a fresh student trained with the frozen teacher; `train_ce`: the cross-entropy baseline with the
  same steps, optimizer, data order and seeds; `compare`: both over several seeds.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from . import meta
from .data import Split, Splits, check_int, batches
from .models import build
from .trace import Trace
from .train import confusion, evaluate, progress

SURROGATES = ("smooth_error", "expected_error")
GATES = ("state", "progress")


# ---------------------------------------------------------------- loss and surrogates

def dlf_loss(logits: torch.Tensor, y: torch.Tensor, phi: torch.Tensor, bias: torch.Tensor | None = None,
             reduction: str = "mean") -> torch.Tensor:
    """l_Φ(p, y) = -σ(yᵀ Φ log p + b_y).

    logits [B, C]; y [B] int64; phi [C, C] (row y weighs the log-probabilities of all classes for an
    example of class y); bias [C] or None. Returns the mean over the batch (reduction="mean") or [B] ("none").
    With Φ = I and no bias this is -p_y / (1 + p_y), a monotone transform of the cross-entropy.
    """
    log_p = F.log_softmax(logits, dim=1)  # stable: never log(softmax)
    z = (phi[y] * log_p).sum(1)           # [B]: yᵀ Φ log p
    if bias is not None:
        z = z + bias[y]
    loss = -torch.sigmoid(z)
    if reduction == "none":
        return loss
    if reduction != "mean":
        raise ValueError(f"reduction={reduction!r} is not allowed: choose 'mean' or 'none'")
    return loss.mean()


def student_loss(logits: torch.Tensor, y: torch.Tensor, phi: torch.Tensor, bias: torch.Tensor | None = None,
                 alpha: float = 0.0) -> torch.Tensor:
    """The student's training loss: α·CE + (1 − α)·l_Φ (the official demo's `--combine_loss`, α = 0.5 there).

    alpha = 0 is the pure bilinear loss `dlf_loss`; alpha = 1 is cross-entropy (Φ unused). logits [B, C], y [B].
    The CE term keeps a gradient on misclassified examples, where σ'(yᵀΦ log p) vanishes."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha!r} is not allowed: it must be in [0, 1]")
    if alpha == 0:
        return dlf_loss(logits, y, phi, bias)
    return alpha * F.cross_entropy(logits, y) + (1 - alpha) * dlf_loss(logits, y, phi, bias)


def smooth_error(logits: torch.Tensor, y: torch.Tensor, k: float = 50.0) -> torch.Tensor:
    """The official demo's smooth 0/1 error: mean of 2σ(k·(max_j p_j − p_y)) − 1 ∈ [0, 1). logits [N, C]."""
    p = F.softmax(logits, dim=1)
    margin = p.max(1).values - p.gather(1, y[:, None]).squeeze(1)
    return (2 * torch.sigmoid(k * margin) - 1).mean()


def expected_error(logits: torch.Tensor, y: torch.Tensor, k: float = 50.0) -> torch.Tensor:
    """1 − expected accuracy, 1 − mean p_y (k is ignored; same signature as `smooth_error`)."""
    return 1 - F.softmax(logits, dim=1).gather(1, y[:, None]).mean()


def _surrogate(name: str) -> Callable[..., torch.Tensor]:
    if name not in SURROGATES:
        raise ValueError(f"surrogate={name!r} is not allowed: choose one of {', '.join(SURROGATES)}")
    return smooth_error if name == "smooth_error" else expected_error


# ---------------------------------------------------------------- the student's state

class StudentState:
    """The teacher's input s_t [4 + C]: [t / horizon, recent train loss / ln C, recent train accuracy,
    dev accuracy, per-class dev accuracy (C)]. Recent = exponential moving average (factor `decay`) of the
    cross-entropy and accuracy of the student's own training batches; dev = last `refresh_dev` measurement."""

    def __init__(self, num_classes: int, horizon: int, decay: float = 0.9):
        self.num_classes, self.horizon, self.decay = num_classes, horizon, decay
        self.loss, self.acc = 1.0, 1.0 / num_classes
        self.dev_acc, self.class_acc = 1.0 / num_classes, torch.full((num_classes,), 1.0 / num_classes)

    @property
    def dim(self) -> int:
        return 4 + self.num_classes

    def features(self, t: int) -> torch.Tensor:
        """s_t [4 + C] float32 on the CPU (moved by the caller)."""
        head = torch.tensor([min(t / self.horizon, 1.0), self.loss, self.acc, self.dev_acc])
        return torch.cat([head, self.class_acc])

    @torch.no_grad()
    def observe(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Fold one training batch (logits [B, C], y [B]) into the recent loss and accuracy."""
        loss = F.cross_entropy(logits.float(), y).item() / math.log(self.num_classes)
        acc = (logits.argmax(1) == y).float().mean().item()
        self.loss = self.decay * self.loss + (1 - self.decay) * min(loss, 3.0)
        self.acc = self.decay * self.acc + (1 - self.decay) * acc

    @torch.no_grad()
    def refresh_dev(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Dev accuracy and per-class dev accuracy from dev logits [N, C] and labels [N]."""
        hit = (logits.argmax(1) == y).float()
        self.dev_acc = hit.mean().item()
        counts = torch.bincount(y, minlength=self.num_classes).clamp_min(1).float()
        self.class_acc = (torch.bincount(y, weights=hit, minlength=self.num_classes) / counts).cpu()


# ---------------------------------------------------------------- the teacher

class DLFTeacher(nn.Module):
    """μ_θ: s_t [S] -> (Φ_t [C, C], b [C] or None, attention a(s_t) [M]).

    Φ_t = Σ_k a_k(s_t) M_k with a(s) = softmax(W₂ tanh(W₁ s + c₁) + c₂) over a bank of M learnable C×C
    matrices. Every M_k starts at c·I (c = `init_scale`) plus noise of scale `init_noise` and W₂ starts at 0
    (uniform attention), so Φ_0 ≈ c·I: the student starts from a monotone transform of cross-entropy.
    static=True: one learned matrix, no state input (the official demo without its scalar gate).
    gate="progress": a(s) is fixed, hat functions of the progress s[0] = t / horizon centred on k / (M − 1), so
    M_k is the loss of phase k and Φ_t interpolates between phases. Unlike the learned attention (whose
    matrices get near-identical gradients while they are near-identical, and so stay alike), every window
    updates the matrices of its own phase: Φ_t can become phase-dependent.
    init_noise: scale of the noise added to every M_k; None = 0.01 for a bank of several matrices under the learned
    attention (to break their symmetry), else 0.
    """

    def __init__(self, num_classes: int, state_dim: int, *, bank: int = 4, hidden: int = 32, bias: bool = True,
                 static: bool = False, init_noise: float | None = None, init_scale: float = 1.0, seed: int = 0,
                 gate: str = "state"):
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"gate={gate!r} is not allowed: choose one of {', '.join(GATES)}")
        check_int("num_classes", num_classes, 2)
        check_int("bank", bank, 1)
        check_int("hidden", hidden, 1)
        self.num_classes, self.state_dim, self.static, self.gate = num_classes, state_dim, static, gate
        bank = 1 if static else bank
        generator = torch.Generator().manual_seed(seed)
        if not init_scale > 0:
            raise ValueError(f"init_scale={init_scale!r} is not allowed: it must be > 0")
        # Φ_0 = c·I: σ(c log p_y) has slope c·σ'(c log p_y) in log p_y, → c/4 for a confident example (CE: 1)
        if init_noise is None:
            # noise breaks the symmetry of several matrices read by learned attention; elsewhere it only hurts: a
            # negative off-diagonal entry rewards pushing p_j -> 0 without bound (Φ frozen at 4·I + 0.01 noise:
            # MNIST MLP test error 2.71 % against 1.73 % at 4·I, seed 0, 8000 steps)
            init_noise = 0.01 if bank > 1 and gate == "state" else 0.0
        eye = init_scale * torch.eye(num_classes).expand(bank, num_classes, num_classes)
        # drawn even at scale 0, so that the attention's weights, drawn next, do not depend on init_noise
        noise = torch.randn(bank, num_classes, num_classes, generator=generator)
        self.bank = nn.Parameter(eye + init_noise * noise)  # [M, C, C]
        self.bias = nn.Parameter(torch.zeros(num_classes)) if bias else None
        if static or gate == "progress":
            self.attend = None
        else:
            first = nn.Linear(state_dim, hidden)
            with torch.no_grad():
                first.weight.copy_(torch.randn(hidden, state_dim, generator=generator) / math.sqrt(state_dim))
                first.bias.zero_()
            last = nn.Linear(hidden, bank)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.attend = nn.Sequential(first, nn.Tanh(), last)

    @property
    def reads_dev_state(self) -> bool:
        """Whether Φ_t depends on the dev part of s_t: only the learned attention reads it (the progress gate reads
        t / horizon, a static teacher nothing), so only then must a student measure its dev accuracy for it."""
        return self.attend is not None

    def forward(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """state [S] -> (Φ [C, C], bias [C] or None, attention [M])."""
        if self.static:
            attention = torch.ones(1, device=self.bank.device, dtype=self.bank.dtype)
        elif self.attend is None:  # gate "progress": fixed hat functions of s_t[0] = t / horizon over the bank
            M = self.bank.shape[0]
            centres = torch.linspace(0, 1, M, device=self.bank.device, dtype=self.bank.dtype)
            progress = state[0].to(self.bank).clamp(0, 1)
            attention = (1 - (progress - centres).abs() * (M - 1)).clamp_min(0)
        else:
            attention = torch.softmax(self.attend(state.to(self.bank)), dim=-1)
        phi = torch.einsum("m,mij->ij", attention, self.bank)
        return phi, self.bias, attention


# ---------------------------------------------------------------- helpers

def _check_common(steps_name: str, steps: int, lr: float, momentum: float, batch_size: int, n: int) -> None:
    check_int(steps_name, steps, 1)
    check_int("batch_size", batch_size, 1, n)
    if not lr > 0:
        raise ValueError(f"lr={lr!r} is not allowed: it must be > 0")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum={momentum!r} is not allowed: it must be in [0, 1)")


def _check_pretrain_lr(pretrain_lr: float | None) -> None:
    if pretrain_lr is not None and not pretrain_lr > 0:
        raise ValueError(f"pretrain_lr={pretrain_lr!r} is not allowed: it must be > 0 (or None: the same as lr)")


def _dev_subset(splits: Splits, size: int) -> Split:
    check_int("dev_size", size, 1, len(splits.dev))
    return splits.dev[:size]


def _pretrain(model: nn.Module, splits: Splits, steps: int, stream, *, lr: float, momentum: float,
              optimizer: torch.optim.Optimizer | None = None) -> torch.optim.Optimizer:
    """`steps` cross-entropy SGD steps (the demo's pre-training); returns the optimizer (its momentum buffers)."""
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    model.train()
    for _ in range(steps):
        index = next(stream)
        loss = F.cross_entropy(model(splits.train.x[index]), splits.train.y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return optimizer


def _velocity_of(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in model.named_parameters():
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        out[name] = buf.detach().clone() if buf is not None else torch.zeros_like(p)
    return out


# ---------------------------------------------------------------- teacher training

def train_teacher(splits: Splits, *, model: str = "mlp", hidden: tuple[int, ...] = (500,), window: int = 25,
                  updates: int = 40, horizon: int = 1000, restart: bool = False, pretrain_steps: int = 200,
                  batch_size: int = 64, lr: float = 0.05, momentum: float = 0.9, teacher_lr: float = 0.02,
                  surrogate: str = "smooth_error", k: float = 50.0, dev_size: int = 1000, bank: int = 4,
                  static: bool = False, bias: bool = True, mode: str = "snapshot", seed: int = 0,
                  progress_bar: bool | None = None, alpha: float = 0.0, init_scale: float = 1.0,
                  teacher_optimizer: str = "adam", pretrain_lr: float | None = None,
                  keep_activations: bool = False, gate: str = "state") -> tuple[DLFTeacher, Trace]:
    """Train a DLF teacher by reverse-mode differentiation through windows of `window` student steps.

    After every window the teacher takes one step of `teacher_optimizer` ("adam", or "sgd" as the demo; lr
    `teacher_lr`) on the dev surrogate at the window's end, differentiated exactly through the window's
    SGD-with-momentum steps (`mode`: "snapshot" or "unroll"). The student's loss is α·CE + (1 − α)·l_{Φ_t}
    (alpha, `student_loss`; the demo's --combine_loss uses 0.5); Φ_0 ≈ init_scale·I. The CE pre-training
    uses `pretrain_lr` (None: lr), the windows use lr. keep_activations: snapshot mode keeps each step's
    forward graph instead of recomputing it in the reverse sweep (same numbers, faster, more memory).
    gate: "state" (learned attention on s_t) or "progress" (fixed hat functions of t / horizon; `DLFTeacher`).
    restart=False (the demo): the student continues from window to window and is re-initialised only when it
    has taken `horizon` steps. restart=True (the paper's Algorithm 1): every window starts a fresh student
    (after `pretrain_steps` CE steps); use window = horizon for the full-episode version.
    The student's data order comes from `labkit.data.batches(seed=...)`; student r (r = 0, 1, ...) uses seed
    `seed + r`. dev_size: the first examples of `splits.dev` used for the surrogate and the state's dev accuracy.

    Trace: arrays per student step "phi" [C, C], "attention" [M], "state" [4 + C] (step = student steps
    counted over the whole teacher training, CE pre-training excluded); scalars per window
    "dev_surrogate", "dev_acc" (at the window's end), "meta_grad_norm", "train_loss".
    """
    _check_common("window", window, lr, momentum, batch_size, len(splits.train))
    check_int("updates", updates, 1)
    check_int("horizon", horizon, window)
    check_int("pretrain_steps", pretrain_steps, 0)
    check_int("seed", seed, 0)
    _check_pretrain_lr(pretrain_lr)
    if mode not in meta.META_MODES:
        raise ValueError(f"mode={mode!r} is not allowed: choose one of {', '.join(meta.META_MODES)}")
    if teacher_optimizer not in ("adam", "sgd"):
        raise ValueError(f"teacher_optimizer={teacher_optimizer!r} is not allowed: choose 'adam' or 'sgd'")
    if not 0 <= alpha < 1:
        raise ValueError(f"alpha={alpha!r} is not allowed: it must be in [0, 1) (1 leaves nothing to teach)")
    surrogate_fn = _surrogate(surrogate)
    device = splits.device
    dev = _dev_subset(splits, dev_size)
    C = splits.num_classes
    config = dict(method="l2t-dlf", model=model, hidden=list(hidden), window=window, updates=updates,
                  horizon=horizon, restart=restart, pretrain_steps=pretrain_steps, batch_size=batch_size, lr=lr,
                  momentum=momentum, teacher_lr=teacher_lr, surrogate=surrogate, k=k, dev_size=dev_size,
                  bank=bank, static=static, bias=bias, mode=mode, seed=seed, dataset=splits.name,
                  device=str(device), alpha=alpha, init_scale=init_scale, teacher_optimizer=teacher_optimizer,
                  pretrain_lr=pretrain_lr, keep_activations=keep_activations, gate=gate)
    trace = Trace(config=config)
    teacher = untrained_teacher(splits, config)
    opt = (torch.optim.Adam(teacher.parameters(), lr=teacher_lr) if teacher_optimizer == "adam"
           else torch.optim.SGD(teacher.parameters(), lr=teacher_lr))
    meta_params = list(teacher.parameters())
    kwargs = dict(hidden=hidden) if model == "mlp" else {}

    student_runs = 0
    net = params = velocity = stream = state = None
    t_student = horizon  # forces a fresh student at the first window
    global_step = 0
    for update in progress(range(updates), total=updates, desc="teacher", enabled=progress_bar):
        if restart or t_student + window > horizon:
            s_seed = seed + student_runs
            student_runs += 1
            net = build(model, splits.in_shape, C, seed=s_seed, device=device, **kwargs)
            stream = batches(len(splits.train), batch_size, seed=s_seed, device=device)
            sgd = _pretrain(net, splits, pretrain_steps, stream, lr=pretrain_lr or lr, momentum=momentum)
            params, velocity = meta.params_of(net, requires_grad=False), _velocity_of(net, sgd)
            state, t_student = StudentState(C, horizon), 0
            with torch.no_grad():
                state.refresh_dev(functional_call(net, params, (dev.x,)), dev.y)
        window_batches = [(splits.train.x[i], splits.train.y[i]) for i in (next(stream) for _ in range(window))]
        states: list[torch.Tensor] = []
        t0 = t_student

        def loss_fn(logits: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
            # s_t is an input, not a function of θ: it is computed once per step (the first call) and reused
            # by the reverse sweep, which calls this again for the same step.
            if step == len(states):
                states.append(state.features(t0 + step).to(device))
                state.observe(logits.detach(), y)
            phi, b, attention = teacher(states[step])
            if len(trace.arrays.get("phi", {}).get("step", [])) <= global_step + step:
                trace.log_array(global_step + step, phi=phi.detach(), attention=attention.detach(),
                                state=states[step])
            return student_loss(logits, y, phi, b, alpha)

        dev_logits: list[torch.Tensor] = []

        def dev_fn(w: dict[str, torch.Tensor]) -> torch.Tensor:
            logits = functional_call(net, w, (dev.x,))
            dev_logits.append(logits.detach())  # the window's one dev pass: also its dev accuracy and the next s_t
            return surrogate_fn(logits, dev.y, k)

        grads, params, velocity, dev_value, losses = meta.sgd_meta_grad(
            net, params, window_batches, loss_fn, meta_params, dev_fn, lr=lr, momentum=momentum,
            velocity=velocity, mode=mode, keep_activations=keep_activations and mode == "snapshot")
        opt.zero_grad(set_to_none=True)
        for p, g in zip(meta_params, grads):
            p.grad = g
        opt.step()
        t_student += window
        global_step += window
        dev_acc = (dev_logits[-1].argmax(1) == dev.y).float().mean().item()
        state.refresh_dev(dev_logits[-1], dev.y)  # the next window starts where this one ended
        trace.log(global_step, dev_surrogate=dev_value, dev_acc=dev_acc, train_loss=float(np.mean(losses)),
                  meta_grad_norm=float(torch.sqrt(sum((g ** 2).sum() for g in grads))))
        if not math.isfinite(dev_value):
            trace.note(f"teacher update {update}: the dev surrogate is {dev_value}; stopped")
            break
    trace.metrics.update(teacher_updates=updates, student_runs=student_runs,
                         final_dev_surrogate=trace.last("dev_surrogate"), final_dev_acc=trace.last("dev_acc"))
    return teacher, trace


# ---------------------------------------------------------------- deployment and the CE baseline

def _train_student(splits: Splits, teacher: DLFTeacher | None, *, model: str, hidden: tuple[int, ...],
                   steps: int, pretrain_steps: int, batch_size: int, lr: float, momentum: float, seed: int,
                   refresh_every: int, dev_size: int, eval_every: int, record: bool,
                   progress_bar: bool | None, alpha: float = 0.0, pretrain_lr: float | None = None) -> Trace:
    """One student: `pretrain_steps` CE steps (lr `pretrain_lr`, None: lr), then `steps` steps (lr `lr`) on CE
    (teacher None) or on α·CE + (1 − α)·l_{Φ_t}."""
    _check_common("steps", steps, lr, momentum, batch_size, len(splits.train))
    check_int("pretrain_steps", pretrain_steps, 0)
    check_int("refresh_every", refresh_every, 1)
    check_int("seed", seed, 0)
    _check_pretrain_lr(pretrain_lr)
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha!r} is not allowed: it must be in [0, 1]")
    device, C = splits.device, splits.num_classes
    dev = _dev_subset(splits, dev_size)
    kwargs = dict(hidden=hidden) if model == "mlp" else {}
    net = build(model, splits.in_shape, C, seed=seed, device=device, **kwargs)
    stream = batches(len(splits.train), batch_size, seed=seed, device=device)
    method = "ce" if teacher is None else "l2t-dlf"
    trace = Trace(config=dict(method=method, model=model, steps=steps, pretrain_steps=pretrain_steps,
                              batch_size=batch_size, lr=lr, momentum=momentum, seed=seed, dataset=splits.name,
                              refresh_every=refresh_every, dev_size=dev_size, device=str(device),
                              pretrain_lr=pretrain_lr))
    if teacher is not None:
        trace.config["alpha"] = alpha
    sgd = _pretrain(net, splits, pretrain_steps, stream, lr=pretrain_lr or lr, momentum=momentum)
    for group in sgd.param_groups:  # the method's own (dev-tuned) lr after the shared pre-training
        group["lr"] = lr
    state = StudentState(C, steps)
    losses = torch.zeros(steps, device=device)
    for t in progress(range(steps), total=steps, desc=method, enabled=progress_bar):
        if teacher is not None and teacher.reads_dev_state and t % refresh_every == 0:
            with torch.no_grad():
                net.eval()
                state.refresh_dev(net(dev.x), dev.y)
                net.train()
        index = next(stream)
        x, y = splits.train.x[index], splits.train.y[index]
        logits = net(x)
        if teacher is None:
            loss = F.cross_entropy(logits, y)
        else:
            s = state.features(t).to(device)
            with torch.no_grad():
                phi, b, attention = teacher(s)
            if record:
                trace.log_array(t, phi=phi, attention=attention, state=s)
            state.observe(logits.detach(), y)
            loss = student_loss(logits, y, phi, b, alpha)
        sgd.zero_grad(set_to_none=True)
        loss.backward()
        sgd.step()
        losses[t] = loss.detach()
        done = t + 1
        if eval_every and (done % eval_every == 0 or done == steps):
            d = evaluate(net, splits.dev)
            trace.log(done, dev_acc=d["acc"], dev_loss=d["loss"])
            if record:
                trace.log_array(done, confusion=confusion(net, splits.dev, C))
    trace.log_series("loss", range(1, steps + 1), losses)
    test = evaluate(net, splits.test)
    trace.metrics.update(test_acc=test["acc"], test_err=100 * (1 - test["acc"]), test_loss=test["loss"],
                         dev_acc=evaluate(net, splits.dev)["acc"], steps=steps + pretrain_steps)
    return trace


def deploy(teacher: DLFTeacher, splits: Splits, *, model: str = "mlp", hidden: tuple[int, ...] = (500,),
           steps: int = 1000, pretrain_steps: int = 200, batch_size: int = 64, lr: float = 0.05,
           momentum: float = 0.9, seed: int = 0, refresh_every: int = 25, dev_size: int = 1000,
           eval_every: int = 100, record: bool = True, progress_bar: bool | None = None,
           alpha: float = 0.0, pretrain_lr: float | None = None) -> Trace:
    """Train a fresh student (seed `seed`) with the frozen teacher: `pretrain_steps` CE steps, then `steps`
    steps of SGD with momentum on α·CE + (1 − α)·l_{Φ_t}, Φ_t = teacher(s_t) (alpha: use the teacher's;
    the pre-training runs at `pretrain_lr`, None: lr); for a teacher that reads it (`reads_dev_state`), the dev
    part of s_t is refreshed every `refresh_every` steps on the first `dev_size` dev examples (as in teacher
    training); otherwise it is never measured and stays at its start, 1 / C.
    Trace: per step "phi" [C, C], "attention" [M], "state" [4 + C] (record=True); per `eval_every` steps
    "dev_acc", "dev_loss" and the dev confusion matrix "confusion" [C, C]; metrics test_err (%), test_acc."""
    if not isinstance(teacher, DLFTeacher):
        raise ValueError(f"teacher={type(teacher).__name__} is not allowed: pass a DLFTeacher")
    teacher.eval()
    return _train_student(splits, teacher, model=model, hidden=hidden, steps=steps, pretrain_steps=pretrain_steps,
                          batch_size=batch_size, lr=lr, momentum=momentum, seed=seed, refresh_every=refresh_every,
                          dev_size=dev_size, eval_every=eval_every, record=record, progress_bar=progress_bar,
                          alpha=alpha, pretrain_lr=pretrain_lr)


def train_ce(splits: Splits, *, model: str = "mlp", hidden: tuple[int, ...] = (500,), steps: int = 1000,
             pretrain_steps: int = 200, batch_size: int = 64, lr: float = 0.05, momentum: float = 0.9,
             seed: int = 0, dev_size: int = 1000, eval_every: int = 100, record: bool = True,
             progress_bar: bool | None = None, pretrain_lr: float | None = None) -> Trace:
    """The cross-entropy baseline: the same model, steps (pre-training included), optimizer, data order and
    seed as `deploy`, trained on cross-entropy throughout (pre-training at `pretrain_lr`, None: lr)."""
    return _train_student(splits, None, model=model, hidden=hidden, steps=steps, pretrain_steps=pretrain_steps,
                          batch_size=batch_size, lr=lr, momentum=momentum, seed=seed, refresh_every=1,
                          dev_size=dev_size, eval_every=eval_every, record=record, progress_bar=progress_bar,
                          pretrain_lr=pretrain_lr)


def _ce_kwargs(kwargs: dict) -> dict:
    """deploy's kwargs as train_ce takes them: without the loss mixture and the state refresh."""
    return {k: v for k, v in kwargs.items() if k not in ("alpha", "refresh_every")}


def compare(teacher: DLFTeacher, splits: Splits, seeds: list[int], *, with_ce: bool = True,
            ce_lr: float | None = None, **kwargs) -> dict:
    """Deploy the teacher and (with_ce) train the CE baseline for every seed (same kwargs for both, except
    `alpha`, DLF only, and the CE student's learning rate `ce_lr` if given: each method at its own dev-tuned lr).

    Returns {"seeds", "ce_test_err" [per seed, %], "dlf_test_err" [per seed, %], "ce_traces", "dlf_traces"}
    ("ce_*" empty when with_ce=False); only the first seed's traces record per-step arrays (memory)."""
    if not seeds:
        raise ValueError(f"seeds={seeds!r} is not allowed: give at least one seed")
    out = dict(seeds=list(seeds), ce_test_err=[], dlf_test_err=[], ce_traces=[], dlf_traces=[])
    for i, s in enumerate(seeds):
        record = i == 0
        if with_ce:
            ce_kw = _ce_kwargs(kwargs)
            if ce_lr is not None:
                ce_kw["lr"] = ce_lr
            ce = train_ce(splits, seed=s, record=record, **ce_kw)
            out["ce_test_err"].append(ce.metrics["test_err"])
            out["ce_traces"].append(ce)
        dlf = deploy(teacher, splits, seed=s, record=record, **kwargs)
        out["dlf_test_err"].append(dlf.metrics["test_err"])
        out["dlf_traces"].append(dlf)
    return out


def lr_sweep(splits: Splits, lrs: list[float], *, teacher: DLFTeacher | None = None,
             seeds: list[int] | tuple[int, ...] = (0,), **kwargs) -> dict[float, float]:
    """Mean dev accuracy (the whole dev split, never test) over one student per seed, for every learning rate:
    CE (teacher None) or the loss of a frozen `teacher` (e.g. `untrained_teacher`, "fixed Φ_0"). kwargs: deploy's
    (train_ce's for CE; alpha and refresh_every are dropped there). Give every method the same rates and seeds:
    equal tuning. Tune on seeds that are not the reported ones, and on several: one student's dev accuracy
    moves by ±0.1 points from seed to seed (MNIST MLP), as much as the gaps between neighbouring rates."""
    if not lrs:
        raise ValueError(f"lrs={lrs!r} is not allowed: give at least one learning rate")
    if not seeds:
        raise ValueError(f"seeds={seeds!r} is not allowed: give at least one seed")
    out = {}
    for lr in lrs:
        accs = []
        for seed in seeds:
            kw = dict(kwargs, lr=lr, seed=seed, record=False, eval_every=0, progress_bar=False)
            trace = train_ce(splits, **_ce_kwargs(kw)) if teacher is None else deploy(teacher, splits, **kw)
            accs.append(float(trace.metrics["dev_acc"]))
        out[float(lr)] = float(np.mean(accs))
    return out


TEACHER_ARGS = ("bank", "bias", "static", "init_scale", "seed", "gate")  # train_teacher's arguments of DLFTeacher


def untrained_teacher(splits: Splits, config: dict | None = None, **kwargs) -> DLFTeacher:
    """The teacher before any update (Φ ≈ c·I, zero bias): the ablation that separates the loss family from
    what the teacher learned. config: `train_teacher`'s kwargs or its Trace's config, whose DLFTeacher arguments
    (`TEACHER_ARGS`) are used, so that "fixed Φ_0" is exactly that teacher's starting point; kwargs: DLFTeacher's
    (bank, static, bias, init_scale, seed, gate), given directly or overriding config's."""
    kwargs = {k: config[k] for k in TEACHER_ARGS if k in (config or {})} | kwargs
    return DLFTeacher(splits.num_classes, 4 + splits.num_classes, **kwargs).to(splits.device)


def summarize(result: dict) -> dict:
    """Flat metrics from `compare`'s result: ce_/dlf_test_err _mean, _std (population std, %), per-seed lists."""
    ce, dl = np.asarray(result["ce_test_err"]), np.asarray(result["dlf_test_err"])
    return dict(ce_test_err_mean=float(ce.mean()), ce_test_err_std=float(ce.std()),
                dlf_test_err_mean=float(dl.mean()), dlf_test_err_std=float(dl.std()),
                ce_test_err=ce.tolist(), dlf_test_err=dl.tolist(), seeds=list(result["seeds"]),
                dlf_minus_ce_mean=float((dl - ce).mean()))


def phi_pair_changes(phi: np.ndarray, classes: list[str] | tuple[str, ...], top: int = 5,
                     early: float = 0.1) -> dict[str, list[tuple[str, str, float]]]:
    """The off-diagonal entries of Φ whose value rises or falls most between the start and the end of training.

    phi [T, C, C]; start = mean over the first `early` fraction of steps, end = mean over the last one.
    Returns {"rise": [(row class y, column class j, change), ...], "fall": [...]}, `top` each, largest first.
    Entry (y, j) weighs log p_j in the loss of an example of class y: positive rewards probability on j
    (similarity), negative penalises it (discrimination)."""
    phi = np.asarray(phi, dtype=float)
    if phi.ndim != 3 or phi.shape[1] != phi.shape[2] or phi.shape[1] != len(classes):
        raise ValueError(f"phi must be [T, C, C] with C = len(classes) = {len(classes)}; got {phi.shape}")
    n = max(1, int(round(early * len(phi))))
    delta = phi[-n:].mean(0) - phi[:n].mean(0)
    C = len(classes)
    pairs = [(classes[i], classes[j], float(delta[i, j])) for i in range(C) for j in range(C) if i != j]
    pairs.sort(key=lambda p: p[2])
    return {"rise": pairs[::-1][:top], "fall": pairs[:top]}


def phi_dynamics(phi: np.ndarray, phi0: np.ndarray | None = None) -> dict[str, float]:
    """How much Φ_t changes over a run, and how far it is from where the teacher started.

    phi [T, C, C]; phi0 [C, C] the untrained teacher's Φ (None: skip "static_shift").
    Returns {"dynamic_range": max over entries of (max_t − min_t) Φ_t[y, j] (how much the scrubber can show),
    "dynamic_rms": RMS over t and entries of Φ_t − mean_t Φ_t, "static_shift": max |mean_t Φ_t − Φ_0| (what
    the teacher learned that does not depend on t), "diag_mean": mean diagonal of mean_t Φ_t}."""
    phi = np.asarray(phi, dtype=float)
    if phi.ndim != 3 or phi.shape[1] != phi.shape[2]:
        raise ValueError(f"phi must be [T, C, C]; got {phi.shape}")
    mean = phi.mean(0)
    out = dict(dynamic_range=float((phi.max(0) - phi.min(0)).max()),
               dynamic_rms=float(np.sqrt(((phi - mean) ** 2).mean())), diag_mean=float(np.diag(mean).mean()))
    if phi0 is not None:
        out["static_shift"] = float(np.abs(mean - np.asarray(phi0, dtype=float)).max())
    return out


def combined_trace(teacher_trace: Trace, deploy_trace: Trace) -> Trace:
    """One Trace for a notebook to save: the deployed student's per-step arrays ("phi", "attention", "state",
    "confusion"), scalars and metrics, plus the teacher training's per-window scalars renamed "teacher_<name>"
    and its config under config["teacher"]."""
    out = Trace(config=dict(deploy_trace.config, teacher=teacher_trace.config),
                scalars=dict(deploy_trace.scalars), arrays=dict(deploy_trace.arrays),
                metrics=dict(deploy_trace.metrics), messages=teacher_trace.messages + deploy_trace.messages)
    for name, series in teacher_trace.scalars.items():
        out.scalars[f"teacher_{name}"] = series
    return out


# ---------------------------------------------------------------- presets (the notebook's settings)

def _student(model: str, *, hidden=(500,), batch_size=64, lr=0.05, momentum=0.9, pretrain_steps=200, steps=2000,
             window=25, updates=80, teacher_lr=0.005, dev_size=1000, refresh_every=None, eval_every=None,
             alpha=0.0, init_scale=1.0, pretrain_lr=None, ce_lr=None, keep_activations=False,
             lr_grid=None, ce_lr_grid=None, gate="state", teacher_optimizer="adam", static=False) -> dict:
    """A preset's student: "teacher" (train_teacher kwargs), "run" (deploy kwargs; compare's for CE minus alpha),
    "ce_lr" (the CE student's own lr; None: lr), and the dev grids ("lr_grid", "ce_lr_grid") the notebook's
    `tune = True` sweeps."""
    ce_lr = lr if ce_lr is None else ce_lr
    shared = dict(model=model, hidden=tuple(hidden), batch_size=batch_size, lr=lr, momentum=momentum,
                  pretrain_steps=pretrain_steps, dev_size=dev_size, alpha=alpha, pretrain_lr=pretrain_lr)
    return dict(teacher=dict(shared, window=window, updates=updates, horizon=steps, teacher_lr=teacher_lr,
                             init_scale=init_scale, keep_activations=keep_activations, gate=gate,
                             teacher_optimizer=teacher_optimizer, static=static),
                run=dict(shared, steps=steps, refresh_every=refresh_every or window,
                         eval_every=eval_every or max(steps // 10, 1)),
                ce_lr=ce_lr, lr_grid=list(lr_grid or [lr]), ce_lr_grid=list(ce_lr_grid or [ce_lr]))


PRESETS: dict[str, dict] = {
    # CI: a tiny MLP on 2 000 MNIST images; checks that everything runs, proves nothing
    "smoke": dict(dataset="mnist", load=dict(dev_size=300, train_size=2000), seeds=[0, 1, 2], tune_seeds=[100],
                  students={"mlp": _student("mlp", hidden=(32,), pretrain_steps=20, steps=40, window=10, updates=4,
                                            dev_size=200, eval_every=20, alpha=0.5, init_scale=4.0,
                                            pretrain_lr=0.05, lr=0.02, ce_lr=0.02, teacher_lr=0.01,
                                            teacher_optimizer="sgd", gate="progress", keep_activations=True,
                                            lr_grid=[0.02, 0.05], ce_lr_grid=[0.02, 0.05])},
                  note="smoke: MLP 784-32-10 on 2k images, 4 teacher updates of K = 10; for CI only"),
    # the teaching default: the MNIST MLP 784-500-10 (headline), then the demo's LeNet, reduced. As the demo:
    # CE pre-training (shared by every method), --combine_loss α = 0.5, plain SGD lr 0.01 on the teacher;
    # Φ_0 = 4·I (slope up to 1, as CE's, on confident examples); one learned Φ (the demo without --dynamic; tied
    # first on dev among the teacher families tried, see the notebook; static=False in the notebook: progress gate);
    # the student lrs after pre-training tuned on dev, 6 rates per method, mean dev accuracy over the 5 tune_seeds
    # (not the reported seeds; see the notebook)
    # the teacher's surrogate and the student's state read the whole dev split (5000), as the demo's measure reads its
    # whole validation set (with the first 1000, the trained teacher lost to its own start on test; see the notebook)
    "cpu": dict(dataset="mnist", load=dict(dev_size=5000), seeds=[0, 1, 2], tune_seeds=[100, 101, 102, 103, 104],
                students={"mlp": _student("mlp", pretrain_steps=1000, pretrain_lr=0.05, steps=1500, lr=0.02,
                                          ce_lr=0.01, alpha=0.5, init_scale=4.0, window=25, updates=60, dev_size=5000,
                                          teacher_lr=0.01, teacher_optimizer="sgd", static=True,
                                          gate="progress", keep_activations=True,
                                          lr_grid=[0.005, 0.01, 0.02, 0.05, 0.1, 0.2],
                                          ce_lr_grid=[0.0025, 0.005, 0.01, 0.02, 0.05, 0.1]),
                          "lenet": _student("lenet", pretrain_steps=300, pretrain_lr=0.05, steps=300, lr=0.02,
                                            ce_lr=0.01, alpha=0.5, init_scale=4.0, window=20, updates=15, dev_size=5000,
                                            teacher_lr=0.01, teacher_optimizer="sgd", static=True,
                                            gate="progress", keep_activations=True, eval_every=150)},
                note="cpu: MNIST MLP 784-500-10 (1000 CE pre-training steps, then 1500 steps; K = 25 windows, "
                     "truncated as in the demo; dev-tuned lrs), then LeNet, reduced, with the MLP's settings"),
    # the paper's setting on a GPU: CIFAR-10 ResNets (needs the CIFAR-10 files under LABKIT_DATA)
    "paper": dict(dataset="cifar10", load=dict(dev_size=5000), seeds=[0, 1, 2, 3, 4], tune_seeds=[100, 101, 102],
                  students={m: _student(m, batch_size=128, lr=0.1, pretrain_steps=1000, steps=64_000, window=50,
                                        updates=400, teacher_lr=0.001, dev_size=2000, eval_every=2000)
                            for m in ("resnet8", "resnet20", "resnet32")},
                  note="paper: CIFAR-10 ResNet-8/20/32, SGD 0.1 momentum 0.9, 64k steps; GPU"),
}
