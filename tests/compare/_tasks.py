"""Module-level task pieces for the compare tests (importable by spawned worker processes)."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainwell.compare import Task
from trainwell.techniques import Technique


class TinyNet(nn.Module):
    """Token embedding -> mean pool -> dropout -> linear (2 classes)."""

    def __init__(self, vocab: int = 20, dim: int = 8) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(dim, 2)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embedding

    def forward(self, ids: Tensor) -> Tensor:
        out: Tensor = self.head(self.drop(self.embedding(ids).mean(1)))
        return out


def make_data(n: int = 96, length: int = 6, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Label 1 iff the sequence holds more tokens from the upper half of the vocabulary: learnable fast."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 20, (n, length), generator=g)
    y = ((x >= 10).sum(1) * 2 > length).long()
    return x, y


X, Y = make_data(192)
XT, YT = make_data(128, seed=1)


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return TinyNet()


def evaluate(model: nn.Module) -> dict[str, float]:
    logits = model(XT)
    return {"accuracy": float((logits.argmax(-1) == YT).float().mean()),
            "loss": float(F.cross_entropy(logits, YT))}


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=5e-2)


def make_task(epochs: int = 3) -> Task:
    return Task(make_model, (X, Y), evaluate, make_optimizer=make_optimizer, epochs=epochs, batch_size=16)


def _shuffled_labels(model: nn.Module, loss_fn: Any, optimizer: Any) -> Any:
    gen = torch.Generator().manual_seed(123)

    def step(batch: Any) -> Tensor:
        x, y = batch
        y = y[torch.randperm(len(y), generator=gen)]
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss.detach()

    return step


SHUFFLED = Technique("shuffled_labels", _shuffled_labels, family="test")


def _killer(model: nn.Module, loss_fn: Any, optimizer: Any, *, seed_to_kill: int = 1) -> Any:
    """Plain training, except that it kills its worker process when the marker file exists."""
    marker = os.environ.get("TRAINWELL_TEST_KILL_FILE", "")

    def step(batch: Any) -> Tensor:
        if marker and os.path.exists(marker) and getattr(model, "_seed", None) == seed_to_kill:
            os._exit(3)
        loss = loss_fn(model, batch)
        loss.backward()
        return loss.detach()

    return step


def make_model_tagged(seed: int) -> nn.Module:
    m = make_model(seed)
    m._seed = seed  # type: ignore[assignment]
    return m


def make_tagged_task() -> Task:
    return Task(make_model_tagged, (X, Y), evaluate, make_optimizer=make_optimizer, epochs=2, batch_size=16,
                name="tagged-tiny")


KILLER = Technique("killer", _killer, {"seed_to_kill": 1}, family="test")


def _fails_on_seed_1(model: nn.Module, loss_fn: Any, optimizer: Any) -> Any:
    def step(batch: Any) -> Tensor:
        if getattr(model, "_seed", None) == 1:
            raise RuntimeError("boom on seed 1")
        loss = loss_fn(model, batch)
        loss.backward()
        return loss.detach()

    return step


FAILS = Technique("fails_on_seed_1", _fails_on_seed_1, family="test")
