"""The task behind ``examples/compare_tiny.toml``: an MLP on scikit-learn's 8×8 digits (1,797 images).

``trainwell compare examples/compare_tiny.toml`` imports :func:`make_task` from this file (the config's
folder is put on ``sys.path``). Everything here is module level so the local process pool can pickle it.
The data ship inside scikit-learn (``pip install trainwell[lab]`` or ``pip install scikit-learn``); nothing
is downloaded.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from trainwell.compare import Task


@functools.lru_cache(maxsize=1)
def load_digits_split() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fixed 80/20 split of the digits (a seeded permutation), pixels scaled to [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("examples/compare_tiny_task.py needs scikit-learn: pip install scikit-learn") from e
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(x))
    tr, te = perm[:cut], perm[cut:]
    return x[tr], y[tr], x[te], y[te]


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10))


def first_layer(model: nn.Module) -> nn.Module:
    """What FGM / PGD / GP perturb here: the first layer (its weight matrix or its output)."""
    return model[0]  # type: ignore[index, no-any-return]


def evaluate(model: nn.Module) -> dict[str, float]:
    _, _, x, y = load_digits_split()
    logits = model(x)
    return {"accuracy": float((logits.argmax(-1) == y).float().mean()),
            "nll": float(nn.functional.cross_entropy(logits, y))}


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=2e-3)


def make_task(epochs: int = 4, n_train: int = 600, batch_size: int = 32) -> Task:
    """Digits with ``n_train`` training images (a small-data regime where regularizers can matter)."""
    x, y, _, _ = load_digits_split()
    return Task(make_model, (x[:n_train], y[:n_train]), evaluate, make_optimizer=make_optimizer,
                epochs=epochs, batch_size=batch_size, embedding=first_layer)
