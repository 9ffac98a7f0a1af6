"""Focal loss (softmax and sigmoid) and the hard/softened truncation it grew from (post 4733).

Source: kexue.fm/archives/4733, kexue.fm/archives/4293; Lin et al., arXiv:1708.02002.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trainwell._ops import apply_reduction, to_compute_dtype
from trainwell._validation import (
    check_labels,
    check_number,
    check_probabilities,
    check_reduction,
    check_shape_prefix,
    check_tensor,
    fail,
)
from trainwell.losses._base import Loss
from trainwell.losses._imbalance_common import check_binary_target as _check_binary_target

__all__ = [
    "BinaryFocalLoss",
    "FocalLoss",
    "HardTruncatedLoss",
    "SoftenedTruncatedLoss",
    "binary_focal_loss",
    "focal_loss",
    "hard_truncated_loss",
    "softened_truncated_loss",
]


def _check_gamma(gamma: object, fn: str) -> float:
    g = check_number("gamma", gamma, fn=fn, min=0.0)
    return g


def focal_loss(
    input: Tensor,
    target: Tensor,
    gamma: float = 2.0,
    alpha: float | Tensor | None = None,
    reduction: str = "mean",
    *,
    ignore_index: int = -100,
) -> Tensor:
    """Multi-class (softmax) focal loss ``−α_t (1 − p_t)^γ log p_t``.

    ``(1 − p_t)`` is computed as ``−expm1(log p_t)`` (accurate when ``p_t → 1``); ``γ = 0`` with
    ``alpha=None`` is exactly cross-entropy. ``'mean'`` averages over non-ignored rows.

    Shape:
        input: ``[..., C]`` logits; target: ``[...]`` class indices.
        output: ``[...]`` for ``reduction="none"``, a scalar otherwise.

    Source: kexue.fm/archives/4733; Lin et al., arXiv:1708.02002.

    Args:
        input: logits ``[..., C]``.
        target: class indices ``[...]``.
        gamma: focusing parameter γ ≥ 0 (default 2).
        alpha: ``None`` (no weighting), a float (multiplies every term), or a ``[C]`` tensor of
            per-class weights.
        reduction: ``'none' | 'mean' | 'sum'``.
        ignore_index: target value to skip.
    """
    fn = "focal_loss"
    check_tensor("input", input, fn=fn, kind="float", min_ndim=1)
    g = _check_gamma(gamma, fn)
    reduction = check_reduction(reduction, fn=fn)
    check_shape_prefix("input", input, "target", target, fn=fn)
    num_classes = input.shape[-1]
    check_labels("target", target, num_classes, fn=fn, ignore_index=ignore_index)
    logp = torch.log_softmax(to_compute_dtype(input), dim=-1)
    keep = target != ignore_index
    t = torch.where(keep, target, torch.zeros_like(target)).long().unsqueeze(-1)
    logpt = logp.gather(-1, t).squeeze(-1)
    # clamp: keeps the pow backward finite for γ < 1 when p_t rounds to exactly 1
    loss = -(-torch.expm1(logpt)).clamp_min(torch.finfo(logpt.dtype).tiny).pow(g) * logpt
    if alpha is not None:
        if isinstance(alpha, Tensor):
            check_tensor("alpha", alpha, fn=fn, kind="float", ndim=1)
            if alpha.shape[0] != num_classes:
                fail(fn, "alpha", f"a float or a [{num_classes}] tensor of class weights", alpha)
            loss = loss * alpha.to(device=loss.device, dtype=loss.dtype)[t.squeeze(-1)]
        else:
            a = check_number("alpha", alpha, fn=fn, min=0.0)
            loss = loss * a
    loss = torch.where(keep, loss, torch.zeros_like(loss))
    return apply_reduction(loss, reduction, keep.sum() if reduction == "mean" else None)


def binary_focal_loss(
    input: Tensor,
    target: Tensor,
    gamma: float = 2.0,
    alpha: float | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Binary (sigmoid) focal loss in logit space, elementwise.

    ``y = 1: −α σ(−x)^γ log σ(x)``, ``y = 0: −(1 − α) σ(x)^γ log σ(−x)``, with ``log σ(x) = −softplus(−x)``
    and ``σ(−x)^γ = exp(−γ softplus(x))`` — no log of a clamped probability. Soft targets in [0, 1] mix
    the two terms linearly. ``γ = 0, alpha=None`` is exactly ``binary_cross_entropy_with_logits``.
    Su's remark (post 4733): α is an empirical knob; without the compute to tune it use ``None``
    (equivalent to α = 0.5 up to a factor 2); the paper's detector used α = 0.25, γ = 2.

    Shape:
        input: any shape; target: the same shape.
        output: the shape of ``input`` for ``"none"``, a scalar otherwise.

    Source: kexue.fm/archives/4733; arXiv:1708.02002.

    Args:
        input: logits, any shape.
        target: same shape, 0/1 (bool/int/float) or soft in [0, 1].
        gamma: γ ≥ 0 (default 2).
        alpha: weight of the positive term in [0, 1] (negatives get 1 − α), or ``None``.
        reduction: ``'none'`` (elementwise) | ``'mean'`` | ``'sum'`` over all elements.
    """
    fn = "binary_focal_loss"
    check_tensor("input", input, fn=fn, kind="float")
    g = _check_gamma(gamma, fn)
    a = check_number("alpha", alpha, fn=fn, min=0.0, max=1.0, allow_none=True)
    reduction = check_reduction(reduction, fn=fn)
    y = _check_binary_target(target, input, fn)
    x = to_compute_dtype(input)
    sp_pos = F.softplus(-x)  # −log σ(x)
    sp_neg = F.softplus(x)  # −log σ(−x)
    pos = sp_pos if g == 0 else torch.exp(-g * sp_neg) * sp_pos
    neg = sp_neg if g == 0 else torch.exp(-g * sp_pos) * sp_neg
    if a is not None:
        pos = a * pos
        neg = (1.0 - a) * neg
    return apply_reduction(y * pos + (1.0 - y) * neg, reduction)


