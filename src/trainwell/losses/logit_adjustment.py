"""Logit adjustment: cross-entropy on ``f(x) + τ·log p(y)`` and its post-hoc form (post 7615).

Source: kexue.fm/archives/7615 (mutual-information view); Menon et al., arXiv:2007.07314.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from trainwell._ops import apply_reduction, to_compute_dtype
from trainwell._validation import (
    check_labels,
    check_number,
    check_probabilities,
    check_reduction,
    check_same_shape,
    check_shape_prefix,
    check_tensor,
    fail,
)
from trainwell.losses._base import Loss
from trainwell.losses._imbalance_common import as_counts as _as_counts

__all__ = [
    "LogitAdjustedCrossEntropy",
    "log_prior_from_counts",
    "logit_adjusted_cross_entropy",
    "posthoc_logit_adjust",
]


def log_prior_from_counts(counts: Tensor | Sequence[float]) -> Tensor:
    """Log class prior ``log(n_y / Σ n)`` from training-label counts, counts clamped to ≥ 1.

    Clamping keeps never-seen classes finite (they get the prior of a single sample); the clamped
    counts are normalised, so the priors sum to 1. Any additive constant would not matter to
    :func:`logit_adjusted_cross_entropy` (softmax is shift-invariant).

    Returns:
        float32 tensor ``[K]`` on the device of ``counts`` (CPU for a sequence).

    Shape:
        counts: ``[C]``; output: ``[C]``.
    """
    c = _as_counts(counts, "log_prior_from_counts").clamp_min(1.0)
    return (c.log() - c.sum().log()).float()


def _check_log_prior(log_prior: Tensor, num_classes: int, fn: str) -> None:
    check_tensor("log_prior", log_prior, fn=fn, kind="float", ndim=1)
    if log_prior.shape[0] != num_classes:
        fail(fn, "log_prior", f"a 1-D tensor of {num_classes} entries (one per class)", log_prior)


def logit_adjusted_cross_entropy(
    input: Tensor,
    target: Tensor,
    log_prior: Tensor,
    tau: float = 1.0,
    reduction: str = "mean",
    *,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
) -> Tensor:
    """Logit-adjusted cross-entropy: ``CE(f(x) + τ·log p(y), y)`` (the network fits log p(y|x)/p(y)).

    ``L = −log softmax(f + τ log p)_y = log[1 + Σ_{i≠y} (p_i/p_y)^τ e^{f_i − f_y}]``: rare classes get
    larger margins. At test time use ``argmax f`` for balanced (per-class) accuracy, or ``argmax f + τ log p``
    for accuracy on the training distribution. Equals plain CE for ``τ = 0`` or a uniform prior.

    Shape:
        input: ``[..., C]``; target: ``[...]`` indices or ``[..., C]`` probabilities; log_prior: ``[C]``.
        output: ``[...]`` for ``"none"``, a scalar otherwise.

    Source: kexue.fm/archives/7615; Menon et al., arXiv:2007.07314.

    Args:
        input: logits ``[..., K]``; the prior is added in float32 (float64 stays).
        target: class indices ``[...]`` (int) or class probabilities ``[..., K]`` (float).
        log_prior: ``[K]`` log class prior, e.g. :func:`log_prior_from_counts`.
        tau: temperature τ ≥ 0 (default 1, the post's and the paper's choice).
        reduction: ``'none' | 'mean' | 'sum'``; ``'mean'`` averages over non-ignored targets
            (like :func:`torch.nn.functional.cross_entropy`).
        label_smoothing: passed to :func:`torch.nn.functional.cross_entropy`.
        ignore_index: target value to skip (index targets only).
    """
    fn = "logit_adjusted_cross_entropy"
    check_tensor("input", input, fn=fn, kind="float", min_ndim=1)
    num_classes = input.shape[-1]
    _check_log_prior(log_prior, num_classes, fn)
    t = check_number("tau", tau, fn=fn, min=0.0)
    reduction = check_reduction(reduction, fn=fn)
    ls = check_number("label_smoothing", label_smoothing, fn=fn, min=0.0, max=1.0)
    z = to_compute_dtype(input) + t * log_prior.to(device=input.device, dtype=to_compute_dtype(input).dtype)
    return _cross_entropy(z, target, reduction, ls, ignore_index, fn)


def _cross_entropy(
    z: Tensor, target: Tensor, reduction: str, label_smoothing: float, ignore_index: int, fn: str
) -> Tensor:
    """``F.cross_entropy`` over ``[..., K]`` logits with index or probability targets."""
    num_classes = z.shape[-1]
    lead = z.shape[:-1]
    if target.is_floating_point():
        check_same_shape("input", z, "target", target, fn=fn)
        check_probabilities("target", target, fn=fn)
        out = F.cross_entropy(
            z.reshape(-1, num_classes),
            target.reshape(-1, num_classes).to(z.dtype),
            reduction="none",
            label_smoothing=label_smoothing,
        )
        return apply_reduction(out.reshape(lead), reduction)
    check_shape_prefix("input", z, "target", target, fn=fn)
    check_labels("target", target, num_classes, fn=fn, ignore_index=ignore_index)
    out = F.cross_entropy(
        z.reshape(-1, num_classes),
        target.reshape(-1).long(),
        reduction="none",
        label_smoothing=label_smoothing,
        ignore_index=ignore_index,
    ).reshape(lead)
    # 'mean' over non-ignored targets as F.cross_entropy does, but an empty batch gives 0, not NaN
    return apply_reduction(out, reduction, (target != ignore_index).sum() if reduction == "mean" else None)


def posthoc_logit_adjust(logits: Tensor, log_prior: Tensor, tau: float = 1.0) -> Tensor:
    """Post-hoc logit adjustment of a plain-CE model: ``logits − τ·log p`` (argmax → balanced accuracy).

    Shape:
        logits: ``[..., C]``; log_prior: ``[C]``; output: ``[..., C]``.

    Source: kexue.fm/archives/7615; Menon et al., arXiv:2007.07314. Returns float32 (float64 stays).
    """
    fn = "posthoc_logit_adjust"
    check_tensor("logits", logits, fn=fn, kind="float", min_ndim=1)
    _check_log_prior(log_prior, logits.shape[-1], fn)
    t = check_number("tau", tau, fn=fn, min=0.0)
    z = to_compute_dtype(logits)
    return z - t * log_prior.to(device=z.device, dtype=z.dtype)


class LogitAdjustedCrossEntropy(Loss):
    """Module form of :func:`logit_adjusted_cross_entropy` holding ``log_prior`` as a buffer.

    The buffer moves with ``.to()`` and is saved in the ``state_dict``; ``tau`` is a plain attribute
    read at call time. :meth:`adjust` applies the post-hoc rule with the same prior. The post's
    "initialise the last bias to τ log p" shortcut is only equivalent when that offset is a fixed
    buffer like this one (a trainable bias merely starts there).

    Shape:
        input: ``[..., C]``; target: ``[...]`` indices or ``[..., C]`` probabilities; log_prior: ``[C]``.
        output: ``[...]`` for ``"none"``, a scalar otherwise; :meth:`adjust`: the shape of its input.

    Example::

        counts = torch.tensor([900.0, 90.0, 10.0])
        loss_fn = LogitAdjustedCrossEntropy((counts / counts.sum()).log(), tau=1.0)
        loss = loss_fn(torch.randn(8, 3), torch.randint(3, (8,)))  # train with this
        pred = loss_fn.adjust(torch.randn(8, 3)).argmax(-1)  # or adjust a plain-CE model's logits

    Source: kexue.fm/archives/7615; arXiv:2007.07314.
    """

    _repr_fields = ("num_classes", "tau")

    log_prior: Tensor

    def __init__(
        self,
        log_prior: Tensor,
        tau: float = 1.0,
        reduction: str = "mean",
        *,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
    ) -> None:
        super().__init__(reduction)
        fn = "LogitAdjustedCrossEntropy"
        check_tensor("log_prior", log_prior, fn=fn, kind="float", ndim=1)
        self.register_buffer("log_prior", log_prior.detach().clone())  # dtype kept: float64 stays
        self.tau = check_number("tau", tau, fn=fn, min=0.0)
        self.label_smoothing = check_number("label_smoothing", label_smoothing, fn=fn, min=0.0, max=1.0)
        self.ignore_index = ignore_index

    @classmethod
    def from_counts(
        cls, counts: Tensor | Sequence[float], tau: float = 1.0, **kwargs: object
    ) -> LogitAdjustedCrossEntropy:
        """Build from training-label counts (see :func:`log_prior_from_counts`)."""
        return cls(log_prior_from_counts(counts), tau, **kwargs)  # type: ignore[arg-type]

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return logit_adjusted_cross_entropy(
            input,
            target,
            self.log_prior,
            self.tau,
            self.reduction,
            label_smoothing=self.label_smoothing,
            ignore_index=self.ignore_index,
        )

    @property
    def num_classes(self) -> int:
        return self.log_prior.numel()

    def adjust(self, logits: Tensor) -> Tensor:
        """Post-hoc adjusted logits ``logits − τ·log p`` (for a model trained with plain CE)."""
        return posthoc_logit_adjust(logits, self.log_prior, self.tau)
