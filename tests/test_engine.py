"""The engine: one loop for every student; populations; the non-finite guard; checkpoint and resume."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from labkit import data, engine, models, seeds, student
from labkit.population import GroupedLeNet, Looped, StackedMLP, population
from labkit.student import StudentConfig


def toy(n: int = 600, shape=(1, 28, 28), classes: int = 10, seed: int = 0, augment: bool = False) -> data.Splits:
    """A learnable toy image set: class c brightens row band c."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, *shape, generator=g) * 0.3
    for c in range(classes):
        x[y == c, :, 2 * c:2 * c + 2, :] += 2.0
    return data.from_tensors(x[:-100], y[:-100], dev_size=100, test=(x[-100:], y[-100:]), seed=seed,
                             augment=augment)


CFG = StudentConfig(model="mlp", model_kwargs={"hidden": (32,)}, steps=40, batch_size=16, lr=0.05, eval_every=10)


def test_fit_trains_and_records():
    splits = toy()
    tr = engine.fit("mlp", splits, CFG, seed=0, progress_bar=False)
    steps, loss = tr.series("loss")
    assert list(steps) == list(range(1, 41)) and loss[-5:].mean() < loss[:5].mean()
    assert tr.metrics["steps_done"] == 40 and tr.metrics["diverged_at_step"] is None
    assert 0.5 < tr.metrics["test_acc"] <= 1.0
    assert list(tr.series("dev_acc")[0]) == [10, 20, 30, 40]


def test_fit_trains_a_given_model_in_place():
    splits = toy()
    model = models.build("mlp", splits.in_shape, 10, seed=3, hidden=(32,))
    before = model.out.weight.detach().clone()
    tr = engine.fit(model, splits, CFG, seed=0, progress_bar=False)
    assert not torch.equal(before, model.out.weight) and tr.metrics["test_acc"] == student.evaluate(model, splits.test)["acc"]


@pytest.mark.parametrize("field,value", [("lr", float("nan")), ("lr", float("inf")), ("lr", -0.1), ("lr", 0.0),
                                         ("momentum", 1.0), ("momentum", float("nan")), ("steps", 0),
                                         ("weight_decay", float("-inf")), ("clip", float("nan")),
                                         ("schedule", "linear"), ("batch_size", 1.5), ("test_every", 0)])
def test_bad_hyperparameters_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        engine.fit("mlp", toy(), CFG, **{field: value})


def test_a_diverged_run_stops_and_is_reported_not_drawn():
    splits = toy()
    tr = engine.fit("mlp", splits, CFG, lr=1e6, progress_bar=False)
    step = tr.metrics["diverged_at_step"]
    assert step is not None and step <= 5 and tr.diverged
    assert tr.metrics["test_acc"] is None and tr.metrics["dev_acc"] is None
    steps, loss = tr.series("loss")
    assert len(steps) == step - 1 and all(math.isfinite(v) and abs(v) < 1e3 for v in loss)
    assert "dev_acc" not in tr.scalars or max(tr.series("dev_acc")[0]) < step
    assert any("diverged at step" in m for m in tr.messages)


class _PoisonMember(engine.Hooks):
    """Member 1's loss turns NaN from step 10 on."""

    def objective(self, logits, batch, step):
        per = engine.cross_entropy(logits, batch.y)
        if step >= 10:
            per = per * torch.tensor([1.0, float("nan")]).view(2, 1)
        return per


def test_only_the_diverging_member_of_a_population_stops():
    traces = engine.train(engine.Run(toy(), CFG, [0, 1], hooks=_PoisonMember()), progress_bar=False)
    assert traces[1].metrics["diverged_at_step"] == 11 and len(traces[1].series("loss")[0]) == 10
    assert not traces[0].diverged and traces[0].metrics["steps_done"] == 40 and traces[0].metrics["test_acc"] > 0.5


@pytest.mark.parametrize("model,shape", [("mlp", (1, 28, 28)), ("lenet", (1, 28, 28))])
def test_a_population_trains_as_its_members_would_alone(model, shape):
    splits = toy(shape=shape)
    cfg = StudentConfig(model=model, model_kwargs={"hidden": (32,)} if model == "mlp" else {}, steps=15,
                        batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-4, clip=5.0, eval_every=5)
    run = engine.Run(splits, cfg, [0, 1, 2, 3])
    assert isinstance(run.students, StackedMLP if model == "mlp" else GroupedLeNet)
    together = engine.train(run, progress_bar=False)
    for i, s in enumerate([0, 1, 2, 3]):
        alone = engine.Run(splits, cfg, [s])
        assert isinstance(alone.students, Looped)
        trace = engine.train(alone, progress_bar=False)[0]
        a, b = dict(run.students.member(i).named_parameters()), dict(alone.students.member(0).named_parameters())
        for name in a:
            torch.testing.assert_close(a[name], b[name], atol=2e-5, rtol=1e-4)
        for key in ("loss", "dev_loss"):  # dev_loss: the population's evaluation path against a plain model's
            torch.testing.assert_close(torch.tensor(together[i].series(key)[1]), torch.tensor(trace.series(key)[1]),
                                       atol=1e-5, rtol=1e-4)
    for x in (splits.train.x[:8], splits.train.x[:200]):  # a LeNet population evaluates a large batch member by member
        alone = torch.stack([student.predict(run.students.member(i), x) for i in range(4)])
        for inputs in (x, x.expand(4, *x.shape)):  # one batch for all members, and a batch per member
            torch.testing.assert_close(student.predict(run.students, inputs), alone)


