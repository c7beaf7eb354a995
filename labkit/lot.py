"""LoT: Learning from Teaching regularization (Jin & Che et al., arXiv 2402.02769 v1, 2024).

The hypothesis: correlations that generalise are easy to imitate; spurious ones are not. So the model we
deploy (the *teacher*) is trained on its task loss plus alpha times how badly *students* imitate it:

    teacher:     CE(t, y) + alpha * mean_i KL_T(s_i.detach() || t)        (no meta-gradient: students are detached)
    student i:   CE(s_i, y) + alpha * KL_T(t.detach() || s_i)             (loss="kl_ce", the official default)
                 KL_T(t.detach() || s_i)                                    (loss="kl")

where KL_T(q || p) = T^2 * KL(softmax(q/T) || softmax(p/T)), batch mean (the official `kl_div_logits`).

Step structure, as in the official code (`trainer/image_classification.py`, `trainer/lstm_ptb.py`):
one *joint* step (teacher and every student forward on the same fresh batch; the teacher steps on its loss,
each student steps on its loss with the teacher detached), then N-1 student-only steps per student, each on
the next batch of that student's own shuffled stream (for text: the next window of its own walk through the
training stream) with the teacher's targets computed without gradient. So each teacher step is followed by
N student steps, and a LoT step costs about (1 + N) plain steps (measured in `benchmarks/bench_lot.py`).

Choices that are ours (the official code differs or is silent), each for a reason:
- Teacher targets in the N-1 extra steps come from the teacher in eval mode: its BatchNorm statistics and
  dropout stream are then untouched by its imitators, so with alpha = 0 the teacher is *exactly* the
  teacher-only model (bit for bit on the CPU; `tests/test_lot.py` checks it).
- Students draw dropout noise from their own seeded RNG stream, for the same reason.
- The students' learning-rate schedule runs over their own N * steps steps (the official code, before commit
  a865b5c, stepped the teacher's scheduler twice and never decayed the students').
- Imitability of the teacher-only baseline (`train_teacher_only(..., num_students=K)`): students imitate the
  *co-evolving* teacher-only model exactly as LoT's students imitate the LoT teacher (same N, T, loss, weight,
  seeds, batches); they simply do not feed back (teacher alpha = 0). This measures both teachers with the
  same protocol as the paper's Figure 1 (students trained in the loop), and the only difference left is
  the feedback.
- Reported accuracies are the final-step test numbers (no best-epoch selection on the test set).

Public API: `kl_div_logits`, `train_lot`, `train_teacher_only` (vision, `Splits`), `train_lot_lm`,
`train_teacher_only_lm` (language modelling, `TextSplits`), each returning a `LoTResult(teacher, students, trace)`.
Trace scalars: "teacher_loss" (the objective it minimises), "teacher_ce", "teacher_kl" (per step);
"student_loss/<i>", "kl_batch/<i>" (per step, mean over the student's N steps, on its training batches);
"kl_train/<i>", "kl_test/<i>" (imitation KL at temperature T on fixed probe sets of training and test data,
eval mode, at each evaluation); "test_acc" or "test_ppl" (the teacher, at each evaluation); "lr".
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import Splits, TextSplits, check_int, augment_batch, batches, batchify
from .models import build
from .trace import Trace
from .train import evaluate, make_schedule, predict, progress, seed_everything

LOSSES = ("kl_ce", "kl")


# ---------------------------------------------------------------------------------------------- the KL term

def kl_div_logits(p_logits: torch.Tensor, q_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(q/T) || softmax(p/T)), mean over rows; the gradient flows into `p_logits` only
    if `q_logits` is detached by the caller. p, q: [..., C] (leading dims are flattened into rows)."""
    p = F.log_softmax(p_logits.reshape(-1, p_logits.shape[-1]) / temperature, dim=-1)
    q = F.log_softmax(q_logits.reshape(-1, q_logits.shape[-1]) / temperature, dim=-1)
    return F.kl_div(p, q, reduction="batchmean", log_target=True) * temperature ** 2


