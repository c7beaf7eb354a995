from __future__ import annotations

import pytest
import torch

import labkit
from labkit import data

from conftest import needs_mnist


def test_load_mnist_through_torchvision(tiny_mnist_root):
    splits = data.load("mnist", root=tiny_mnist_root, dev_size=40, seed=0)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (160, 40, 50)
    assert splits.in_shape == (1, 28, 28) and splits.num_classes == 10 and splits.name == "mnist"
    assert splits.train.x.dtype == torch.float32 and splits.train.y.dtype == torch.int64
    assert splits.classes == tuple(str(d) for d in range(10))
    # normalised with MNIST's statistics: a 255 pixel maps to (1 - 0.1307) / 0.3081
    assert splits.train.x.max().item() == pytest.approx((1 - 0.1307) / 0.3081, rel=1e-5)
    assert not splits.augment


def test_dev_split_is_seeded_and_disjoint(tiny_mnist_root):
    a = data.load("mnist", root=tiny_mnist_root, dev_size=40, seed=1)
    b = data.load("mnist", root=tiny_mnist_root, dev_size=40, seed=1)
    c = data.load("mnist", root=tiny_mnist_root, dev_size=40, seed=2)
    assert torch.equal(a.dev.x, b.dev.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.dev.x, c.dev.x)
    # dev and train are a partition of the original training set
    rows = torch.cat([a.train.x, a.dev.x]).flatten(1)
    assert torch.unique(rows, dim=0).shape[0] == 200


def test_train_size_keeps_the_first_examples(tiny_mnist_root):
    full = data.load("mnist", root=tiny_mnist_root, dev_size=40, seed=0)
    small = data.load("mnist", root=tiny_mnist_root, dev_size=40, seed=0, train_size=50)
    assert torch.equal(small.train.x, full.train.x[:50]) and torch.equal(small.dev.y, full.dev.y)


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ValueError, match=r"name='imagenet'.*'mnist', 'cifar10', 'cifar100', 'ptb'"):
        data.load("imagenet")


def test_dev_size_larger_than_training_set(tiny_mnist_root):
    with pytest.raises(ValueError, match=r"dev_size=500 .*\[1, 199\]"):
        data.load("mnist", root=tiny_mnist_root, dev_size=500)


def test_missing_files_name_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        data.load("mnist", root=tmp_path, download=False)
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message


