"""Attention masks as boolean "may attend" tensors, and their conversion to what models expect.

Every mask here is ``True`` where query ``i`` may attend key ``j`` — the meaning of
:func:`torch.nn.functional.scaled_dot_product_attention`'s boolean ``attn_mask`` and of Hugging Face's
``attention_mask`` (1 = real token) — never the opposite ``key_padding_mask`` meaning of
:class:`torch.nn.MultiheadAttention`. Masks are built once here and shared by the attention parts
(T-TA, FAVOR+) and the seq2seq systems (UniLM, dialogue LM, question generation).

- :func:`unilm_mask` — UniLM seq2seq on a bidirectional encoder (kexue.fm/archives/6933, /7809;
  Dong et al., arXiv:1905.03197): ``M_ij = [c_j <= c_i] and nonpad_j`` with ``c`` the cumulative sum of
  the segment ids.
- :func:`causal_mask` — left-to-right LM: ``M_ij = [j <= i] and nonpad_j``.
- :func:`tta_mask` — T-TA's self-blind mask (kexue.fm/archives/7661; arXiv:2004.08097):
  ``M_ij = nonpad_j and i != j``.
- :func:`padding_mask` — plain bidirectional encoder: ``M_ij = nonpad_j``.
- :func:`to_hf_mask` — the forms Hugging Face encoders accept: 3-D 0/1 ``[B, T, T]`` or a 4-D additive
  ``[B, 1, T, T]`` mask in the model dtype (``0`` / ``finfo.min``, the value Hugging Face uses itself; no
  1e12 constants).
- :func:`masked_softmax` / :func:`masked_attention` — the reference attention under such a mask, where a
  query row that may attend nothing yields zeros, never NaN.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from trainwell._validation import check_choice, check_int, check_tensor, fail

__all__ = [
    "causal_mask",
    "masked_attention",
    "masked_softmax",
    "padding_mask",
    "to_hf_mask",
    "tta_mask",
    "unilm_mask",
]


def _nonpad(attention_mask: Any, *, fn: str, like: Tensor | None = None) -> Tensor | None:
    """A ``[B, T]`` bool tensor from a HF-style 0/1 (or bool) ``attention_mask``; None passes through."""
    if attention_mask is None:
        return None
    check_tensor("attention_mask", attention_mask, fn=fn, kind=("bool", "int", "float"), ndim=2)
    if like is not None and tuple(attention_mask.shape) != tuple(like.shape):
        raise ValueError(
            f"{fn}(): argument 'attention_mask' must have the shape of 'token_type_ids' "
            f"{tuple(like.shape)}, got {tuple(attention_mask.shape)}"
        )
    return attention_mask if attention_mask.dtype == torch.bool else attention_mask != 0


def _with_keys(mask: Tensor, nonpad: Tensor | None) -> Tensor:
    """``mask [.., T, T]`` and key padding ``[B, T]`` -> ``[B, T, T]``."""
    if nonpad is None:
        return mask
    return mask & nonpad[:, None, :]


def unilm_mask(token_type_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """UniLM seq2seq mask: sources attend sources, target tokens attend the source and earlier targets.

    With segment ids ``s`` (0 on ``[CLS] source [SEP]``, 1 on ``target [SEP]``) and ``c_t = Σ_{u<=t} s_u``,
    query ``i`` may attend key ``j`` iff ``c_j <= c_i`` and ``j`` is not padding. A bidirectional encoder
    under this mask reads the source bidirectionally and the target left to right, so its MLM head acts
    as a seq2seq decoder (kexue.fm/archives/6933, /7809; arXiv:1905.03197).

    Args:
        token_type_ids: ``[B, T]`` integer (or bool) segment ids, 0 for the source, 1 for the target.
        attention_mask: optional ``[B, T]`` HF-style mask, 1/True on real tokens.

    Shape:
        returns a bool ``[B, T, T]`` (query × key), True = may attend.
    """
    fn = "unilm_mask"
    check_tensor("token_type_ids", token_type_ids, fn=fn, kind=("int", "bool"), ndim=2)
    nonpad = _nonpad(attention_mask, fn=fn, like=token_type_ids)
    c = torch.cumsum(token_type_ids.long(), dim=1)
    return _with_keys(c[:, None, :] <= c[:, :, None], nonpad)


def _length_or_mask(length: int | None, attention_mask: Tensor | None, fn: str) -> tuple[int, Tensor | None]:
    nonpad = _nonpad(attention_mask, fn=fn)
    if nonpad is not None:
        if length is not None and int(length) != nonpad.shape[1]:
            fail(fn, "length", f"None or the mask's length {nonpad.shape[1]}", length)
        return nonpad.shape[1], nonpad
    if length is None:
        raise ValueError(f"{fn}(): give 'length' or 'attention_mask', got neither")
    n = check_int("length", length, fn=fn, min=0)
    assert n is not None
    return n, None


def causal_mask(
    length: int | None = None,
    attention_mask: Tensor | None = None,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """Left-to-right mask ``M_ij = [j <= i] ∧ nonpad_j``.

    Args:
        length: sequence length ``T`` (may be omitted when ``attention_mask`` is given).
        attention_mask: optional ``[B, T]`` HF-style padding mask (1/True = real token).
        device: device of the result when no ``attention_mask`` is given.

    Shape:
        ``[T, T]`` without ``attention_mask``, else ``[B, T, T]``; bool, True = may attend.
    """
    fn = "causal_mask"
    n, nonpad = _length_or_mask(length, attention_mask, fn)
    dev = nonpad.device if nonpad is not None else device
    return _with_keys(torch.ones(n, n, dtype=torch.bool, device=dev).tril_(), nonpad)


def tta_mask(
    length: int | None = None,
    attention_mask: Tensor | None = None,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """T-TA's self-blind mask ``M_ij = nonpad_j ∧ (i ≠ j)``: every token is predicted from all the others.

    Source: kexue.fm/archives/7661; Shin et al., ACL 2020 (arXiv:2004.08097).

    Shape:
        ``[T, T]`` without ``attention_mask``, else ``[B, T, T]``; bool, True = may attend.
    """
    fn = "tta_mask"
    n, nonpad = _length_or_mask(length, attention_mask, fn)
    dev = nonpad.device if nonpad is not None else device
    return _with_keys(~torch.eye(n, dtype=torch.bool, device=dev), nonpad)


def padding_mask(attention_mask: Tensor) -> Tensor:
    """Bidirectional mask ``M_ij = nonpad_j`` from a ``[B, T]`` HF-style mask; returns bool ``[B, T, T]``."""
    nonpad = _nonpad(attention_mask, fn="padding_mask")
    assert nonpad is not None
    return nonpad[:, None, :].expand(-1, nonpad.shape[1], -1)


def to_hf_mask(mask: Tensor, form: str = "4d", dtype: torch.dtype = torch.float32) -> Tensor:
    """Convert a may-attend mask to the forms Hugging Face encoders accept as ``attention_mask``.

    Args:
        mask: bool ``[B, T, T]`` (or ``[T, T]``, broadcast to batch 1), True = may attend.
        form: ``"3d"`` gives a long 0/1 ``[B, T, T]`` tensor (BERT-style models broadcast it over heads);
            ``"4d"`` gives an additive ``[B, 1, T, T]`` mask in ``dtype``: 0 where attending,
            ``torch.finfo(dtype).min`` elsewhere (Hugging Face's own convention — a finite value keeps fully
            masked rows NaN-free inside the model's softmax).
        dtype: floating dtype of the 4-D form (use the model's dtype).
    """
    fn = "to_hf_mask"
    check_tensor("mask", mask, fn=fn, kind="bool")
    if mask.dim() == 2:
        mask = mask[None]
    if mask.dim() != 3 or mask.shape[-1] != mask.shape[-2]:
        fail(fn, "mask", "a bool [B, T, T] or [T, T] tensor", mask)
    check_choice("form", form, ("3d", "4d"), fn=fn)
    if form == "3d":
        return mask.long()
    if not dtype.is_floating_point:
        fail(fn, "dtype", "a floating dtype", dtype, exc=TypeError)
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill_(~mask, torch.finfo(dtype).min)[:, None]


def masked_softmax(scores: Tensor, mask: Tensor | None, dim: int = -1) -> Tensor:
    """Softmax over ``dim`` restricted to ``mask`` (True = keep); rows with nothing kept give zeros.

    Computed in float32 at least (returned in the input dtype); masked entries get exactly 0.
    """
    fn = "masked_softmax"
    check_tensor("scores", scores, fn=fn, kind="float")
    if mask is None:
        return torch.softmax(scores.float(), dim=dim).to(scores.dtype)
    check_tensor("mask", mask, fn=fn, kind="bool")
    s = scores.float().masked_fill(~mask, float("-inf"))
    m = s.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    z = e.sum(dim=dim, keepdim=True)
    return (e / torch.where(z > 0, z, torch.ones_like(z))).to(scores.dtype)


def masked_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, scale: float | None = None
) -> Tensor:
    """Exact softmax attention ``softmax(q kᵀ·scale, masked) v`` with zero output on fully masked rows.

    The quadratic reference the attention parts are tested against.

    Args:
        q: ``[..., n, d]``; k: ``[..., m, d]``; v: ``[..., m, d_v]``.
        mask: bool, broadcastable to ``[..., n, m]``, True = may attend.
        scale: defaults to ``1/sqrt(d)``.

    Shape:
        returns ``[..., n, d_v]``.
    """
    fn = "masked_attention"
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, fn=fn, kind="float", min_ndim=2)
    if q.shape[-1] != k.shape[-1]:
        fail(fn, "k", f"a tensor whose last dim matches q's ({q.shape[-1]})", k)
    if k.shape[-2] != v.shape[-2]:
        fail(fn, "v", f"a tensor with {k.shape[-2]} rows (k's length)", v)
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * sc
    return torch.matmul(masked_softmax(scores, mask), v.float()).to(v.dtype)
