"""Datasets as device-resident tensors, the batch streams the engine draws from, and data scenarios.

`load(name)` returns `Splits(train, dev, test)`: every split is a pair of tensors on one device, so a training
step draws a batch by indexing, with no DataLoader and no workers. torchvision does the download, checksums and
parsing of the image datasets; the bundled Penn Treebank text is read here (torchvision has no text datasets).
The data root is the `LABKIT_DATA` environment variable, else `data/` at the repository root.

Scenarios change the *training* split only (dev and test stay clean: a small trusted dev set, as in the
data-reweighting literature) and record what they changed: `noisy_labels`, `imbalanced`, `subsample`
(written in `labkit/scenarios.py`, used as `labkit.data.noisy_labels`, ...).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch

from . import seeds as seeding
from .checks import check_choice, check_int

IMAGE_DATASETS = ("mnist", "cifar10", "cifar100")
TEXT_DATASETS = ("ptb",)
KNOWN_DATASETS = IMAGE_DATASETS + TEXT_DATASETS

# Per-channel statistics of each training set, for normalisation.
_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_MNIST_CLASSES = tuple(str(d) for d in range(10))
_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def data_root() -> Path:
    """The folder datasets are read from and downloaded to: $LABKIT_DATA, else data/ of the repository labkit runs
    from, else (an installed package, e.g. on Colab) ~/.cache/labkit/data."""
    env = os.environ.get("LABKIT_DATA")
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout / "data"
    return Path.home() / ".cache" / "labkit" / "data"


@dataclass
class Split:
    """One split: inputs `x` [N, *in_shape] float32 and labels `y` [N] int64, on one device.

    clean_y [N] int64: the labels before a scenario changed them (None when no scenario did); `corrupted` [N]
    bool marks the examples whose label differs from it.
    """

    x: torch.Tensor
    y: torch.Tensor
    clean_y: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def corrupted(self) -> torch.Tensor:
        return torch.zeros_like(self.y, dtype=torch.bool) if self.clean_y is None else self.y != self.clean_y

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.x.to(device), self.y.to(device), None if self.clean_y is None else self.clean_y.to(device))

    def __getitem__(self, index: torch.Tensor | slice) -> "Split":
        return Split(self.x[index], self.y[index], None if self.clean_y is None else self.clean_y[index])


@dataclass
class Splits:
    """train / dev / test of one dataset, on one device.

    `dev` is carved from the training set with a seed; `test` is the dataset's own test set and is touched only
    to report. `scenario`: what the scenarios applied to `train` changed, one dict per scenario, in order.
    """

    train: Split
    dev: Split
    test: Split
    name: str
    in_shape: tuple[int, ...]
    num_classes: int
    classes: tuple[str, ...] = ()
    augment: bool = False  # CIFAR: pad-crop and flip, applied batch by batch on the device
    scenario: tuple[dict, ...] = ()

    @property
    def device(self) -> torch.device:
        return self.train.x.device

    def to(self, device: torch.device | str) -> "Splits":
        return replace(self, train=self.train.to(device), dev=self.dev.to(device), test=self.test.to(device))


def _carve_dev(x: torch.Tensor, y: torch.Tensor, dev_size: int, seed: int) -> tuple[Split, Split]:
    check_int("dev_size", dev_size, 1, len(y) - 1)
    order = torch.randperm(len(y), generator=seeding.generator(seed, "split"))
    dev_idx, train_idx = order[:dev_size], order[dev_size:]
    return Split(x[train_idx], y[train_idx]), Split(x[dev_idx], y[dev_idx])


def _as_labels(name: str, y, num_classes: int | None) -> torch.Tensor:
    """Labels as int64 [N] in [0, C); a ValueError naming `name` otherwise (strings, NaN, fractions, negatives)."""
    try:
        t = torch.as_tensor(y)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be integer class labels 0..C-1 (int array or tensor); got "
                         f"{type(y).__name__} that torch cannot read as numbers ({err})") from None
    if t.ndim != 1:
        raise ValueError(f"{name} must have shape [N] (one integer class label per example); got {tuple(t.shape)}")
    if t.is_floating_point():
        if not torch.isfinite(t).all() or (t != t.round()).any():
            raise ValueError(f"{name} holds non-integer values (e.g. NaN or 0.5): labels must be integers 0..C-1")
    elif t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} has dtype {t.dtype}: labels must be integers 0..C-1")
    t = t.long()
    high = (num_classes - 1) if num_classes else None
    if len(t) and (t.min() < 0 or (high is not None and t.max() > high)):
        allowed = f"0..{high}" if high is not None else "integers >= 0"
        raise ValueError(f"{name} holds labels in [{int(t.min())}, {int(t.max())}]: allowed are {allowed}")
    return t


def _as_inputs(name: str, x) -> torch.Tensor:
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a numeric array [N, ...]; torch cannot read it ({err})") from None
    if t.ndim < 2 or t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must be a real array [N, ...] with one row per example; got shape "
                         f"{tuple(t.shape)}, dtype {t.dtype}")
    t = t.float()
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).flatten(1).any(1).sum())
        raise ValueError(f"{name} holds NaN or inf in {bad} example(s): inputs must be finite")
    return t


def from_tensors(x, y, *, dev_size: int, test: tuple, seed: int = 0, device: str | torch.device = "cpu",
                 name: str = "custom", num_classes: int | None = None, classes: Sequence[str] = (),
                 augment: bool = False) -> Splits:
    """Bring your own data: `x` [N, ...] real, `y` [N] integer labels in [0, C); `test` = (x_test, y_test).

    A seeded dev split of `dev_size` examples is carved from (x, y), as `load` does. Images for the conv nets
    are [N, C, H, W]; flat features [N, D] suit the MLP.
    """
    if num_classes is not None:
        check_int("num_classes", num_classes, 2)
    if not isinstance(test, (tuple, list)) or len(test) != 2:
        raise ValueError(f"test must be a pair (x_test, y_test); got {type(test).__name__}")
    x, x_test = _as_inputs("x", x), _as_inputs("test[0] (x_test)", test[0])
    y, y_test = _as_labels("y", y, num_classes), _as_labels("test[1] (y_test)", test[1], num_classes)
    if x.shape[0] != y.shape[0] or x_test.shape[0] != y_test.shape[0]:
        raise ValueError(f"x and y must have the same length: got {x.shape[0]} and {y.shape[0]} "
                         f"(test: {x_test.shape[0]} and {y_test.shape[0]})")
    if x.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"test inputs have shape {tuple(x_test.shape[1:])}, train inputs {tuple(x.shape[1:])}: they must match")
    num_classes = num_classes or int(max(y.max(), y_test.max())) + 1
    if num_classes < 2:
        raise ValueError("y holds a single class: a classifier needs labels of at least 2 classes")
    if classes and len(classes) != num_classes:
        raise ValueError(f"classes has {len(classes)} names for {num_classes} classes")
    train, dev = _carve_dev(x, y, dev_size, seed)
    device = resolve_device(device)
    return Splits(train.to(device), dev.to(device), Split(x_test, y_test).to(device), name, tuple(x.shape[1:]),
                  num_classes, tuple(classes) or tuple(str(c) for c in range(num_classes)), augment)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`"auto"` (or None) picks CUDA when present, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a device: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was asked for but CUDA is not available: use 'auto' or 'cpu'")
    return device


def _mnist_files(cls) -> list[str]:
    return [Path(url).name for url, _ in cls.resources]


def _archive_mirror(root: Path, folder: str) -> Path:
    """torchvision extracts .gz archives beside themselves. A folder that holds only the archives (a
    shared, possibly read-only bundle) is mirrored by links in the temp folder instead, so torchvision
    checks the MD5s and extracts there and the user's folder is left as it was."""
    mirror = Path(tempfile.gettempdir()) / "labkit-data" / hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    src, dst = root / folder / "raw", mirror / folder / "raw"
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if not (dst / f.name).exists():
            (dst / f.name).symlink_to(f.resolve())
    return mirror