class FocalLoss(Loss):
    """Module form of :func:`focal_loss`; a ``[C]`` tensor ``alpha`` is kept as a buffer.

    Shape:
        input: ``[..., C]`` logits; target: ``[...]`` class indices; a tensor ``alpha``: ``[C]``.
        output: ``[...]`` for ``reduction="none"``, a scalar otherwise.

    Example::

        loss_fn = FocalLoss(gamma=2.0, alpha=torch.tensor([0.2, 0.3, 0.5]))
        logits, target = torch.randn(8, 3, requires_grad=True), torch.randint(3, (8,))
        loss = loss_fn(logits, target)  # scalar
        loss.backward()
    """

    _repr_fields = ("gamma", "alpha")

    alpha_weight: Tensor | None

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | Tensor | None = None,
        reduction: str = "mean",
        *,
        ignore_index: int = -100,
    ) -> None:
        super().__init__(reduction)
        fn = "FocalLoss"
        self.gamma = _check_gamma(gamma, fn)
        self.ignore_index = ignore_index
        if isinstance(alpha, Tensor):
            check_tensor("alpha", alpha, fn=fn, kind="float", ndim=1)
            self.register_buffer("alpha_weight", alpha.detach().clone())
            self.alpha: float | None = None
        else:
            self.alpha_weight = None
            self.alpha = check_number("alpha", alpha, fn=fn, min=0.0, allow_none=True)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        alpha = self.alpha_weight if self.alpha_weight is not None else self.alpha
        return focal_loss(input, target, self.gamma, alpha, self.reduction, ignore_index=self.ignore_index)


