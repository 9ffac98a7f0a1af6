"""The loss catalog: one row per loss (functional, module, input factory), shared by the contract tests.

Adding a loss (any family): append a :class:`LossCase` to ``LOSSES`` below (or build a list in your own
module and add it to ``LOSSES`` with ``LOSSES.extend(...)``):

* ``name``: the test id;
* ``functional(*inputs, reduction=...)``: the functional form;
* ``module(reduction=...)``: builds the ``nn.Module`` twin (seed it if it owns parameters), or ``None``;
* ``make(g, n, dtype)``: the inputs for a batch of ``n`` rows (float tensors in ``dtype``), drawn from
  the generator ``g``; every tensor's dim 0 is the batch, so stacking two draws gives a leading dim;
* flags switch off the properties a loss does not have (``per_row``: 'none' returns one value per
  row, so leading dims are independent; ``bad_input``: the name its first argument has in errors).

Every row then runs every test of ``test_loss_contract.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from trainwell import losses as L

Inputs = tuple[Tensor, ...]


@dataclass(frozen=True)
class LossCase:
    name: str
    functional: Callable[..., Tensor]
    module: Callable[..., nn.Module] | None
    make: Callable[[torch.Generator, int, torch.dtype], Inputs]
    per_row: bool = True
    bad_input: str = "input"
    extreme: bool = True

    def __repr__(self) -> str:
        return self.name


C = 5


def _logits_labels(g: torch.Generator, n: int, dtype: torch.dtype) -> Inputs:
    return torch.randn(n, C, generator=g, dtype=dtype) * 2, torch.randint(0, C, (n,), generator=g)


def _logits_binary(g: torch.Generator, n: int, dtype: torch.dtype) -> Inputs:
    return torch.randn(n, C, generator=g, dtype=dtype) * 2, (torch.rand(n, C, generator=g) > 0.6).to(dtype)


def _two_logits_labels(g: torch.Generator, n: int, dtype: torch.dtype) -> Inputs:
    x, y = _logits_labels(g, n, dtype)
    return x, x + 0.3 * torch.randn(n, C, generator=g, dtype=dtype), y


def _two_logits(g: torch.Generator, n: int, dtype: torch.dtype) -> Inputs:
    return _two_logits_labels(g, n, dtype)[:2]


def _pairs(g: torch.Generator, n: int, dtype: torch.dtype) -> Inputs:
    q = torch.randn(n, 8, generator=g, dtype=dtype)
    return q, q + 0.5 * torch.randn(n, 8, generator=g, dtype=dtype)


def _cosine_labels(g: torch.Generator, n: int, dtype: torch.dtype) -> Inputs:
    return torch.rand(n, C, generator=g, dtype=dtype) * 2 - 1, torch.randint(0, C, (n,), generator=g)


def _embeddings_labels(g: torch.Generator, n: int, dtype: torch.dtype) -> Inputs:
    return torch.randn(n, 8, generator=g, dtype=dtype), torch.randint(0, C, (n,), generator=g)


def _sparse(g: torch.Generator, n: int, dtype: torch.dtype) -> Inputs:
    pos = torch.randint(0, C, (n, 2), generator=g)
    pos[:, 1] = torch.where(torch.rand(n, generator=g) > 0.5, pos[:, 1], torch.full_like(pos[:, 1], -1))
    return torch.randn(n, C, generator=g, dtype=dtype) * 2, pos


def _am_module(**kw: Any) -> nn.Module:
    torch.manual_seed(0)
    return L.AMSoftmax(8, C, **kw)


def _am_functional(emb: Tensor, target: Tensor, **kw: Any) -> Tensor:
    """The functional form on the module's cosines (same seeded centres)."""
    if not isinstance(emb, Tensor):  # bad input: let the module's own check name the argument
        return _am_module(**kw)(emb, target)
    head = _am_module().to(emb.dtype) if emb.dtype == torch.float64 else _am_module()
    return L.am_softmax_loss(head.cosine(emb), target, head.scale, head.margin, **kw)


LOSSES: list[LossCase] = [
    LossCase("focal", L.focal_loss, L.FocalLoss, _logits_labels),
    LossCase("binary_focal", L.binary_focal_loss, L.BinaryFocalLoss, _logits_binary),
    LossCase(
        "logit_adjusted_ce",
        functools.partial(
            L.logit_adjusted_cross_entropy, log_prior=L.log_prior_from_counts([50, 20, 10, 5, 1])
        ),
        lambda **kw: L.LogitAdjustedCrossEntropy(L.log_prior_from_counts([50, 20, 10, 5, 1]), **kw),
        _logits_labels,
    ),
    LossCase(
        "class_balanced_ce",
        functools.partial(
            L.class_balanced_cross_entropy, weight=L.class_balanced_weights([50, 20, 10, 5, 1])
        ),
        lambda **kw: L.ClassBalancedCrossEntropy(L.class_balanced_weights([50, 20, 10, 5, 1]), **kw),
        _logits_labels,
    ),
    LossCase("hard_truncated", L.hard_truncated_loss, L.HardTruncatedLoss, _logits_labels),
    LossCase("softened_truncated", L.softened_truncated_loss, L.SoftenedTruncatedLoss, _logits_labels),
    LossCase(
        "dice_per_class",
        functools.partial(L.dice_loss, dim=0),
        lambda **kw: L.DiceLoss(dim=0, **kw),
        _logits_binary,
        per_row=False,
    ),
    LossCase(
        "f1_weighted_ce", L.f1_weighted_cross_entropy, L.F1WeightedCrossEntropy, _logits_binary, per_row=False
    ),  # the batch F1 couples the rows
    LossCase(
        "zlpr", L.multilabel_categorical_crossentropy, L.MultilabelCategoricalCrossEntropy, _logits_binary
    ),
    LossCase("zlpr_rank", L.multilabel_rank_loss, L.MultilabelRankLoss, _logits_binary),
    LossCase(
        "zlpr_sparse",
        L.sparse_multilabel_categorical_crossentropy,
        L.SparseMultilabelCategoricalCrossEntropy,
        _sparse,
    ),
    LossCase("am_softmax", _am_functional, _am_module, _embeddings_labels, bad_input="embeddings"),
    LossCase("am_softmax_cosine", L.am_softmax_loss, None, _cosine_labels, bad_input="cosine"),
    LossCase("taylor_ce", L.taylor_cross_entropy, L.TaylorCrossEntropy, _logits_labels),
    LossCase("rdrop", L.rdrop_loss, L.RDropLoss, _two_logits_labels, bad_input="logits1"),
    LossCase("symmetric_kl", L.symmetric_kl, None, _two_logits, bad_input="logits1"),
    # InfoNCE couples the rows of one batch; its leading dims are independent batches (per_row=False
    # here because stacking two draws along dim 0 gives that case, which the dedicated test covers)
    LossCase("info_nce", L.info_nce_loss, L.InfoNCELoss, _pairs, per_row=False, bad_input="query"),
]