def _torchvision_images(name: str, root: Path, download: bool):
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
    if name == "mnist":
        expected, folder = _mnist_files(cls), root / "MNIST" / "raw"
        extracted = all((folder / Path(f).stem).is_file() for f in expected)
        if folder.is_dir() and not extracted and any(folder.glob("*.gz")):
            root = _archive_mirror(root, "MNIST")
    else:
        expected, folder = [cls.filename], root
    try:
        sets = [cls(str(root), train=train, download=False) for train in (True, False)]
    except RuntimeError:
        if not download:
            raise FileNotFoundError(f"{name}: no dataset files in {folder}; expected {', '.join(expected)} "
                                    f"(set LABKIT_DATA to the folder that holds them, or pass download=True)") from None
        try:
            root.mkdir(parents=True, exist_ok=True)
            sets = [cls(str(root), train=train, download=True) for train in (True, False)]
        except Exception as err:  # no network, a refused mirror, a bad checksum
            raise FileNotFoundError(
                f"{name}: could not find or download the dataset into {folder} ({type(err).__name__}: {err}). "
                f"With no network, put these files there: {', '.join(expected)}; "
                f"or set LABKIT_DATA to a folder that holds them") from None
    return sets


def _to_tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(ds.data)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # -> [N, C, H, W]
    return x, torch.as_tensor(ds.targets, dtype=torch.long)


