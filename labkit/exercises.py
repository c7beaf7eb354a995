"""Exercises with checks that give specific feedback, and the student version of a notebook (solutions removed).

A notebook's exercise is an answer cell a learner completes (an assignment, never a `def`) and a check cell:

    # BEGIN SOLUTION: reward = None
    reward = -math.log(120 / 400)
    # END SOLUTION

    labkit.exercises.check_l2t_reward(reward)

`check_<name>(answer, ...)` returns a `Result` that shows "✓ …", "✗ …" (what was wrong, e.g. "you gave 0.523:
did you use log10?") or "unsolved: …" (the answer is still None); it never raises, whatever the answer. With the
environment variable LABKIT_EXERCISES=solved (how CI runs the solution notebooks) a check that is not solved raises
AssertionError, so a wrong solution fails CI. Checks that read a run (a Trace, a summary) judge the idea, which does
not depend on the run's noise, and then show what this run measured: "predict, then look".

The student version of a notebook (every solution block replaced by its placeholder line, outputs cleared) is
`labkit.course.student_notebook`; `labkit exercises OUT_DIR` writes it for every notebook.
"""
from __future__ import annotations

import functools
import html
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

STRICT_ENV = "LABKIT_EXERCISES"   # "solved": a check that is not solved raises (CI of the solution notebooks)
MARKS = {"solved": "✓", "wrong": "✗", "unsolved": "unsolved:"}
COLORS = {"solved": "#1a7f37", "wrong": "#b2182b", "unsolved": "#666666"}


@dataclass(frozen=True)
class Result:
    """What a check found: status "solved" | "wrong" | "unsolved", and the feedback sentence."""

    exercise: str
    status: str
    message: str

    @property
    def solved(self) -> bool:
        return self.status == "solved"

    def __str__(self) -> str:
        return f"{MARKS[self.status]} {self.message}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return (f'<div class="labkit-check labkit-check-{self.status}" style="border-left:4px solid '
                f'{COLORS[self.status]};padding:4px 10px;color:{COLORS[self.status]}">'
                f"<strong>{html.escape(MARKS[self.status])}</strong> {html.escape(self.message)}</div>")


def _finish(result: Result) -> Result:
    if os.environ.get(STRICT_ENV) == "solved" and not result.solved:
        raise AssertionError(f"exercise {result.exercise} is not solved: {result}")
    return result


def exercise(name: str, hint: str) -> Callable:
    """Make `grade(answer, *context) -> (solved: bool, message)` a check: None gives "unsolved: <hint>", anything
    the grader cannot read gives "✗ could not read …", never an exception (except in strict mode, see above)."""
    def wrap(grade: Callable) -> Callable[..., Result]:
        @functools.wraps(grade)
        def check(answer: Any, *args, **kwargs) -> Result:
            if answer is None or answer is Ellipsis:
                return _finish(Result(name, "unsolved", hint))
            try:
                solved, message = grade(answer, *args, **kwargs)
            except Exception as exc:  # a learner's answer may be of any type: feedback, never a traceback
                solved, message = False, f"could not read your answer {_short(answer)}: {type(exc).__name__}: {exc}"
            return _finish(Result(name, "solved" if solved else "wrong", message))
        return check
    return wrap


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _number(answer: Any) -> float:
    value = float(np.asarray(answer, dtype=float).reshape(()))  # a 0-d array or tensor is a number too
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    return value


def _close(a: float, b: float, rel: float = 0.01, abs_tol: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol)


def _diagnose(value: float, correct: float, mistakes: dict[str, float], what: str) -> tuple[bool, str]:
    """✓ when value ≈ correct; else the first known mistake that gives value, else the correct number."""
    if _close(value, correct):
        return True, f"{what} = {correct:.4g}."
    for explanation, wrong in mistakes.items():
        if _close(value, wrong):
            return False, f"you gave {value:.4g}: {explanation}"
    return False, f"you gave {value:.4g}; {what} is {correct:.4g}."


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


# ---------------------------------------------------------------- 00 · the tour