@pytest.mark.parametrize("kind", ["mlp", "lenet", "looped", "vmapped"])
def test_an_evaluation_of_some_members_gives_their_logits_and_skips_the_others(kind):
    """predict(..., members=) is what the engine's evaluations use to skip members that have stopped: each listed
    member's logits as in the whole population's (grouped and member-by-member LeNet paths, shared and per-member
    inputs); Run.measure gives the others NaN; a bad index is refused by name."""
    from labkit.population import Vmapped

    name = "lenet" if kind == "lenet" else "mlp"
    kwargs = {} if name == "lenet" else {"hidden": (32,)}
    pop = (Vmapped([models.build(name, (1, 28, 28), 10, seed=s, **kwargs) for s in range(4)], 3) if kind == "vmapped"
           else population(name, (1, 28, 28), 10, [0, 1, 2, 3], batched=False if kind == "looped" else None, **kwargs))
    assert isinstance(pop, {"mlp": StackedMLP, "lenet": GroupedLeNet, "looped": Looped, "vmapped": Vmapped}[kind])
    x = toy().dev.x
    for xs in (x[:8], x[:200], x[:8].expand(4, 8, 1, 28, 28)):
        full = student.predict(pop, xs)
        torch.testing.assert_close(student.predict(pop, xs, members=[3, 1]), full[[3, 1]], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match=r"members=\[4\]"):
        student.predict(pop, x[:8], members=[4])
    run = engine.Run(toy(), replace(CFG, model=name, model_kwargs=kwargs), [0, 1, 2])
    every, some = run.measure("dev"), run.measure("dev", members=[2])
    assert some["acc"][:2].isnan().all() and some["loss"][:2].isnan().all()
    torch.testing.assert_close(some["loss"][2], every["loss"][2])
    assert some["acc"][2] == every["acc"][2]
    reordered = run.measure("dev", members=[2, 0, 1])   # every member, listed in another order
    torch.testing.assert_close(reordered["loss"], every["loss"])


def test_roles_separate_streams_and_seeds_repeat():
    a = seeds.derive(0, "deploy", "init")
    assert a == seeds.derive(0, "deploy", "init") and a != seeds.derive(0, "teach", "init")
    assert seeds.derive(1, "deploy", "init") != a
    assert set(seeds.deployment_seeds(0, 8)).isdisjoint(seeds.deployment_seeds(1, 8))
    with pytest.raises(ValueError, match="seeds"):
        seeds.check_seeds("seeds", 3)
    with pytest.raises(ValueError, match="seed"):
        seeds.derive(-1, "x")


def test_teacher_training_and_deployment_students_share_no_stream():
    splits = toy()
    teach = engine.Run(splits, CFG, [0], role=(seeds.TEACH, "episode", 0))
    deploy = engine.Run(splits, CFG, [0], role=seeds.DEPLOY)
    w_t, w_d = (next(r.students.parameters()).detach() for r in (teach, deploy))
    assert not torch.equal(w_t, w_d)
    assert not torch.equal(next(teach.streams[0]), next(deploy.streams[0]))


def test_no_global_random_state_is_touched():
    splits = toy(augment=True, shape=(3, 32, 32))
    state = torch.get_rng_state()
    engine.fit("lenet", splits, StudentConfig(model="lenet", steps=3, batch_size=8, eval_every=0), progress_bar=False)
    assert torch.equal(state, torch.get_rng_state())


class _Kill(Exception):
    pass


class _KillAt(engine.Hooks):
    def __init__(self, at: int | None):
        self.at, self.seen = at, 0

    def after_step(self, run, step, loss):
        self.seen += 1
        if step + 1 == self.at:
            raise _Kill()

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.seen = state["seen"]


