"""Long-tailed Fashion-MNIST, read offline from the Debian package ``dataset-fashion-mnist``.

Data location: the four idx ``.gz`` files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``) in ``/usr/share/datasets/fashion-mnist``
(``apt-get install dataset-fashion-mnist``), or in the folder named by the environment variable
``TRAINWELL_FASHION_MNIST_DIR``. Nothing is downloaded.

Long tail (the "EXP profile" of Cao et al. 2019 / Menon et al., arXiv:2007.07314, imbalance ratio 100):
class ``c`` keeps ``int(head · ratio^(-c/9))`` training images, i.e. 6000, 3597, 2156, ..., 60 for
``head=6000``; which images are kept is a deterministic function of ``seed``. The test set is the
official balanced 10k split (1000 per class), so plain accuracy on it is balanced accuracy.

Fallback when the files are missing: scikit-learn's bundled ``load_digits`` (8×8 digits, 1797 images,
10 classes), split per class into a balanced test set (``digits_test_per_class`` images per class) and a
training pool, to which the same recipe is applied with ``head`` scaled down to the smallest per-class
pool (so class 9 keeps ``max(1, int(pool · ratio^(-1)))``). A message on stderr says so.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DEFAULT_DIR",
    "ENV_VAR",
    "LongTailData",
    "fashion_mnist_dir",
    "load_long_tailed_fashion_mnist",
    "long_tail_counts",
    "read_idx",
]

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "TRAINWELL_FASHION_MNIST_DIR"
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
_IDX_DTYPES: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


@dataclass
class LongTailData:
    """A long-tailed training set and a balanced test set, as float/long tensors.

    Attributes:
        x_train: ``[N, 1, H, W]`` float32, standardised with the training subset's mean and std.
        y_train: ``[N]`` int64 labels in ``[0, num_classes)``.
        x_test: ``[M, 1, H, W]`` float32, same standardisation.
        y_test: ``[M]`` int64 labels (balanced).
        counts: ``[num_classes]`` int64 training images per class (what the prior is built from).
        source: ``"fashion-mnist"`` or ``"digits"`` (fallback).
        class_names: one name per class.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    counts: Tensor
    source: str
    class_names: tuple[str, ...] = field(default=CLASS_NAMES)

    @property
    def num_classes(self) -> int:
        return int(self.counts.numel())


def long_tail_counts(head: int, num_classes: int = 10, ratio: float = 100.0) -> list[int]:
    """Per-class training sizes of the exponential long tail: ``int(head · ratio^(-c/(C-1)))``."""
    if num_classes < 2:
        raise ValueError(f"long_tail_counts(): argument 'num_classes' must be >= 2, got {num_classes}")
    if head < 1:
        raise ValueError(f"long_tail_counts(): argument 'head' must be >= 1, got {head}")
    if ratio < 1:
        raise ValueError(f"long_tail_counts(): argument 'ratio' must be >= 1, got {ratio}")
    return [max(1, int(head * ratio ** (-c / (num_classes - 1)))) for c in range(num_classes)]