def check_params(*, alpha: float, student_steps: int, temperature: float, num_students: int, loss: str,
                 student_alpha: float | None = None, allow_zero_students: bool = False) -> None:
    """Raise ValueError naming the bad parameter (alpha < 0, N < 1, T <= 0, no students, unknown loss)."""
    for name, value in (("alpha", alpha), ("student_alpha", student_alpha)):
        if value is None and name == "student_alpha":
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}={value!r} is not allowed: it must be a finite number >= 0")
    check_int("student_steps", student_steps, 1)
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not math.isfinite(temperature) \
            or temperature <= 0:
        raise ValueError(f"temperature={temperature!r} is not allowed: it must be a finite number > 0")
    if isinstance(num_students, int) and not isinstance(num_students, bool) and num_students == 0 \
            and not allow_zero_students:
        raise ValueError("num_students=0 is not allowed: LoT needs at least one student (an integer >= 1); "
                         "for the teacher-only baseline call train_teacher_only")
    check_int("num_students", num_students, 0 if allow_zero_students else 1)
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is not allowed: choose one of {', '.join(LOSSES)}")


@dataclass
class LoTResult:
    """The deployed model (`teacher`), its `students` (empty for a plain teacher-only run) and the `trace`."""

    teacher: nn.Module
    students: list[nn.Module] = field(default_factory=list)
    trace: Trace = field(default_factory=Trace)


class _RngSlot:
    """A private, seeded torch RNG stream (CPU and the current CUDA device). Code inside `with slot:` draws
    its dropout noise from it and leaves the caller's stream exactly as it was."""

    def __init__(self, seed: int, device: torch.device):
        self.cuda = device.type == "cuda"
        with torch.random.fork_rng(devices=[device] if self.cuda else []):
            torch.manual_seed(seed)
            self.state = (torch.get_rng_state(), torch.cuda.get_rng_state(device) if self.cuda else None)
        self.device = device

    def __enter__(self):
        self.outer = (torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if self.cuda else None)
        torch.set_rng_state(self.state[0])
        if self.cuda:
            torch.cuda.set_rng_state(self.state[1], self.device)

    def __exit__(self, *exc):
        self.state = (torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if self.cuda else None)
        torch.set_rng_state(self.outer[0])
        if self.cuda:
            torch.cuda.set_rng_state(self.outer[1], self.device)


def _rng_slot(model: nn.Module, seed: int, device: torch.device):
    """A private RNG stream for a model that draws random numbers in its forward (dropout); none otherwise
    (swapping RNG states every step costs time for nothing)."""
    random = any((isinstance(m, nn.Dropout) and m.p > 0) or (isinstance(m, nn.RNNBase) and m.dropout > 0)
                 for m in model.modules())
    return _RngSlot(seed, device) if random else contextlib.nullcontext()


def _sgd(model: nn.Module, lr: float, momentum: float, weight_decay: float, nesterov: bool):
    if lr <= 0:
        raise ValueError(f"lr={lr!r} is not allowed: it must be > 0")
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=nesterov and momentum > 0)


def _sgd_step(model: nn.Module, opt, sched, objective: torch.Tensor, clip: float | None = None) -> None:
    """One optimiser step on `objective` (gradient norm clipped to `clip` if given), then one schedule step."""
    opt.zero_grad(set_to_none=True)
    objective.backward()
    if clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    sched.step()


class _PerStep:
    """What a run records at every teacher step, kept on the device until the run ends (no sync per step):
    the teacher's objective, CE and imitability KL [steps]; each student's objective and imitation KL
    [num_students, steps], averaged over its N steps within that teacher step."""

    def __init__(self, steps: int, num_students: int, student_steps: int, device: torch.device):
        self.t_loss, self.t_ce, self.t_kl = (torch.zeros(steps, device=device) for _ in range(3))
        self.s_loss = torch.zeros(num_students, steps, device=device)
        self.s_kl = torch.zeros(num_students, steps, device=device)
        self.student_steps = student_steps

    def student(self, i: int, step: int, objective: torch.Tensor, kl: torch.Tensor) -> None:
        self.s_loss[i, step] += objective.detach() / self.student_steps
        self.s_kl[i, step] += kl.detach() / self.student_steps


