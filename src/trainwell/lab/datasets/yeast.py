"""The Yeast multi-label data set (2417 genes × 103 features, 14 functional classes), offline.

Source: ``river.datasets.Yeast()`` — the MULAN version, shipped as ``yeast.csv.gz`` inside the pip
package ``river`` (``pip install river``; nothing is downloaded). Labels are long-tailed (class
frequencies from about 75% down to about 1.4%; 4.24 labels per gene on average).

The split is a fixed function of ``seed``: a random permutation, then ``train``/``val``/``test``
fractions (default 60/20/20). Features are standardised with the training part's mean and std.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["NUM_FEATURES", "NUM_LABELS", "NUM_SAMPLES", "MultiLabelSplit", "load_yeast", "yeast_arrays"]

NUM_SAMPLES, NUM_FEATURES, NUM_LABELS = 2417, 103, 14


@dataclass
class MultiLabelSplit:
    """Train/validation/test tensors of a multi-label data set.

    Attributes:
        x_train, x_val, x_test: ``[n, F]`` float32 standardised features.
        y_train, y_val, y_test: ``[n, L]`` float32 multi-hot labels in {0, 1}.
        feature_names, label_names: column names from the source.
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    feature_names: tuple[str, ...]
    label_names: tuple[str, ...]

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def num_labels(self) -> int:
        return int(self.y_train.shape[1])


@functools.lru_cache(maxsize=1)
def yeast_arrays() -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """All 2417 rows as ``(X float32 [2417, 103], Y uint8 [2417, 14], feature names, label names)``."""
    try:
        from river import datasets
    except ImportError as e:  # pragma: no cover - river is in the lab extra
        raise ImportError("the Yeast data set ships with the 'river' package: pip install river "
                          "(or pip install 'trainwell[lab]')") from e
    xs, ys = [], []
    feat: tuple[str, ...] = ()
    labs: tuple[str, ...] = ()
    for x, y in datasets.Yeast():
        if not feat:
            feat, labs = tuple(x), tuple(y)
        xs.append([float(x[k]) for k in feat])
        ys.append([int(bool(y[k])) for k in labs])
    X = np.asarray(xs, dtype=np.float32)
    Y = np.asarray(ys, dtype=np.uint8)
    if X.shape != (NUM_SAMPLES, NUM_FEATURES) or Y.shape != (NUM_SAMPLES, NUM_LABELS):
        raise ValueError(f"unexpected Yeast shape: X {X.shape}, Y {Y.shape}")
    return X, Y, feat, labs


def load_yeast(seed: int = 0, *, train: float = 0.6, val: float = 0.2) -> MultiLabelSplit:
    """Yeast as float tensors with a seeded train/val/test split (test gets ``1 - train - val``).

    Args:
        seed: permutation seed; the same seed always gives the same split.
        train: fraction of rows for training.
        val: fraction for validation (threshold tuning, early stopping).
    """
    if not (0 < train < 1 and 0 <= val < 1 and train + val < 1):
        raise ValueError(f"load_yeast(): arguments 'train'/'val' must be fractions with train + val < 1, "
                         f"got train={train}, val={val}")
    X, Y, feat, labs = yeast_arrays()
    perm = np.random.default_rng(seed).permutation(X.shape[0])
    n_tr = round(train * X.shape[0])
    n_va = round(val * X.shape[0])
    tr, va, te = perm[:n_tr], perm[n_tr:n_tr + n_va], perm[n_tr + n_va:]
    mean = X[tr].mean(0)
    std = X[tr].std(0)
    std = np.where(std < 1e-6, 1.0, std)

    def fx(rows: np.ndarray) -> Tensor:
        return torch.from_numpy((X[rows] - mean) / std).float()

    def fy(rows: np.ndarray) -> Tensor:
        return torch.from_numpy(Y[rows].astype(np.float32))

    return MultiLabelSplit(fx(tr), fy(tr), fx(va), fy(va), fx(te), fy(te), feat, labs)