@pytest.mark.parametrize("model", ["mlp", "lenet"])
def test_a_killed_run_resumes_bit_for_bit(tmp_path, model):
    splits = toy(augment=(model == "lenet"), shape=(3, 32, 32) if model == "lenet" else (1, 28, 28))
    cfg = StudentConfig(model=model, model_kwargs={"hidden": (32,)} if model == "mlp" else {}, steps=30,
                        batch_size=16, lr=0.05, eval_every=7, schedule="cosine", pretrain_steps=4, pretrain_lr=0.1)
    whole = engine.Run(splits, cfg, [0, 1], hooks=_KillAt(None))
    want = engine.train(whole, progress_bar=False)
    run = engine.Run(splits, cfg, [0, 1], hooks=_KillAt(23))
    with pytest.raises(_Kill):
        engine.train(run, checkpoint_dir=tmp_path, checkpoint_every=5, progress_bar=False)
    assert (tmp_path / engine.CHECKPOINT_FILE).exists()
    again = engine.Run(splits, cfg, [0, 1], hooks=_KillAt(None))
    got = engine.train(again, checkpoint_dir=tmp_path, checkpoint_every=5, progress_bar=False)
    for a, b in zip(whole.students.parameters(), again.students.parameters()):
        assert torch.equal(a, b)
    for w, g in zip(want, got):
        assert w.scalars == g.scalars and w.metrics == g.metrics
    assert again.hooks.seen == whole.hooks.seen == cfg.total_steps == 34
    assert not (tmp_path / engine.CHECKPOINT_FILE).exists()


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    splits = toy()
    run = engine.Run(splits, CFG, [0])
    run.step_once()
    engine.save_checkpoint(tmp_path / engine.CHECKPOINT_FILE, run.state_dict())
    with pytest.raises(ValueError, match="another run"):
        engine.train(engine.Run(splits, CFG.__class__(**{**CFG.__dict__, "lr": 0.2}), [0]), checkpoint_dir=tmp_path)


def test_test_is_read_every_test_every_steps_and_dev_at_every_evaluation():
    cfg = replace(CFG, eval_every=5, eval_size=50, eval_test=True, test_every=20)
    trace = engine.train(engine.Run(toy(), cfg, [0]), progress_bar=False)[0]
    assert trace.series("dev_acc")[0].tolist() == [5, 10, 15, 20, 25, 30, 35, 40]  # 40: the final evaluation
    assert trace.series("test_acc")[0].tolist() == [20]  # the final test read is a metric, not a point of the curve
    assert 0.0 <= trace.metrics["test_acc"] <= 1.0


def test_per_example_weights_and_schedules():
    cfg = StudentConfig(steps=10, lr=1.0, schedule="multistep", milestones=(5, 8), pretrain_steps=2, pretrain_lr=0.5)
    assert [cfg.lr_at(t) for t in (0, 1, 2, 6, 7, 10, 11)] == pytest.approx([0.5, 0.5, 1.0, 1.0, 0.1, 0.01, 0.01])
    per = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    assert engine.reduce(per).tolist() == [2.0, 2.0]
    assert engine.reduce(per, torch.tensor([[1.0, 0.0], [0.5, 0.5]])).tolist() == [1.0, 2.0]


def test_text_streams_train_a_language_model():
    tokens = torch.arange(4000) % 8  # a cycle: learnable from the previous token
    text = data.TextSplits(tokens, tokens[:600], tokens[:600], vocab=[str(i) for i in range(8)])
    cfg = StudentConfig(model="lstm_lm", model_kwargs=dict(emb=16, hidden=16, layers=1, dropout=0.1), steps=60,
                        batch_size=4, bptt=10, lr=2.0, momentum=0.0, clip=0.25, eval_every=15)
    run = engine.Run(text, cfg, [0, 1])
    traces = engine.train(run, progress_bar=False)
    assert all(t.metrics["test_ppl"] < 2 for t in traces)  # a uniform guess is 8
    assert all(s is not None for s in run.students.states)


def test_population_of_one_equals_fit():
    splits = toy()
    m = models.build("mlp", splits.in_shape, 10, seed=seeds.derive(5, "deploy", "init"), hidden=(32,))
    a = engine.fit(m, splits, CFG, seed=5, progress_bar=False)
    b = engine.fit("mlp", splits, CFG, seed=5, progress_bar=False)
    assert a.scalars == b.scalars
    assert isinstance(population("mlp", (4,), 3, [1]), Looped)


def test_a_vmapped_resnet_population_with_batchnorm_trains_as_its_members_alone():
    """The GPU path for the ResNets (torch.func.vmap over stacked weights and BatchNorm buffers), run on the CPU:
    every member's weights and running statistics end as they would alone (augmentation and weight decay on)."""
    from labkit.population import Vmapped

    g = torch.Generator().manual_seed(0)
    y = torch.arange(300) % 10
    x = torch.randn(300, 3, 16, 16, generator=g) + y.view(-1, 1, 1, 1) * 0.1
    splits = data.from_tensors(x[:250], y[:250], dev_size=50, test=(x[250:], y[250:]), augment=True)
    cfg = StudentConfig(model="resnet8", steps=6, batch_size=8, lr=0.05, weight_decay=1e-4, clip=2.0, eval_every=3)
    pop = population("resnet8", splits.in_shape, 10, [seeds.derive(s, "deploy", "init") for s in (0, 1)], batched=True)
    assert isinstance(pop, Vmapped)
    run = engine.Run(splits, cfg, [0, 1], students=pop)
    traces = engine.train(run, progress_bar=False)
    for i, s in enumerate((0, 1)):
        alone = engine.Run(splits, cfg, [s])
        trace = engine.train(alone, progress_bar=False)[0]
        a, b = run.students.member(i).state_dict(), alone.students.member(0).state_dict()
        for name in a:
            torch.testing.assert_close(a[name].float(), b[name].float(), atol=1e-5, rtol=1e-4)
        assert traces[i].metrics["test_acc"] == pytest.approx(trace.metrics["test_acc"], abs=0.021)
