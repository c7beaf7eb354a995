"""Teacher cards: a trained teacher as a small, checked folder, so a class does not wait on training.

    card/
      weights.pt      the teacher's tensors (torch.save of a dict of tensors; read with weights_only=True)
      trace.npz       the teacher training's Trace (its curves, for the notebook and the gallery)
      card.json       method, preset, config, the seeds it was trained on, torch and labkit versions, its headline
                      metrics, and the SHA-256 of every other file
      picture.png     optional: the teacher's picture for the gallery (Φ heatmap, keep profile, loss surface, ...)

`save` writes a card atomically; `load` refuses a card whose files do not match their checksums, or whose method
is not the one asked for, with an error naming the file. A notebook loads the card if present, else trains
(`load_or_train`), with a parameter to force training.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import plain
from .trace import atomic_write_bytes, write_json

CARD_FILE, WEIGHTS_FILE, PICTURE_FILE, TRACE_FILE = "card.json", "weights.pt", "picture.png", "trace.npz"
RETRAIN_ENV = "LABKIT_RETRAIN"   # "1": every notebook trains its teachers, as if no card existed
# the cards the repository ships, as package data (a wheel carries them to Colab); LABKIT_CARDS: another folder
CARDS_DIR = Path(__file__).resolve().parent / "teacher_cards"


class CardError(ValueError):
    """A card that cannot be trusted: missing files, a checksum that does not match, another method's card."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save(directory: str | Path, *, method: str, preset: str, state: dict[str, torch.Tensor], config: dict,
         seeds: list[int], metrics: dict, trace=None, picture: bytes | None = None) -> Path:
    """Write a card: `state` (the teacher's tensors), what it was trained with and on, and its headline metrics."""
    from . import __version__

    directory = Path(directory)
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buffer)
    files = {WEIGHTS_FILE: buffer.getvalue()}
    if trace is not None:
        files[TRACE_FILE] = trace.to_bytes()
    if picture is not None:
        files[PICTURE_FILE] = picture
    for name, content in files.items():
        atomic_write_bytes(directory / name, content)
    card = dict(method=method, preset=preset, config=plain(config), seeds=list(seeds), metrics=metrics,
                torch=torch.__version__, labkit=__version__,
                sha256={name: _sha256(content) for name, content in files.items()})
    write_json(directory / CARD_FILE, card)
    return directory


