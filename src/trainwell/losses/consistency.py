"""R-Drop: cross-entropy on two dropout passes plus their symmetric KL (post 8496).

Each example goes through the network twice with independent dropout masks; the loss adds the
disagreement of the two predicted distributions, which pulls the deterministic (inference) network
toward the average of its dropout sub-networks.

Normalisation used here — the paper's eq. (7.1), per example (per non-pad token)::

    L_i = CE(P¹_i, y_i) + CE(P²_i, y_i) + α · ½ [KL(P¹_i‖P²_i) + KL(P²_i‖P¹_i)]

Other published code scales differently; :func:`convert_rdrop_alpha` maps α between them.

Source: kexue.fm/archives/8496; Liang et al., "R-Drop", arXiv:2106.14448.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from trainwell._ops import apply_reduction, compute_dtype
from trainwell._validation import (
    check_callable,
    check_choice,
    check_int,
    check_labels,
    check_number,
    check_reduction,
    check_same_shape,
    check_shape_prefix,
    check_tensor,
    fail,
)
from trainwell.losses._base import Loss

__all__ = [
    "RDROP_CONVENTIONS",
    "RDropLoss",
    "convert_rdrop_alpha",
    "rdrop_forward",
    "rdrop_loss",
    "rdrop_loss_scale",
    "symmetric_kl",
]

#: Names accepted by :func:`convert_rdrop_alpha`.
#:
#: - ``"paper"``: eq. (7.1) — ``mean_i[CE¹ + CE² + α(KL¹² + KL²¹)/2]`` (official fairseq criterion;
#:   this module's :func:`rdrop_loss`).
#: - ``"keras"``: Su's Keras loss — ``mean over 2B rows of CE + (α/4)·mean_i(KL¹² + KL²¹)``, exactly
#:   ½ × (7.1) with the same α.
#: - ``"readme"``: the official README snippet with a *mean*-reduced KL —
#:   ``½ mean(CE¹ + CE²) + α·mean_i(KL¹² + KL²¹)/2``: ½ × (7.1) with α doubled.
#: - ``"readme_sum"``: the README snippet as written (KL ``.sum()`` over the batch, CE a batch mean):
#:   ½ × (7.1) with α multiplied by ``2·B`` (``B`` = examples or non-pad tokens per batch).
RDROP_CONVENTIONS = ("paper", "keras", "readme", "readme_sum")

# L_c(α_c) = κ_c · L_paper(ρ_c · α_c), with ρ for readme_sum multiplied by the batch size.
_KAPPA = {"paper": 1.0, "keras": 0.5, "readme": 0.5, "readme_sum": 0.5}
_RHO = {"paper": 1.0, "keras": 1.0, "readme": 2.0, "readme_sum": 2.0}


def _rho(convention: str, batch_size: int | None, fn: str) -> float:
    if convention != "readme_sum":
        return _RHO[convention]
    if batch_size is None:
        fail(fn, "batch_size", "an int >= 1 for the 'readme_sum' convention", batch_size)
    b = check_int("batch_size", batch_size, fn=fn, min=1)
    return _RHO[convention] * b


def convert_rdrop_alpha(
    alpha: float, source: str, target: str = "paper", *, batch_size: int | None = None
) -> float:
    """Convert the R-Drop weight α between published normalisations (see :data:`RDROP_CONVENTIONS`).

    The returned α makes the ``target`` loss proportional to the ``source`` loss (same gradient
    direction; the overall factor is :func:`rdrop_loss_scale`). ``batch_size`` (examples, or non-pad
    tokens) is needed when either side is ``'readme_sum'``.

    Example: Su's ``α = 4`` (``'keras'``) is ``α = 4`` in the paper's normalisation; the README's
    ``α = 1`` with a summed KL over a batch of 32 is ``α = 64`` in the paper's.
    """
    fn = "convert_rdrop_alpha"
    a = check_number("alpha", alpha, fn=fn, min=0.0)
    check_choice("source", source, RDROP_CONVENTIONS, fn=fn)
    check_choice("target", target, RDROP_CONVENTIONS, fn=fn)
    return a * _rho(source, batch_size, fn) / _rho(target, batch_size, fn)


def rdrop_loss_scale(convention: str) -> float:
    """Overall factor κ of a convention's loss relative to eq. (7.1) at matched α (1 or ½)."""
    check_choice("convention", convention, RDROP_CONVENTIONS, fn="rdrop_loss_scale")
    return _KAPPA[convention]


def _kl_both(lp1: Tensor, lp2: Tensor) -> Tensor:
    """``½[KL(P¹‖P²) + KL(P²‖P¹)] = ½ Σ (p¹ − p²)(log p¹ − log p²)`` per row (≥ 0; 0 iff equal)."""
    return 0.5 * ((lp1.exp() - lp2.exp()) * (lp1 - lp2)).sum(-1)