@exercise("tour_half_width", "give the half-width of the 95 % interval of the eight test accuracies, as a fraction")
def check_half_width(answer: Any, values: Sequence[float | None]) -> tuple[bool, str]:
    """The 95 % t-interval's half-width t_{0.975, n−1} · s / √n of `values` (the population's test accuracies)."""
    from . import stats

    kept = np.array([v for v in values if v is not None], dtype=float)
    n, value, est = len(kept), _number(answer), stats.estimate(list(values))
    s, s0, t = kept.std(ddof=1), kept.std(ddof=0), stats.t_quantile(n - 1)
    mistakes = {f"that is 1.96 · s / √n, the normal quantile; with n = {n} seeds use Student's t_(0.975, {n - 1}) = "
                f"{t:.3f}": 1.96 * s / math.sqrt(n),
                "that uses the population std (ddof = 0); the lab's one estimator is the sample std (ddof = 1)":
                    t * s0 / math.sqrt(n),
                f"that is t · s, the spread of one seed: the interval of the mean divides by √n = √{n}": t * s,
                "that is the sample std s itself, not the interval's half-width t · s / √n": s,
                "that is in percent: the lab writes accuracies as fractions in code (×100 only in prose)":
                    100 * est.half_width}
    solved, message = _diagnose(value, est.half_width, mistakes, f"t_(0.975, {n - 1}) · s / √{n}")
    return solved, message + (f" So the mean {100 * est.mean:.2f} % is known to ±{100 * est.half_width:.2f} points: "
                              "a difference smaller than that between two methods is not a result." if solved else "")


@exercise("tour_most_confused", "give (true class, predicted class) of the largest error in the scrubber's last frame")
def check_most_confused(answer: Any, confusion: np.ndarray, classes: Sequence[str]) -> tuple[bool, str]:
    """answer (true, predicted): the largest off-diagonal entry of the last frame of `confusion` [T, C, C]."""
    last = np.array(confusion, dtype=float)[-1]
    np.fill_diagonal(last, -np.inf)
    i, j = np.unravel_index(np.argmax(last), last.shape)
    names = [str(c) for c in classes]
    true, predicted = (str(a) for a in answer)
    if true == predicted:
        return False, f"({true}, {predicted}) is on the diagonal, which the scrubber hides: those are correct answers."
    a, b = names.index(true), names.index(predicted)
    share = f"{100 * last[i, j]:.1f} % of the dev {names[i]}s are taken for {names[j]}s"
    if (a, b) == (i, j):
        return True, f"{share}, the largest error at the last step."
    if (a, b) == (j, i):
        return False, (f"the other way round: rows are the true class, columns the prediction; the largest entry is "
                       f"row {names[i]}, column {names[j]} ({share}).")
    return False, f"({true}, {predicted}) holds {100 * last[a, b]:.1f} %; the largest is ({names[i]}, {names[j]}): {share}."


# ---------------------------------------------------------------- 01 · L2T

@exercise("l2t_reward", "write the reward −log(i_τ / T') of an episode that reached τ at step 120 of T' = 400")
def check_l2t_reward(answer: Any, reached: int | None = 120, max_steps: int = 400) -> tuple[bool, str]:
    """L2T's terminal reward r = −log(i_τ / T') (natural log; 0 when τ is never reached)."""
    from .l2t import reward

    i = max_steps if reached is None else reached
    correct = reward(reached, max_steps)
    mistakes = {"did you use log10? the reward is the natural log": -math.log10(i / max_steps),
                "the sign: −log of a ratio below 1 is positive, so reaching τ sooner earns more": -correct,
                "that is the ratio itself; the reward is −log of it": i / max_steps}
    solved, message = _diagnose(_number(answer), correct, mistakes, f"−log({i}/{max_steps})")
    return solved, message + (" It grows as τ is reached sooner, and is 0 when τ is never reached (i_τ = T')."
                              if solved else "")