def fashion_mnist_dir() -> Path:
    """The folder searched for the idx files: ``$TRAINWELL_FASHION_MNIST_DIR`` or :data:`DEFAULT_DIR`."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_DIR


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped): magic ``0 0 dtype ndim``, big-endian dims, raw data."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"read_idx(): {path} is not an idx file (bad magic {raw[:4]!r})")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"read_idx(): {path} holds {data.size} values, header says {dims}")
    return data.reshape(dims)


@functools.lru_cache(maxsize=2)
def _read_fashion(folder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    d = Path(folder)
    arrs = [read_idx(d / FILES[k]) for k in ("train_images", "train_labels", "test_images", "test_labels")]
    return arrs[0], arrs[1].astype(np.int64), arrs[2], arrs[3].astype(np.int64)


def _have_files(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILES.values())


def _take_per_class(labels: np.ndarray, counts: list[int], rng: np.random.Generator) -> np.ndarray:
    """Indices keeping ``counts[c]`` randomly chosen examples of each class c, sorted."""
    keep = []
    for c, n in enumerate(counts):
        idx = np.flatnonzero(labels == c)
        if n > idx.size:
            raise ValueError(f"class {c} has {idx.size} examples, the long tail asks for {n}")
        keep.append(rng.permutation(idx)[:n])
    return np.sort(np.concatenate(keep))


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[Tensor, Tensor]:
    tr = torch.from_numpy(
        train.astype(np.float32) / 255.0 if train.dtype == np.uint8 else train.astype(np.float32)
    )
    te = torch.from_numpy(
        test.astype(np.float32) / 255.0 if test.dtype == np.uint8 else test.astype(np.float32)
    )
    mean, std = tr.mean(), tr.std().clamp_min(1e-6)
    return ((tr - mean) / std).unsqueeze(1), ((te - mean) / std).unsqueeze(1)


def load_long_tailed_fashion_mnist(
    seed: int = 0,
    *,
    ratio: float = 100.0,
    head: int = 6000,
    test_per_class: int | None = None,
    root: str | Path | None = None,
    digits_test_per_class: int = 50,
    verbose: bool = True,
) -> LongTailData:
    """Load long-tailed Fashion-MNIST (or the digits fallback).

    Args:
        seed: picks which images each class keeps (and the test subset if ``test_per_class``).
        ratio: imbalance ratio ``n_0 / n_9`` (100 as in CIFAR-10-LT of arXiv:2007.07314).
        head: images kept for class 0 (6000 = all of it); smaller values shrink every class by the
            same recipe (used by quick/tiny lab modes).
        test_per_class: if given, a balanced subset of the 10k test split with this many per class.
        root: folder with the idx files; default ``$TRAINWELL_FASHION_MNIST_DIR`` or
            ``/usr/share/datasets/fashion-mnist``.
        digits_test_per_class: test images per class in the ``load_digits`` fallback.
        verbose: print a message to stderr when falling back.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) if root is not None else fashion_mnist_dir()
    if _have_files(folder):
        xtr, ytr, xte, yte = _read_fashion(str(folder.resolve()))
        counts = long_tail_counts(min(head, 6000), 10, ratio)
        keep = _take_per_class(ytr, counts, rng)
        if test_per_class is not None:
            test_keep = _take_per_class(yte, [test_per_class] * 10, rng)
            xte, yte = xte[test_keep], yte[test_keep]
        x_train, x_test = _standardise(xtr[keep], xte)
        return LongTailData(x_train, torch.from_numpy(ytr[keep]), x_test, torch.from_numpy(yte.copy()),
                            torch.tensor(counts, dtype=torch.int64), "fashion-mnist", CLASS_NAMES)

    if verbose:
        print(
            f"trainwell lab: Fashion-MNIST idx files not found in {folder} (install the Debian package "
            f"dataset-fashion-mnist or set {ENV_VAR}); falling back to scikit-learn load_digits (8x8 digits) "
            "with the same long-tail recipe, scaled down.",
            file=sys.stderr,
        )
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (np.asarray(digits.images, dtype=np.float32) / 16.0 * 255.0).astype(np.uint8)
    labels = np.asarray(digits.target, dtype=np.int64)
    test_idx = _take_per_class(labels, [digits_test_per_class] * 10, rng)
    pool = np.setdiff1d(np.arange(labels.size), test_idx)
    pool_sizes = [int((labels[pool] == c).sum()) for c in range(10)]
    counts = long_tail_counts(min(head, min(pool_sizes)), 10, ratio)
    keep = pool[_take_per_class(labels[pool], counts, rng)]
    if test_per_class is not None:
        test_idx = test_idx[
            _take_per_class(labels[test_idx], [min(test_per_class, digits_test_per_class)] * 10, rng)
        ]
    x_train, x_test = _standardise(images[keep], images[test_idx])
    return LongTailData(x_train, torch.from_numpy(labels[keep]), x_test, torch.from_numpy(labels[test_idx]),
                        torch.tensor(counts, dtype=torch.int64), "digits", tuple(str(i) for i in range(10)))