def _student_objective(s_logits, t_logits, y_loss, loss: str, weight: float, temperature: float):
    """(loss to minimise, its KL part) for one student step; t_logits is already detached."""
    kl = kl_div_logits(s_logits, t_logits, temperature)
    if loss == "kl":
        return kl, kl
    return y_loss + weight * kl, kl


# ---------------------------------------------------------------------------------------------- vision

def train_lot(splits: Splits, *, model: str = "mlp", student_model: str | None = None, num_students: int = 1,
              alpha: float = 0.5, student_steps: int = 2, temperature: float = 1.5, loss: str = "kl_ce",
              student_alpha: float | None = None, steps: int = 1000, batch_size: int = 128, lr: float = 0.1,
              student_lr: float | None = None, momentum: float = 0.9, weight_decay: float = 0.0,
              nesterov: bool = False, schedule: str = "cosine", seed: int = 0, eval_every: int | None = None,
              probe_size: int = 2000, model_kwargs: dict | None = None,
              progress_bar: bool | None = None) -> LoTResult:
    """Train a LoT teacher (the deployed model) with `num_students` students on `splits.train`.

    model / student_model: names for `labkit.models.build` (student_model defaults to model; e.g.
    "preresnet20" / "preresnet56" for the v1 depth pairs). alpha: weight of the teacher's imitability
    regulariser; student_alpha: weight of the students' KL in "kl_ce" (default alpha, as in the official code).
    student_steps: N, student steps per teacher step. temperature: T. steps: teacher steps.
    Optimiser (teacher and students alike): SGD(lr, momentum, weight_decay, nesterov) with `schedule` over
    the model's own number of steps. eval_every: teacher steps between evaluations (default: 10 per run;
    0: only at the end). probe_size: examples of train and of test on which imitation KL is measured.
    Seeds: teacher weights and batch order `seed`; student i weights seed + 1 + i, its own batch order.
    """
    check_params(alpha=alpha, student_steps=student_steps, temperature=temperature, num_students=num_students,
                 loss=loss, student_alpha=student_alpha)
    return _run_vision(splits, model, student_model or model, num_students, alpha,
                       alpha if student_alpha is None else student_alpha, student_steps, temperature, loss,
                       steps, batch_size, lr, student_lr or lr, momentum, weight_decay, nesterov, schedule, seed,
                       eval_every, probe_size, model_kwargs or {}, progress_bar, method="lot")


def train_teacher_only(splits: Splits, *, model: str = "mlp", student_model: str | None = None,
                       num_students: int = 0, student_alpha: float = 0.5, student_steps: int = 2,
                       temperature: float = 1.5, loss: str = "kl_ce", steps: int = 1000, batch_size: int = 128,
                       lr: float = 0.1, student_lr: float | None = None, momentum: float = 0.9,
                       weight_decay: float = 0.0, nesterov: bool = False, schedule: str = "cosine", seed: int = 0,
                       eval_every: int | None = None, probe_size: int = 2000, model_kwargs: dict | None = None,
                       progress_bar: bool | None = None) -> LoTResult:
    """The teacher-only baseline: same architecture, optimiser, schedule, batch order and seeds as
    `train_lot`, trained on its task loss alone (alpha = 0).

    num_students = 0: a plain run. num_students = K > 0: K students also imitate the co-evolving teacher-only
    model exactly as LoT's students do (weight `student_alpha`, N = student_steps, T, loss), without feeding
    back; the teacher is then bit-for-bit the plain run's, and the students measure its imitability.
    """
    check_params(alpha=0.0, student_steps=student_steps, temperature=temperature, num_students=num_students,
                 loss=loss, student_alpha=student_alpha, allow_zero_students=True)
    return _run_vision(splits, model, student_model or model, num_students, 0.0, student_alpha, student_steps,
                       temperature, loss, steps, batch_size, lr, student_lr or lr, momentum, weight_decay, nesterov,
                       schedule, seed, eval_every, probe_size, model_kwargs or {}, progress_bar,
                       method="teacher_only")


def _probe_kls(teacher: nn.Module, students: list[nn.Module], x: torch.Tensor, temperature: float) -> list[float]:
    """Imitation KL of each student on inputs x [P, ...], both models in eval mode."""
    t = predict(teacher, x)
    return [kl_div_logits(predict(s, x), t, temperature).item() for s in students]


def _run_vision(splits, model, student_model, num_students, alpha, student_alpha, student_steps, temperature, loss,
                steps, batch_size, lr, student_lr, momentum, weight_decay, nesterov, schedule, seed, eval_every,
                probe_size, model_kwargs, progress_bar, method) -> LoTResult:
    check_int("steps", steps, 1)
    check_int("seed", seed, 0)
    check_int("batch_size", batch_size, 1, len(splits.train))
    check_int("probe_size", probe_size, 1)
    eval_every = max(steps // 10, 1) if eval_every is None else eval_every
    check_int("eval_every", eval_every, 0)
    device, n = splits.device, len(splits.train)
    seed_everything(seed)
    teacher = build(model, splits.in_shape, splits.num_classes, seed=seed, device=device, **model_kwargs).train()
    students = [build(student_model, splits.in_shape, splits.num_classes, seed=seed + 1 + i, device=device,
                      **model_kwargs).train() for i in range(num_students)]
    t_opt = _sgd(teacher, lr, momentum, weight_decay, nesterov)
    t_sched = make_schedule(t_opt, schedule, steps)
    s_opts = [_sgd(s, student_lr, momentum, weight_decay, nesterov) for s in students]
    s_scheds = [make_schedule(o, schedule, steps * student_steps) for o in s_opts]
    t_stream = batches(n, batch_size, seed=seed, device=device)
    s_streams = [batches(n, batch_size, seed=seed + 7919 * (i + 1), device=device) for i in range(num_students)]
    slots = [_rng_slot(s, seed + 1 + i, device) for i, s in enumerate(students)]
    t_gen = torch.Generator(device=device) if splits.augment else None
    s_gens = [torch.Generator(device=device) if splits.augment else None for _ in students]
    probe = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:probe_size].to(device)
    x_probe_train, x_probe_test = splits.train.x[probe], splits.test.x[:probe_size]

    trace = Trace(config=dict(method=method, dataset=splits.name, model=model, student_model=student_model,
                              num_students=num_students, alpha=alpha, student_alpha=student_alpha,
                              student_steps=student_steps, temperature=temperature, loss=loss, steps=steps,
                              batch_size=batch_size, lr=lr, student_lr=student_lr, momentum=momentum,
                              weight_decay=weight_decay, nesterov=nesterov, schedule=schedule, seed=seed,
                              probe_size=probe_size, device=str(device)))
    record = _PerStep(steps, num_students, student_steps, device)

    def evaluate_all(step: int) -> None:
        test = evaluate(teacher, splits.test)
        trace.log(step, test_acc=test["acc"], test_loss=test["loss"], lr=t_sched.get_last_lr()[0])
        for i, (ktr, kte) in enumerate(zip(_probe_kls(teacher, students, x_probe_train, temperature),
                                           _probe_kls(teacher, students, x_probe_test, temperature))):
            trace.log(step, **{f"kl_train/{i}": ktr, f"kl_test/{i}": kte})

    if eval_every:
        evaluate_all(0)
    for step in progress(range(steps), total=steps, desc=method, enabled=progress_bar):
        # --- the joint step: teacher and students see the same batch
        index = next(t_stream)
        x, y = splits.train.x[index], splits.train.y[index]
        if t_gen is not None:
            t_gen.manual_seed(seed * 100_003 + step)
            x = augment_batch(x, t_gen)
        t_logits = teacher(x)
        s_logits = []
        for s, slot in zip(students, slots):
            with slot:
                s_logits.append(s(x))
        ce = F.cross_entropy(t_logits, y)
        objective = _teacher_objective(ce, t_logits, s_logits, alpha, temperature, record.t_kl, step)
        _sgd_step(teacher, t_opt, t_sched, objective)
        record.t_loss[step], record.t_ce[step] = objective.detach(), ce.detach()
        target = t_logits.detach()
        for i, (s, opt, sched, sl) in enumerate(zip(students, s_opts, s_scheds, s_logits)):
            obj, kl = _student_objective(sl, target, F.cross_entropy(sl, y), loss, student_alpha, temperature)
            _sgd_step(s, opt, sched, obj)
            record.student(i, step, obj, kl)
        # --- N - 1 student-only steps per student, on its own shuffled stream; teacher targets in eval mode
        if student_steps > 1 and students:
            teacher.eval()
            for i, (s, opt, sched, slot) in enumerate(zip(students, s_opts, s_scheds, slots)):
                for k in range(student_steps - 1):
                    index = next(s_streams[i])
                    xs, ys = splits.train.x[index], splits.train.y[index]
                    if s_gens[i] is not None:
                        s_gens[i].manual_seed((seed + 7919 * (i + 1)) * 100_003 + step * student_steps + k)
                        xs = augment_batch(xs, s_gens[i])
                    with torch.no_grad():
                        target = teacher(xs)
                    with slot:
                        sl = s(xs)
                    obj, kl = _student_objective(sl, target, F.cross_entropy(sl, ys), loss, student_alpha,
                                                 temperature)
                    _sgd_step(s, opt, sched, obj)
                    record.student(i, step, obj, kl)
            teacher.train()
        done = step + 1
        if eval_every and done % eval_every == 0 and done < steps:
            evaluate_all(done)
    evaluate_all(steps)
    test = evaluate(teacher, splits.test)
    trace.metrics.update(test_acc=test["acc"], test_loss=test["loss"])
    for i, s in enumerate(students):
        trace.metrics[f"student_test_acc/{i}"] = evaluate(s, splits.test)["acc"]
    return _finish(trace, teacher, students, record, alpha=alpha, steps=steps,
                   student_steps=student_steps, final=("test loss", test["loss"]), lr=lr)


def _teacher_objective(ce: torch.Tensor, t_logits: torch.Tensor, s_logits: list[torch.Tensor], alpha: float,
                       temperature: float, t_kl: torch.Tensor, step: int) -> torch.Tensor:
    """CE + α · mean over students of KL(student ‖ teacher), the students' side detached; records the KL in
    t_kl[step]. At α = 0 the KL is not even computed, so a teacher-only run is bit-for-bit a plain one."""
    if alpha == 0:
        return ce
    reg = torch.stack([kl_div_logits(t_logits, sl.detach(), temperature) for sl in s_logits]).mean()
    t_kl[step] = reg.detach()
    return ce + alpha * reg


def _finish(trace: Trace, teacher: nn.Module, students: list[nn.Module], record: _PerStep, *, alpha: float, steps: int,
            student_steps: int, final: tuple[str, float], lr: float) -> LoTResult:
    """Write the per-step series and the run's counts and final imitation KLs into the trace; note a divergence
    (`final` = (what, value) of the teacher's final test number)."""
    rng = range(1, steps + 1)
    trace.log_series("teacher_loss", rng, record.t_loss)
    trace.log_series("teacher_ce", rng, record.t_ce)
    if alpha > 0:
        trace.log_series("teacher_kl", rng, record.t_kl)
    for i in range(len(students)):
        trace.log_series(f"student_loss/{i}", rng, record.s_loss[i])
        trace.log_series(f"kl_batch/{i}", rng, record.s_kl[i])
        trace.metrics[f"kl_train/{i}"] = trace.last(f"kl_train/{i}")
        trace.metrics[f"kl_test/{i}"] = trace.last(f"kl_test/{i}")
    trace.metrics.update(steps=steps, student_steps_total=steps * student_steps * len(students),
                         compute_steps=steps * (1 + student_steps * len(students)))
    what, value = final
    if not math.isfinite(value):
        trace.note(f"training diverged: teacher {what} is {value}; try a smaller lr (lr={lr})")
    return LoTResult(teacher.eval(), [s.eval() for s in students], trace)


# ---------------------------------------------------------------------------------------------- language

def train_lot_lm(splits: TextSplits, *, num_students: int = 1, alpha: float = 1.0, student_steps: int = 5,
                 temperature: float = 1.5, loss: str = "kl_ce", student_alpha: float | None = None,
                 steps: int = 400, batch_size: int = 20, bptt: int = 35, lr: float = 20.0, momentum: float = 0.0,
                 clip: float = 0.25, schedule: str = "cosine", emb: int = 200, hidden: int = 200, layers: int = 2,
                 dropout: float = 0.2, student_size: dict | None = None, seed: int = 0,
                 eval_every: int | None = None, eval_tokens: int | None = 20_000, probe_tokens: int = 5000,
                 progress_bar: bool | None = None) -> LoTResult:
    """LoT on a word-level corpus with `lstm_lm` teacher and students (official: `trainer/lstm_ptb.py`).

    The teacher walks the batchified training stream [L, batch_size] window by window (bptt tokens, state
    carried and detached); each student takes the joint step on the teacher's window, then N-1 steps on the
    next windows of its own walk (started at a seeded offset). Every model: SGD(lr, momentum), gradient norm
    clipped to `clip`, `schedule` over its own steps. emb/hidden/layers/dropout: the LSTM (the students'
    can differ via `student_size`, a dict of the same keys). eval_tokens: test tokens used for "test_ppl"
    during training (None: all); the final metrics.test_ppl always uses the whole test stream.
    probe_tokens: tokens of train and of test on which imitation KL is measured.
    """
    check_params(alpha=alpha, student_steps=student_steps, temperature=temperature, num_students=num_students,
                 loss=loss, student_alpha=student_alpha)
    return _run_lm(splits, num_students, alpha, alpha if student_alpha is None else student_alpha, student_steps,
                   temperature, loss, steps, batch_size, bptt, lr, momentum, clip, schedule,
                   dict(emb=emb, hidden=hidden, layers=layers, dropout=dropout), student_size, seed, eval_every,
                   eval_tokens, probe_tokens, progress_bar, method="lot")


def train_teacher_only_lm(splits: TextSplits, *, num_students: int = 0, student_alpha: float = 1.0,
                          student_steps: int = 5, temperature: float = 1.5, loss: str = "kl_ce", steps: int = 400,
                          batch_size: int = 20, bptt: int = 35, lr: float = 20.0, momentum: float = 0.0,
                          clip: float = 0.25, schedule: str = "cosine", emb: int = 200, hidden: int = 200,
                          layers: int = 2, dropout: float = 0.2, student_size: dict | None = None, seed: int = 0,
                          eval_every: int | None = None, eval_tokens: int | None = 20_000, probe_tokens: int = 5000,
                          progress_bar: bool | None = None) -> LoTResult:
    """The teacher-only language model: as `train_lot_lm` with alpha = 0 (see `train_teacher_only`)."""
    check_params(alpha=0.0, student_steps=student_steps, temperature=temperature, num_students=num_students,
                 loss=loss, student_alpha=student_alpha, allow_zero_students=True)
    return _run_lm(splits, num_students, 0.0, student_alpha, student_steps, temperature, loss, steps, batch_size,
                   bptt, lr, momentum, clip, schedule, dict(emb=emb, hidden=hidden, layers=layers, dropout=dropout),
                   student_size, seed, eval_every, eval_tokens, probe_tokens, progress_bar, method="teacher_only")


def _detach(state):
    return None if state is None else tuple(h.detach() for h in state)


