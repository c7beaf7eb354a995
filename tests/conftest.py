"""Shared test set-up: the bundled data folder, small synthetic datasets, the notebooks."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"   # Debian's package; the browser tests never download one


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser for Playwright: skipped where it or Playwright is missing, a failure under CI."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing and CI is set: apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium); CI is not set")
    pytest.importorskip("playwright.sync_api")
    return CHROMIUM
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests read the bundled data (../shared/data) unless LABKIT_DATA says otherwise.
if "LABKIT_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["LABKIT_DATA"] = str(SHARED_DATA)


def has_real_mnist() -> bool:
    from labkit.data import data_root

    raw = data_root() / "MNIST" / "raw"
    return raw.is_dir() and any(raw.iterdir())


needs_mnist = pytest.mark.skipif(not has_real_mnist(), reason="real MNIST files are not in LABKIT_DATA or data/")


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write an IDX file (the MNIST format): magic (0, 0, dtype 0x08 = uint8, ndim), big-endian dims, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.fixture
def tiny_mnist_root(tmp_path: Path) -> Path:
    """A data root holding a small MNIST in torchvision's raw layout: 200 train and 50 test 28x28 images,
    each image's pixels encoding its class so that a model can learn it."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    for prefix, n in (("train", 200), ("t10k", 50)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 30, size=(n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 * c:2 * c + 3, :] = 255  # a bright band whose row encodes the class
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return tmp_path
