"""Multi-label "softmax + cross-entropy" (ZLPR) with its soft-label, sparse and rank forms.

Source posts: kexue.fm/archives/7359 (the loss), kexue.fm/archives/9064 (soft labels),
kexue.fm/archives/8888 (sparse version, GPLinker). Paper: ZLPR, arXiv:2208.02955.

With positives ``P`` and negatives ``N`` of a row of scores ``s``::

    L = log(1 + Σ_{i∈N} exp(s_i)) + log(1 + Σ_{j∈P} exp(-s_j))

It is softmax cross-entropy with an extra class of fixed score 0 that must sit between the positives and
the negatives, so the decision threshold is 0 and no class weights are needed when ``|P| ≪ C``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from trainwell._ops import apply_reduction, log1p_sum_exp, to_compute_dtype
from trainwell._validation import (
    check_broadcastable,
    check_finite_number,
    check_int,
    check_labels,
    check_leading_dims,
    check_number,
    check_reduction,
    check_same_shape,
    check_tensor,
    fail,
    tracing,
)
from trainwell.losses._base import Loss

__all__ = [
    "MultilabelCategoricalCrossEntropy",
    "MultilabelRankLoss",
    "SparseMultilabelCategoricalCrossEntropy",
    "multilabel_categorical_crossentropy",
    "multilabel_rank_loss",
    "sparse_multilabel_categorical_crossentropy",
    "zlpr_probabilities",
]

# CPU fast path of the dense kernels (first try without max-shifts); tests switch it off to exercise
# the shifted kernels on ordinary inputs.
_OPTIMISTIC = True

# Rows per chunk in the sparse loss: bounds its temporary buffer to about this many scores.
_SPARSE_CHUNK_ELEMENTS = 1 << 22


# ------------------------------------------------------------------------------------- dense kernels
#
# Both kernels compute, per row, the two "log(1 + Σ w·exp(±s))" terms with a handful of whole-tensor
# passes, most of them in place, and keep the weighted exponentials for a single elementwise backward:
#     ∂L/∂s = -e_pos / S_pos + e_neg / S_neg.
# shift=False (CPU first try): no shifting; the hard kernel then needs one exp for both groups (exp(-s)
# on positives, exp(s) on negatives), the soft one an exp and a reciprocal. An overflow shows up as a
# non-finite row loss, on which the caller re-runs with shift=True.
# shift=True: each group gets its own shift m = max(0, group max) — clamped at 0 for the implicit zero
# logit — so the shifted sums are ≥ 1 and never underflow to log(0); exact at any magnitude.
# When the caller asks for a differentiable gradient (create_graph=True, e.g. an input-gradient
# penalty on top of this loss), backward recomputes the same quantities with ordinary autograd ops.


def _grad_differentiable(s: Tensor, wp: Tensor, wn: Tensor | None, m: Tensor | None, g: Tensor) -> Tensor:
    """The kernels' gradient from ordinary autograd ops (used for create_graph=True)."""
    wp = wp.to(s.dtype)
    wn_ = 1 - wp if wn is None else wn
    if m is None:
        # Unshifted forward: derive the per-group shifts here (the clamp_max(0) below must only ever
        # touch zero-weight entries, which needs m ≥ every in-group exponent).
        zero = s.new_zeros(())
        with torch.no_grad():
            m_pos = torch.where(wp > 0, -s, zero).amax(-1, keepdim=True).clamp_min(0)
            m_neg = torch.where(wn_ > 0, s, zero).amax(-1, keepdim=True).clamp_min(0)
    else:
        m_pos, m_neg = m[0], m[1]
    ep = wp * torch.exp((-s - m_pos).clamp_max(0))
    en = wn_ * torch.exp((s - m_neg).clamp_max(0))
    s_pos = ep.sum(-1, keepdim=True) + torch.exp(-m_pos)
    s_neg = en.sum(-1, keepdim=True) + torch.exp(-m_neg)
    return g * (en / s_neg - ep / s_pos)


