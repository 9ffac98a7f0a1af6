"""Small tensor operations shared across trainwell.

Reductions, the compute dtype of losses, stable log-sum-exp forms, switching autocast off for a block,
and replaying the random-number state (dropout masks) across the passes of a multi-pass step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from trainwell._validation import fail

__all__ = [
    "RngReplay",
    "apply_reduction",
    "autocast_enabled",
    "autocast_off",
    "compute_dtype",
    "float32",
    "log1p_sum_exp",
    "logits_of",
    "masked_fill_neg_inf",
    "to_compute_dtype",
]


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


def compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """The dtype a loss computes in: float64 if any input is float64, else float32 (half is upcast)."""
    for t in tensors:
        if t is not None and t.dtype == torch.float64:
            return torch.float64
    return torch.float32


def to_compute_dtype(x: Tensor) -> Tensor:
    """``x`` in the dtype losses compute in (:func:`compute_dtype`): float64 stays, anything else float32."""
    return x if x.dtype == torch.float64 else x.float()


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


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is active for ``device_type`` (False for device types without autocast)."""
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except (TypeError, RuntimeError):  # pragma: no cover - torch < 2.4 or no autocast for the device
        return False


def autocast_off(device_type: str) -> contextlib.AbstractContextManager[Any]:
    """A block with autocast disabled on ``device_type`` (a no-op when it is not enabled).

    Used where precision matters more than speed: similarities that feed a softmax over a whole batch,
    and finite-difference steps (``x + ξd == x`` in bf16 for ξ = 1e-6).
    """
    if autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


class RngReplay:
    """Snapshot of the CPU (and initialized CUDA) RNG so later passes can draw the same dropout masks.

    Two ways to use it: :meth:`replay` sets the generators back to the snapshot (the caller's stream
    continues from there; see :meth:`mark_resume`), and :meth:`replayed` is a block that replays the
    snapshot and restores the outer state on exit (the stream is not disturbed). ``enabled=False``
    makes every method a no-op, so callers need not branch.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._cpu: Tensor | None = None
        self._cuda: list[Tensor] | None = None
        self._resume: tuple[Tensor, list[Tensor] | None] | None = None
        if enabled:
            self._cpu = torch.get_rng_state()
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                self._cuda = torch.cuda.get_rng_state_all()

    def replay(self) -> None:
        """Set the generators to the snapshot."""
        self._set()

    def _set(self) -> None:
        if self._cpu is None:
            return
        torch.set_rng_state(self._cpu)
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)

    @contextlib.contextmanager
    def replayed(self) -> Iterator[None]:
        """Run the block from the snapshot; afterwards the generators are where they were before it."""
        if self._cpu is None:
            yield
            return
        devices = list(range(len(self._cuda))) if self._cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            self._set()
            yield

    def mark_resume(self) -> None:
        """Remember the current state: :meth:`resume` returns to it after the replayed passes.

        Needed when a step draws random numbers of its own (VAT's initial direction) between the
        snapshot and the replays; otherwise the next step would start from the same state again.
        """
        if self.enabled:
            cuda = torch.cuda.get_rng_state_all() if self._cuda is not None else None
            self._resume = (torch.get_rng_state(), cuda)

    def resume(self) -> None:
        """Return to the state saved by :meth:`mark_resume` (no-op without one)."""
        if self._resume is None:
            return
        torch.set_rng_state(self._resume[0])
        if self._resume[1] is not None:
            torch.cuda.set_rng_state_all(self._resume[1])


def logits_of(out: Any, *, fn: str) -> Tensor:
    """The logits in a model's output: the tensor itself, its ``.logits`` (Hugging Face ``ModelOutput``), or
    the first element of a tuple; anything else raises a ``TypeError`` naming ``fn``."""
    if isinstance(out, Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits  # type: ignore[no-any-return]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    expected = "a Tensor of logits, an object with .logits or a tuple whose first element is the logits"
    fail(fn, "model output", expected, out, exc=TypeError)
