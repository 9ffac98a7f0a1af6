"""Smooth F1: the Dice loss and the F1-weighted cross-entropy it turns into by "p → log p" (post 7708).

Source: kexue.fm/archives/7708.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trainwell._ops import apply_reduction, to_compute_dtype
from trainwell._validation import (
    check_int,
    check_number,
    check_reduction,
    check_tensor,
)
from trainwell.losses._base import Loss
from trainwell.losses._imbalance_common import check_binary_target as _check_binary_target

__all__ = [
    "DiceLoss",
    "F1WeightedCrossEntropy",
    "dice_loss",
    "f1_weighted_cross_entropy",
]


def _dice_stats(p: Tensor, y: Tensor, dim: int | tuple[int, ...] | None) -> tuple[Tensor, Tensor]:
    if dim is None:
        return (y * p).sum(), (y + p).sum()
    return (y * p).sum(dim=dim, keepdim=True), (y + p).sum(dim=dim, keepdim=True)


def _check_dim(dim: object, fn: str) -> int | tuple[int, ...] | None:
    if dim is None:
        return None
    if isinstance(dim, tuple) and all(isinstance(d, int) and not isinstance(d, bool) for d in dim):
        return dim
    d = check_int("dim", dim, fn=fn)
    return d


def dice_loss(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    *,
    dim: int | tuple[int, ...] | None = None,
    eps: float = 0.0,
) -> Tensor:
    """Dice loss ``1 − F1_smooth`` with ``F1_smooth = (2 Σ y·p + ε) / (Σ (y + p) + ε)``, ``p = σ(x)``.

    A batch-level statistic: the sums run over ``dim`` (``None``: every element, giving one value;
    ``dim=0`` on ``[B, C]``: one F1 per class, the multi-label use) and ``reduction`` combines the
    remaining values. A slice with ``Σ(y + p) + ε = 0`` (nothing predicted, nothing present) has loss 0.
    Under DDP the statistic is per rank.

    Shape:
        input, target: the same shape; output for ``"none"``: that shape without ``dim`` (one value
        for ``dim=None``).

    Source: kexue.fm/archives/7708.

    Args:
        input: logits.
        target: same shape, 0/1 or soft in [0, 1].
        reduction: ``'none' | 'mean' | 'sum'`` over the values left after summing over ``dim``.
        dim: dimension(s) the statistic sums over.
        eps: smoothing constant ≥ 0 (default 0, as in the post).
    """
    fn = "dice_loss"
    check_tensor("input", input, fn=fn, kind="float")
    y = _check_binary_target(target, input, fn)
    reduction = check_reduction(reduction, fn=fn)
    d = _check_dim(dim, fn)
    e = check_number("eps", eps, fn=fn, min=0.0)
    p = torch.sigmoid(to_compute_dtype(input))
    inter, total = _dice_stats(p, y, d)
    den = total + e
    # only an exact 0 (nothing predicted, nothing present) is special: `den > 0` would turn a NaN
    # input into a silent loss of 0
    empty = den == 0
    safe = torch.where(empty, torch.ones_like(den), den)
    f1 = torch.where(empty, torch.ones_like(den), (2.0 * inter + e) / safe)
    loss = 1.0 - f1
    if d is not None:
        loss = loss.squeeze(d)
    return apply_reduction(loss, reduction)


def f1_weighted_cross_entropy(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    *,
    dim: int | tuple[int, ...] | None = None,
) -> Tensor:
    """F1-weighted binary cross-entropy: smooth F1 turned into a reweighted CE by the "p → log p" rule.

    ``L = −[y (1 − F/2) log σ(x) + (1 − y) (F/2) log σ(−x)]`` with ``F = sg(F1_smooth)`` the batch's
    smooth F1 (stop-gradient). Positives get weight ``1 − F/2 ∈ [½, 1]``, negatives ``F/2 ∈ [0, ½]``:
    while F1 is low, negatives barely count. The gradient of the sum matches ``−∇F1`` up to the
    per-sample factor ``(2/D)·p`` (positives) / ``(2/D)(1 − p)`` (negatives), ``D = Σ(y + p)``.
    ``F`` is computed over ``dim`` (``None``: the whole batch; ``dim=0`` on ``[B, C]``: per class) and is
    per rank under DDP; a slice with ``Σ(y + p) = 0`` uses ``F = 0``.

    Shape:
        input, target: the same shape; output: that shape for ``"none"``, a scalar otherwise.

    Source: kexue.fm/archives/7708.

    Args:
        input: logits.
        target: same shape, 0/1 or soft in [0, 1].
        reduction: ``'none'`` (elementwise) | ``'mean'`` | ``'sum'`` over all elements.
        dim: dimension(s) the F1 statistic sums over.
    """
    fn = "f1_weighted_cross_entropy"
    check_tensor("input", input, fn=fn, kind="float")
    y = _check_binary_target(target, input, fn)
    reduction = check_reduction(reduction, fn=fn)
    d = _check_dim(dim, fn)
    x = to_compute_dtype(input)
    with torch.no_grad():
        inter, total = _dice_stats(torch.sigmoid(x), y, d)
        empty = total == 0  # NaN stays NaN (see dice_loss)
        safe = torch.where(empty, torch.ones_like(total), total)
        f = torch.where(empty, torch.zeros_like(total), 2.0 * inter / safe)
    loss = y * (1.0 - f / 2) * F.softplus(-x) + (1.0 - y) * (f / 2) * F.softplus(x)
    return apply_reduction(loss, reduction)


class DiceLoss(Loss):
    """Module form of :func:`dice_loss`.

    Shape:
        input: logits; target: the same shape (0/1 or soft in [0, 1]).
        output: for ``"none"``, that shape without the ``dim`` dimensions (a scalar for ``dim=None``);
        a scalar otherwise.

    Example::

        loss_fn = DiceLoss(dim=0)  # one soft F1 per class of a multi-label batch
        logits, target = torch.randn(16, 5, requires_grad=True), torch.randint(2, (16, 5)).float()
        loss = loss_fn(logits, target)  # mean over the 5 classes
        loss.backward()
    """

    _repr_fields = ("dim", "eps")

    def __init__(
        self, reduction: str = "mean", *, dim: int | tuple[int, ...] | None = None, eps: float = 0.0
    ) -> None:
        super().__init__(reduction)
        fn = "DiceLoss"
        self.dim = _check_dim(dim, fn)
        self.eps = check_number("eps", eps, fn=fn, min=0.0)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return dice_loss(input, target, self.reduction, dim=self.dim, eps=self.eps)


class F1WeightedCrossEntropy(Loss):
    """Module form of :func:`f1_weighted_cross_entropy`.

    Shape:
        input: logits; target: the same shape (0/1 or soft in [0, 1]).
        output: that shape for ``"none"``, a scalar otherwise.

    Example::

        loss_fn = F1WeightedCrossEntropy(dim=0)  # F1 weights per class
        logits, target = torch.randn(16, 5, requires_grad=True), torch.randint(2, (16, 5)).float()
        loss_fn(logits, target).backward()
    """

    _repr_fields = ("dim",)

    def __init__(self, reduction: str = "mean", *, dim: int | tuple[int, ...] | None = None) -> None:
        super().__init__(reduction)
        fn = "F1WeightedCrossEntropy"
        self.dim = _check_dim(dim, fn)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return f1_weighted_cross_entropy(input, target, self.reduction, dim=self.dim)