def _keep_mask(target: Tensor | None, pad_mask: Tensor | None, ignore_index: int) -> Tensor | None:
    keep = None
    if target is not None:
        keep = target != ignore_index
    if pad_mask is not None:
        keep = ~pad_mask if keep is None else keep & ~pad_mask
    return keep


def symmetric_kl(
    logits1: Tensor,
    logits2: Tensor,
    reduction: str = "mean",
    *,
    pad_mask: Tensor | None = None,
) -> Tensor:
    """Symmetric KL ``½[KL(P¹‖P²) + KL(P²‖P¹)]`` between the softmaxes of two logit tensors, per row.

    The label-free consistency term of R-Drop (semi-supervised use). Both sides keep their gradient.
    Computed in float32 from log-softmax. ``pad_mask`` (True = padding) rows give 0 and are left
    out of the mean.

    Shape:
        logits1, logits2: ``[..., C]``; pad_mask: ``[...]``.
        output: ``[...]`` for ``"none"``, a scalar otherwise.

    Source: kexue.fm/archives/8496; arXiv:2106.14448.
    """
    fn = "symmetric_kl"
    check_tensor("logits1", logits1, fn=fn, kind="float", min_ndim=1)
    check_tensor("logits2", logits2, fn=fn, kind="float", min_ndim=1)
    check_same_shape("logits1", logits1, "logits2", logits2, fn=fn)
    reduction = check_reduction(reduction, fn=fn)
    if pad_mask is not None:
        check_tensor("pad_mask", pad_mask, fn=fn, kind="bool")
        check_shape_prefix("logits1", logits1, "pad_mask", pad_mask, fn=fn)
    dt = compute_dtype(logits1)
    lp1 = torch.log_softmax(logits1.to(dt), dim=-1)
    lp2 = torch.log_softmax(logits2.to(dt), dim=-1)
    kl = _kl_both(lp1, lp2)
    if pad_mask is None:
        return apply_reduction(kl, reduction)
    keep = ~pad_mask
    kl = torch.where(keep, kl, torch.zeros_like(kl))
    return apply_reduction(kl, reduction, keep.sum() if reduction == "mean" else None)


