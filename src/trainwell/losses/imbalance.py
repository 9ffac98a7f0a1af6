"""Class-imbalance losses: logit adjustment, focal loss, hard/softened truncation, reweighting, Dice/F1-CE.

Sources: kexue.fm/archives/7615 (logit adjustment, mutual-information view; paper arXiv:2007.07314),
kexue.fm/archives/7708 (reweighting vs modified losses; smooth F1 → F1-weighted CE),
kexue.fm/archives/4733 (hard truncation → its softening → focal loss; paper arXiv:1708.02002),
Cui et al., "Class-Balanced Loss Based on Effective Number of Samples", arXiv:1901.05555.

The common thread of post 7708: each of these is a reweighting of the samples or classes — applied
outside the log (class weights, focal, F1-CE) or inside it, on the logits (logit adjustment).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from trainwell._ops import apply_reduction, to_compute_dtype
from trainwell._validation import (
    check_int,
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

__all__ = [
    "BinaryFocalLoss",
    "ClassBalancedCrossEntropy",
    "DiceLoss",
    "F1WeightedCrossEntropy",
    "FocalLoss",
    "HardTruncatedLoss",
    "LogitAdjustedCrossEntropy",
    "SoftenedTruncatedLoss",
    "binary_focal_loss",
    "class_balanced_cross_entropy",
    "class_balanced_weights",
    "dice_loss",
    "f1_weighted_cross_entropy",
    "focal_loss",
    "hard_truncated_loss",
    "log_prior_from_counts",
    "logit_adjusted_cross_entropy",
    "posthoc_logit_adjust",
    "softened_truncated_loss",
]


def _as_counts(counts: Tensor | Sequence[float], fn: str) -> Tensor:
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


# ------------------------------------------------------------------------------- logit adjustment


def log_prior_from_counts(counts: Tensor | Sequence[float]) -> Tensor:
    """Log class prior ``log(n_y / Σ n)`` from training-label counts, counts clamped to ≥ 1.

    Clamping keeps never-seen classes finite (they get the prior of a single sample); the clamped
    counts are normalised, so the priors sum to 1. Any additive constant would not matter to
    :func:`logit_adjusted_cross_entropy` (softmax is shift-invariant).

    Returns:
        float32 tensor ``[K]`` on the device of ``counts`` (CPU for a sequence).
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
    def from_counts(cls, counts: Tensor | Sequence[float], tau: float = 1.0, **kwargs: object) -> LogitAdjustedCrossEntropy:
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


# ------------------------------------------------------------------------------------------ focal


def _check_gamma(gamma: object, fn: str) -> float:
    g = check_number("gamma", gamma, fn=fn, min=0.0)
    return g


def _check_binary_target(target: Tensor, input: Tensor, fn: str) -> Tensor:
    check_tensor("target", target, fn=fn, kind=("float", "int", "bool"))
    check_same_shape("input", input, "target", target, fn=fn)
    check_probabilities("target", target, fn=fn)
    return target.detach().to(to_compute_dtype(input).dtype)


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
    """Module form of :func:`focal_loss`; a ``[C]`` tensor ``alpha`` is kept as a buffer."""

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
    """Module form of :func:`binary_focal_loss`."""

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
    """Module form of :func:`hard_truncated_loss`."""

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
    """Module form of :func:`softened_truncated_loss`."""

    _repr_fields = ("k",)

    def __init__(self, k: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        fn = "SoftenedTruncatedLoss"
        self.k = check_number("k", k, fn=fn, min=0.0, min_inclusive=False)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return softened_truncated_loss(input, target, self.k, self.reduction)


# ------------------------------------------------------------------------------ class reweighting


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
    """Module form of :func:`class_balanced_cross_entropy` with the weights as a buffer (their dtype kept)."""

    _repr_fields = ("num_classes", "ignore_index", "label_smoothing")

    weight: Tensor

    def __init__(
        self, weight: Tensor, reduction: str = "mean", *, ignore_index: int = -100, label_smoothing: float = 0.0
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
            input, target, self.weight, self.reduction,
            ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
        )


# --------------------------------------------------------------------------------- smooth F1 / Dice


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
    safe = torch.where(den > 0, den, torch.ones_like(den))
    f1 = torch.where(den > 0, (2.0 * inter + e) / safe, torch.ones_like(den))
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
        f = torch.where(total > 0, 2.0 * inter / torch.where(total > 0, total, torch.ones_like(total)),
                        torch.zeros_like(total))
    loss = y * (1.0 - f / 2) * F.softplus(-x) + (1.0 - y) * (f / 2) * F.softplus(x)
    return apply_reduction(loss, reduction)


class DiceLoss(Loss):
    """Module form of :func:`dice_loss`."""

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
    """Module form of :func:`f1_weighted_cross_entropy`."""

    _repr_fields = ("dim",)

    def __init__(self, reduction: str = "mean", *, dim: int | tuple[int, ...] | None = None) -> None:
        super().__init__(reduction)
        fn = "F1WeightedCrossEntropy"
        self.dim = _check_dim(dim, fn)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return f1_weighted_cross_entropy(input, target, self.reduction, dim=self.dim)

