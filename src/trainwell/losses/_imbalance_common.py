"""Checks shared by the class-imbalance losses (class counts, binary targets)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from trainwell._ops import to_compute_dtype
from trainwell._validation import check_probabilities, check_same_shape, check_tensor, fail

__all__ = ["as_counts", "check_binary_target"]


def as_counts(counts: Tensor | Sequence[float], fn: str) -> Tensor:
    if not isinstance(counts, Tensor):
        try:
            counts = torch.as_tensor(counts, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            fail(fn, "counts", "a 1-D tensor or sequence of class counts", counts, exc=TypeError)
    check_tensor("counts", counts, fn=fn, kind=("float", "int"), ndim=1)
    if counts.numel() == 0:
        fail(fn, "counts", "non-empty", counts)
    c = counts.detach().to(torch.float64)
    if not bool(torch.isfinite(c).all()) or bool((c < 0).any()):
        fail(fn, "counts", "finite and >= 0", counts)
    return c


def check_binary_target(target: Tensor, input: Tensor, fn: str) -> Tensor:
    check_tensor("target", target, fn=fn, kind=("float", "int", "bool"))
    check_same_shape("input", input, "target", target, fn=fn)
    check_probabilities("target", target, fn=fn)
    return target.detach().to(to_compute_dtype(input).dtype)
