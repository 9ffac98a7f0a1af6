"""Class reweighting: inverse-frequency and effective-number weights, and the reweighted cross-entropy.

Sources: kexue.fm/archives/7708; Cui et al., "Class-Balanced Loss Based on Effective Number of Samples",
arXiv:1901.05555.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from trainwell._ops import apply_reduction, to_compute_dtype
from trainwell._validation import (
    check_labels,
    check_number,
    check_reduction,
    check_shape_prefix,
    check_tensor,
    fail,
)
from trainwell.losses._base import Loss
from trainwell.losses._imbalance_common import as_counts as _as_counts

__all__ = [
    "ClassBalancedCrossEntropy",
    "class_balanced_cross_entropy",
    "class_balanced_weights",
]


def class_balanced_weights(
    counts: Tensor | Sequence[float],
    tau: float = 1.0,
    beta: float | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Per-class weights for reweighted CE, normalised to mean 1.

    ``beta=None``: inverse frequency ``w_y ∝ n_y^{−τ}`` (post 7708's ``p(y)^{−τ}``). With ``beta`` in
    [0, 1): Cui et al.'s effective number ``E_y = (1 − β^{n_y}) / (1 − β)``, ``w_y ∝ E_y^{−τ}``
    (``β = 0`` gives uniform weights, ``β → 1`` inverse frequency). Counts are clamped to ≥ 1.
    Contrast with logit adjustment: these weights multiply the loss (outside the log).

    Sources: kexue.fm/archives/7708; arXiv:1901.05555.

    Returns:
        ``[K]`` weights in ``dtype`` (default float32; computed in float64) with mean 1 (up to rounding).

    Shape:
        counts: ``[C]``; output: ``[C]``.
    """
    fn = "class_balanced_weights"
    c = _as_counts(counts, fn).clamp_min(1.0)
    t = check_number("tau", tau, fn=fn, min=0.0)
    b = check_number("beta", beta, fn=fn, min=0.0, max=1.0, max_inclusive=False, allow_none=True)
    if b is None:
        eff = c
    elif b == 0.0:
        eff = torch.ones_like(c)
    else:
        # (1 − β^n)/(1 − β) as expm1(n·log β)/expm1(log β): no cancellation for β close to 1
        log_b = torch.tensor(b, dtype=torch.float64, device=c.device).log()
        eff = torch.expm1(c * log_b) / torch.expm1(log_b)
    w = eff.pow(-t)
    return (w / w.mean()).to(dtype)  # computed in float64


def class_balanced_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor,
    reduction: str = "mean",
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Class-reweighted cross-entropy ``−w_y log softmax(x)_y``.

    Unlike ``F.cross_entropy(weight=w)``, whose ``'mean'`` divides by ``Σ w_y`` of the batch (which
    undoes the reweighting for a single-class batch), ``'mean'`` here is the plain average over
    non-ignored rows, so the weights act as true per-sample multipliers (post 7708's reading).

    Args:
        input: logits ``[..., C]``.
        target: class indices ``[...]``.
        weight: ``[C]`` class weights, e.g. :func:`class_balanced_weights`.
        reduction: ``'none' | 'mean' | 'sum'``.
        ignore_index: target value to skip.
        label_smoothing: as in ``F.cross_entropy`` (applied before weighting by ``w_y``).

    Shape:
        input: ``[..., C]``; target: ``[...]``; weight: ``[C]``.
        output: ``[...]`` for ``"none"``, a scalar otherwise.
    """
    fn = "class_balanced_cross_entropy"
    check_tensor("input", input, fn=fn, kind="float", min_ndim=1)
    num_classes = input.shape[-1]
    check_tensor("weight", weight, fn=fn, kind="float", ndim=1)
    if weight.shape[0] != num_classes:
        fail(fn, "weight", f"a [{num_classes}] tensor of class weights", weight)
    reduction = check_reduction(reduction, fn=fn)
    ls = check_number("label_smoothing", label_smoothing, fn=fn, min=0.0, max=1.0)
    check_shape_prefix("input", input, "target", target, fn=fn)
    check_labels("target", target, num_classes, fn=fn, ignore_index=ignore_index)
    z = to_compute_dtype(input)
    ce = F.cross_entropy(
        z.reshape(-1, num_classes), target.reshape(-1).long(), reduction="none",
        ignore_index=ignore_index, label_smoothing=ls,
    ).reshape(target.shape)
    keep = target != ignore_index
    w = weight.to(device=z.device, dtype=z.dtype)[torch.where(keep, target, torch.zeros_like(target)).long()]
    loss = torch.where(keep, ce * w, torch.zeros_like(ce))
    return apply_reduction(loss, reduction, keep.sum() if reduction == "mean" else None)


class ClassBalancedCrossEntropy(Loss):
    """Module form of :func:`class_balanced_cross_entropy` with the weights as a buffer (their dtype kept).

    Shape:
        input: ``[..., C]`` logits; target: ``[...]`` class indices; weight: ``[C]``.
        output: ``[...]`` for ``"none"``, a scalar otherwise.

    Example::

        weight = class_balanced_weights(torch.tensor([900, 90, 10]), beta=0.999)
        loss_fn = ClassBalancedCrossEntropy(weight)
        loss = loss_fn(torch.randn(8, 3), torch.randint(3, (8,)))  # scalar
    """

    _repr_fields = ("num_classes", "ignore_index", "label_smoothing")

    weight: Tensor

    def __init__(
        self,
        weight: Tensor,
        reduction: str = "mean",
        *,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(reduction)
        fn = "ClassBalancedCrossEntropy"
        check_tensor("weight", weight, fn=fn, kind="float", ndim=1)
        self.register_buffer("weight", weight.detach().clone())
        self.ignore_index = ignore_index
        self.label_smoothing = check_number("label_smoothing", label_smoothing, fn=fn, min=0.0, max=1.0)

    @classmethod
    def from_counts(
        cls, counts: Tensor | Sequence[float], tau: float = 1.0, beta: float | None = None, **kwargs: object
    ) -> ClassBalancedCrossEntropy:
        """Build with :func:`class_balanced_weights` of the training-label counts."""
        return cls(class_balanced_weights(counts, tau, beta), **kwargs)  # type: ignore[arg-type]

    @property
    def num_classes(self) -> int:
        return self.weight.numel()

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return class_balanced_cross_entropy(
            input,
            target,
            self.weight,
            self.reduction,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )
