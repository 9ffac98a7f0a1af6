"""Taylor softmax: a softmax whose exponential is replaced by an even-order Taylor polynomial (post 7919).

Even-order Taylor polynomials ``f_n(x) = Σ_{k≤n} x^k/k!`` of ``e^x`` are strictly positive, so
``f_n(x_i) / Σ_j f_n(x_j)`` is a distribution. It decays polynomially rather than exponentially, so
predictions are less peaked than softmax. Unlike softmax it is *not* shift-invariant: do not subtract
the row maximum "for stability" (that changes the result).

Source: kexue.fm/archives/7919; Banerjee et al., arXiv:2011.11538.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from trainwell._ops import apply_reduction
from trainwell._validation import (
    check_bool,
    check_int,
    check_labels,
    check_reduction,
    check_shape_prefix,
    check_tensor,
    fail,
)
from trainwell.losses._base import Loss
from trainwell.numerics.taylor_positivity import taylor_exp, taylor_exp_minimizer

__all__ = ["TaylorCrossEntropy", "TaylorSoftmax", "taylor_cross_entropy", "taylor_softmax"]


def _check_order(order: object, fn: str) -> int:
    n = check_int("order", order, fn=fn, min=2)
    if n % 2:
        fail(
            fn, "order", "an even int >= 2 (odd-order Taylor polynomials of exp take negative values)", order
        )
    return n


def _taylor_values(x: Tensor, order: int, monotone: bool) -> Tensor:
    """``f_n(x)`` (or ``f_n(max(x, x_n*))``) in float32, float64 for float64 input or order > 10.

    float32 holds ``|x|^n/n!`` up to |x| ≈ 3e4 for n = 10; higher orders are evaluated in float64.
    """
    dtype = torch.float64 if (x.dtype == torch.float64 or order > 10) else torch.float32
    xf = x.to(dtype)
    if monotone:
        xf = xf.clamp_min(taylor_exp_minimizer(order)[0])
    return taylor_exp(xf, order)


def taylor_softmax(input: Tensor, order: int = 2, dim: int = -1, *, monotone: bool = False) -> Tensor:
    """Taylor softmax ``f_n(x_i) / Σ_j f_n(x_j)`` along ``dim``, ``f_n`` the order-``n`` Taylor series of exp.

    ``n`` must be even (then ``f_n > 0`` everywhere); default ``n = 2``: ``1 + x + x²/2``.
    ``monotone=True`` clamps the inputs below the minimiser ``x_n*`` of ``f_n`` (``f_n`` is U-shaped,
    so very negative logits would otherwise get *more* mass than moderately negative ones); the post
    reports no evidence that the non-monotone default hurts.

    Shape:
        input: any shape; output: the same shape (normalized along ``dim``).

    Source: kexue.fm/archives/7919; arXiv:2011.11538.

    Args:
        input: logits (any shape); computed in float32 (float64 stays; orders > 10 use float64).
        order: even int ≥ 2.
        dim: the class dimension.
        monotone: clamp below ``x_n*`` so the map is order-preserving.

    Returns:
        probabilities, float32 (float64 for float64 input), same shape as ``input``.
    """
    fn = "taylor_softmax"
    check_tensor("input", input, fn=fn, kind="float")
    n = _check_order(order, fn)
    check_int("dim", dim, fn=fn, min=-max(input.dim(), 1), max=max(input.dim(), 1) - 1)
    check_bool("monotone", monotone, fn=fn)
    f = _taylor_values(input, n, monotone)
    p = f / f.sum(dim=dim, keepdim=True)
    return p if input.dtype == torch.float64 else p.float()  # order > 10 computes in float64


def taylor_cross_entropy(
    input: Tensor,
    target: Tensor,
    order: int = 2,
    reduction: str = "mean",
    *,
    monotone: bool = False,
    ignore_index: int = -100,
) -> Tensor:
    """Cross-entropy of the Taylor softmax: ``−log f_n(x_t) + log Σ_j f_n(x_j)``.

    ``log f_n`` is finite because ``f_n ≥ f_n(x_n*) > 0`` for even ``n``. See :func:`taylor_softmax`.
    Rows whose target equals ``ignore_index`` contribute 0 and are left out of the mean.

    Shape:
        input: ``[..., C]``; target: ``[...]``.
        output: ``[...]`` for ``"none"``, a scalar otherwise.

    Source: kexue.fm/archives/7919; arXiv:2011.11538.

    Args:
        input: logits ``[..., C]``.
        target: class indices ``[...]`` (int).
        order: even int ≥ 2 (default 2).
        reduction: ``'none' | 'mean' | 'sum'``.
        monotone: clamp below the minimiser ``x_n*`` (see :func:`taylor_softmax`).
        ignore_index: target value to skip.
    """
    fn = "taylor_cross_entropy"
    check_tensor("input", input, fn=fn, kind="float", min_ndim=1)
    n = _check_order(order, fn)
    reduction = check_reduction(reduction, fn=fn)
    check_bool("monotone", monotone, fn=fn)
    check_shape_prefix("input", input, "target", target, fn=fn)
    check_labels("target", target, input.shape[-1], fn=fn, ignore_index=ignore_index)
    f = _taylor_values(input, n, monotone)
    keep = target != ignore_index
    t = torch.where(keep, target, torch.zeros_like(target)).unsqueeze(-1)
    loss = f.sum(-1).log() - f.gather(-1, t).squeeze(-1).log()
    loss = torch.where(keep, loss, torch.zeros_like(loss))
    if input.dtype != torch.float64:
        loss = loss.float()
    return apply_reduction(loss, reduction, keep.sum() if reduction == "mean" else None)


class TaylorSoftmax(nn.Module):
    """Module form of :func:`taylor_softmax` (kexue.fm/archives/7919).

    Shape:
        input: any shape; output: the same shape (normalized along ``dim``).

    Example::

        probs = TaylorSoftmax(order=2)(torch.randn(4, 10))  # [4, 10], each row sums to 1
    """

    def __init__(self, order: int = 2, dim: int = -1, *, monotone: bool = False) -> None:
        super().__init__()
        fn = "TaylorSoftmax"
        self.order = _check_order(order, fn)
        self.dim = check_int("dim", dim, fn=fn)
        self.monotone = check_bool("monotone", monotone, fn=fn)

    def forward(self, input: Tensor) -> Tensor:
        return taylor_softmax(input, self.order, self.dim, monotone=self.monotone)

    def extra_repr(self) -> str:
        return f"order={self.order}, dim={self.dim}, monotone={self.monotone}"


class TaylorCrossEntropy(Loss):
    """Module form of :func:`taylor_cross_entropy` (kexue.fm/archives/7919).

    Shape:
        input: ``[..., C]`` logits; target: ``[...]`` class indices.
        output: ``[...]`` for ``"none"``, a scalar otherwise.

    Example::

        loss_fn = TaylorCrossEntropy(order=2)
        logits, target = torch.randn(8, 10, requires_grad=True), torch.randint(10, (8,))
        loss_fn(logits, target).backward()
    """

    _repr_fields = ("order", "monotone")

    def __init__(
        self, order: int = 2, reduction: str = "mean", *, monotone: bool = False, ignore_index: int = -100
    ) -> None:
        super().__init__(reduction)
        fn = "TaylorCrossEntropy"
        self.order = _check_order(order, fn)
        self.monotone = check_bool("monotone", monotone, fn=fn)
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return taylor_cross_entropy(
            input, target, self.order, self.reduction, monotone=self.monotone, ignore_index=self.ignore_index
        )