@torch.no_grad()
def _lm_eval(teacher: nn.Module, students: list[nn.Module], stream: torch.Tensor, bptt: int,
             temperature: float) -> tuple[float, list[float]]:
    """Over a batchified stream [L, B] in eval mode: (teacher perplexity, [imitation KL of each student])."""
    models = [teacher, *students]
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    states = [None] * len(models)
    ce, kls, count = 0.0, [0.0] * len(students), 0
    for i in range(0, stream.size(0) - 1, bptt):
        x, y = stream[i:i + bptt], stream[i + 1:i + 1 + bptt]
        x = x[:len(y)]
        outs = []
        for j, m in enumerate(models):
            logits, states[j] = m(x, states[j])
            outs.append(logits)
        rows = y.numel()
        ce += F.cross_entropy(outs[0].reshape(rows, -1), y.reshape(-1), reduction="sum").item()
        for j, logits in enumerate(outs[1:]):
            kls[j] += kl_div_logits(logits, outs[0], temperature).item() * rows
        count += rows
    for m, mode in zip(models, modes):
        m.train(mode)
    return math.exp(ce / count), [k / count for k in kls]


def _run_lm(splits, num_students, alpha, student_alpha, student_steps, temperature, loss, steps, batch_size, bptt,
            lr, momentum, clip, schedule, size, student_size, seed, eval_every, eval_tokens, probe_tokens,
            progress_bar, method) -> LoTResult:
    check_int("steps", steps, 1)
    check_int("seed", seed, 0)
    check_int("bptt", bptt, 1)
    check_int("probe_tokens", probe_tokens, 2 * 10)
    if eval_tokens is not None:
        check_int("eval_tokens", eval_tokens, 2 * 10)
    if not clip > 0:
        raise ValueError(f"clip={clip!r} is not allowed: it must be > 0")
    eval_every = max(steps // 10, 1) if eval_every is None else eval_every
    check_int("eval_every", eval_every, 0)
    device, vocab = splits.train.device, splits.num_tokens
    seed_everything(seed)
    student_size = {**size, **(student_size or {})}
    teacher = build("lstm_lm", num_classes=vocab, seed=seed, device=device, **size).train()
    students = [build("lstm_lm", num_classes=vocab, seed=seed + 1 + i, device=device, **student_size).train()
                for i in range(num_students)]
    t_opt = _sgd(teacher, lr, momentum, 0.0, False)
    t_sched = make_schedule(t_opt, schedule, steps)
    s_opts = [_sgd(s, lr, momentum, 0.0, False) for s in students]
    s_scheds = [make_schedule(o, schedule, steps * student_steps) for o in s_opts]
    slots = [_rng_slot(s, seed + 1 + i, device) for i, s in enumerate(students)]
    stream = batchify(splits.train, batch_size)                                   # [L, B]
    starts = list(range(0, stream.size(0) - 1, bptt))
    offsets = torch.randint(len(starts), (max(num_students, 1),), generator=torch.Generator().manual_seed(seed + 1))
    test_eval = batchify(splits.test if eval_tokens is None else splits.test[:eval_tokens], 10)
    probe_train, probe_test = batchify(splits.train[:probe_tokens], 10), batchify(splits.test[:probe_tokens], 10)

    def window(k: int):
        i = starts[k % len(starts)]
        y = stream[i + 1:i + 1 + bptt]
        return stream[i:i + len(y)], y, k % len(starts) == 0   # (input [l, B], target [l, B], stream restarts)

    trace = Trace(config=dict(method=method, dataset=getattr(splits, "name", "text"), model="lstm_lm", **size,
                              student_size=student_size, num_students=num_students, alpha=alpha,
                              student_alpha=student_alpha, student_steps=student_steps, temperature=temperature,
                              loss=loss, steps=steps, batch_size=batch_size, bptt=bptt, lr=lr, momentum=momentum,
                              clip=clip, schedule=schedule, seed=seed, eval_tokens=eval_tokens,
                              probe_tokens=probe_tokens, device=str(device)))
    record = _PerStep(steps, num_students, student_steps, device)

    def evaluate_all(step: int) -> None:
        ppl, kl_test = _lm_eval(teacher, students, probe_test if eval_tokens == probe_tokens else test_eval, bptt,
                                temperature)
        if eval_tokens != probe_tokens:
            kl_test = _lm_eval(teacher, students, probe_test, bptt, temperature)[1]
        kl_train = _lm_eval(teacher, students, probe_train, bptt, temperature)[1]
        trace.log(step, test_ppl=ppl, lr=t_sched.get_last_lr()[0])
        for i, (ktr, kte) in enumerate(zip(kl_train, kl_test)):
            trace.log(step, **{f"kl_train/{i}": ktr, f"kl_test/{i}": kte})

    t_state, sj_states = None, [None] * num_students          # teacher's walk; students on the teacher's windows
    own_states = [None] * num_students                          # students' own walks
    t_own_states = [None] * num_students                        # the teacher's eval-mode targets on those walks
    own_k = [int(o) for o in offsets[:num_students]]

    if eval_every:
        evaluate_all(0)
    for step in progress(range(steps), total=steps, desc=method, enabled=progress_bar):
        x, y, restart = window(step)
        if restart:
            t_state, sj_states = None, [None] * num_students
        t_logits, t_state = teacher(x, _detach(t_state))
        s_logits = []
        for i, (s, slot) in enumerate(zip(students, slots)):
            with slot:
                sl, sj_states[i] = s(x, _detach(sj_states[i]))
            s_logits.append(sl)
        flat_y = y.reshape(-1)
        ce = F.cross_entropy(t_logits.reshape(flat_y.numel(), -1), flat_y)
        objective = _teacher_objective(ce, t_logits, s_logits, alpha, temperature, record.t_kl, step)
        _sgd_step(teacher, t_opt, t_sched, objective, clip)
        record.t_loss[step], record.t_ce[step] = objective.detach(), ce.detach()
        target = t_logits.detach()
        for i, (s, opt, sched, sl) in enumerate(zip(students, s_opts, s_scheds, s_logits)):
            obj, kl = _student_objective(sl, target, F.cross_entropy(sl.reshape(flat_y.numel(), -1), flat_y), loss,
                                         student_alpha, temperature)
            _sgd_step(s, opt, sched, obj, clip)
            record.student(i, step, obj, kl)
        if student_steps > 1 and students:
            teacher.eval()
            for i, (s, opt, sched, slot) in enumerate(zip(students, s_opts, s_scheds, slots)):
                for _ in range(student_steps - 1):
                    xs, ys, restart = window(own_k[i])
                    own_k[i] += 1
                    if restart:
                        own_states[i], t_own_states[i] = None, None
                    with torch.no_grad():
                        target, t_own_states[i] = teacher(xs, t_own_states[i])
                    with slot:
                        sl, own_states[i] = s(xs, _detach(own_states[i]))
                    flat = ys.reshape(-1)
                    obj, kl = _student_objective(sl, target, F.cross_entropy(sl.reshape(flat.numel(), -1), flat),
                                                 loss, student_alpha, temperature)
                    _sgd_step(s, opt, sched, obj, clip)
                    record.student(i, step, obj, kl)
            teacher.train()
        done = step + 1
        if eval_every and done % eval_every == 0 and done < steps:
            evaluate_all(done)
    evaluate_all(steps)
    full_ppl = _lm_eval(teacher, [], batchify(splits.test, 10), bptt, temperature)[0]
    trace.metrics.update(test_ppl=full_ppl, tokens_seen=steps * batch_size * bptt)
    return _finish(trace, teacher, students, record, alpha=alpha, steps=steps,
                   student_steps=student_steps, final=("test perplexity", full_ppl), lr=lr)


def mean_std(values) -> tuple[float, float]:
    """(mean, population std) of a list of per-seed numbers, as floats."""
    a = np.asarray(list(values), dtype=float)
    return float(a.mean()), float(a.std())