def rdrop_loss(
    logits1: Tensor,
    logits2: Tensor,
    target: Tensor,
    alpha: float = 4.0,
    reduction: str = "mean",
    *,
    pad_mask: Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> Tensor:
    """R-Drop loss in the paper's normalisation (eq. 7.1): ``CE¹ + CE² + α·½(KL¹² + KL²¹)`` per example.

    ``logits1``/``logits2`` are two forward passes of the same batch in ``train()`` mode (independent
    dropout masks), e.g. from :func:`rdrop_forward`. Gradients flow through both distributions of
    both KL terms. α here equals Su's α (his Keras loss is exactly half of this one); the official
    README snippet's α maps by :func:`convert_rdrop_alpha`. Default α = 4 (Su's choice for BERT-base;
    the paper uses 1–5 by task). Token-level use: ``[B, L, C]`` logits with ``[B, L]`` targets; pad
    tokens (``target == ignore_index`` or ``pad_mask`` True) contribute nothing and ``'mean'`` averages
    over the remaining tokens.

    Shape:
        logits1, logits2: ``[..., C]``; target, pad_mask: ``[...]``.
        output: ``[...]`` for ``"none"``, a scalar otherwise.

    Source: kexue.fm/archives/8496; Liang et al., arXiv:2106.14448.

    Args:
        logits1: ``[..., C]`` first pass.
        logits2: ``[..., C]`` second pass (same shape).
        target: class indices ``[...]``.
        alpha: KL weight α ≥ 0.
        reduction: ``'none'`` (per example/token, 0 at pads) | ``'mean'`` | ``'sum'``.
        pad_mask: optional bool ``[...]``, True marks padding.
        ignore_index: target value marking padding.
        label_smoothing: passed to the two cross-entropies.
    """
    fn = "rdrop_loss"
    check_tensor("logits1", logits1, fn=fn, kind="float", min_ndim=1)
    check_tensor("logits2", logits2, fn=fn, kind="float", min_ndim=1)
    check_same_shape("logits1", logits1, "logits2", logits2, fn=fn)
    check_shape_prefix("logits1", logits1, "target", target, fn=fn)
    num_classes = logits1.shape[-1]
    check_labels("target", target, num_classes, fn=fn, ignore_index=ignore_index)
    a = check_number("alpha", alpha, fn=fn, min=0.0)
    ls = check_number("label_smoothing", label_smoothing, fn=fn, min=0.0, max=1.0)
    reduction = check_reduction(reduction, fn=fn)
    if pad_mask is not None:
        check_tensor("pad_mask", pad_mask, fn=fn, kind="bool")
        check_same_shape("target", target, "pad_mask", pad_mask, fn=fn)
    dt = compute_dtype(logits1)
    lp1 = torch.log_softmax(logits1.to(dt), dim=-1)
    lp2 = torch.log_softmax(logits2.to(dt), dim=-1)
    keep = _keep_mask(target, pad_mask, ignore_index)
    assert keep is not None
    t = torch.where(keep, target, torch.zeros_like(target)).long()

    def ce(lp: Tensor) -> Tensor:  # cross_entropy of log-probabilities == of the logits
        flat = F.cross_entropy(
            lp.reshape(-1, num_classes), t.reshape(-1), reduction="none", label_smoothing=ls
        )
        return flat.reshape(t.shape)

    loss = ce(lp1) + ce(lp2) + a * _kl_both(lp1, lp2)
    loss = torch.where(keep, loss, torch.zeros_like(loss))
    return apply_reduction(loss, reduction, keep.sum() if reduction == "mean" else None)


class RDropLoss(Loss):
    """Module form of :func:`rdrop_loss` (paper normalisation, eq. 7.1).

    Shape:
        logits1, logits2: ``[..., C]``; target, pad_mask: ``[...]``.
        output: ``[...]`` for ``"none"``, a scalar otherwise.

    Example::

        model, loss_fn = nn.Sequential(nn.Dropout(0.3), nn.Linear(16, 3)), RDropLoss(alpha=4.0)
        x, y = torch.randn(8, 16), torch.randint(3, (8,))
        loss = loss_fn(model(x), model(x), y)  # two passes, two dropout masks
        loss.backward()
    """

    _repr_fields = ("alpha", "label_smoothing", "ignore_index")

    def __init__(
        self,
        alpha: float = 4.0,
        reduction: str = "mean",
        *,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(reduction)
        fn = "RDropLoss"
        self.alpha = check_number("alpha", alpha, fn=fn, min=0.0)
        self.ignore_index = ignore_index
        self.label_smoothing = check_number("label_smoothing", label_smoothing, fn=fn, min=0.0, max=1.0)

    def forward(
        self, logits1: Tensor, logits2: Tensor, target: Tensor, pad_mask: Tensor | None = None
    ) -> Tensor:
        return rdrop_loss(
            logits1,
            logits2,
            target,
            self.alpha,
            self.reduction,
            pad_mask=pad_mask,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )


def rdrop_forward(model: Callable[..., Any], *inputs: Tensor, **kwargs: Any) -> tuple[Any, Any]:
    """Run ``model`` once on the batch duplicated along dim 0 (``[x; x]``) and split the output in two.

    One forward gives two independent dropout masks per example (the official fairseq criterion
    does this); the model must be in ``train()`` mode. Tensor ``inputs`` and tensor ``kwargs`` are
    duplicated (``labels=`` too, so a Hugging Face model computes its loss on the doubled batch). An
    output with a tensor ``logits`` attribute (a Hugging Face ``ModelOutput``, with or without a
    ``loss``) gives the two halves of its logits, ready for :func:`rdrop_loss`; otherwise the output
    may be a tensor or a tuple/list/dict of tensors (each is split; other entries are returned on
    both sides). BatchNorm in train mode sees every
    example twice — acceptable, but its statistics are those of the doubled batch.

    Source: kexue.fm/archives/8496; arXiv:2106.14448.
    """
    fn = "rdrop_forward"
    check_callable("model", model, fn=fn)
    if not inputs and not any(isinstance(v, Tensor) for v in kwargs.values()):
        fail(fn, "inputs", "at least one tensor", inputs)

    def dup(v: Any) -> Any:
        return torch.cat([v, v], dim=0) if isinstance(v, Tensor) else v

    out = model(*[dup(x) for x in inputs], **{k: dup(v) for k, v in kwargs.items()})
    return _split(out, fn)


def _split(out: Any, fn: str) -> tuple[Any, Any]:
    # an output with .logits first: Hugging Face ModelOutput is a dict subclass, and its scalar
    # 'loss' entry (when labels= is given) cannot be split
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor) and not isinstance(out, Tensor):
        return _split(logits, fn)
    if isinstance(out, Tensor):
        if out.shape[0] % 2:
            fail(fn, "model output", "a tensor with an even leading dim (the doubled batch)", out)
        a, b = out.chunk(2, dim=0)
        return a, b
    if isinstance(out, (tuple, list)):
        parts = [_split(o, fn) if isinstance(o, Tensor) else (o, o) for o in out]
        return type(out)(p[0] for p in parts), type(out)(p[1] for p in parts)
    if isinstance(out, dict):
        parts_d = {k: (_split(v, fn) if isinstance(v, Tensor) else (v, v)) for k, v in out.items()}
        return {k: v[0] for k, v in parts_d.items()}, {k: v[1] for k, v in parts_d.items()}
    fail(
        fn,
        "model output",
        "a tensor, a tuple/list/dict of tensors or an object with .logits",
        out,
        exc=TypeError,
    )