def load(directory: str | Path, method: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(the teacher's tensors, the card) of the card in `directory`, after checking every file's SHA-256."""
    directory = Path(directory)
    path = directory / CARD_FILE
    if not path.is_file():
        raise CardError(f"{path} is missing: {directory} is not a teacher card")
    card = json.loads(path.read_text())
    if card.get("method") != method:
        raise CardError(f"{path} is a card of method {card.get('method')!r}, not {method!r}")
    for name, digest in card["sha256"].items():
        file = directory / name
        if not file.is_file():
            raise CardError(f"{file} is missing from the card")
        if _sha256(file.read_bytes()) != digest:
            raise CardError(f"{file} does not match its SHA-256 in {path}: the card was changed or damaged; "
                            f"train again (force the training) or restore the card")
    state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    return state, card


def card_dir(method: str, preset: str, seed: int, root: str | Path | None = None) -> Path:
    """Where the card of (method, preset, seed) lives: <root, else $LABKIT_CARDS, else labkit/teacher_cards>/
    <method>-<preset>-seed<k>."""
    import os

    return Path(root or os.environ.get("LABKIT_CARDS") or CARDS_DIR) / f"{method}-{preset}-seed{seed}"


def load_or_train(directory: str | Path, method: str, config: dict, train: Callable[[], tuple[Any, dict]],
                  restore: Callable[[dict], Any], *, force: bool = False, elsewhere: str | Path | None = None,
                  same: Callable[[dict], bool] | None = None) -> tuple[Any, str, Path, bool]:
    """The teacher from the card in `directory` when it is there, was trained with `config` (`same(the card's
    config)`; default: exactly equal), and `force` is False; else `train()`, and the new card is written to
    `directory` (or, when `directory` holds a card of another config, to `elsewhere`, so a shipped card is not
    overwritten by a run with changed knobs).

    train() -> (teacher, card fields for `save` other than method and config: preset, state, seeds, metrics[,
    picture]); restore(state) -> the teacher. Returns (teacher, what happened in words).
    """
    directory = Path(directory)
    if (directory / CARD_FILE).is_file() and not force:
        state, card = load(directory, method)
        if (same or (lambda stored: stored == plain(config)))(card["config"]):
            return restore(state), f"loaded the card {directory} (trained on seeds {card['seeds']})", directory, True
        directory = Path(elsewhere) if elsewhere is not None else directory
        why = "the card in the repository was trained with other settings"
    else:
        why = "forced" if force else "no card yet"
    teacher, fields = train()
    save(directory, method=method, config=config, **fields)
    return teacher, f"trained ({why}); wrote the card {directory}", directory, False


def _teaches_alike(stored: dict, config: dict, cfg, deployment_only: tuple[str, ...]) -> bool:
    """Whether a card's stored config trained the teacher `config` describes: equal once the fields of the
    deployment only are set aside, and once a field the card lacks (added to labkit after it was written) takes its
    default, which by labkit's rule keeps the behaviour from before the field existed."""
    drop = lambda c: {k: v for k, v in c.items() if k not in deployment_only}  # noqa: E731
    return drop(_filled(stored, cfg)) == drop(plain(config))


def _filled(stored: dict, cfg) -> dict:
    """stored with every field of the frozen config `cfg` that it lacks set to the field's default (nested configs
    likewise)."""
    from dataclasses import MISSING, fields, is_dataclass

    out = dict(stored)
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value) and isinstance(out.get(f.name), dict):
            out[f.name] = _filled(out[f.name], value)
        elif f.name not in out and (f.default is not MISSING or f.default_factory is not MISSING):
            out[f.name] = plain(f.default if f.default is not MISSING else f.default_factory())
    return out


# ---------------------------------------------------------------- the methods' teachers as tensors

def teacher_state(method: str, teacher) -> dict[str, torch.Tensor]:
    """The tensors that make up a method's trained teacher."""
    if method == "dln":
        return {**{f"lstm.{k}": v for k, v in teacher.lstm.state_dict().items()},
                **{f"initial.{i}": w for i, w in enumerate(teacher.initial_weights)},
                **{f"weights.{i}": w for i, w in enumerate(teacher.weights)}}
    return teacher.state_dict()  # l2t's policy net, dlf's teacher, lot's deployed model: nn.Modules


def restore(method: str, state: dict[str, torch.Tensor], splits, cfg, seed: int):
    """The teacher `teacher_state` saved, rebuilt for `splits` and `cfg` (on the splits' device, eval mode)."""
    import importlib

    module = importlib.import_module(f"labkit.{method}")
    if method == "dlf":
        teacher = module.untrained_teacher(splits, cfg, seed)
    elif method == "l2t":
        teacher = module.Teacher(splits.num_classes, init_keep=cfg.init_keep, seed=0)
    elif method == "lot":
        from .models import build

        teacher = build(cfg.student.model, splits.in_shape, splits.num_classes, **cfg.student.model_kwargs)
    elif method == "dln":
        lstm = module.LSTMTeacher(cfg.lstm_hidden)
        lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
        part = lambda p: [state[f"{p}.{i}"].to(splits.device) for i in range(sum(k.startswith(f"{p}.") for k in state))]  # noqa: E731
        return module.DLNTeacher(lstm.to(splits.device).requires_grad_(False), part("initial"), part("weights"),
                                 {"seed": seed})
    else:
        raise ValueError(f"method={method!r} is not allowed: choose 'l2t', 'dlf', 'dln' or 'lot'")
    teacher.load_state_dict(state)
    return teacher.to(splits.device).eval()


def teacher(method: str, splits, cfg, seed: int, *, name: str, preset: str, force: bool = False,
            checkpoint_dir: str | Path | None = None, root: str | Path | None = None,
            elsewhere: str | Path | None = None):
    """A method's teacher from its card (`card_dir(f"{method}-{name}", preset, seed)`) when one was trained with
    this config on this data, else `train_teacher` (resumable in `checkpoint_dir`) and a new card.
    force (or LABKIT_RETRAIN=1 in the environment, as `labkit reproduce --retrain` sets): train even where a card
    holds this teacher. Returns (teacher, the teacher training's Trace, what happened in words)."""
    import importlib
    import os
    from dataclasses import asdict

    from .trace import Trace

    force = force or os.environ.get(RETRAIN_ENV) == "1"
    module = importlib.import_module(f"labkit.{method}")
    config = dict(asdict(cfg), seed=seed, dataset=splits.name, train_size=len(splits.train),
                  scenario=list(getattr(splits, "scenario", ())))
    directory = card_dir(f"{method}-{name}", preset, seed, root)
    trained = {}

    def train():
        t, tr = module.train_teacher(splits, cfg, seed, checkpoint_dir=checkpoint_dir)
        trained["trace"] = tr
        return t, dict(preset=preset, state=teacher_state(method, t), seeds=[seed], metrics=tr.metrics, trace=tr)

    t, how, where, loaded = load_or_train(directory, method, config, train,
                                          lambda state: restore(method, state, splits, cfg, seed), force=force,
                                          elsewhere=elsewhere,
                                          same=lambda stored: _teaches_alike(stored, config, cfg,
                                                                             getattr(module, "DEPLOYMENT_ONLY", ())))
    trace = Trace.from_bytes((where / TRACE_FILE).read_bytes()) if loaded else trained["trace"]
    return t, trace, how


# ---------------------------------------------------------------- the gallery

def shipped(root: str | Path | None = None) -> list[Path]:
    """The card folders under `root` (default: $LABKIT_CARDS or labkit/teacher_cards), sorted."""
    import os

    root = Path(root or os.environ.get("LABKIT_CARDS") or CARDS_DIR)
    return sorted(p.parent for p in root.glob(f"*/{CARD_FILE}"))


def show(directory: str | Path) -> None:
    """Display one card in a notebook: what it is, what it was trained on, its headline metrics, and its picture
    (the teacher training's signature figure, from the card's Trace; `labkit.report.signature_figures`)."""
    import json as _json

    from IPython.display import Markdown, display

    from .report import signature_figures
    from .trace import Trace

    directory = Path(directory)
    card = _json.loads((directory / CARD_FILE).read_text())
    load(directory, card["method"])   # the checksums hold before anything is shown
    numbers = {k: v for k, v in card["metrics"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    display(Markdown(f"### {directory.name}\n\nmethod `{card['method']}`, preset `{card['preset']}`, trained on seeds "
                     f"{card['seeds']} with torch {card['torch']}, labkit {card['labkit']}; "
                     + ", ".join(f"{k} {v:.4g}" for k, v in list(numbers.items())[:6])))
    if (directory / TRACE_FILE).is_file():
        trace = Trace.from_bytes((directory / TRACE_FILE).read_bytes())
        for fig in signature_figures(trace, teacher=trace).values():
            fig.show()


def gallery_notebook(root: str | Path | None = None):
    """A notebook (nbformat) that shows every card: the site's gallery page."""
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    cells = [new_markdown_cell("# Gallery: the trained teachers\n\nEvery teacher card the repository ships "
                               "(`labkit.cards`): a notebook loads it instead of training when its settings and data "
                               "match, so a class does not wait on training. Each shows what it was trained on and "
                               "its teacher training's picture."),
             new_code_cell("import labkit\nlabkit.plots.setup_notebook()")]
    cells += [new_code_cell(f"labkit.cards.show({str(p)!r})") for p in shipped(root)]
    if len(cells) == 2:
        cells.append(new_markdown_cell("No card yet: `make reproduce` writes the cpu presets' cards."))
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}})
