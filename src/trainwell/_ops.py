"""Small tensor operations shared across trainwell (reductions, stable log-sum-exp forms)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["apply_reduction", "float32", "log1p_sum_exp", "masked_fill_neg_inf"]


def apply_reduction(values: Tensor, reduction: str, weight_sum: Tensor | None = None) -> Tensor:
    """Reduce per-item ``values`` by ``reduction`` ('none' | 'mean' | 'sum').

    ``weight_sum`` replaces the element count as the denominator of 'mean' (e.g. the number of
    non-ignored tokens); it is clamped to at least 1 element's worth so an empty batch gives 0, not NaN.
    """
    if reduction == "none":
        return values
    if reduction == "sum":
        return values.sum()
    if weight_sum is None:
        if values.numel() == 0:
            return values.sum()
        return values.mean()
    return values.sum() / weight_sum.clamp_min(1e-12) if weight_sum.is_floating_point() else (
        values.sum() / weight_sum.clamp_min(1)
    )


def float32(x: Tensor) -> Tensor:
    """Upcast half/bfloat16 (e.g. autocast outputs) to float32; leave float32/float64 unchanged."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x


def masked_fill_neg_inf(x: Tensor, keep: Tensor) -> Tensor:
    """``x`` where ``keep`` else -inf (never a large finite constant: that overflows in half precision)."""
    return torch.where(keep, x, torch.full_like(x, float("-inf")))


def log1p_sum_exp(x: Tensor, dim: int = -1) -> Tensor:
    """``log(1 + Σ_k exp(x_k))`` along ``dim``, stable for any input, -inf entries allowed.

    The implicit zero logit guarantees a finite maximum, so a row that is entirely -inf gives exactly 0
    with zero (not NaN) gradient.
    """
    shape = list(x.shape)
    shape[dim] = 1
    zeros = x.new_zeros(shape)
    return torch.logsumexp(torch.cat([x, zeros], dim=dim), dim=dim)
