"""LoT: Learning from Teaching regularization (Jin & Che et al., arXiv 2402.02769 v1, 2024), on the engine.

The deployed model (the paper's "teacher", trained as `cfg.student` says) learns its task plus α times how badly K
imitators ("students") imitate it (generalisable correlations should be easy to imitate); no meta-gradient:
    teacher:     CE(t, y) + α · mean_k KL_T(s_k.detach() ‖ t)
    imitator k:  CE(s_k, y) + α_s · KL_T(t.detach() ‖ s_k)   ("kl_ce", official default; "kl": the KL alone)
KL_T(q ‖ p) = T² · KL(softmax(q/T) ‖ softmax(p/T)), row mean (official `kl_div_logits`); α_s: student_alpha|α.
Per teacher step, as the official trainers: a joint step (the imitators' forward on the teacher's batch runs in the
teacher's objective, which steps against their pre-step logits; they step on those and its detached logits), then
N − 1 imitator steps on each imitator's own stream, with targets from the teacher in eval mode (ours: no dropout,
BatchNorm and recurrent state untouched, so at α = 0 the teacher is bit for bit the teacher-only model).

Runs: the deployed models of S seeds are one engine Run (role `base`: (DEPLOY,) in `compare`, (TEACH, "lot") in
`train_teacher`, (TUNE, "lot") in `sweep`); imitator k of every seed another Run, role (*base, "lot-student", k);
`deploy`'s imitators: (DEPLOY, "lot-imitator"). The teacher-only control keeps co-evolving imitators that never feed
back. A checkpoint (the teacher Run's; its hooks hold the imitators) per evaluation: LoT's window. Vision reports
final-step test numbers (the official code: the best test epoch); text the test perplexity of the best-dev model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import data, engine, repro, stats
from . import seeds as seeding
from .checks import check_choice, check_float, check_int
from .data import Splits, TextSplits, batchify, bptt_windows
from .models import KNOWN_MODELS
from .population import Population
from .student import PASSES, SCHEDULES, StudentConfig, cross_entropy, evaluate_text, predict, upcast
from .trace import Trace, metric_values

LOT, CONTROL, LONG = "lot", "teacher-only", "teacher-only (equal compute)"  # papers.matching's method names


def kl_per_member(p_logits: torch.Tensor, q_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(q/T) ‖ softmax(p/T)) averaged over rows, per member: p, q [M, R, C] -> [M]. The gradient
    flows into p (and into q unless the caller detaches it). Half precision is computed in float32."""
    lp, lq = (F.log_softmax(upcast(t) / temperature, -1) for t in (p_logits, q_logits))
    return F.kl_div(lp, lq, reduction="none", log_target=True).sum(-1).mean(-1) * temperature ** 2