class BinaryFocalLoss(Loss):
    """Module form of :func:`binary_focal_loss`.

    Shape:
        input: logits, any shape; target: the same shape (0/1 or soft in [0, 1]).
        output: the shape of ``input`` for ``"none"``, a scalar otherwise.

    Example::

        loss_fn = BinaryFocalLoss(gamma=2.0, alpha=0.25)
        logits = torch.randn(8, 4, requires_grad=True)
        target = torch.randint(2, (8, 4)).float()
        loss_fn(logits, target).backward()
    """

    _repr_fields = ("gamma", "alpha")

    def __init__(self, gamma: float = 2.0, alpha: float | None = None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        fn = "BinaryFocalLoss"
        self.gamma = _check_gamma(gamma, fn)
        self.alpha = check_number("alpha", alpha, fn=fn, min=0.0, max=1.0, allow_none=True)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_focal_loss(input, target, self.gamma, self.alpha, self.reduction)


# ------------------------------------------------------------------- hard truncation and its softening


def _truncation_mode(input: Tensor, target: Tensor, fn: str) -> str:
    """'binary' when target has input's shape, 'multiclass' when it has input's leading dims."""
    check_tensor("target", target, fn=fn, kind=("float", "int", "bool"))
    if target.shape == input.shape:
        check_probabilities("target", target, fn=fn)
        return "binary"
    if input.dim() >= 1 and tuple(target.shape) == tuple(input.shape[:-1]):
        check_labels("target", target, input.shape[-1], fn=fn)
        return "multiclass"
    raise ValueError(
        f"{fn}(): argument 'target' must have the shape of 'input' {tuple(input.shape)} (binary) or its "
        f"leading dims {tuple(input.shape[:-1])} (class indices), got {tuple(target.shape)}"
    )


def hard_truncated_loss(
    input: Tensor, target: Tensor, margin: float = 0.5, reduction: str = "mean"
) -> Tensor:
    """Cross-entropy that stops updating samples already classified beyond ``margin`` (post 4293/4733).

    Binary (``target`` shaped like ``input``, 0/1): ``λ·BCE`` with ``λ = 0`` when ``y = 1, σ(x) > m`` or
    ``y = 0, σ(x) < 1 − m``. Multi-class (``target`` = class indices ``[...]`` for ``input [..., C]``):
    ``λ·CE`` with ``λ = 0`` when ``softmax(x)_t > m``. ``λ`` is computed without gradient, and
    ``'mean'`` divides by the full count (truncated samples count as zeros). Weakness noted in the
    post: nothing keeps a sample above the threshold once it crosses it.

    Shape:
        input: ``[..., C]`` with target ``[...]`` (class indices), or any shape with a target of that
        shape (binary).
        output: the target's shape for ``"none"``, a scalar otherwise.

    Source: kexue.fm/archives/4733, kexue.fm/archives/4293.

    Args:
        input: logits.
        target: binary targets (same shape) or class indices (leading dims).
        margin: threshold ``m ∈ (0, 1)`` (default 0.5; post 4293 used 0.6).
        reduction: ``'none' | 'mean' | 'sum'``.
    """
    fn = "hard_truncated_loss"
    check_tensor("input", input, fn=fn, kind="float")
    m = check_number("margin", margin, fn=fn, min=0.0, max=1.0, min_inclusive=False, max_inclusive=False)
    reduction = check_reduction(reduction, fn=fn)
    mode = _truncation_mode(input, target, fn)
    x = to_compute_dtype(input)
    if mode == "binary":
        y = target.detach().to(x.dtype)
        loss = y * F.softplus(-x) + (1.0 - y) * F.softplus(x)
        with torch.no_grad():
            p = torch.sigmoid(x)
            done = ((y > 0.5) & (p > m)) | ((y <= 0.5) & (p < 1.0 - m))
    else:
        logp = torch.log_softmax(x, dim=-1)
        logpt = logp.gather(-1, target.long().unsqueeze(-1)).squeeze(-1)
        loss = -logpt
        with torch.no_grad():
            done = logpt.exp() > m
    loss = torch.where(done, torch.zeros_like(loss), loss)
    return apply_reduction(loss, reduction)


def softened_truncated_loss(
    input: Tensor, target: Tensor, k: float = 1.0, reduction: str = "mean"
) -> Tensor:
    """Softened hard truncation ``L**``: the step weight replaced by a sigmoid of sharpness ``K``.

    Binary: ``y = 1: −σ(−Kx) log σ(x)``, ``y = 0: −σ(Kx) log σ(−x)`` (soft y mixes them). Multi-class
    (class-index ``target``): ``−softmax(−K·x)_t · log softmax(x)_t``. The weight keeps its gradient
    (differentiable, unlike the hard rule). With ``K = 1`` the binary form equals focal loss with
    γ = 1; for more than two classes the multi-class form does *not* equal focal γ = 1. As ``K → ∞``
    it tends to the hard truncation with threshold 0.5.

    Shape:
        input: ``[..., C]`` with target ``[...]`` (class indices), or any shape with a target of that
        shape (binary).
        output: the target's shape for ``"none"``, a scalar otherwise.

    Source: kexue.fm/archives/4733.

    Args:
        input: logits.
        target: binary targets (same shape) or class indices (leading dims).
        k: sharpness ``K > 0`` (default 1).
        reduction: ``'none' | 'mean' | 'sum'``.
    """
    fn = "softened_truncated_loss"
    check_tensor("input", input, fn=fn, kind="float")
    kk = check_number("k", k, fn=fn, min=0.0, min_inclusive=False)
    reduction = check_reduction(reduction, fn=fn)
    mode = _truncation_mode(input, target, fn)
    x = to_compute_dtype(input)
    if mode == "binary":
        y = target.detach().to(x.dtype)
        loss = y * torch.sigmoid(-kk * x) * F.softplus(-x) + (1.0 - y) * torch.sigmoid(kk * x) * F.softplus(x)
    else:
        t = target.long().unsqueeze(-1)
        logpt = torch.log_softmax(x, dim=-1).gather(-1, t).squeeze(-1)
        weight = torch.softmax(-kk * x, dim=-1).gather(-1, t).squeeze(-1)
        loss = -weight * logpt
    return apply_reduction(loss, reduction)


class HardTruncatedLoss(Loss):
    """Module form of :func:`hard_truncated_loss`.

    Shape:
        input: ``[..., C]`` with target ``[...]`` (class indices), or any shape with a target of that
        shape (binary).
        output: the target's shape for ``"none"``, a scalar otherwise.

    Example::

        loss_fn = HardTruncatedLoss(margin=0.5)
        logits, target = torch.randn(8, 3, requires_grad=True), torch.randint(3, (8,))
        loss_fn(logits, target).backward()  # samples already right by the margin give no gradient
    """

    _repr_fields = ("margin",)

    def __init__(self, margin: float = 0.5, reduction: str = "mean") -> None:
        super().__init__(reduction)
        fn = "HardTruncatedLoss"
        self.margin = check_number(
            "margin", margin, fn=fn, min=0.0, max=1.0, min_inclusive=False, max_inclusive=False
        )

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return hard_truncated_loss(input, target, self.margin, self.reduction)


class SoftenedTruncatedLoss(Loss):
    """Module form of :func:`softened_truncated_loss`.

    Shape:
        input: ``[..., C]`` with target ``[...]`` (class indices), or any shape with a target of that
        shape (binary).
        output: the target's shape for ``"none"``, a scalar otherwise.

    Example::

        loss_fn = SoftenedTruncatedLoss(k=1.0)
        logits, target = torch.randn(8, 3, requires_grad=True), torch.randint(3, (8,))
        loss_fn(logits, target).backward()
    """

    _repr_fields = ("k",)

    def __init__(self, k: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        fn = "SoftenedTruncatedLoss"
        self.k = check_number("k", k, fn=fn, min=0.0, min_inclusive=False)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return softened_truncated_loss(input, target, self.k, self.reduction)
