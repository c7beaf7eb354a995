"""Teacher cards: a round trip is exact, a tampered card is refused, a card of other settings is not used."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from labkit import cards, data, dlf
from labkit.student import StudentConfig


def _splits():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(500) % 3
    x = 0.4 * torch.randn(500, 1, 4, 4, generator=g) + y.view(-1, 1, 1, 1) * 0.3
    return data.from_tensors(x[:400], y[:400], dev_size=100, test=(x[400:], y[400:]))


CFG = dlf.Config(student=StudentConfig(model="mlp", model_kwargs={"hidden": (8,)}, batch_size=16, lr=0.1,
                                       pretrain_steps=5, steps=16, eval_every=8), window=4, teacher_updates=3,
                 deployments=2, teacher_optimizer="adam", teacher_lr=0.05)


def test_a_card_round_trips_exactly_and_skips_training(tmp_path, monkeypatch):
    splits = _splits()
    t1, trace1, how1 = cards.teacher("dlf", splits, CFG, 0, name="x", preset="test", root=tmp_path)
    assert how1.startswith("trained")
    monkeypatch.setattr(dlf, "train_teacher", lambda *a, **k: pytest.fail("a card was present: no training"))
    t2, trace2, how2 = cards.teacher("dlf", splits, CFG, 0, name="x", preset="test", root=tmp_path)
    assert how2.startswith("loaded")
    for a, b in zip(t1.state_dict().values(), t2.state_dict().values()):
        assert torch.equal(a, b)
    assert trace2.scalars == trace1.scalars and trace2.metrics == trace1.metrics
    card = cards.load(cards.card_dir("dlf-x", "test", 0, tmp_path), "dlf")[1]
    assert card["seeds"] == [0] and card["torch"] == torch.__version__ and set(card["sha256"]) >= {"weights.pt"}


def test_a_tampered_card_is_refused_by_name(tmp_path):
    splits = _splits()
    cards.teacher("dlf", splits, CFG, 0, name="x", preset="test", root=tmp_path)
    weights = cards.card_dir("dlf-x", "test", 0, tmp_path) / cards.WEIGHTS_FILE
    raw = bytearray(weights.read_bytes())
    raw[-20] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(cards.CardError, match="weights.pt does not match its SHA-256"):
        cards.teacher("dlf", splits, CFG, 0, name="x", preset="test", root=tmp_path)
    with pytest.raises(cards.CardError, match="method 'dlf', not 'l2t'"):
        cards.load(cards.card_dir("dlf-x", "test", 0, tmp_path), "l2t")


def test_a_card_of_other_settings_is_not_used_and_not_overwritten(tmp_path):
    splits = _splits()
    cards.teacher("dlf", splits, CFG, 0, name="x", preset="test", root=tmp_path)
    shipped = (cards.card_dir("dlf-x", "test", 0, tmp_path) / cards.CARD_FILE).read_bytes()
    _, _, how = cards.teacher("dlf", splits, replace(CFG, teacher_lr=0.5), 0, name="x", preset="test", root=tmp_path,
                              elsewhere=tmp_path / "mine")
    assert "other settings" in how and (tmp_path / "mine" / cards.CARD_FILE).is_file()
    assert (cards.card_dir("dlf-x", "test", 0, tmp_path) / cards.CARD_FILE).read_bytes() == shipped
    _, _, how = cards.teacher("dlf", splits, CFG, 0, name="x", preset="test", root=tmp_path, force=True)
    assert how.startswith("trained (forced)")


def test_a_card_serves_other_deployment_settings(tmp_path, monkeypatch):
    splits = _splits()
    cards.teacher("dlf", splits, CFG, 0, name="x", preset="test", root=tmp_path)
    monkeypatch.setattr(dlf, "train_teacher", lambda *a, **k: pytest.fail("deployments do not shape the teacher"))
    _, _, how = cards.teacher("dlf", splits, replace(CFG, deployments=5), 0, name="x", preset="test", root=tmp_path)
    assert how.startswith("loaded")


def test_a_card_written_before_a_field_existed_holds_the_teacher_of_its_default(tmp_path, monkeypatch):
    splits = _splits()
    cards.teacher("dlf", splits, CFG, 0, name="x", preset="test", root=tmp_path)
    path = cards.card_dir("dlf-x", "test", 0, tmp_path) / cards.CARD_FILE
    card = json.loads(path.read_text())
    del card["config"]["student"]["test_every"], card["config"]["refresh_every"]  # as an older labkit wrote it
    path.write_text(json.dumps(card))
    monkeypatch.setattr(dlf, "train_teacher", lambda *a, **k: pytest.fail("the missing fields have their defaults"))
    assert cards.teacher("dlf", splits, CFG, 0, name="x", preset="test", root=tmp_path)[2].startswith("loaded")
    monkeypatch.undo()
    _, _, how = cards.teacher("dlf", splits, replace(CFG, refresh_every=7), 0, name="x", preset="test",
                              root=tmp_path, elsewhere=tmp_path / "mine")
    assert "other settings" in how


def test_labkit_retrain_in_the_environment_forces_training(tmp_path, monkeypatch):
    splits = _splits()
    cards.teacher("dlf", splits, CFG, 0, name="x", preset="test", root=tmp_path)
    assert cards.teacher("dlf", splits, CFG, 0, name="x", preset="test", root=tmp_path)[2].startswith("loaded")
    monkeypatch.setenv(cards.RETRAIN_ENV, "1")
    assert cards.teacher("dlf", splits, CFG, 0, name="x", preset="test", root=tmp_path)[2].startswith("trained (forced)")


@pytest.mark.parametrize("method", ["l2t", "lot"])
def test_module_teachers_round_trip(method):
    import importlib

    module = importlib.import_module(f"labkit.{method}")
    splits = _splits()
    cfg = module.PRESETS["smoke"]
    if method == "lot":
        cfg = replace(cfg, student=replace(cfg.student, model_kwargs={"hidden": (8,)}))
        teacher = __import__("labkit.models", fromlist=["build"]).build("mlp", splits.in_shape, 3, hidden=(8,))
    else:
        teacher = module.Teacher(3, init_keep=cfg.init_keep, seed=5)
    state = cards.teacher_state(method, teacher)
    again = cards.restore(method, state, splits, cfg, 0)
    for a, b in zip(teacher.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_a_dln_teacher_round_trips_and_deploys_the_same(tmp_path):
    from labkit import dln

    splits = _splits()
    cfg = replace(dln.PRESETS["smoke"], student=replace(dln.PRESETS["smoke"].student, model_kwargs={"hidden": (8,)},
                                                        steps=10), window=5, teacher_updates=2, deployments=2)
    t1, _, _ = cards.teacher("dln", splits, cfg, 0, name="x", preset="test", root=tmp_path)
    t2, _, how = cards.teacher("dln", splits, cfg, 0, name="x", preset="test", root=tmp_path)
    assert how.startswith("loaded")
    a = dln.deploy(t1, splits, cfg, [0], progress_bar=False)[0]
    b = dln.deploy(t2, splits, cfg, [0], progress_bar=False)[0]
    assert a.metrics == b.metrics and a.series("loss")[1].tolist() == b.series("loss")[1].tolist()


@pytest.mark.parametrize("directory", cards.shipped(cards.CARDS_DIR), ids=lambda d: d.name)
def test_every_shipped_card_still_holds_its_teacher(directory):
    """A notebook that asks for the settings a shipped card was trained with (rebuilt from the card, with every field
    labkit added since at its default) gets the card: no Config field the card holds was renamed or dropped."""
    import dataclasses
    import importlib

    from labkit.student import StudentConfig

    card = json.loads((directory / cards.CARD_FILE).read_text())
    module, stored = importlib.import_module(f"labkit.{card['method']}"), card["config"]
    known = {f.name for f in dataclasses.fields(module.Config)}
    tuples = lambda d: {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}  # noqa: E731
    cfg = module.Config(**{**tuples({k: v for k, v in stored.items() if k in known}),
                           "student": StudentConfig(**tuples(stored["student"]))})
    config = dict(dataclasses.asdict(cfg), **{k: stored[k] for k in ("seed", "dataset", "train_size", "scenario")})
    assert cards._teaches_alike(stored, config, cfg, getattr(module, "DEPLOYMENT_ONLY", ()))