def test_failed_download_names_folder_and_files(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(self):
        raise RuntimeError("no network")

    monkeypatch.setattr(tvd.MNIST, "download", offline)
    with pytest.raises(FileNotFoundError, match=r"could not find or download.*put these files there: train-images"):
        data.load("mnist", root=tmp_path, download=True)


def test_archives_are_read_without_writing_beside_them(tmp_path):
    """A folder holding only the .gz archives (like the shared bundle) is mirrored, not written into."""
    import numpy as np
    from conftest import write_idx

    raw = tmp_path / "MNIST" / "raw"
    labels = np.arange(30) % 10
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", np.zeros((30, 28, 28)), compress=True)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels, compress=True)
    before = sorted(p.name for p in raw.iterdir())
    # The archives' MD5s are not the real ones, so torchvision must refuse them, with our message.
    with pytest.raises(FileNotFoundError, match="could not find or download"):
        data.load("mnist", root=tmp_path, dev_size=5)
    assert sorted(p.name for p in raw.iterdir()) == before


@needs_mnist
def test_real_mnist_bundle():
    splits = data.load("mnist", dev_size=5000, seed=0)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (55000, 5000, 10000)
    counts = torch.bincount(splits.test.y, minlength=10).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # from shared/data/MANIFEST.md


def test_from_tensors():
    x, y = torch.randn(100, 3, 8, 8), torch.arange(100) % 4
    splits = data.from_tensors(x, y, dev_size=20, test=(torch.randn(10, 3, 8, 8), torch.arange(10) % 4), seed=0)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (80, 20, 10)
    assert splits.in_shape == (3, 8, 8) and splits.num_classes == 4
    with pytest.raises(ValueError, match="same length"):
        data.from_tensors(x, y[:50], dev_size=20, test=(x, y))


def _digits():
    """What a new user tries first: scikit-learn's digits shape (8x8 images, labels 0-9), made up here."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(200, 1, 8, 8, generator=g) * 16, torch.arange(200) % 10


@pytest.mark.parametrize("bad_y,match", [(lambda y: y - 1, r"y holds labels in \[-1, 8\]"),
                                         (lambda y: y.float() + 0.5, "non-integer"),
                                         (lambda y: torch.where(y == 3, float("nan"), y.float()), "non-integer"),
                                         (lambda y: [str(v) for v in y.tolist()], "y must be integer class labels"),
                                         (lambda y: y.view(20, 10), r"shape \[N\]")])
def test_from_tensors_refuses_bad_labels_by_name(bad_y, match):
    x, y = _digits()
    with pytest.raises(ValueError, match=match):
        data.from_tensors(x, bad_y(y), dev_size=20, test=(x[:10], y[:10]))


def test_from_tensors_refuses_nan_images_and_lenet_on_8x8():
    from labkit import models

    x, y = _digits()
    x[5, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="x holds NaN or inf in 1 example"):
        data.from_tensors(x, y, dev_size=20, test=(x[:10], y[:10]))
    x, y = _digits()
    splits = data.from_tensors(x, y, dev_size=20, test=(x[:10], y[:10]))
    with pytest.raises(ValueError, match="in_shape=.*lenet.*16x16"):
        models.build("lenet", splits.in_shape, splits.num_classes)
    with pytest.raises(ValueError, match="test must be a pair"):
        data.from_tensors(x, y, dev_size=20, test=x)


def test_index_streams_are_permutations_and_resume_exactly():
    stream = data.IndexStream(10, 3, seed=0)
    epoch = torch.cat([next(stream) for _ in range(3)])  # 3 batches per epoch, last partial batch dropped
    assert len(set(epoch.tolist())) == 9
    first_30 = data.IndexStream(100, 7, seed=5)
    seen = [next(first_30) for _ in range(30)]
    resumed = data.IndexStream(100, 7, seed=5, position=20)
    assert all(torch.equal(seen[20 + i], next(resumed)) for i in range(10))
    assert not torch.equal(seen[0], next(data.IndexStream(100, 7, seed=6)))
    with pytest.raises(ValueError, match="batch_size=0"):
        data.IndexStream(10, 0, seed=0)


def test_augment_batch_crops_and_flips_on_device():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    out = data.augment_batch(x, gen, pad=2)
    assert out.shape == x.shape
    # with pad=0 the only change can be a horizontal flip
    flipped = data.augment_batch(x, torch.Generator().manual_seed(1), pad=0)
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))
    # over many draws both flips and shifts occur
    many = data.augment_batch(x.repeat(32, 1, 1, 1), gen, pad=2)
    assert sum(not torch.equal(m, x[i % 2]) for i, m in enumerate(many)) > 0


def test_ptb_loads_bundled_text():
    root = labkit.data.data_root()
    if not (root / "ptb" / "ptb.train.txt").is_file():
        pytest.skip("ptb not in the data folder")
    corpus = data.load("ptb")
    assert corpus.num_tokens == 10000  # 9999 word types + <eos>, per shared/data/MANIFEST.md
    assert (len(corpus.train), len(corpus.dev), len(corpus.test)) == (929589, 73760, 82430)
    stream = data.batchify(corpus.dev, 20)
    x, y = data.bptt_windows(stream, 35)[0]
    assert x.shape == (35, 20) and torch.equal(x[1:], y[:-1])


def test_ptb_missing_names_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="ptb.train.txt"):
        data.load_ptb(root=tmp_path)


def test_device_choice():
    assert data.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device='tpu'"):
        data.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            data.resolve_device("cuda")