def _finish(ctx: Any, s: Tensor, wp: Tensor, wn: Tensor | None, buf: Tensor, m: Tensor | None) -> Tensor:
    """Row losses from ``buf = [e_pos; e_neg]`` ([2, rows, C], shifted by ``m`` [2, rows, 1] if given)."""
    sums = buf.sum(-1, keepdim=True)  # both groups in one reduction
    if m is None:
        loss = sums.add_(1.0).log().sum(0)
    else:
        loss = sums.add_(torch.exp(-m)).log().add_(m).sum(0)
    ctx.save_for_backward(s, wp, wn, buf, m, sums)
    return loss.squeeze(-1)


def _backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
    s, wp, wn, buf, m, sums = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None, None, None, None
    g = grad.unsqueeze(-1)
    if torch.is_grad_enabled():
        return _grad_differentiable(s, wp, wn, m, g), None, None, None
    coef = g / sums  # [2, rows, 1]: ∂L/∂s = -e_pos/S_pos + e_neg/S_neg
    return torch.mul(buf[0], coef[0].neg()).addcmul_(buf[1], coef[1]), None, None, None


class _ZLPRHard(torch.autograd.Function):
    """ZLPR rows for 0/1 weights: ``wp`` marks positives, ``wn`` negatives (None means ``1 - wp``).

    Masked entries must have ``s = 0`` and ``wp = wn = 0``. One [2, rows, C] buffer holds the
    positives' and the negatives' weighted exponentials; every step after its first write is in place.
    ``wp`` may be a uint8 view of a bool target (converted inside, into the buffer when possible).
    """

    @staticmethod
    def forward(ctx: Any, s: Tensor, wp: Tensor, wn: Tensor | None, shift: bool) -> Tensor:
        buf = s.new_empty((2, *s.shape))
        ep, en = buf[0], buf[1]
        m: Tensor | None = None
        if not shift and wn is None and wp.dtype != s.dtype:
            # bool target: convert straight into the positives' half of the buffer, no extra tensor
            ep.copy_(wp)
            torch.addcmul(s, s, ep, value=-2, out=en).exp_()
            ep.mul_(en)
            en.sub_(ep)
            return _finish(ctx, s, wp, wn, buf, m)
        wp_saved, wp = wp, wp.to(s.dtype)
        if not shift:
            # u = -s on positives, s elsewhere (exact for 0/1 weights); one exp serves both groups.
            torch.addcmul(s, s, wp, value=-2, out=en).exp_()
            torch.mul(en, wp, out=ep)
            if wn is None:
                en.sub_(ep)
            else:
                en.mul_(wn)
        else:
            # en = s on negatives, ep = -s on positives, 0 elsewhere (exact products for 0/1 weights)
            if wn is None:
                torch.addcmul(s, s, wp, value=-1, out=en)
            else:
                torch.mul(s, wn, out=en)
            torch.sub(en, s, out=ep)
            m = buf.amax(-1, keepdim=True).clamp_min_(0)
            # Off-group entries become exp(-m) ≤ 1 before the weights zero them (no overflow, no 0·inf).
            buf.sub_(m).exp_()
            ep.mul_(wp)
            if wn is None:
                en.addcmul_(en, wp, value=-1)
            else:
                en.mul_(wn)
        return _finish(ctx, s, wp_saved, wn, buf, m)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        return _backward(ctx, grad)