@exercise("l2t_examples", "give (effective examples, examples shown) for 300 steps of M = 32 at keep rate 0.6")
def check_l2t_examples(answer: Any, steps: int = 300, batch: int = 32, keep_rate: float = 0.6) -> tuple[bool, str]:
    """(effective, shown): steps · M kept examples trained the student; the teacher looked at steps · M / keep_rate."""
    effective, shown = (_number(a) for a in answer)
    right, looked = steps * batch, steps * batch / keep_rate
    if _close(effective, right) and _close(shown, looked):
        return True, (f"{right} examples trained the student, {looked:.0f} were shown to the teacher. The paper's "
                      f"axis counts the first; reading the other {looked - right:.0f} costs the teacher forward passes.")
    if _close(effective, looked) and _close(shown, right):
        return False, "the other way round: the student trains on the kept examples, the teacher sees all of them."
    if not _close(effective, right):
        return False, f"each of the {steps} steps takes a full batch of M = {batch} kept examples: effective = steps · M."
    if _close(shown, right * keep_rate):
        return False, "you multiplied by the keep rate: the teacher looked at more examples than it kept, so divide."
    return False, f"examples shown = effective / keep rate = {right} / {keep_rate:g} = {looked:.0f}; you gave {shown:g}."


@exercise("l2t_noise", "predict: does a good teacher keep corrupted examples 'more', 'less' or 'same' as often?")
def check_l2t_noise(answer: Any, trace: Any = None) -> tuple[bool, str]:
    """answer "less": a corrupted label pulls the student the wrong way. trace: a teacher's training Trace under label
    noise (scalars keep_rate_corrupted, keep_rate_clean per episode), whose keep rates are shown."""
    choice = str(answer).strip().lower()
    if choice not in ("more", "less", "same"):
        return False, f"answer 'more', 'less' or 'same'; you gave {_short(answer)}."
    solved = choice == "less"
    message = ("a corrupted label pulls the student towards the wrong class, so the reward (τ reached sooner) favours "
               "a teacher that keeps it less often than a clean one." if solved else
               "a corrupted label pulls the student towards the wrong class: keeping it as often as (or more than) a "
               "clean one cannot make τ come sooner, which is all the reward pays for.")
    if trace is not None and {"keep_rate_corrupted", "keep_rate_clean"} <= set(trace.scalars):
        (_, bad), (_, good) = trace.series("keep_rate_corrupted"), trace.series("keep_rate_clean")
        q = max(1, len(bad) // 4)
        message += (f" This run's teacher keeps {bad[-q:].mean():.2f} of the corrupted and {good[-q:].mean():.2f} of "
                    f"the clean examples over its last {q} episode(s) ({bad[:q].mean():.2f} and {good[:q].mean():.2f} "
                    "over its first).")
    return solved, message


# ---------------------------------------------------------------- 02 · L2T-DLF

DLF_P, DLF_Y = (0.7, 0.2, 0.1), 0
DLF_PHI = ((4.0, 1.0, 0.0), (0.0, 4.0, 0.0), (0.0, 0.0, 4.0))


@exercise("dlf_loss", "compute l_Φ(p, y) = −σ(yᵀ Φ log p) for p = (0.7, 0.2, 0.1), y = 0 and the Φ given")
def check_dlf_loss(answer: Any) -> tuple[bool, str]:
    """l_Φ(p, y) = −σ(Φ[y] · log p) for DLF_P, DLF_Y, DLF_PHI: row y of Φ weighs the log-probabilities."""
    p, phi = np.array(DLF_P), np.array(DLF_PHI)
    z = float(phi[DLF_Y] @ np.log(p))
    correct = -_sigmoid(z)
    mistakes = {"you used column y of Φ; the loss of an example of class y reads ROW y, so Φ[0, 1] = 1 counts":
                    -_sigmoid(float(phi[:, DLF_Y] @ np.log(p))),
                "did you use log10? log p is the natural log (log_softmax)": -_sigmoid(float(phi[DLF_Y] @ np.log10(p))),
                "the sign: l_Φ = −σ(·) is negative, and lower is better": -correct,
                "that is yᵀ Φ log p before the sigmoid": z, "that is −yᵀ Φ log p: the sigmoid is missing": -z,
                "you weighed p instead of log p": -_sigmoid(float(phi[DLF_Y] @ p)),
                "that is cross-entropy, −log p_y": -math.log(p[DLF_Y])}
    solved, message = _diagnose(_number(answer), correct, mistakes, f"−σ(4·log 0.7 + 1·log 0.2) = −σ({z:.3f})")
    return solved, message + (" Φ[0, 1] = 1 > 0 rewards probability on class 1 for a class-0 example: it treats 1 "
                              "as similar to 0, which is what a positive off-diagonal entry means." if solved else "")


def _pairs(answer: Any, classes: Sequence[str]) -> set[tuple[int, int]]:
    names = [str(c) for c in classes]
    return {(names.index(str(a)), names.index(str(b))) for a, b in answer}


@exercise("dlf_noise_pairs", "list the (row, column) entries of Φ that a loss correcting the pair-flip noise rewards")
def check_noise_pairs(answer: Any, transition: Any = None, change: Any = None,
                      classes: Sequence[str] | None = None) -> tuple[bool, str]:
    """The entries (label j, class y) with T[y, j] > 0, j ≠ y: the transpose of the noise. transition T [C, C]
    (None: the 10-class pair-flip pattern y → y + 1); change [C, C]: the run's mean Φ_t − Φ_0, shown if given."""
    T = np.roll(np.eye(10), 1, axis=1) if transition is None else np.asarray(transition, dtype=float)
    C = len(T)
    classes = [str(c) for c in (classes if classes is not None else range(C))]
    noise = {(y, j) for y in range(C) for j in range(C) if y != j and T[y, j] > 0}
    correct = {(j, y) for y, j in noise}
    given = _pairs(answer, classes)
    name = lambda s: ", ".join(f"({classes[a]}, {classes[b]})" for a, b in sorted(s)[:4]) + (" …" if len(s) > 4 else "")
    if given == correct:
        solved, message = True, (f"the {len(correct)} entries (label j, true class y) with T[y, j] > 0, the transpose "
                                 "of the noise: in the row of a label, reward the class it often really is.")
    elif given == noise:
        return False, ("those are the noise's own entries (true class y → label j). Φ's row is the label the loss "
                       f"sees; the class to reward is the true one, so transpose them: {name(correct)}.")
    else:
        return False, (f"{len(given & correct)} of your {len(given)} pairs are right; missing {name(correct - given) or 'none'}"
                       f"; not noise pairs {name(given - correct) or 'none'}.")
    if change is not None:
        from .plots.dlf import noise_alignment

        a = noise_alignment(np.asarray(change, dtype=float), T)
        message += (f" This run: Φ changed by {a['on_noise']:+.3g} on those entries and {a['elsewhere']:+.3g} on the "
                    f"others, so the teacher {'did' if a['on_noise'] > a['elsewhere'] else 'did not'} favour them.")
    return solved, message


# ---------------------------------------------------------------- 03 · L2T-DLN

DLN_LOGITS, DLN_Y = (2.0, -1.0, 0.5), 0


@exercise("dln_rows", "write the DLN's input rows [σ(z_y), σ(z_j), 1, 0] for z = (2, −1, 0.5), y = 0")
def check_dln_rows(answer: Any) -> tuple[bool, str]:
    """The rows of the wrong classes j = 1, 2 (the true class's row, all zeros, may be included or left out)."""
    z = np.array(DLN_LOGITS)
    s, wrong = 1 / (1 + np.exp(-z)), [j for j in range(len(z)) if j != DLN_Y]
    correct = np.array([[s[DLN_Y], s[j], 1.0, 0.0] for j in wrong])
    rows = np.asarray(answer, dtype=float)
    if rows.ndim != 2 or rows.shape[1] != 4:
        return False, f"give one row of 4 numbers per wrong class; your answer has shape {rows.shape}."
    if len(rows) == len(z):
        if np.allclose(rows[DLN_Y], 0, atol=1e-3):
            rows = np.delete(rows, DLN_Y, 0)
        else:
            return False, ("the true class's row is all zeros (the loss multiplies it by 0): with no biases in the "
                           f"DLN it adds exactly 0; yours is {np.round(rows[DLN_Y], 3).tolist()}.")
    if rows.shape == correct.shape and np.allclose(rows, correct, atol=2e-3):
        return True, ("rows " + "; ".join(f"[{r[0]:.3f}, {r[1]:.3f}, 1, 0]" for r in correct) +
                      ". The DLN sees sigmoids, not a softmax: each class is judged on its own.")
    p = _softmax(z)
    variants = {"you used the softmax; the DLN reads the sigmoid of each logit": (p[DLN_Y], p),
                "you used the raw logits; the DLN reads σ(z)": (z[DLN_Y], z),
                "the first two columns are swapped: [σ(z_y), σ(z_j), …]": (None, None)}
    for explanation, (first, col) in variants.items():
        guess = correct[:, [1, 0, 2, 3]] if first is None else np.array([[first, col[j], 1, 0] for j in wrong])
        if rows.shape == guess.shape and np.allclose(rows, guess, atol=2e-3):
            return False, explanation + "."
    return False, f"the rows are {np.round(correct, 3).tolist()}; yours are {np.round(rows, 3).tolist()}."


DLN_GRADIENTS = (-0.003, 2e-5)


@exercise("dln_preprocess", "write the LSTM's two inputs for each gradient g = −0.003 and g = 2e-5")
def check_dln_preprocess(answer: Any) -> tuple[bool, str]:
    """(log|g| / 10, sign g) when |g| ≥ e^−10, else (−1, e^10 · g), for each of DLN_GRADIENTS."""
    from torch import tensor

    from .dln_model import preprocess_gradients

    correct = preprocess_gradients(tensor(DLN_GRADIENTS, dtype=float)).numpy()
    given = np.asarray(answer, dtype=float).reshape(correct.shape)
    if np.allclose(given, correct, atol=2e-3, rtol=1e-3):
        return True, (f"({correct[0, 0]:.4f}, {correct[0, 1]:.0f}) and ({correct[1, 0]:.0f}, {correct[1, 1]:.4f}): "
                      "log-scale and sign for a normal gradient; below e^−10 ≈ 4.5e-5 the log would explode, so a tiny "
                      "one is passed on linearly, scaled by e^10.")
    g0, g1 = DLN_GRADIENTS
    hints = []
    if math.isclose(given[0, 0], math.log10(abs(g0)) / 10, rel_tol=1e-2):
        hints.append("log|g| is the natural log, not log10")
    if math.isclose(given[0, 0], math.log(abs(g0)), rel_tol=1e-2):
        hints.append("divide log|g| by p = 10")
    if math.isclose(given[0, 1], 1.0):
        hints.append(f"the second input of g = {g0} is its sign, −1")
    if math.isclose(given[1, 0], math.log(g1) / 10, rel_tol=1e-2):
        hints.append(f"|{g1}| < e^−10 ≈ 4.54e-5: a tiny gradient gets (−1, e^10 · g)")
    return False, ("; ".join(hints) or f"expected {np.round(correct, 4).tolist()}, you gave "
                   f"{np.round(given, 4).tolist()}") + "."


@exercise("dln_slopes", "predict how a loss that teaches classification moves along σ(z_y) and along σ(z_j)")
def check_dln_slopes(answer: Any, trace: Any = None) -> tuple[bool, str]:
    """answer (along σ(z_y), along σ(z_j)), each "falls" or "rises"; trace: a deployment with "loss_surface"."""
    along_y, along_j = (str(a).strip().lower() for a in answer)
    if {along_y, along_j} - {"falls", "rises"}:
        return False, f"answer with two words, each 'falls' or 'rises'; you gave {_short(answer)}."
    solved = (along_y, along_j) == ("falls", "rises")
    message = ("a loss to minimise must fall as the true class's σ(z_y) rises and rise as a wrong class's σ(z_j) "
               "rises, or SGD would push the student the wrong way." if solved else
               f"if the loss {along_y} along σ(z_y) and {along_j} along σ(z_j), descending it would "
               f"{'lower' if along_y == 'rises' else 'raise'} the true class's score or "
               f"{'raise' if along_j == 'falls' else 'lower'} a wrong one's: think of what SGD does with it.")
    if solved and trace is not None and not trace.diverged and "loss_surface" in trace.arrays:
        from .dln_model import surface_slopes

        _, surfaces = trace.stack("loss_surface")
        (y0, j0), (y1, j1) = surface_slopes(surfaces[0]), surface_slopes(surfaces[-1])
        ok = y1 < 0 < j1
        message += (f" This run's deployed loss: slopes ({y0:+.3g}, {j0:+.3g}) at the start, ({y1:+.3g}, {j1:+.3g}) at"
                    f" the end: {'it still teaches classification' if ok else 'the teacher bent it away from that'}.")
    return solved, message


# ---------------------------------------------------------------- 04 · LoT

LOT_TEACHER, LOT_STUDENT, LOT_T = (2.0, 0.0, -1.0), (1.0, 0.5, -0.5), 1.5


def _kl(p: np.ndarray, q: np.ndarray, log=np.log) -> float:
    return float((p * (log(p) - log(q))).sum())


@exercise("lot_kl", "compute the student's imitation term T² · KL(softmax(t/T) ‖ softmax(s/T))")
def check_lot_kl(answer: Any) -> tuple[bool, str]:
    """For LOT_TEACHER logits t, LOT_STUDENT logits s and temperature LOT_T (as `lot.kl_per_member`)."""
    t, s, T = np.array(LOT_TEACHER), np.array(LOT_STUDENT), LOT_T
    pt, ps = _softmax(t / T), _softmax(s / T)
    correct = T ** 2 * _kl(pt, ps)
    mistakes = {"the direction: the student imitates the teacher, KL(teacher ‖ student); you computed "
                "KL(student ‖ teacher), the term in the teacher's loss": T ** 2 * _kl(ps, pt),
                "the T² factor is missing (it keeps the gradient's size independent of T)": _kl(pt, ps),
                "no temperature: divide the logits by T = 1.5 before the softmax": T ** 2 * _kl(_softmax(t), _softmax(s)),
                "no temperature and no T²": _kl(_softmax(t), _softmax(s)),
                "did you use log10? KL uses the natural log": T ** 2 * _kl(pt, ps, np.log10)}
    return _diagnose(_number(answer), correct, mistakes, "T² · KL(softmax(t/T) ‖ softmax(s/T))")


@exercise("lot_cost", "how many plain steps does one LoT step cost, with N student steps and K students?")
def check_lot_cost(answer: Any, student_steps: int, num_students: int) -> tuple[bool, str]:
    """1 + N·K: the model's own step plus N steps of each of its K students."""
    n, k = student_steps, num_students
    mistakes = {"that counts the students' steps only; the model takes its own step too": n * k,
                "each of the K students takes N steps" + (f" (here K = {k})" if k > 1 else ""): 1 + n,
                "the model's step counts once, not K times": k * (1 + n)}
    mistakes = {m: v for m, v in mistakes.items() if v != 1 + n * k}
    solved, message = _diagnose(_number(answer), 1 + n * k, mistakes, f"1 + N·K = 1 + {n}·{k}")
    return solved, message + (" That is why the notebook also gives teacher-only that many times the steps: "
                              "equal compute." if solved else "")


@exercise("lot_kl_prediction", "predict whose students end with the lower test-probe KL: 'lot' or 'teacher-only'")
def check_lot_prediction(answer: Any, imitation: dict | None = None) -> tuple[bool, str]:
    """The paper's prediction: LoT's (α > 0: the model is pushed towards what its students can imitate). imitation:
    `lot.imitability(...)` of this run, whose measured KL difference is shown."""
    from .lot import CONTROL, LOT

    choice = str(answer).strip().lower()
    if choice not in (LOT, CONTROL):
        return False, f"answer 'lot' or 'teacher-only'; you gave {_short(answer)}."
    solved = choice == LOT
    message = ("with α > 0 the LoT model is trained to be easy for its students to imitate (α = 0 never looks at "
               "them), so the paper predicts the lower KL for LoT's students." if solved else
               "teacher-only (α = 0) never sees its students; LoT's model is penalised by α · KL, so the paper "
               "predicts LoT's students end closer to their model.")
    if imitation is not None:
        m = imitation["kl_test"]["methods"].get(LOT, {}).get("paired")
        if m:
            d = m["difference"]
            sep = "lower, an interval that excludes 0" if m["helps"] else \
                "higher, an interval that excludes 0" if m["hurts"] else "not separated from 0"
            message += (f" This run: LoT − teacher-only KL {1000 * d['mean']:+.2f} ± {1000 * d['half_width']:.2f} ×10⁻³ "
                        f"over {d['n']} seeds ({sep}; lower on {m['wins']}).")
    return solved, message
