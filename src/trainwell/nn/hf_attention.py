"""Run a Hugging Face BERT/RoBERTa-style model with FAVOR+ attention, keeping all of its weights.

:func:`replace_attention` swaps only the ``softmax(QKᵀ/√d)V`` core of every self-attention module: the
query/key/value projections, the output projection, LayerNorms and FFNs stay exactly as trained. It uses
the attention-function registry of ``transformers`` 5.x: an attention implementation called
``"trainwell_favor"`` (and its mask function) is registered once, each attention module gets a
:class:`~trainwell.nn.FavorAttention` child (``trainwell_favor``, holding its ``projection`` buffer) and the
model's ``config._attn_implementation`` is pointed at it. :func:`restore_attention` undoes both.

What FAVOR+ cannot do (there is no attention matrix): masks other than key padding and plain causal
(UniLM-style ``[B, 1, T, T]`` masks raise), relative position biases, ``output_attentions``,
attention-probability dropout (ignored), and KV-cache decoding with fewer queries than keys.

Source: kexue.fm/archives/7921 (the paper reports that loaded weights do not reproduce the exact
model's outputs at practical m, but fine-tuning recovers quickly); arXiv:2009.14794.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import Tensor, nn

from trainwell._validation import check_int, check_module, fail
from trainwell.nn.performer import FavorAttention

__all__ = ["ATTN_IMPLEMENTATION", "favor_modules", "replace_attention", "restore_attention"]

#: The name registered in ``transformers.AttentionInterface`` / ``AttentionMaskInterface``.
ATTN_IMPLEMENTATION = "trainwell_favor"
_CHILD = "trainwell_favor"
_PREVIOUS = "_trainwell_favor_previous_attn"
_registered = False


def _mask_fn(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    mask_function: Any = None,
    attention_mask: Tensor | None = None,
    **kwargs: Any,
) -> Tensor | None:
    """Mask interface: hand the 2-D key padding mask (bool ``[B, kv]``) through, or None."""
    from transformers import masking_utils as mu

    allowed = (mu.causal_mask_function, mu.bidirectional_mask_function)
    if mask_function is not None and mask_function not in allowed:
        raise ValueError(
            "replace_attention(): FAVOR+ supports only key padding and plain causal masks; this forward "
            "needs a composite mask (packed sequences, sliding windows or custom mask functions)"
        )
    if attention_mask is None:
        return None
    mask = attention_mask[:, -kv_length:].to(torch.bool)
    return None if bool(mask.all()) else mask


def _from_4d(mask: Tensor, causal: bool, n_q: int) -> tuple[Tensor | None, bool]:
    """A user-given ``[B, 1|H, q, k]`` mask → (key padding ``[B, k]`` or None, causal)."""
    allowed = mask if mask.dtype == torch.bool else mask == 0
    keys = allowed.any(-2)  # a key some query may attend
    if allowed.shape[-2] == 1 or bool((allowed == allowed[..., :1, :]).all()):
        pad = allowed[..., 0, :]
    else:
        n_k = allowed.shape[-1]
        tri = torch.ones(n_q, n_k, dtype=torch.bool, device=mask.device).tril_(n_k - n_q)
        pad = keys
        if not bool((allowed == (tri & pad.unsqueeze(-2))).all()):
            raise ValueError(
                "replace_attention(): FAVOR+ has no attention matrix, so it applies only key padding and "
                "plain causal masks; got a general [B, 1, T, T] attention_mask (e.g. a UniLM or T-TA mask). "
                "Run the exact model for such masks (restore_attention)"
            )
        causal = True
    pad = pad[:, 0] if pad.dim() == 3 else pad
    return (None if bool(pad.all()) else pad), causal


def _attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """Attention interface: ``[B, H, n, d]`` q/k/v → ``[B, n, H, d]`` output (no attention weights)."""
    favor = getattr(module, _CHILD, None)
    if not isinstance(favor, FavorAttention):
        raise RuntimeError(
            f"replace_attention(): {type(module).__name__} has no FAVOR+ core; the config says "
            f"'{ATTN_IMPLEMENTATION}' but this module was not converted (call replace_attention on the model)"
        )
    causal = bool(kwargs.get("is_causal", None) or getattr(module, "is_causal", False)) or favor.causal
    pad: Tensor | None = None
    if attention_mask is not None:
        if attention_mask.dim() == 2:
            pad = attention_mask.to(torch.bool)
        elif attention_mask.dim() == 4:
            pad, causal = _from_4d(attention_mask, causal, query.shape[-2])
        else:
            fail("replace_attention", "attention_mask", "a [B, T] or [B, 1, T, T] mask", attention_mask)
    if causal and query.shape[-2] != key.shape[-2]:
        raise ValueError(
            "replace_attention(): causal FAVOR+ needs as many queries as keys (no KV-cache decoding), got "
            f"{query.shape[-2]} queries and {key.shape[-2]} keys"
        )
    d = query.shape[-1]
    if scaling is not None and abs(scaling - d**-0.5) > 1e-12 * d**-0.5:
        # favor_attention applies 1/sqrt(d); fold the module's own temperature into q and k.
        r = (scaling * d**0.5) ** 0.5
        query, key = query * r, key * r
    from trainwell.nn.performer import _favor

    favor._count_call()
    out = _favor(query, key, value, favor.projection, causal, _expand(pad, key), favor.eps,
                 favor.chunk_size, favor.feature_type, True)
    return out.transpose(1, 2).contiguous(), None


def _expand(pad: Tensor | None, key: Tensor) -> Tensor | None:
    if pad is None:
        return None
    return pad[:, None, :].expand(key.shape[:-1])


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, _attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, _mask_fn)
    _registered = True


def _is_bert_style(m: nn.Module) -> bool:
    mod = sys.modules.get(type(m).__module__)
    return (
        mod is not None
        and hasattr(mod, "ALL_ATTENTION_FUNCTIONS")
        and all(isinstance(getattr(m, a, None), nn.Linear) for a in ("query", "key", "value"))
        and isinstance(getattr(m, "attention_head_size", None), int)
    )


def favor_modules(model: nn.Module) -> dict[str, FavorAttention]:
    """The FAVOR+ cores a :func:`replace_attention` call attached, by the name of their attention module."""
    return {name: getattr(m, _CHILD) for name, m in model.named_modules()
            if isinstance(getattr(m, _CHILD, None), FavorAttention)}


def replace_attention(
    model: nn.Module,
    nb_features: int = 256,
    *,
    feature_type: str = "positive",
    orthogonal: bool = True,
    norm_sampling: str = "chi",
    redraw_interval: int | None = None,
    eps: float = 1e-6,
    chunk_size: int = 128,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Make a Hugging Face BERT/RoBERTa-style model compute its attention with FAVOR+, in place.

    Every self- (and cross-) attention module that dispatches through ``transformers``' attention registry
    and has ``query``/``key``/``value`` linears (BERT, RoBERTa, XLM-R, ELECTRA, CamemBERT, ... in
    ``transformers`` 5.x) gets its own :class:`~trainwell.nn.FavorAttention` core; the trained q/k/v/o weights
    are used unchanged. Decoder (``is_decoder=True``) layers run causal FAVOR+. Padding masks work as usual
    (padded keys get zero features); a ``[B, 1, T, T]`` mask is accepted only when it is a padding or a
    causal-plus-padding mask. Undo with :func:`restore_attention`.

    Args:
        model: a ``transformers`` ``PreTrainedModel`` (its ``config`` is switched to
            ``attn_implementation="trainwell_favor"``).
        nb_features: random features m per head (the post: several times the head width).
        feature_type, orthogonal, norm_sampling, redraw_interval, eps, chunk_size: as in
            :class:`~trainwell.nn.FavorAttention`.
        generator: draws the projections (reproducible swaps); ``None`` uses torch's global RNG.

    Returns:
        ``model`` itself.

    Raises:
        TypeError: ``model`` is not a module with a Hugging Face ``config``.
        ValueError: no supported attention module was found (the message names the model class), or the
            model was already converted.

    Source: kexue.fm/archives/7921; arXiv:2009.14794.
    """
    fn = "replace_attention"
    check_module("model", model, fn=fn)
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "_attn_implementation"):
        fail(fn, "model", "a Hugging Face transformers model (with a config)", model, exc=TypeError)
    check_int("nb_features", nb_features, fn=fn, min=1)
    if hasattr(model, _PREVIOUS):
        raise ValueError(f"{fn}(): this model already uses FAVOR+ attention; call restore_attention first")
    targets = [(name, m) for name, m in model.named_modules() if _is_bert_style(m)]
    if not targets:
        raise ValueError(
            f"{fn}(): found no BERT/RoBERTa-style attention module (query/key/value linears dispatched "
            f"through transformers' attention registry) in {type(model).__name__}; supported: BERT, RoBERTa "
            "and their relatives in transformers 5.x"
        )
    _register()
    ref = next(model.parameters(), None)
    for _, m in targets:
        d = int(getattr(m, "attention_head_size"))  # noqa: B009 - checked by _is_bert_style
        core = FavorAttention(d, nb_features, causal=bool(getattr(m, "is_causal", False)),
                              feature_type=feature_type, orthogonal=orthogonal, norm_sampling=norm_sampling,
                              redraw_interval=redraw_interval, eps=eps, chunk_size=chunk_size)
        if generator is not None:
            core.redraw_features(generator)
        if ref is not None:
            core.to(device=ref.device)
        m.add_module(_CHILD, core)
    setattr(model, _PREVIOUS, config._attn_implementation)
    config._attn_implementation = ATTN_IMPLEMENTATION
    return model


def restore_attention(model: nn.Module) -> nn.Module:
    """Undo :func:`replace_attention`: drop the FAVOR+ cores and restore the previous attention code."""
    fn = "restore_attention"
    check_module("model", model, fn=fn)
    if not hasattr(model, _PREVIOUS):
        raise ValueError(f"{fn}(): this model was not converted by replace_attention")
    for m in model.modules():
        if isinstance(getattr(m, _CHILD, None), FavorAttention):
            delattr(m, _CHILD)
    config: Any = model.config
    config._attn_implementation = getattr(model, _PREVIOUS)
    delattr(model, _PREVIOUS)
    return model