class _ZLPRSoft(torch.autograd.Function):
    """ZLPR rows for soft weights ``wp = t``, ``wn = 1 - t`` (None means ``1 - wp``), masks folded in."""

    @staticmethod
    def forward(ctx: Any, s: Tensor, wp: Tensor, wn: Tensor | None, shift: bool) -> Tensor:
        buf = s.new_empty((2, *s.shape))
        ep, en = buf[0], buf[1]
        m: Tensor | None = None
        if not shift:
            torch.exp(s, out=en)
            # 1/e^s instead of a second exp: e^s is a normal float here (else the caller's finiteness
            # check fails and the shifted kernel runs), so the reciprocal is accurate to an ulp or two.
            torch.reciprocal(en, out=ep).mul_(wp)
            if wn is None:
                en.addcmul_(en, wp, value=-1)
            else:
                en.mul_(wn)
        else:
            wn_ = 1 - wp if wn is None else wn
            # Shift each group by its max over entries with non-zero weight, so a tiny weight on a
            # huge score cannot be drowned by the shift of a zero-weight entry.
            torch.ceil(wp, out=ep).mul_(s).neg_()
            torch.ceil(wn_, out=en).mul_(s)
            m = buf.amax(-1, keepdim=True).clamp_min_(0)
            torch.neg(s, out=ep)
            en.copy_(s)
            # clamp_max(0) only changes zero-weight entries (which could overflow and give 0·inf).
            buf.sub_(m).clamp_max_(0).exp_()
            ep.mul_(wp)
            en.mul_(wn_)
        return _finish(ctx, s, wp, wn, buf, m)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        return _backward(ctx, grad)


def _is_hard(target: Tensor) -> bool:
    """True when a floating target holds only 0 and 1 (checked on the host; never while tracing)."""
    if tracing():
        return False
    return bool(torch.equal(target, target.round()))


def _float_target_kind(target: Tensor, fn: str) -> bool:
    """Validate a floating target in [0, 1] and return whether it is hard (only 0 and 1).

    One pass and one host sync: ``t(1 - t)`` is 0 exactly for 0/1, > 0 inside (0, 1) (no underflow
    for float32/64 without flush-to-zero), < 0 outside [0, 1], and NaN propagates.
    """
    if target.numel() == 0:
        return True
    lo, hi = torch.aminmax(torch.addcmul(target, target, target, value=-1))
    lo_f, hi_f = float(lo), float(hi)
    if not lo_f >= 0.0 or hi_f != hi_f:
        fail(fn, "target", "values in [0, 1]", target)
    return hi_f == 0.0


def _check_unit_range(target: Tensor, fn: str) -> None:
    """Floating target values in [0, 1]: one fused min/max pass and one host sync (skipped when tracing)."""
    if tracing() or target.numel() == 0:
        return
    lo, hi = torch.aminmax(target)
    lo_f, hi_f = float(lo), float(hi)
    if not (lo_f >= 0.0 and hi_f <= 1.0):
        fail(fn, "target", "values in [0, 1]", lo_f if not lo_f >= 0.0 else hi_f)


def _check_dense_args(fn: str, input: Tensor, target: Tensor, mask: Tensor | None, reduction: str) -> str:
    """Shared checks of the dense multi-label losses: scores, same-shape target, bool mask, reduction."""
    check_tensor("input", input, fn=fn, kind="float", min_ndim=1)
    check_tensor("target", target, fn=fn, kind=("float", "int", "bool"))
    check_same_shape("input", input, "target", target, fn=fn)
    check_tensor("mask", mask, fn=fn, kind="bool", allow_none=True)
    if mask is not None:
        check_broadcastable("input", input, "mask", mask, fn=fn)
    return check_reduction(reduction, fn=fn)


