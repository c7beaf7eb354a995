"""Teacher cards: a trained teacher as a small, checked folder, so a class does not wait on training.

    card/
      weights.pt      the teacher's tensors (torch.save of a dict of tensors; read with weights_only=True)
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

CARD_FILE, WEIGHTS_FILE, PICTURE_FILE = "card.json", "weights.pt", "picture.png"
CARDS_DIR = Path(__file__).resolve().parent.parent / "cards"   # the cards the repository ships


class CardError(ValueError):
    """A card that cannot be trusted: missing files, a checksum that does not match, another method's card."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save(directory: str | Path, *, method: str, preset: str, state: dict[str, torch.Tensor], config: dict,
         seeds: list[int], metrics: dict, picture: bytes | None = None) -> Path:
    """Write a card: `state` (the teacher's tensors), what it was trained with and on, and its headline metrics."""
    from . import __version__

    directory = Path(directory)
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buffer)
    files = {WEIGHTS_FILE: buffer.getvalue()}
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
    """Where the card of (method, preset, seed) lives: <root or the repository's cards/>/<method>-<preset>-seed<k>."""
    return Path(root if root is not None else CARDS_DIR) / f"{method}-{preset}-seed{seed}"


def load_or_train(directory: str | Path, method: str, config: dict, train: Callable[[], tuple[Any, dict]],
                  restore: Callable[[dict], Any], *, force: bool = False,
                  elsewhere: str | Path | None = None) -> tuple[Any, str]:
    """The teacher from the card in `directory` when it is there, was trained with exactly `config`, and `force` is
    False; else `train()`, and the new card is written to `directory` (or, when `directory` holds a card of another
    config, to `elsewhere`, so a shipped card is not overwritten by a run with changed knobs).

    train() -> (teacher, card fields for `save` other than method and config: preset, state, seeds, metrics[,
    picture]); restore(state) -> the teacher. Returns (teacher, what happened in words).
    """
    directory = Path(directory)
    if (directory / CARD_FILE).is_file() and not force:
        state, card = load(directory, method)
        if card["config"] == plain(config):
            return restore(state), f"loaded the card {directory} (trained on seeds {card['seeds']})"
        directory = Path(elsewhere) if elsewhere is not None else directory
        why = "the card in the repository was trained with other settings"
    else:
        why = "forced" if force else "no card yet"
    teacher, fields = train()
    save(directory, method=method, config=config, **fields)
    return teacher, f"trained ({why}); wrote the card {directory}"