def teacher_loss(logits: torch.Tensor, imitator_logits: Sequence[torch.Tensor], y: torch.Tensor, alpha: float,
                 temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(loss, CE [S], KL [S] or None) of the deployed models: logits [S, B, C], imitator_logits K x [S, B, C]
    (detached here), y [S, B]. alpha = 0: the loss is the per-example CE [S, B] itself, exactly a plain run's."""
    ce = cross_entropy(logits, y)
    if alpha == 0:
        return ce, ce.detach().mean(1), None
    kl = torch.stack([kl_per_member(logits, s.detach(), temperature) for s in imitator_logits]).mean(0)
    return ce.mean(1) + alpha * kl, ce.detach().mean(1), kl.detach()


def imitator_loss(logits: torch.Tensor, target: torch.Tensor, y: torch.Tensor, loss: str, weight: float,
                  temperature: float) -> torch.Tensor:
    """Loss [M] of M imitators: logits [M, B, C] against the detached target [M, B, C], labels y [M, B]."""
    kl = kl_per_member(logits, target.detach(), temperature)
    return kl if loss == "kl" else cross_entropy(logits, y).mean(1) + weight * kl


@dataclass(frozen=True)
class Config:
    """LoT's knobs, checked on construction. `student` trains the deployed model, the imitators likewise over N ·
    steps steps unless a student_* knob says otherwise. Data: dataset, dev_size, train_size, test_size (None: all;
    text: tokens), scenario (`data.apply_scenario`). sweep_*: the dev-only grid of `sweep`."""

    student: StudentConfig
    deployments: int = 8
    alpha: float = 0.5
    student_alpha: float | None = None
    student_steps: int = 2
    temperature: float = 1.5
    num_students: int = 1
    loss: str = "kl_ce"
    student_model: str | None = None
    student_schedule: str | None = None
    probe_size: int = 2000
    equal_compute: bool = True
    dataset: str = "mnist"
    dev_size: int = 5000
    train_size: int | None = None
    test_size: int | None = None
    scenario: dict | None = None
    sweep_alphas: tuple[float, ...] = (0.1, 0.5, 2.0)
    sweep_ns: tuple[int, ...] = (1, 2)
    sweep_seeds: int = 3
    sweep_steps: int | None = None

    def __post_init__(self):
        self.check()  # a Config never holds a bad knob: dataclasses.replace checks too

    @property
    def imitation_weight(self) -> float:
        return self.alpha if self.student_alpha is None else self.student_alpha

    def check(self) -> "Config":
        """Raise a ValueError naming any knob out of range (NaN and inf included); return self."""
        self.student.check()
        for name in ("alpha", "student_alpha", "temperature"):
            if getattr(self, name) is not None:
                check_float(name, getattr(self, name), 0, low_open=name == "temperature")
        for name in ("deployments", "student_steps", "num_students", "probe_size", "dev_size", "train_size",
                     "test_size", "sweep_seeds", "sweep_steps"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1, seeding.SEED_BLOCK if name == "deployments" else None)
        for name, choices in (("loss", ("kl_ce", "kl")), ("student_model", KNOWN_MODELS),
                              ("student_schedule", SCHEDULES), ("dataset", data.KNOWN_DATASETS)):
            if getattr(self, name) is not None:
                check_choice(name, getattr(self, name), choices)
        [check_float("sweep_alphas", a, 0) for a in self.sweep_alphas]
        [check_int("sweep_ns", n, 1) for n in self.sweep_ns]
        if self.student.pretrain_steps or (self.dataset == "ptb" and self.student.eval_size is not None):
            raise ValueError(f"student={self.student!r} is not allowed: LoT needs pretrain_steps=0 (the joint step "
                             f"starts at step 0) and, for text, eval_size=None (best-dev compares every dev measure)")
        return self


def imitator_config(cfg: Config) -> StudentConfig:
    """How the imitators train: the deployed model's config over N · steps steps, with the student_* knobs."""
    s, n = cfg.student, cfg.student_steps
    kwargs = s.model_kwargs if cfg.student_model in (None, s.model) else {}
    return replace(s, model=cfg.student_model or s.model, model_kwargs=dict(kwargs), steps=s.steps * n,
                   eval_every=s.evaluations * n, schedule=cfg.student_schedule or s.schedule,
                   milestones=tuple(m * n for m in s.milestones))


def control(cfg: Config) -> Config:
    """The teacher-only control of `cfg`: α = 0, the imitators unchanged (their KL weight stays α_s)."""
    return replace(cfg, alpha=0.0, student_alpha=cfg.imitation_weight)


_MLP = StudentConfig(model="mlp", model_kwargs={"hidden": (100,)}, steps=500, batch_size=128, lr=0.1,
                     schedule="cosine", eval_every=100, eval_size=1000)
_SMOKE = dict(deployments=2, train_size=2000, probe_size=200, sweep_alphas=(0.5, 2.0), sweep_seeds=2, sweep_steps=20)
PRESETS = {  # the headline: MNIST MLP on the CPU; the paper's v1 CIFAR-100 PreResNet-20/20 (run script) on a GPU
    "smoke": Config(replace(_MLP, model_kwargs={"hidden": (32,)}, steps=30, batch_size=64, eval_every=10), **_SMOKE),
    "cpu": Config(_MLP, probe_size=1000, sweep_steps=300),
    "paper": Config(StudentConfig(model="preresnet20", steps=180 * 209, batch_size=256, lr=1.0, nesterov=True,
                                  weight_decay=1e-4, schedule="cosine", eval_every=209), deployments=3,
                    dataset="cifar100", probe_size=5000, equal_compute=False, sweep_alphas=(0.1, 0.5, 1.0, 2.0),
                    sweep_ns=(1, 2, 4), sweep_steps=20 * 209),
}
SMALL_DATA_PRESETS = {  # the scenario: a small class-balanced training set, where regularising has work to do
    p: replace(PRESETS[p], equal_compute=False, scenario={"kind": "subsample", "size": size})
    for p, size in (("smoke", 200), ("cpu", 1000), ("paper", 5000))}
_LSTM = StudentConfig(model="lstm_lm", model_kwargs=dict(emb=48, hidden=48, layers=1, dropout=0.2), steps=100,
                      batch_size=10, bptt=10, lr=20.0, momentum=0.0, clip=0.25, schedule="cosine", eval_every=25)
_TEXT = dict(dataset="ptb", alpha=1.0, equal_compute=False)
LM_PRESETS = {  # Penn Treebank; paper: official run_lstm_ptb_LoT.sh (60 epochs of 1327 windows, whole dev/test)
    "smoke": Config(replace(_LSTM, model_kwargs=dict(emb=16, hidden=16, layers=1, dropout=0.1), steps=6, eval_every=3),
                    deployments=2, dev_size=500, test_size=500, probe_size=200, **_TEXT),
    "cpu": Config(_LSTM, deployments=5, dev_size=2000, test_size=10000, probe_size=1000, **_TEXT),
    "paper": Config(replace(_LSTM, model_kwargs=dict(emb=650, hidden=650, layers=2, dropout=0.45), steps=60 * 1327,
                            batch_size=20, bptt=35, lr=30.0, momentum=0.3, clip=0.2, eval_every=1327), deployments=3,
                    student_steps=5, student_schedule="plateau", dev_size=10 ** 9, probe_size=20000, **_TEXT),
}
SETTINGS = {"mlp": PRESETS, "small-data": SMALL_DATA_PRESETS, "ptb": LM_PRESETS}


def preset(name: str, setting: str = "mlp", **knobs) -> Config:
    """`SETTINGS[setting][name]` with the knobs that are not None replaced (a notebook's None: the preset's)."""
    check_choice("setting", setting, SETTINGS)
    check_choice("preset", name, repro.PRESETS)
    return replace(SETTINGS[setting][name], **{k: v for k, v in knobs.items() if v is not None})


def load(cfg: Config, seed: int = 0, device: str | torch.device = "auto") -> Splits | TextSplits:
    """The data of `cfg`, split and scenario drawn from `seed`; text: dev/test cut to dev_size/test_size tokens."""
    if cfg.dataset == "ptb":
        t = data.load("ptb", device=device)
        return TextSplits(t.train, t.dev[:cfg.dev_size], t.test[:cfg.test_size], t.vocab, t.name)
    splits = data.load(cfg.dataset, dev_size=cfg.dev_size, seed=seed, device=device, train_size=cfg.train_size)
    splits = replace(splits, test=splits.test[:cfg.test_size]) if cfg.test_size else splits
    return data.apply_scenario(splits, cfg.scenario and {**cfg.scenario, "seed": seed})


class _Probes:
    """Logs "kl_train<suffix>", "kl_test<suffix>" in a Run's Traces: the imitation KL of each imitator against the
    model it imitates, both in eval mode, on the first `probe_size` training and test examples (text: tokens)."""

    def __init__(self, splits: Splits | TextSplits, cfg: Config):
        self.text, self.T, self.bptt = isinstance(splits, TextSplits), cfg.temperature, cfg.student.bptt
        self.sets = {s: (getattr(splits, s) if self.text else getattr(splits, s).x)[:cfg.probe_size]
                     for s in ("train", "test")}

    @torch.no_grad()
    def __call__(self, run: engine.Run, model: nn.Module, imitators: Population, suffix: str = "") -> None:
        measure = self._text if self.text else self._vision
        kls = {f"kl_{s}": measure(model, imitators, x) for s, x in self.sets.items()}
        for i, tr in enumerate(run.traces):  # live members with finite values only: a diverged run is not data
            if run.alive[i] and all(math.isfinite(float(v[i])) for v in kls.values()):
                tr.log(run.step, **{f"{k}{suffix}": float(v[i]) for k, v in kls.items()})

    def _vision(self, model, imitators, x) -> torch.Tensor:
        t, s = predict(model, x), predict(imitators, x)
        return kl_per_member(s, t if t.dim() == 3 else t.expand(len(s), -1, -1), self.T).cpu()

    def _text(self, model, imitators, tokens) -> torch.Tensor:
        pairs = [(getattr(model, "member", lambda i: model)(i), imitators.member(i)) for i in range(imitators.size)]
        states, total, rows = [[None, None] for _ in pairs], torch.zeros(len(pairs)), 0
        model.eval(), imitators.eval()  # their engine forwards set train mode again
        for x, _ in bptt_windows(batchify(tokens, 10), self.bptt):
            for i, (t, s) in enumerate(pairs):
                (tl, states[i][0]), (sl, states[i][1]) = t(x, states[i][0]), s(x, states[i][1])
                total[i] += float(kl_per_member(sl.flatten(0, 1)[None], tl.flatten(0, 1)[None], self.T)) * x.numel()
            rows += x.numel()
        return total / rows


class _Imitate(engine.Hooks):
    """Imitators of `model` (a Population: imitator i imitates member i; else one frozen model), eval-mode targets
    on their own batches (text: a state per imitator on its walk); with `probes`, KLs after each evaluation."""

    def __init__(self, cfg: Config, model: nn.Module, size: int, text: bool, probes: "_Probes | None" = None):
        self.cfg, self.model, self.text, self.probes, self.states = cfg, model, text, probes, [None] * size

    @torch.no_grad()
    def targets(self, x: torch.Tensor, restart: torch.Tensor | None = None) -> torch.Tensor:
        """x [S, B, ...] (text: tokens [S, L, B]) -> [S, B, C] (text: [S, L·B, V])."""
        PASSES.add(forward=len(x) * (x[0].numel() if self.text else len(x[0])))
        self.model.eval()  # left so: the teacher's engine forward sets train mode again, a frozen one stays eval
        if not self.text:
            return (self.model(x) if isinstance(self.model, Population) else
                    self.model(x.flatten(0, 1)).view(*x.shape[:2], -1)).float()
        out = []
        for i in range(len(x)):
            state = None if restart is not None and bool(restart[i]) else self.states[i]
            logits, state = getattr(self.model, "member", lambda i: self.model)(i)(x[i], state)
            self.states[i] = tuple(h.detach() for h in state)
            out.append(logits.reshape(-1, logits.shape[-1]).float())
        return torch.stack(out)

    def objective(self, logits, batch, step):
        c = self.cfg
        return imitator_loss(logits, self.targets(batch.x, batch.restart), batch.y, c.loss, c.imitation_weight,
                             c.temperature)

    def after_eval(self, run, step):
        if self.probes is not None:
            self.probes(run, self.model, run.students)

    def state_dict(self) -> dict:
        return dict(states=self.states)

    def load_state_dict(self, state: dict) -> None:
        self.states = list(state["states"])


class _LoT(engine.Hooks):
    """The deployed models: CE + α·KL to the imitators' logits; after each step the imitators' joint and N − 1 own
    steps; after each evaluation probe KLs and (text) the best-dev model. Its state holds the imitators' Runs."""

    def __init__(self, cfg: Config, alpha: float, splits: Splits | TextSplits, S: int):
        self.cfg, self.alpha, self.text, self.pending = cfg, alpha, isinstance(splits, TextSplits), None
        self.ce, self.kl = torch.zeros(S, cfg.student.total_steps), torch.zeros(S, cfg.student.total_steps)
        self.joint = [[None] * S for _ in range(cfg.num_students)]  # text: imitators' states on the teacher's walk
        self.best = dict(dev_ppl=[math.inf] * S, step=[None] * S, test_ppl=[None] * S)  # text: the best-dev model
        self.probes, self.imitators = _Probes(splits, cfg), []

    def _joint_forward(self, k: int, run: engine.Run, batch: engine.Batch) -> torch.Tensor:
        if not self.text:
            return run.forward(batch.x)
        own, run.students.states = run.students.states, self.joint[k]
        try:
            return run.forward(batch.x, batch.restart)
        finally:
            self.joint[k], run.students.states = run.students.states, own

    def objective(self, logits, batch, step):
        outs = [self._joint_forward(k, run, batch) for k, run in enumerate(self.imitators)]
        self.pending = (outs, logits.detach().float(), batch.y)
        loss, self.ce[:, step], kl = teacher_loss(logits, outs, batch.y, self.alpha, self.cfg.temperature)
        self.kl[:, step] = 0 if kl is None else kl
        return loss

    def after_step(self, run, step, loss):
        (outs, target, y), self.pending, c = self.pending, None, self.cfg
        for out, imitators in zip(outs, self.imitators):  # the joint step: its logits, the teacher's pre-step ones
            imitators.update(imitator_loss(out, target, y, c.loss, c.imitation_weight, c.temperature))
            for _ in range(self.cfg.student_steps - 1):
                imitators.step_once()

    def after_eval(self, run, step):
        for k, imitators in enumerate(self.imitators):
            self.probes(run, run.students, imitators.students, f"/{k}")
            if imitators.config.schedule == "plateau":
                imitators.evaluate()  # their dev loss sets their learning rate
        for i in range(len(run.seeds)):  # the model of best dev perplexity: its test perplexity is what text reports
            if self.text and run.alive[i] and run.traces[i].last("dev_ppl") < self.best["dev_ppl"][i]:
                test = evaluate_text(run.students.member(i), run.splits.test, self.cfg.student.bptt)["ppl"]
                self.best["dev_ppl"][i], self.best["step"][i] = run.traces[i].last("dev_ppl"), step
                self.best["test_ppl"][i] = test

    def state_dict(self) -> dict:
        return dict(ce=self.ce, kl=self.kl, joint=self.joint, best=self.best,
                    imitators=[r.state_dict() for r in self.imitators])

    def load_state_dict(self, state: dict) -> None:
        self.ce, self.kl, self.joint, self.best = state["ce"], state["kl"], state["joint"], state["best"]
        [r.load_state_dict(s) for r, s in zip(self.imitators, state["imitators"])]


def train_models(splits: Splits | TextSplits, cfg: Config, seeds: list[int], base: tuple, alpha: float, *,
         checkpoint_dir=None, progress_bar=None) -> tuple[engine.Run, list[Trace]]:
    """Train S = len(seeds) deployed models (role `base`) with their imitators; returns the Run and its Traces."""
    hooks = _LoT(cfg, alpha, splits, len(seeds))
    run = engine.Run(splits, cfg.student, seeds, role=base, hooks=hooks)
    hooks.imitators = [engine.Run(splits, imitator_config(cfg), seeds, role=(*base, "lot-student", k),
                                  hooks=_Imitate(cfg, run.students, len(seeds), hooks.text))
                       for k in range(cfg.num_students)]
    engine.train(run, checkpoint_dir=checkpoint_dir, progress_bar=progress_bar, desc=f"LoT α={alpha:g}",
                 checkpoint_every=cfg.student.evaluations or max(cfg.student.total_steps // 10, 1))
    for k, imitators in enumerate(hooks.imitators):
        imitators.finish()
        hooks.probes(run, run.students, imitators.students, f"/{k}")
    return run, [_finish(run, hooks, i, alpha) for i in range(len(seeds))]


def _finish(run: engine.Run, hooks: _LoT, i: int, alpha: float) -> Trace:
    """Member i's Trace with the teacher's CE and KL per step, the imitators' numbers, final KLs, (text) best dev."""
    tr, cfg, K = run.traces[i], hooks.cfg, hooks.cfg.num_students
    end = run.ended_at[i] if run.ended_at[i] is not None else run.step
    tr.config.update(_knobs(cfg), method=LOT if alpha else CONTROL, alpha=alpha)
    tr.log_series("teacher_ce", range(1, end + 1), hooks.ce[i, :end])
    if alpha:
        tr.log_series("teacher_kl", range(1, end + 1), hooks.kl[i, :end])
    for k, imitators in enumerate(hooks.imitators):
        it = imitators.traces[i]
        if it.diverged:
            tr.note(f"student {k} diverged at its step {it.metrics['diverged_at_step']}: its KLs are left out")
        for s in ("kl_train", "kl_test"):
            ok = not (tr.diverged or it.diverged) and f"{s}/{k}" in tr.scalars
            tr.metrics[f"{s}/{k}"] = tr.last(f"{s}/{k}") if ok else None
    for s in ("kl_train", "kl_test"):  # a model's imitability: the mean over its imitators
        tr.metrics[s] = None if None in (kls := [tr.metrics[f"{s}/{k}"] for k in range(K)]) else sum(kls) / K
    tr.metrics.update(teacher_steps=end, student_steps_total=end * cfg.student_steps * K,
                      compute_steps=end * (1 + cfg.student_steps * K))
    if hooks.text and not tr.diverged:  # the final model is a candidate too (ties: the later, final one)
        final = tr.metrics["dev_ppl"] <= hooks.best["dev_ppl"][i]
        tr.metrics.update(best_dev_ppl=tr.metrics["dev_ppl"] if final else hooks.best["dev_ppl"][i],
                          best_dev_step=end if final else hooks.best["step"][i],
                          test_ppl_best_dev=tr.metrics["test_ppl"] if final else hooks.best["test_ppl"][i])
    return tr


def _knobs(cfg: Config) -> dict:
    return dict(student_alpha=cfg.imitation_weight, student_steps=cfg.student_steps, temperature=cfg.temperature,
                num_students=cfg.num_students, loss=cfg.loss, student_model=imitator_config(cfg).model)


def train_teacher(splits: Splits | TextSplits, cfg: Config, seed: int, *, checkpoint_dir: str | Path | None = None,
                  progress_bar: bool | None = None) -> tuple[nn.Module, Trace]:
    """Train one LoT model (the paper's teacher) with its imitators, role (TEACH, "lot"); returns the model (eval
    mode) and its Trace. `control(cfg)`: the teacher-only model of the seed. Checkpoints after every evaluation."""
    run, traces = train_models(splits, cfg, [seed], (seeding.TEACH, "lot"), cfg.alpha,
                               checkpoint_dir=checkpoint_dir, progress_bar=progress_bar)
    return run.students.member(0).eval(), traces[0]


def deploy(teacher: nn.Module, splits: Splits | TextSplits, cfg: Config, seeds: int | Sequence[int], *,
           progress_bar: bool | None = None) -> Trace | list[Trace]:
    """Fresh imitators (role (DEPLOY, "lot-imitator"), one population) trained N · steps steps with `cfg`'s
    imitator loss against the FROZEN `teacher` (eval-mode targets): how easily it is imitated. Their Traces log
    "kl_train" / "kl_test" at each evaluation and as final metrics. An int seed -> one Trace."""
    one, seeds = isinstance(seeds, int), seeding.check_seeds("seeds", [seeds] if isinstance(seeds, int) else seeds)
    text, teacher = isinstance(splits, TextSplits), teacher.to(splits.device)
    hooks = _Imitate(cfg, teacher, len(seeds), text, _Probes(splits, cfg))
    run = engine.Run(splits, imitator_config(cfg), seeds, role=(seeding.DEPLOY, "lot-imitator"), hooks=hooks)
    traces = engine.train(run, progress_bar=progress_bar, desc="imitate")
    hooks.probes(run, teacher, run.students)
    for tr in traces:
        tr.config.update(_knobs(cfg), method="imitate")
        tr.metrics.update({k: None if tr.diverged else tr.last(k) for k in ("kl_train", "kl_test")})
    return traces[0] if one else traces


def compare(splits: Splits | TextSplits, cfg: Config, seeds: Sequence[int], *,
            checkpoint_dir: str | Path | None = None, progress_bar: bool | None = None) -> dict[str, list[Trace]]:
    """LoT against teacher-only on the same seeds (role DEPLOY: same initial weights and batches) at equal teacher
    steps, both with co-evolving imitators; with `cfg.equal_compute` also teacher-only at LoT's total compute.
    {LOT: Traces, CONTROL: Traces[, LONG: Traces]}, one per seed; each part checkpoints in checkpoint_dir/<part>."""
    seeds, base = seeding.check_seeds("seeds", seeds), (seeding.DEPLOY,)
    where = {n: None if checkpoint_dir is None else Path(checkpoint_dir) / n for n in ("lot", "control", "long")}
    results = {name: train_models(splits, c, seeds, base, c.alpha, checkpoint_dir=where[part],
                                  progress_bar=progress_bar)[1]
               for name, c, part in ((LOT, cfg, "lot"), (CONTROL, control(cfg), "control"))}
    if cfg.equal_compute:  # teacher-only given LoT's total compute: (1 + N·K) x the steps, same seeds and role
        m = 1 + cfg.student_steps * cfg.num_students
        s = replace(cfg.student, steps=cfg.student.steps * m, eval_every=cfg.student.evaluations * m,
                    milestones=tuple(x * m for x in cfg.student.milestones))
        results[LONG] = engine.train(engine.Run(splits, s, seeds, role=base), checkpoint_dir=where["long"],
                                     checkpoint_every=max(s.evaluations, 1), progress_bar=progress_bar, desc=LONG)
        [tr.config.update(method=LONG) for tr in results[LONG]]
    return results


def sweep(splits: Splits | TextSplits, cfg: Config, alphas: Sequence[float], ns: Sequence[int], seeds: Sequence[int],
          *, progress_bar: bool | None = None) -> dict:
    """LoT − teacher-only on DEV (dev_acc; text: dev_ppl) per (α, N), paired over tuning seeds (role TUNE), for
    `cfg.sweep_steps` steps; test is never read. The grid, paired differences, dev's "chosen" cell, a "verdict"."""
    seeds, base, text = seeding.check_seeds("seeds", seeds), (seeding.TUNE, "lot"), isinstance(splits, TextSplits)
    key, sign = ("dev_ppl", -1) if text else ("dev_acc", 1)
    cfg = replace(cfg, student=replace(cfg.student, steps=cfg.sweep_steps or cfg.student.steps, eval_every=0))
    baseline = metric_values({0: engine.train(engine.Run(splits, cfg.student, seeds, role=base),
                                              progress_bar=progress_bar)}, key)[0]
    grid = [[metric_values({0: train_models(splits, replace(cfg, alpha=a, student_steps=n), seeds, base, a,
                                            progress_bar=progress_bar)[1]}, key)[0] for a in alphas] for n in ns]
    diffs = [[stats.paired(v, baseline, higher_is_better=not text) for v in row] for row in grid]
    cells = [(r, c) for r in range(len(ns)) for c in range(len(alphas)) if diffs[r][c].difference.n]
    r, c = max(cells, key=lambda rc: sign * diffs[rc[0]][rc[1]].difference.mean) if cells else (0, 0)
    best = diffs[r][c]
    verdict = (f"On dev ({key}, {len(seeds)} tuning seeds, {cfg.student.steps} steps) the best cell is α = "
               f"{alphas[c]:g}, N = {ns[r]}: LoT − teacher-only {best.difference.format(2, 1 if text else 100)}, "
               f"{'an interval that excludes 0' if best.helps else 'not separated from teacher-only'}; the preset runs "
               f"α = {cfg.alpha:g}, N = {cfg.student_steps}.")
    return dict(metric=key, alphas=list(alphas), ns=list(ns), seeds=seeds, steps=cfg.student.steps, baseline=baseline,
                values=grid, difference=[[d.as_dict() for d in row] for row in diffs],
                chosen=dict(alpha=alphas[c], student_steps=ns[r]), verdict=verdict)


def summary(results: dict[str, list[Trace]], seeds: Sequence[int], splits: Splits | TextSplits,
            cfg: Config | None = None, *, setting: str = "") -> dict:
    """The experiment for metrics.json: test accuracy (text: test perplexity at the best-dev checkpoint) of each
    method paired by seed against teacher-only (`stats.summarize`, `repro.experiment`), with the scenario."""
    text, c = isinstance(splits, TextSplits), results[LOT][0].config
    setting = setting or (f"{c['steps']} teacher steps, batch {c['batch_size']}, α {c['alpha']:g}, N "
                          f"{c['student_steps']}, T {c['temperature']:g}, K {c['num_students']}, {c['loss']}; "
                          + ("test ppl at the best-dev checkpoint" if text else "final-step test accuracy"))
    values = metric_values(results, "test_ppl_best_dev" if text else "test_acc")
    exp = repro.experiment(stats.summarize(values, seeds, baseline=CONTROL, higher_is_better=not text),
                           metric="test_ppl" if text else "test_acc", dataset=splits.name, paper="lot", setting=setting,
                           model=(f"lstm_lm-{c['model_kwargs'].get('layers', 2)}x{c['model_kwargs'].get('hidden', 200)}"
                                  if text else f"{c['model']}/{c['student_model']}"))  # papers' names
    return dict(exp, scenario=list(getattr(splits, "scenario", ())))


def imitability(results: dict[str, list[Trace]], seeds: Sequence[int]) -> dict[str, dict]:
    """Final imitation KL (mean over a model's imitators; lower: easier to imitate) on the train and test probes,
    paired by seed against teacher-only: {"kl_test": summarize, "kl_train": summarize}."""
    return {k: stats.summarize(metric_values({n: t for n, t in results.items() if n != LONG}, k), seeds,
                               baseline=CONTROL, higher_is_better=False) for k in ("kl_test", "kl_train")}

