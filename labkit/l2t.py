"""L2T: Learning to Teach (Fan et al., ICLR 2018): a policy that keeps or drops each training example.

For each example shown, the teacher (25 → 12 → 1 tanh, sigmoid) reads g(s) = [one-hot label | 3 student features |
probabilities | −log p_y | margin] and keeps it with probability p(keep); kept examples pool until M are there and
the student steps on those M (a batch policy, `engine.Hooks.select`). An episode trains a fresh student until its dev
accuracy first reaches τ (checked every `student.eval_every` steps on `dev_read` examples) or T' = `max_steps` steps
pass; reward r = −log(i_τ / T'); REINFORCE with a baseline. Deployed, the frozen teacher keeps when p ≥ 0.5 and teaches
new students on the other half of the training data, against NoTeach, RandTeach (L2T's keep rate at the same seed),
self-paced learning, a hand-set loss threshold (a yardstick) and, under label noise, the Oracle.

    teacher_side, student_side = l2t.halves(splits, seed)
    teacher, trace = l2t.train_teacher(teacher_side, cfg, seed, checkpoint_dir=...)
    experiments = l2t.summary(l2t.compare(teacher, student_side, cfg, seeds), seeds, student_side, cfg)

Deviations from the paper (the `paper` preset keeps its form: group_size 1, EMA baseline): group_size ≥ 2 trains a
group of episodes as one population sharing the student seed (common random numbers) with the group's mean reward as
baseline (`normalize` also divides by its std: off in the presets; with it every group, even one whose rewards differ
by noise only, takes a full-size step, and the cpu teacher drifted until its students stalled, docs/l2t-diary.md);
the policy-gradient loss averages log π over an episode's decisions (the paper sums; the mean keeps the step
independent of the episode's length). Deployment: `l2t` is the paper's deterministic rule (p ≥ 0.5, hyzcn),
`l2t_sampled` samples keep ~ Bernoulli(p) as the teacher was trained (sixiaozheng); both are reported.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import torch

from . import data as datasets, engine, seeds as seeding, stats
from .checks import check_choice, check_float, check_int
from .models import KNOWN_MODELS
from .repro import experiment
from .student import StudentConfig
from .trace import Trace, progress
from .l2t_policies import (KeepDrop, NoTeach, Oracle, RandTeach, SelfPaced, Teacher, TeacherPolicy,  # noqa: F401
                           loss_threshold_teacher, state_features)

METHODS = ("l2t", "l2t_sampled", "noteach", "randteach", "spl", "loss_threshold", "oracle")
CHECKPOINT_FILE = "l2t_teacher.pt"
# Config fields that shape only the deployment (seeds, baselines, transfer, the test curve), never the teacher: a card
# trained under other values of these still holds this teacher (`labkit.cards.teacher`).
DEPLOYMENT_ONLY = ("deployments", "test_every", "spl", "threshold", "transfer_model", "transfer_deployments",
                   "transfer_eval_every", "transfer_test_every")


@dataclass(frozen=True)
class Config:
    """L2T's knobs. student: the deployment students (M = batch_size, budget = steps, τ checks every eval_every);
    episode students are it with steps = max_steps (T'). shown: examples per draw (at most max_draws draws a step);
    dev_read: dev examples a τ check reads (None: all); test_every: steps between the deployment students' test
    reads (their test curve; taken at τ checks whose step is a multiple of it); episodes = group_size x
    teacher_updates; spl: SPL's λ from spl[0]·ln C to spl[1]·ln C; threshold: the yardstick's loss threshold;
    transfer_*: the transfer students."""

    student: StudentConfig
    deployments: int = 8
    tau: float = 0.9
    max_steps: int = 400
    shown: int = 32
    episodes: int = 240
    group_size: int = 8
    teacher_lr: float = 0.05
    baseline_decay: float = 0.8
    normalize: bool = False
    init_keep: float = 0.88
    loss_norm: float = 2.3
    max_draws: int = 50
    dev_read: int | None = 1000
    test_every: int = 20
    threshold: float = 0.05
    spl: tuple[float, float] = (1.5, 3.0)
    transfer_model: str = "lenet"
    transfer_deployments: int = 4
    transfer_eval_every: int = 20
    transfer_test_every: int = 40
    dataset: str = "mnist"
    dev_size: int = 5000
    train_size: int | None = None
    test_size: int | None = None

    @property
    def teacher_updates(self) -> int:
        return self.episodes // self.group_size

    def check(self) -> "Config":
        """Raise a ValueError naming any knob out of range (NaN and inf included); return self."""
        self.student.check()
        for name in ("deployments", "max_steps", "shown", "episodes", "group_size", "max_draws", "transfer_deployments",
                     "transfer_eval_every", "transfer_test_every", "dev_size", "test_every"):
            check_int(name, getattr(self, name), 1)
        for name in ("dev_read", "train_size", "test_size"):
            _ = getattr(self, name) is None or check_int(name, getattr(self, name), 1)
        check_float("tau", self.tau, 0, 1, low_open=True, high_open=True)
        check_float("init_keep", self.init_keep, 0, 1, low_open=True, high_open=True)
        check_float("baseline_decay", self.baseline_decay, 0, 1, high_open=True)
        for name in ("teacher_lr", "loss_norm", "threshold"):
            check_float(name, getattr(self, name), 0, low_open=True)
        if len(self.spl) != 2 or check_float("spl[0]", self.spl[0], 0) > check_float("spl[1]", self.spl[1], 0):
            raise ValueError(f"spl={self.spl!r} is not allowed: give (start, end) with 0 <= start <= end (x ln C)")
        if self.episodes % self.group_size:
            raise ValueError(f"episodes={self.episodes} is not allowed: it must be a multiple of group_size="
                             f"{self.group_size} (one teacher update per group)")
        if self.normalize and self.group_size == 1:
            raise ValueError("normalize=True is not allowed with group_size=1: it divides by a group's reward std")
        check_choice("transfer_model", self.transfer_model, KNOWN_MODELS)
        return self


_MNIST = StudentConfig(model="mlp", model_kwargs={"hidden": (100,)}, steps=400, batch_size=32, lr=0.02, eval_every=5)
PRESETS: dict[str, Config] = {
    # CI only, numbers mean nothing: a small MLP on 3000 MNIST images, 4 episodes in groups of 2.
    "smoke": Config(replace(_MNIST, model_kwargs={"hidden": (32,)}, steps=40, batch_size=16, lr=0.05), deployments=3,
                    tau=0.7, max_steps=40, shown=16, episodes=4, group_size=2, teacher_lr=0.03, dev_read=300,
                    test_every=10, transfer_deployments=2, transfer_eval_every=10, transfer_test_every=20,
                    train_size=3000, dev_size=1000, test_size=1000),
    # MNIST on 2 CPU cores, scaled down (docs/l2t-diary.md): MLP 784-100-10, τ 0.9 within T' = 400 steps of M = 32;
    # 30 teacher updates of 8 episodes sharing a student (Adam 0.05), p(keep) 0.88 at start as in the public code.
    "cpu": Config(_MNIST),
    # The paper's MNIST setting as read in code (sixiaozheng: τ 0.93, T' 10 000, M 20, SGD 0.01 momentum 0.9, wd 1e-4,
    # 300 episodes, teacher Adam 1e-3); the paper's EMA baseline from p(keep) 0.88; the whole dev half read. GPU.
    "paper": Config(StudentConfig(model="mlp", steps=10_000, batch_size=20, lr=0.01, weight_decay=1e-4, eval_every=20),
                    deployments=5, tau=0.93, max_steps=10_000, shown=20, episodes=300, group_size=1, teacher_lr=1e-3,
                    dev_read=None),
    # CIFAR-10 ResNet-32 as in the public ports: τ 0.80, SGD 0.1 momentum 0.9 wd 1e-4, M 128, lr x0.1 at 32k and 48k
    # steps; episodes of hyzcn's T' = 24 219 steps. Needs the CIFAR-10 files and a GPU (hours).
    "paper_cifar10": Config(StudentConfig(model="resnet32", steps=64_000, batch_size=128, lr=0.1, weight_decay=1e-4,
                                          schedule="multistep", milestones=(32_000, 48_000), eval_every=100),
                            deployments=5, tau=0.80, max_steps=24_219, shown=128, episodes=50, group_size=1,
                            teacher_lr=1e-3, dev_read=None, dataset="cifar10",
                            transfer_model="resnet56"),
}


def config(preset: str, **knobs) -> Config:
    """PRESETS[preset] with the knobs that are not None replaced (a notebook's parameters), checked."""
    check_choice("preset", preset, PRESETS)
    return replace(PRESETS[preset], **{k: v for k, v in knobs.items() if v is not None}).check()


def load(cfg: Config, seed: int, device: str | torch.device = "auto") -> datasets.Splits:
    """The preset's dataset: dev carved with `seed`, train cut to train_size and test to test_size when set."""
    splits = datasets.load(cfg.dataset, dev_size=cfg.dev_size, seed=seed, device=device, train_size=cfg.train_size)
    return splits if cfg.test_size is None else replace(splits, test=splits.test[:cfg.test_size])


def halves(splits: datasets.Splits, seed: int) -> tuple[datasets.Splits, datasets.Splits]:
    """The paper's protocol: (teacher side, student side). Train and dev are each halved class by class (by the
    observed label; stream `seed`/"l2t"/"halves"/...): the teacher learns on one train half and judges τ on one dev
    half; deployed students train on the other train half, judged on the other dev half. Test is shared, only
    reported; a scenario's `clean_y` travels with its examples."""
    out = []
    for name in ("train", "dev"):
        split, gen = getattr(splits, name), seeding.generator(seed, "l2t", "halves", name)
        parts: tuple[list, list] = ([], [])
        for c in torch.unique(split.y.cpu()).tolist():
            idx = torch.nonzero(split.y.cpu() == c).flatten()
            idx = idx[torch.randperm(len(idx), generator=gen)]
            parts[0].append(idx[:len(idx) // 2]), parts[1].append(idx[len(idx) // 2:])
        out.append([split[torch.cat(p)[torch.randperm(sum(map(len, p)), generator=gen)].to(split.y.device)]
                    for p in parts])
    return replace(splits, train=out[0][0], dev=out[1][0]), replace(splits, train=out[0][1], dev=out[1][1])




def _common(cfg: Config, record: str | None = "first", **kwargs) -> dict:
    return dict(shown=cfg.shown, max_draws=cfg.max_draws, record=record, tau=cfg.tau, max_steps=cfg.max_steps,
                loss_norm=cfg.loss_norm, **kwargs)


def reward(reached: int | None, max_steps: int) -> float:
    """r = −log(i_τ / T'): 0 when τ was never reached (i_τ = T'), larger the sooner it was."""
    return -math.log(min(reached if reached is not None else max_steps, max_steps) / max_steps)


def _episode_setup(splits: datasets.Splits, cfg: Config) -> tuple[datasets.Splits, StudentConfig]:
    """Episode students: T' steps, milestones past T' dropped; the dev read cut once and also used as their test
    split (the final measure of a stopped member), so no test example is read while the teacher trains."""
    dev, s = (splits.dev if cfg.dev_read is None else splits.dev[:cfg.dev_read]), cfg.student
    return replace(splits, dev=dev, test=dev), replace(s, steps=cfg.max_steps, eval_size=None, eval_test=False,
                                                       milestones=tuple(m for m in s.milestones if m <= cfg.max_steps))


def train_teacher(splits: datasets.Splits, cfg: Config, seed: int, *, checkpoint_dir: str | Path | None = None,
                  progress_bar: bool | None = None) -> tuple[Teacher, Trace]:
    """REINFORCE over cfg.episodes episodes on the teacher side (`halves`); returns (teacher, Trace).

    Group g (of cfg.teacher_updates) is ONE engine Run of group_size students sharing the seed `seed` under role
    ("teach", "group", g) (common random numbers), member k sampling keep/drop from its own generator
    (`seed`/"teach"/"group"/g/"member"/k/"sample"), each stopped at τ; one update per group (`_reinforce`).
    checkpoint_dir: a checkpoint after every group (teacher, Adam, baseline, Trace, next group); started again, a
    run resumes bit for bit, and a finished one returns its teacher at once.
    Trace scalars per episode: reward, baseline, advantage, steps_to_tau (T' when not reached), reached (0/1),
    keep_rate, p_keep_mean (+ keep_rate_corrupted / keep_rate_clean under label noise); notes in messages."""
    cfg, seed = cfg.check(), seeding.check_seed("seed", seed)
    episode_splits, student = _episode_setup(splits, cfg)
    teacher = Teacher(splits.num_classes, init_keep=cfg.init_keep,
                      seed=seeding.derive(seed, seeding.TEACH, "teacher", "init")).to(splits.device)
    opt = torch.optim.Adam(teacher.parameters(), lr=cfg.teacher_lr)
    trace = Trace(config=dict(asdict(cfg), seed=seed, dataset=splits.name, scenario=list(splits.scenario)))
    key = json.dumps(dict(trace.config, train=len(splits.train)), sort_keys=True, default=list)
    path, start, baseline = Path(checkpoint_dir or ".") / CHECKPOINT_FILE, 0, None
    if checkpoint_dir is not None and path.exists():
        state = engine.load_checkpoint(path, splits.device)
        if state["key"] != key:
            raise ValueError(f"{path} holds another teacher's training: use another checkpoint_dir or delete it")
        teacher.load_state_dict(state["teacher"])
        opt.load_state_dict(state["optimizer"])
        start, baseline, trace = state["group"], state["baseline"], Trace.from_bytes(state["trace"].numpy().tobytes())
    bar = progress(total=cfg.teacher_updates, desc="teacher", enabled=progress_bar, initial=start)
    for g in range(start, cfg.teacher_updates):
        gens = [seeding.generator(seed, seeding.TEACH, "group", g, "member", k, "sample", device=splits.device)
                for k in range(cfg.group_size)]
        policy = TeacherPolicy(teacher, sample=True, collect=True, generators=gens, **_common(cfg, None, stop_at_tau=True))
        run = engine.Run(episode_splits, student, [seed] * cfg.group_size, role=(seeding.TEACH, "group", g),
                         hooks=policy)
        traces = engine.train(run, progress_bar=False)
        policy.annotate(traces)
        baseline = _reinforce(teacher, opt, policy, traces, cfg, baseline, trace, g)
        if checkpoint_dir is not None:
            engine.save_checkpoint(path, dict(key=key, group=g + 1, teacher=teacher.state_dict(), baseline=baseline,
                                              optimizer=opt.state_dict(), trace=torch.frombuffer(
                                                  bytearray(trace.to_bytes()), dtype=torch.uint8)))
        bar.update()
    bar.close()
    return teacher.eval(), trace


def _reinforce(teacher: Teacher, opt: torch.optim.Optimizer, policy: TeacherPolicy, traces: list[Trace],
               cfg: Config, baseline: float | None, trace: Trace, g: int) -> float | None:
    """One REINFORCE update from group g's episodes: advantage A = r − b, b the EMA of rewards (group_size 1, the
    paper; it starts at the first reward) or the group's mean (divided by its sample std with normalize); loss
    −mean over episodes of A · mean over the episode's decisions of log π. A diverged member is noted and left out.
    Logs the episodes into `trace`; returns the EMA baseline."""
    used = []
    for k, tr in enumerate(traces):
        if tr.diverged or k not in policy.decisions:
            for message in tr.messages + ["diverged or never decided: left out of the update"]:
                trace.note(f"episode {g * cfg.group_size + k}: {message}")
        else:
            used.append(k)
    if not used:
        return baseline
    r = torch.tensor([reward(policy.reached[k], cfg.max_steps) for k in used], dtype=torch.float64)
    b = torch.full_like(r, float(r.mean()) if cfg.group_size > 1 or baseline is None else baseline)
    if cfg.group_size == 1:
        baseline = cfg.baseline_decay * float(b[0]) + (1 - cfg.baseline_decay) * float(r[0])
    adv = r - b
    if cfg.normalize and len(r) > 1 and float(r.std()) > 1e-8:
        adv = adv / r.std()
    loss = sum(-float(a) * teacher.log_prob(*map(torch.cat, zip(*policy.decisions[k]))).mean()
               for a, k in zip(adv, used)) / len(used)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    for j, k in enumerate(used):
        m = traces[k].metrics
        extra = {n: m[n] for n in ("keep_rate_corrupted", "keep_rate_clean") if m.get(n) is not None}
        trace.log(g * cfg.group_size + k, reward=float(r[j]), baseline=float(b[j]), advantage=float(adv[j]),
                  steps_to_tau=policy.reached[k] or cfg.max_steps, reached=float(policy.reached[k] is not None),
                  keep_rate=m["keep_rate"], p_keep_mean=m["p_keep_mean"], **extra)
    return baseline


def deploy_policy(policy: KeepDrop, splits: datasets.Splits, cfg: Config, seeds: Sequence[int], *,
                  method: str = "", progress_bar: bool | None = None) -> list[Trace]:
    """One population of deployment students (role "deploy", one per seed) trained on splits.train with `policy` for
    cfg.student.steps steps; dev read (dev_read examples) every eval_every steps and τ judged on it, test read
    (dev_read examples) every test_every steps and only reported, final metrics on the whole splits. A Trace per
    seed; metrics add method, keep_rate, reached_step, effective_examples_to_tau, ... (`KeepDrop.annotate`)."""
    cfg, seeds = cfg.check(), seeding.check_seeds("seeds", seeds)
    student = replace(cfg.student, eval_size=cfg.dev_read, eval_test=True, test_every=cfg.test_every)
    run = engine.Run(splits, student, seeds, role=seeding.DEPLOY, hooks=policy)
    traces = engine.train(run, progress_bar=progress_bar, desc=method or "deploy")
    policy.annotate(traces)
    for tr in traces:
        tr.metrics["method"] = method
    return traces


def deploy(teacher: Teacher, splits: datasets.Splits, cfg: Config, seeds: Sequence[int] | int, *,
           record: str | None = "first") -> list[Trace] | Trace:
    """The frozen teacher (keep when p ≥ 0.5) teaches one population of new students; an int seed -> one Trace."""
    traces = deploy_policy(TeacherPolicy(teacher, **_common(cfg, record)), splits, cfg,
                           [seeds] if isinstance(seeds, int) else seeds, method="l2t")
    return traces[0] if isinstance(seeds, int) else traces


def compare(teacher: Teacher, splits: datasets.Splits, cfg: Config, seeds: Sequence[int], *,
            methods: Sequence[str] | None = None, record: str | None = "first") -> dict[str, list[Trace]]:
    """Every method on the same student side, seeds and budget: {method: [Trace per seed]}. methods (default: METHODS,
    "oracle" only when splits.train has corrupted labels): l2t keeps when p ≥ 0.5 (the paper's rule, hyzcn),
    l2t_sampled samples keep ~ Bernoulli(p) as in training (sixiaozheng's deployment); RandTeach copies l2t's keep
    rate at each seed (a teacher that kept nothing: 0); SPL's λ runs over cfg.spl x ln C; loss_threshold keeps
    losses over cfg.threshold; oracle drops exactly the corrupted examples."""
    if methods is None:
        methods = [m for m in METHODS if m != "oracle" or bool(splits.train.corrupted.any())]
    for m in methods:
        check_choice("methods", m, METHODS)
    if "randteach" in methods and "l2t" not in methods:
        raise ValueError("methods must include 'l2t' when they include 'randteach' (it copies L2T's keep rate)")
    out: dict[str, list[Trace]] = {}
    log_c, kw = math.log(splits.num_classes), _common(cfg, record)
    for m in sorted(methods, key=METHODS.index):
        policy = {"l2t": lambda: TeacherPolicy(teacher, **kw), "noteach": lambda: NoTeach(**kw),
                  "l2t_sampled": lambda: TeacherPolicy(teacher, sample=True, **kw),
                  "randteach": lambda: RandTeach([t.metrics["keep_rate"] or 0.0 for t in out["l2t"]], **kw),
                  "spl": lambda: SelfPaced(cfg.spl[0] * log_c, cfg.spl[1] * log_c, **kw),
                  "loss_threshold": lambda: TeacherPolicy(loss_threshold_teacher(splits.num_classes, cfg.threshold), **kw),
                  "oracle": lambda: Oracle(**kw)}[m]()
        out[m] = deploy_policy(policy, splits, cfg, seeds, method=m)
    return out


def transfer_config(cfg: Config) -> Config:
    """cfg with transfer students (cfg.transfer_model, τ checks every transfer_eval_every steps, test read every
    transfer_test_every) on transfer_deployments seeds; the teacher (trained with cfg.student's model) is not
    changed."""
    student = replace(cfg.student, model=cfg.transfer_model, model_kwargs={}, eval_every=cfg.transfer_eval_every)
    return replace(cfg, student=student, deployments=cfg.transfer_deployments, test_every=cfg.transfer_test_every)


def tau_for(splits: datasets.Splits, cfg: Config, seed: int, *, at: float = 0.6, students: int = 4) -> float:
    """τ for a scenario, read on dev only: the mean over `students` NoTeach students (role ("tune", "l2t", "tau"),
    on the teacher side) of the best dev accuracy (the teacher's dev read) they reached within at·T' steps, so NoTeach
    reaches τ about then (a noisy plateau is crossed earlier). That leaves the teacher room to do better or worse;
    a τ no episode reaches gives every episode reward 0, and the teacher no signal at all. Rounded to 3 decimals."""
    check_float("at", at, 0, 1, low_open=True)
    episode_splits, student = _episode_setup(splits, cfg.check())
    run = engine.Run(episode_splits, student, seeding.deployment_seeds(seed, check_int("students", students, 1)),
                     role=(seeding.TUNE, "l2t", "tau"), hooks=NoTeach(shown=cfg.shown, record=None))
    values = []
    for tr in (t for t in engine.train(run, progress_bar=False) if not t.diverged):
        steps, acc = tr.series("dev_acc")
        values.append(float(acc[steps <= max(at * cfg.max_steps, steps[0])].max()))
    if not values:
        raise ValueError("every NoTeach student diverged: no τ can be read; lower the student's lr")
    return round(min(sum(values) / len(values), 0.999), 3)


def summary(results: dict[str, list[Trace]], seeds: Sequence[int], splits: datasets.Splits, cfg: Config, *,
            name: str = "", setting: str = "") -> dict[str, dict]:
    """Two experiments (`repro.experiment`) paired by seed against NoTeach: effective_examples_to_tau (lower is
    better; a seed that never reached τ counts at the whole budget steps·M and is flagged False in "reached";
    diverged: None) and test_acc (None: diverged or trained 0 steps); each keeps splits.scenario. name: a prefix for
    the keys; setting: the budget in words (default: from cfg)."""
    base = "noteach" if "noteach" in results else next(iter(results))
    model = next(iter(results.values()))[0].config["model"]
    setting = setting or (f"τ {cfg.tau}, T' {cfg.max_steps}, M {cfg.student.batch_size}, {cfg.student.steps} steps, "
                          f"teacher: {cfg.episodes} episodes in groups of {cfg.group_size}")
    budget = {m: [(t.config["steps"] + t.config["pretrain_steps"]) * t.config["batch_size"] for t in ts]
              for m, ts in results.items()}
    eff = stats.summarize({m: [None if t.diverged else t.metrics["effective_examples_to_tau"] or b
                               for t, b in zip(ts, budget[m])] for m, ts in results.items()},
                          seeds, baseline=base, higher_is_better=False)
    eff["reached"] = {m: [t.metrics["reached_step"] is not None for t in ts] for m, ts in results.items()}
    eff["note"] = "a seed that never reached τ counts at the whole budget steps·M and is flagged False in 'reached'"
    eff["keep_rate"] = {m: [t.metrics.get("keep_rate") for t in ts] for m, ts in results.items()}
    acc = stats.summarize({m: [t.metrics.get("test_acc") for t in ts] for m, ts in results.items()}, seeds,
                          baseline=base)
    for s in (eff, acc):  # stats words every None "diverged": say which were runs of 0 steps
        s["left_out"] = {m: dict(diverged=sum(t.diverged for t in ts), trained_0_steps=sum(
            not t.diverged and not t.metrics.get("steps_done") for t in ts)) for m, ts in results.items()}
    pre = f"{name}_" if name else ""
    return {pre + metric: dict(experiment(s, metric=metric, dataset=splits.name, model=model, paper="l2t",
                                          setting=setting), scenario=list(splits.scenario))
            for metric, s in (("effective_examples_to_tau", eff), ("test_acc", acc))}


def report(experiments: dict[str, dict]) -> str:
    """Markdown: per experiment a table (mean ± 95 % t-interval, paired difference to the baseline), 'reached τ:
    k of n' per method, and one verdict sentence per method."""
    parts = []
    for key, exp in experiments.items():
        examples = exp["metric"] == "effective_examples_to_tau"
        scale, unit, diff = (1.0, "", " examples") if examples else (100.0, " %", " points")
        parts += [f"**{key}** ({exp['dataset']}, {exp['model']}; {exp['setting']})", "",
                  stats.table(exp, scale=scale, unit=unit, digits=0 if examples else 2, diff_unit=diff), ""]
        if "reached" in exp:
            parts.append("reached τ: " + ", ".join(f"{m} {sum(r)} of {len(r)}" for m, r in exp["reached"].items())
                         + f" ({exp['note']}).  ")
            rates = {m: [v for v in r if v] for m, r in exp["keep_rate"].items()}
            parts.append("keep rate (examples shown per example kept): " + ", ".join(
                f"{m} {sum(r) / len(r):.3f} ({len(r) / sum(r):.1f})" if r else f"{m} –" for m, r in rates.items()))
        zero = {m: n["trained_0_steps"] for m, n in exp.get("left_out", {}).items() if n["trained_0_steps"]}
        if zero and not examples:
            parts.append("no accuracy (counted as 'diverged' above): " + ", ".join(
                f"{m} trained 0 steps on {n} seed(s)" for m, n in zero.items()))
        parts += [f"- {v}" for v in stats.verdicts(exp, scale=scale, unit=diff)] + [""]
    return "\n".join(parts)


def teacher_report(trace: Trace) -> str:
    """Teacher training in numbers: reward, steps to τ, reached and keep rates over the first and the last quarter of
    the episodes used, and every note."""
    lines = [] if "reward" in trace.scalars else ["no episode was used for an update"]
    for name in ("reward", "steps_to_tau", "reached", "keep_rate", "keep_rate_corrupted", "keep_rate_clean"):
        if name in trace.scalars:
            v = trace.series(name)[1]
            q = max(len(v) // 4, 1)
            lines.append(f"{name}: first quarter of episodes {v[:q].mean():.3f}, last quarter {v[-q:].mean():.3f}")
    return "\n".join(lines + [f"note: {m}" for m in trace.messages])


def keep_profile(trace: Trace, feature: str = "margin",
                 edges: Sequence[float] = (-1.0, 0.0, 0.5, 0.9, 0.99, 1.0)) -> list[dict]:
    """Per bin [edges[i], edges[i+1]) of a recorded `feature` ("margin" or "student_loss"; the last bin closed): the
    examples shown, their mean p(keep) and the share kept (a recorded member of an l2t or spl deployment)."""
    if feature not in trace.arrays or "p_keep" not in trace.arrays:
        raise ValueError(f"feature={feature!r} is not in this trace: it needs a recorded l2t or spl deployment")
    x, p, keep = trace.concat(feature), trace.concat("p_keep"), trace.concat("keep_mask").astype(bool)
    rows = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        sel = (x >= lo) & ((x <= hi) if i == len(edges) - 2 else (x < hi))
        rows.append(dict(low=float(lo), high=float(hi), shown=int(sel.sum()),
                         p_keep=float(p[sel].mean()) if sel.any() else None,
                         kept=float(keep[sel].mean()) if sel.any() else None))
    return rows


def keep_profile_table(trace: Trace, feature: str = "margin") -> str:
    """`keep_profile` as a Markdown table (– where a bin is empty)."""
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    return stats.markdown_table([f"{feature} bin", "shown", "mean p(keep)", "kept"],
                                [[f"[{r['low']}, {r['high']})", r["shown"], fmt(r["p_keep"]), fmt(r["kept"])]
                                 for r in keep_profile(trace, feature)])