def multilabel_categorical_crossentropy(
    input: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    reduction: str = "mean",
    *,
    threshold: float = 0.0,
    soft: bool | None = None,
) -> Tensor:
    """Multi-label softmax cross-entropy (ZLPR): one softmax-like loss per row, threshold fixed at 0.

    For scores ``s`` with positives ``P`` and negatives ``N``::

        L = log(1 + Σ_{i∈N} e^{s_i}) + log(1 + Σ_{j∈P} e^{-s_j})

    and, for soft targets ``t ∈ [0, 1]`` (label smoothing, mixup, distillation; post 9064)::

        L = log(1 + Σ_i t_i e^{-s_i}) + log(1 + Σ_i (1 - t_i) e^{s_i})

    which equals the hard form when ``t ∈ {0, 1}``. Predict class ``i`` when ``s_i > threshold``; the
    calibrated probability of a trained model is ``σ(2(s - threshold))`` (see :func:`zlpr_probabilities`),
    not ``σ(s)``. Empty ``P`` or ``N`` and fully masked rows are fine (a fully masked row gives 0).

    Shape:
        input: ``[..., C]``; target: ``[..., C]`` (0/1, bool or soft); mask: broadcastable to input.
        output: ``[...]`` for ``"none"``, a scalar otherwise.

    Source: kexue.fm/archives/7359, kexue.fm/archives/9064; paper arXiv:2208.02955.

    Args:
        input: scores ``[..., C]`` (no sigmoid); computed in float32 (float64 stays float64).
        target: same shape as ``input``: bool / integer 0-1 (hard), or floating in [0, 1] (soft).
        mask: optional bool tensor broadcastable to ``input``; ``False`` excludes the class from the row.
            Masked scores may hold anything (±inf, NaN): they reach neither the loss nor the gradient.
        reduction: ``'none'`` (one value per row, shape ``input.shape[:-1]``), ``'mean'`` or ``'sum'``.
        threshold: the score of the extra class (``s_0``); the loss is that of ``s - threshold``.
        soft: ``None`` (default): bool/int targets use the hard formula, floating targets the soft
            one (identical values for 0/1 up to rounding); ``True`` forces the soft formula;
            ``False`` forces the hard one and requires 0/1 targets (an extra check).

    Returns:
        float32 (float64 for float64 input) loss, reduced per ``reduction``.

    Note:
        Implementation: a custom autograd function makes a few whole-tensor passes and one
        elementwise backward. On CPU it first runs without max-shifts and re-runs with per-group
        shifts only when a row overflows (|scores| ≳ 80 in float32); on other devices and under
        ``torch.compile`` it always shifts (no host sync). Unmasked scores may be ``-inf`` for
        negatives (the class then contributes nothing), at the cost of a re-run; prefer ``mask``.
    """
    fn = "multilabel_categorical_crossentropy"
    reduction = _check_dense_args(fn, input, target, mask, reduction)
    thr = check_finite_number("threshold", threshold, fn=fn)
    if soft is not None and not isinstance(soft, bool):
        fail(fn, "soft", "a bool or None", soft, exc=TypeError)

    s = to_compute_dtype(input)
    if thr != 0.0:
        s = s - thr
    if target.dtype == torch.bool:
        hard = not soft
    elif not target.is_floating_point():
        _check_binary(target, fn)
        hard = not soft
    elif soft is False:
        if not tracing() and not _float_target_kind(target, fn):
            fail(fn, "target", "0/1 valued when soft=False", target)
        hard = True
    else:
        _check_unit_range(target, fn)
        hard = False
    # bool targets stay bytes (a uint8 view) for the hard kernel without mask, which converts them into
    # its own buffer; elsewhere bytes -> float (cheaper on CPU than bool -> float).
    t = target.detach().view(torch.uint8) if target.dtype == torch.bool else target.detach()
    if not (hard and mask is None and t.dtype == torch.uint8):
        t = t.to(s.dtype)

    lead = s.shape[:-1]
    num_classes = s.shape[-1]
    if num_classes == 0:
        return apply_reduction(s.new_zeros(lead), reduction)
    s2 = s.reshape(-1, num_classes)
    t2 = t.reshape(-1, num_classes)
    if mask is None:
        wp, wn = t2, None
    else:
        keep = mask.expand(s.shape).reshape(-1, num_classes)
        s2 = s2.masked_fill(~keep, 0.0)
        k = keep.to(s.dtype)
        wp = t2 * k
        wn = k - wp
    kernel = _ZLPRHard if hard else _ZLPRSoft
    if tracing() or s2.device.type != "cpu" or not _OPTIMISTIC:
        # No data-dependent checks: the shifted kernel on finite-clamped scores is exact everywhere.
        out = kernel.apply(_finite(s2), wp, wn, True)
    else:
        # Optimistic: without max-shifts the kernels need fewer passes, and any overflow shows up as a
        # non-finite row (one host sync on a [rows] tensor); then the shifted kernel runs.
        out = kernel.apply(s2, wp, wn, False)
        if not bool(torch.isfinite(out).all()):
            out = kernel.apply(s2, wp, wn, True)
            # ±inf scores (e.g. negatives pre-masked with -inf) turn the 0/1 products into NaN: clamp
            # them to the finite range, which gives the limit values.
            if bool(torch.isnan(out).any()):
                out = kernel.apply(_finite(s2), wp, wn, True)
    return apply_reduction(out.reshape(lead), reduction)