def load(name: str, *, dev_size: int = 5000, seed: int = 0, device: str | torch.device = "cpu",
         root: str | Path | None = None, download: bool = True, train_size: int | None = None,
         augment: bool | None = None) -> "Splits | TextSplits":
    """Load a dataset as tensors on `device`.

    name: one of `KNOWN_DATASETS`. Images come back normalised, [N, C, H, W] float32.
    dev_size: examples carved from the training set for the dev split (the stream `seed`/"split").
    train_size: keep only the first `train_size` training examples after the dev split (for quick runs).
    augment: CIFAR pad-crop and flip during training (default: on for CIFAR, off for MNIST).
    `ptb` returns `TextSplits` (token streams); `dev_size`, `train_size`, `augment` do not apply to it.
    """
    key = check_choice("name", name.lower() if isinstance(name, str) else name, KNOWN_DATASETS)
    seeding.check_seed("seed", seed)
    root = Path(root).expanduser() if root is not None else data_root()
    device = resolve_device(device)
    if key == "ptb":
        return load_ptb(root=root, device=device)
    train_set, test_set = _torchvision_images(key, root, download)
    x, y = _to_tensors(train_set)
    x_test, y_test = _to_tensors(test_set)
    mean, std = (torch.tensor(s).view(1, -1, 1, 1) for s in _STATS[key])
    x = (x.float() / 255 - mean) / std
    x_test = (x_test.float() / 255 - mean) / std
    train, dev = _carve_dev(x, y, dev_size, seed)
    if train_size is not None:
        check_int("train_size", train_size, 1, len(train))
        train = train[:train_size]
    classes = _MNIST_CLASSES if key == "mnist" else tuple(getattr(train_set, "classes", ())) or _CIFAR10_CLASSES
    return Splits(train.to(device), dev.to(device), Split(x_test, y_test).to(device), key, tuple(x.shape[1:]),
                  len(classes), classes, augment if augment is not None else key != "mnist")


# ---------------------------------------------------------------- batch streams

class IndexStream:
    """Endless index batches [batch_size] (int64, on `device`) over n examples, one permutation per epoch.

    Epoch e's permutation is drawn from the stream `seed`/"epoch"/e, so the batch at any position is a pure
    function of (seed, position): `position` is all a checkpoint keeps, and a resumed run sees exactly the batches
    the uninterrupted one would have seen. The last partial batch of an epoch is dropped.
    """

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device | str = "cpu", position: int = 0):
        check_int("batch_size", batch_size, 1, n)
        self.n, self.batch_size, self.seed, self.device = n, batch_size, seed, torch.device(device)
        self.per_epoch = n // batch_size
        self.position, self._epoch, self._order = position, -1, None

    def __iter__(self) -> "IndexStream":
        return self

    def __next__(self) -> torch.Tensor:
        epoch, offset = divmod(self.position, self.per_epoch)
        if epoch != self._epoch:
            gen = seeding.generator(self.seed, "epoch", epoch, device=self.device)
            self._order, self._epoch = torch.randperm(self.n, generator=gen, device=self.device), epoch
        self.position += 1
        return self._order[offset * self.batch_size:(offset + 1) * self.batch_size]


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """CIFAR augmentation on a whole batch at once, on its device: random crop after zero padding
    by `pad` pixels, and a random horizontal flip. x: [B, C, H, W] -> [B, C, H, W]."""
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=generator.device).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=generator.device).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None])  # [B, H]
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None])  # [B, W]
    flip = torch.rand(b, generator=generator, device=generator.device).to(x.device) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------- text (Penn Treebank)

