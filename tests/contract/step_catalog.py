"""The multi-pass step catalog: one row per object following ``trainwell.regularizers.MultiPassStep``.

Adding a row (any family): append a :class:`StepCase` to ``STEPS``:

* ``name``: the test id;
* ``make(model, strength)``: builds the object for the tiny model of ``tiny_model()``; ``strength`` is
  its ε/β (0.0 must make ``step`` a plain training step);
* ``closure(model, batch)``: what the object's ``step`` is called with (VAT-like objects may return
  logits instead of a loss: set ``returns_logits=True`` and the plain step is skipped for them);
* ``restores``: the parameters it perturbs and must restore bit-exactly.

Every row then runs every test of ``test_step_contract.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from trainwell.regularizers import FGM, PGD, VAT, FastGradientPenalty, ParameterGradientPenalty


class TinyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.drop = nn.Dropout(0.0)
        self.head = nn.Linear(8, 3)

    def forward(self, ids: Tensor) -> Tensor:
        return self.head(self.drop(torch.tanh(self.emb(ids))).mean(1))


def tiny_model() -> TinyModel:
    torch.manual_seed(0)
    return TinyModel()


def tiny_batch() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 20, (4, 5), generator=g), torch.randint(0, 3, (4,), generator=g)


def loss_closure(model: TinyModel, batch: tuple[Tensor, Tensor]) -> Callable[[], Tensor]:
    ids, y = batch
    return lambda: nn.functional.cross_entropy(model(ids), y)


def logits_closure(model: TinyModel, batch: tuple[Tensor, Tensor]) -> Callable[[], Tensor]:
    return lambda: model(batch[0])


@dataclass(frozen=True)
class StepCase:
    name: str
    make: Callable[[TinyModel, float], Any]
    closure: Callable[[TinyModel, tuple[Tensor, Tensor]], Callable[[], Any]] = loss_closure
    returns_logits: bool = False

    def __repr__(self) -> str:
        return self.name


STEPS: list[StepCase] = [
    StepCase("fgm_matrix", lambda m, e: FGM(m.emb, e)),
    StepCase("fgm_output", lambda m, e: FGM(m.emb, e, mode="output")),
    StepCase("pgd", lambda m, e: PGD(m.emb, e, alpha=0.3, steps=2)),
    StepCase("pgd_output", lambda m, e: PGD(m.emb, e, alpha=0.3, steps=2, mode="output")),
    StepCase("fast_gradient_penalty", lambda m, e: FastGradientPenalty(m.emb, e)),
    StepCase("parameter_gradient_penalty", lambda m, e: ParameterGradientPenalty(m, e)),
    StepCase("vat_output", lambda m, e: VAT(m.emb, e, xi=1e-3), logits_closure, returns_logits=True),
    StepCase("vat_matrix", lambda m, e: VAT(m.emb, e, xi=1.0, mode="matrix"), logits_closure,
             returns_logits=True),
]