def _finite(s: Tensor) -> Tensor:
    info = torch.finfo(s.dtype)
    return s.clamp(info.min, info.max)


def _check_binary(target: Tensor, fn: str) -> None:
    if tracing() or target.numel() == 0:
        return
    lo, hi = int(target.min()), int(target.max())
    if lo < 0 or hi > 1:
        fail(fn, "target", "0/1 valued (multi-hot)", lo if lo < 0 else hi)


def zlpr_probabilities(input: Tensor, threshold: float = 0.0) -> Tensor:
    """Calibrated per-class probabilities of a ZLPR-trained model: ``σ(2(s - threshold))``.

    The soft ZLPR loss is minimised at ``s* = ½ logit(t)`` (post 9064), so ``σ(2s)``, not ``σ(s)``,
    recovers the target probability; ``s > threshold`` ⇔ probability > 0.5.

    Shape:
        input: ``[..., C]``; output: ``[..., C]``.
    """
    fn = "zlpr_probabilities"
    check_tensor("input", input, fn=fn, kind="float")
    thr = check_finite_number("threshold", threshold, fn=fn)
    return torch.sigmoid(2.0 * (to_compute_dtype(input) - thr))


class MultilabelCategoricalCrossEntropy(Loss):
    """Module form of :func:`multilabel_categorical_crossentropy` (ZLPR, kexue.fm/archives/7359).

    Hyperparameters are plain attributes read at call time.

    Shape:
        input: ``[..., C]`` scores; target: ``[..., C]`` (0/1, bool or soft); mask: broadcastable to input.
        output: ``[...]`` for ``"none"``, a scalar otherwise.

    Example::

        loss_fn = MultilabelCategoricalCrossEntropy()
        logits, target = torch.randn(8, 20, requires_grad=True), torch.rand(8, 20) < 0.1
        loss_fn(logits, target).backward()
        pred = logits.detach() > 0  # the labels: scores above the threshold 0
    """

    _repr_fields = ("threshold", "soft")

    def __init__(self, reduction: str = "mean", *, threshold: float = 0.0, soft: bool | None = None) -> None:
        super().__init__(reduction)
        fn = "MultilabelCategoricalCrossEntropy"
        self.threshold = check_finite_number("threshold", threshold, fn=fn)
        if soft is not None and not isinstance(soft, bool):
            fail(fn, "soft", "a bool or None", soft, exc=TypeError)
        self.soft = soft

    def forward(self, input: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return multilabel_categorical_crossentropy(
            input, target, mask, self.reduction, threshold=self.threshold, soft=self.soft
        )


# ---------------------------------------------------------------------------------------- rank form


def _masked_lse(x: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """``log Σ_{keep} e^x`` per row and whether the row has any kept entry; NaN-free gradients.

    Rows with nothing kept get a finite placeholder (0) that the caller must discard with ``where``;
    the placeholder keeps the backward of the discarded branch finite.
    """
    any_kept = keep.any(-1)
    safe = torch.where(keep, x, torch.full_like(x, float("-inf")))
    safe = torch.where(any_kept.unsqueeze(-1), safe, torch.zeros_like(x))
    return torch.logsumexp(safe, dim=-1), any_kept


def multilabel_rank_loss(
    input: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    reduction: str = "mean",
    *,
    gamma: float = 1.0,
    margin: float = 0.0,
) -> Tensor:
    """Pairwise rank form of multi-label softmax CE (Circle-loss eq. 1; no threshold class).

    ``L = log(1 + Σ_{i∈N} Σ_{j∈P} exp(γ(s_i − s_j + m))) = softplus(γm + lse_N(γs) + lse_P(−γs))``.
    Every positive must outscore every negative; use it when the number of labels per row is fixed
    (predict top-k). With a single positive, ``γ=1, m=0`` it is exactly softmax cross-entropy. Rows with
    no positives or no negatives give 0.

    Shape:
        input: ``[..., C]``; target: ``[..., C]``; mask: broadcastable to input.
        output: ``[...]`` for ``"none"``, a scalar otherwise.

    Source: kexue.fm/archives/7359; Circle Loss arXiv:2002.10857.

    Args:
        input: scores ``[..., C]``.
        target: hard 0/1 targets, same shape (bool, integer or floating 0/1).
        mask: optional bool, broadcastable; ``False`` excludes a class.
        reduction: ``'none' | 'mean' | 'sum'`` over the leading dims.
        gamma: scale γ > 0 (default 1).
        margin: margin m (default 0).
    """
    fn = "multilabel_rank_loss"
    reduction = _check_dense_args(fn, input, target, mask, reduction)
    g = check_number("gamma", gamma, fn=fn, min=0.0, min_inclusive=False)
    m = check_finite_number("margin", margin, fn=fn)
    if target.dtype != torch.bool:
        if target.is_floating_point() and not tracing() and not _is_hard(target):
            fail(fn, "target", "0/1 valued", target)
        if not target.is_floating_point():
            _check_binary(target, fn)
    s = to_compute_dtype(input)
    pos = target.detach() != 0
    keep = torch.ones_like(pos) if mask is None else mask.expand(s.shape)
    if s.shape[-1] == 0:
        return apply_reduction(s.new_zeros(s.shape[:-1]), reduction)
    lse_neg, has_neg = _masked_lse(g * s, keep & ~pos)
    lse_pos, has_pos = _masked_lse(-g * s, keep & pos)
    both = has_neg & has_pos
    z = torch.where(both, lse_neg + lse_pos + g * m, torch.zeros_like(lse_neg))
    out = torch.where(both, torch.nn.functional.softplus(z), torch.zeros_like(z))
    return apply_reduction(out, reduction)


class MultilabelRankLoss(Loss):
    """Module form of :func:`multilabel_rank_loss` (kexue.fm/archives/7359).

    Shape:
        input: ``[..., C]`` scores; target: ``[..., C]`` hard 0/1; mask: broadcastable to input.
        output: ``[...]`` for ``"none"``, a scalar otherwise.

    Example::

        loss_fn = MultilabelRankLoss(gamma=1.0, margin=0.0)
        logits, target = torch.randn(8, 20, requires_grad=True), torch.rand(8, 20) < 0.1
        loss_fn(logits, target).backward()
    """

    _repr_fields = ("gamma", "margin")

    def __init__(self, reduction: str = "mean", *, gamma: float = 1.0, margin: float = 0.0) -> None:
        super().__init__(reduction)
        fn = "MultilabelRankLoss"
        self.gamma = check_number("gamma", gamma, fn=fn, min=0.0, min_inclusive=False)
        self.margin = check_finite_number("margin", margin, fn=fn)

    def forward(self, input: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return multilabel_rank_loss(
            input, target, mask, self.reduction, gamma=self.gamma, margin=self.margin
        )


# ------------------------------------------------------------------------------------------- sparse


def _positive_slots(pos_index: Tensor, num_classes: int, pad_index: int) -> tuple[Tensor, Tensor, Tensor]:
    """Sorted, de-duplicated positive indices ``[R, P]``, their validity and a per-row "has any" flag.

    Invalid slots (padding, repeats) are pointed at one of the row's real positives (or at class 0
    when the row has none) so that scatters through them never touch a negative class.
    """
    valid = pos_index != pad_index
    key = torch.where(valid, pos_index, torch.full_like(pos_index, num_classes))
    key = key.sort(dim=-1).values
    valid = key < num_classes
    if key.shape[-1] > 1:
        repeat = key[:, 1:] == key[:, :-1]
        valid = torch.cat([valid[:, :1], valid[:, 1:] & ~repeat], dim=-1)
    has_pos = valid.any(-1, keepdim=True)
    first = key[:, :1].clamp_max(num_classes - 1)  # sorted: a real positive whenever the row has one
    idx = torch.where(valid, key, first.expand_as(key))
    idx = torch.where(has_pos, idx, torch.zeros_like(idx))
    return idx, valid, has_pos


class _SparseZLPR(torch.autograd.Function):
    """ZLPR rows from (sorted, de-duplicated) positive slots; extra memory ``O(rows·P)`` + one chunk.

    The positives' term ``log(1 + Σ_P e^{-s})`` is gathered. The negatives' term is not computed by
    the post's ``a + log(1 − e^{b−a})`` identity: its sum is taken directly on a row-chunk copy of the
    scores with the positives set to -inf, which is exact when every class is positive (gives 0) and
    free of the cancellation the identity suffers when one positive dominates the row. Backward
    allocates only the input gradient.
    """

    @staticmethod
    def forward(ctx: Any, s: Tensor, idx: Tensor, valid: Tensor, has_pos: Tensor) -> Tensor:
        rows, num_classes = s.shape
        neg_inf = torch.tensor(float("-inf"), dtype=s.dtype, device=s.device)
        sp = s.gather(-1, idx)
        pos_term = log1p_sum_exp(torch.where(valid, -sp, neg_inf))
        neg_term = s.new_empty(rows)
        step = max(1, _SPARSE_CHUNK_ELEMENTS // num_classes)
        for lo in range(0, rows, step):
            hi = min(rows, lo + step)
            buf = s[lo:hi].clone()
            i = idx[lo:hi]
            # Rows without positives write back their own value at class 0 (a no-op).
            val = torch.where(has_pos[lo:hi], neg_inf, buf.gather(-1, i[:, :1])).expand_as(i)
            buf.scatter_(-1, i, val)
            m = buf.amax(-1, keepdim=True).clamp_min_(0)
            total = buf.sub_(m).exp_().sum(-1, keepdim=True).add_(torch.exp(-m))
            neg_term[lo:hi] = (m + total.log()).squeeze(-1)
        ctx.save_for_backward(s, idx, valid, has_pos, sp, pos_term, neg_term)
        return pos_term + neg_term

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        s, idx, valid, has_pos, sp, pos_term, neg_term = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        g = grad.unsqueeze(-1)
        if torch.is_grad_enabled():  # create_graph=True: the same gradient from differentiable ops
            keep = torch.ones_like(s, dtype=torch.bool).scatter_(-1, idx, ~has_pos.expand_as(idx))
            neg_lse = log1p_sum_exp(torch.where(keep, s, torch.full_like(s, float("-inf"))))
            gs = torch.where(keep, torch.exp(s - neg_lse.unsqueeze(-1)), torch.zeros_like(s))
            spg = s.gather(-1, idx)
            pos_lse = log1p_sum_exp(torch.where(valid, -spg, torch.full_like(spg, float("-inf"))))
            pg = torch.where(valid, -torch.exp(-spg - pos_lse.unsqueeze(-1)), torch.zeros_like(spg))
            return (gs.scatter_add(-1, idx, pg) * g), None, None, None
        gs = (s - neg_term.unsqueeze(-1)).exp_().mul_(g)
        # Positive slots: the negatives' term does not depend on them, only the positives' term does.
        pg = torch.exp(-sp - pos_term.unsqueeze(-1)).mul_(g).neg_()
        pg = torch.where(valid, pg, pg[:, :1])  # invalid slots point at slot 0's class: same value
        pg = torch.where(has_pos, pg, gs.gather(-1, idx[:, :1]))  # no positives: rewrite class 0 as is
        gs.scatter_(-1, idx, pg)
        return gs, None, None, None


def sparse_multilabel_categorical_crossentropy(
    input: Tensor,
    pos_index: Tensor,
    pad_index: int = -1,
    reduction: str = "mean",
) -> Tensor:
    """ZLPR from positive class indices instead of a multi-hot target (GPLinker's sparse version).

    Same value as :func:`multilabel_categorical_crossentropy` with the multi-hot target built from
    ``pos_index``, without materialising that ``[..., C]`` target: extra memory is ``O(rows · P)``
    plus one bounded chunk of scores. ``log(1 + Σ_P e^{-s})`` is gathered; the negatives' term is
    computed directly with the positives excluded (exact, also when every class is positive, which
    gives 0), rather than through ``a + log1mexp(b − a)`` (which loses all float32 precision when
    a positive score dominates the row).

    Positive sets have set semantics: duplicate indices in a row are counted once (the post's code
    counts them twice). Pad slots equal ``pad_index`` (default -1; bert4keras' ``mask_zero`` convention
    corresponds to ``pad_index=0``). Scores of classes to exclude entirely may be set to ``-inf``.
    GlobalPointer scores ``[B, heads, L, L]``: flatten to ``[B, heads, L*L]`` (span ``(i, j)`` is
    class ``i*L + j``).

    Shape:
        input: ``[..., C]``; pos_index: ``[..., P]``.
        output: ``[...]`` for ``"none"``, a scalar otherwise.

    Source: kexue.fm/archives/8888; ZLPR arXiv:2208.02955.

    Args:
        input: scores ``[..., C]``.
        pos_index: integer ``[..., P]`` (same leading dims), class indices in ``[0, C)`` or ``pad_index``.
        pad_index: the padding value of ``pos_index``.
        reduction: ``'none' | 'mean' | 'sum'`` over the leading dims.
    """
    fn = "sparse_multilabel_categorical_crossentropy"
    check_tensor("input", input, fn=fn, kind="float", min_ndim=1)
    check_tensor("pos_index", pos_index, fn=fn, kind="int", min_ndim=1)
    pad = check_int("pad_index", pad_index, fn=fn)
    reduction = check_reduction(reduction, fn=fn)
    check_leading_dims("input", input, "pos_index", pos_index, 1, fn=fn)
    num_classes = input.shape[-1]
    check_labels("pos_index", pos_index, num_classes, fn=fn, ignore_index=pad)
    s = to_compute_dtype(input)
    lead = s.shape[:-1]
    if num_classes == 0:
        return apply_reduction(s.new_zeros(lead), reduction)
    s2 = s.reshape(-1, num_classes)
    p2 = pos_index.reshape(s2.shape[0], pos_index.shape[-1])  # not -1: ambiguous for an empty batch
    if p2.shape[-1] == 0:
        p2 = torch.full((s2.shape[0], 1), pad, dtype=pos_index.dtype, device=pos_index.device)
    idx, valid, has_pos = _positive_slots(p2, num_classes, pad)
    out = _SparseZLPR.apply(s2, idx, valid, has_pos)
    return apply_reduction(out.reshape(lead), reduction)


class SparseMultilabelCategoricalCrossEntropy(Loss):
    """Module form of :func:`sparse_multilabel_categorical_crossentropy` (kexue.fm/archives/8888).

    Shape:
        input: ``[..., C]`` scores; pos_index: ``[..., P]`` positive class indices, padded with
        ``pad_index``.
        output: ``[...]`` for ``"none"``, a scalar otherwise.

    Example::

        loss_fn = SparseMultilabelCategoricalCrossEntropy(pad_index=-1)
        logits = torch.randn(2, 1000, requires_grad=True)
        pos_index = torch.tensor([[3, 17, -1], [5, -1, -1]])  # the positives of each row, padded
        loss_fn(logits, pos_index).backward()
    """

    _repr_fields = ("pad_index",)

    def __init__(self, pad_index: int = -1, reduction: str = "mean") -> None:
        super().__init__(reduction)
        fn = "SparseMultilabelCategoricalCrossEntropy"
        self.pad_index = check_int("pad_index", pad_index, fn=fn)

    def forward(self, input: Tensor, pos_index: Tensor) -> Tensor:
        return sparse_multilabel_categorical_crossentropy(input, pos_index, self.pad_index, self.reduction)