@dataclass
class TextSplits:
    """A word-level corpus: token-id streams train / dev / test ([N] int64 on one device) and its vocabulary."""

    train: torch.Tensor
    dev: torch.Tensor
    test: torch.Tensor
    vocab: list[str] = field(default_factory=list)
    name: str = "ptb"

    @property
    def num_tokens(self) -> int:
        return len(self.vocab)

    @property
    def device(self) -> torch.device:
        return self.train.device


PTB_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")


def load_ptb(root: str | Path | None = None, device: str | torch.device = "cpu") -> TextSplits:
    """Penn Treebank (Mikolov's word-level version) from `<root>/ptb/`; each line ends with `<eos>`."""
    folder = Path(root if root is not None else data_root()) / "ptb"
    missing = [f for f in PTB_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"ptb: missing {', '.join(missing)} in {folder}; put the Penn Treebank text files "
                                f"{', '.join(PTB_FILES)} there, or set LABKIT_DATA to a folder whose ptb/ holds them")
    words = [(folder / f).read_text().replace("\n", " <eos> ").split() for f in PTB_FILES]
    vocab = sorted(set(words[0]))
    index = {w: i for i, w in enumerate(vocab)}
    unknown = set(words[1] + words[2]) - index.keys()
    if unknown:
        raise ValueError(f"ptb: dev/test hold words not in the training vocabulary, e.g. {sorted(unknown)[:5]}")
    streams = [torch.tensor([index[w] for w in ws], dtype=torch.long, device=resolve_device(device)) for ws in words]
    return TextSplits(*streams, vocab=vocab)


def batchify(tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """[N] token stream -> [N // batch_size, batch_size]: each column a contiguous slice of the text."""
    check_int("batch_size", batch_size, 1, len(tokens))
    n = len(tokens) // batch_size
    return tokens[: n * batch_size].view(batch_size, n).t().contiguous()


class WindowStream:
    """Endless bptt windows over a batchified stream [L, B]: (x [bptt, B], y [bptt, B], restart), starting at
    window `offset` and wrapping around; only whole windows are used, so every window has bptt rows. `restart` is
    True at the stream's first window (a recurrent state resets there). `position` (windows drawn) is all a
    checkpoint keeps."""

    def __init__(self, stream: torch.Tensor, bptt: int, offset: int = 0, position: int = 0):
        check_int("bptt", bptt, 1, stream.size(0) - 1)
        self.stream, self.bptt = stream, bptt
        self.starts = list(range(0, stream.size(0) - bptt, bptt))
        self.offset, self.position = offset % len(self.starts), position

    def __iter__(self) -> "WindowStream":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        k = (self.offset + self.position) % len(self.starts)
        self.position += 1
        i = self.starts[k]
        return self.stream[i:i + self.bptt], self.stream[i + 1:i + 1 + self.bptt], k == 0


def bptt_windows(stream: torch.Tensor, bptt: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """All (input [l, B], target [l, B]) windows of a batchified stream, in order (one pass, for evaluation)."""
    check_int("bptt", bptt, 1)
    return [(stream[i:i + min(bptt, stream.size(0) - 1 - i)], stream[i + 1:i + 1 + min(bptt, stream.size(0) - 1 - i)])
            for i in range(0, stream.size(0) - 1, bptt)]


# the scenarios live in their own module; `labkit.data.noisy_labels` etc. stay the public names
from .scenarios import SCENARIOS, apply_scenario, imbalanced, noise_transition, noisy_labels, subsample  # noqa: E402,F401
