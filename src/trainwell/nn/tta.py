"""T-TA: a Transformer text autoencoder that predicts every token from all the others in one pass.

Queries start from positions only, keys/values are the raw embeddings ``E + P`` re-read by every layer,
and the self-blind mask ``M_ij = nonpad_j ∧ (i ≠ j)`` removes the diagonal::

    Q_0 = LN(P + e_q)          (e_q a learned constant: the [MASK] embedding in the reference code)
    KV  = LN(E + P)            (the same for every layer)
    Q_l = Block_l(Q_{l-1}; KV, M),   logits = Q_L W_Eᵀ + b   (tied to the token embedding)

Output ``i`` then depends on ``x`` only through keys/values at ``j ≠ i``, so ``p(x_i | x \\ x_i)`` is
trained at every position at once (no ``[MASK]`` tokens, no 15% sampling). Feeding the previous layer's
output as keys/values instead (as BERT does) would leak ``x_i`` into position ``i`` from layer 2 on.

- :class:`TTAEncoder` — the model; ``forward(input_ids, attention_mask=None, labels=None)`` returns a
  :class:`TTAOutput` (``.loss``, ``.logits``, ``.hidden_states``).
- :class:`TTALayer` — one post-LN block whose queries and keys/values come from different inputs.
- :func:`tta_from_bert` — a T-TA model built from a Hugging Face BERT's embeddings and layers.

Source: kexue.fm/archives/7661; Shin et al., "Fast and Accurate Deep Bidirectional Language
Representations for Unsupervised Learning", ACL 2020 (arXiv:2004.08097).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainwell._validation import check_bool, check_int, check_module, check_number, check_tensor, fail
from trainwell.nn.masks import padding_mask, tta_mask

__all__ = ["TTAEncoder", "TTALayer", "TTAOutput", "attend", "tta_from_bert"]


@dataclass
class TTAOutput:
    """Hugging Face ``ModelOutput``-style result: attribute access, ``out["logits"]``, ``out.to_tuple()``.

    Attributes:
        loss: mean cross-entropy over the labelled positions (``None`` without ``labels``).
        logits: ``[B, T, V]``.
        hidden_states: ``[B, T, d]`` final query states ``Q_L``.
        all_hidden_states: ``(Q_0, ..., Q_L)`` when ``output_hidden_states=True``.
    """

    loss: Tensor | None = None
    logits: Tensor | None = None
    hidden_states: Tensor | None = None
    all_hidden_states: tuple[Tensor, ...] | None = None

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]

    def keys(self) -> list[str]:
        return [
            k
            for k in ("loss", "logits", "hidden_states", "all_hidden_states")
            if getattr(self, k) is not None
        ]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, k) for k in self.keys())


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, dropout: float = 0.0) -> Tensor:
    """Multi-head SDPA under a bool may-attend ``mask`` (``[B, T, T]`` or ``[T, T]``); empty rows give 0.

    ``q, k, v``: ``[B, H, T, d]``. Rows that may attend nothing (e.g. the single token of a length-1 input
    under the self-blind mask) are computed against all keys to stay NaN-free and then zeroed.
    """
    m = mask if mask.dim() == 4 else mask.unsqueeze(-3)  # broadcast over heads
    empty = ~m.any(-1, keepdim=True)  # [B, 1, T, 1]
    safe = m | empty
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe, dropout_p=dropout)
    return out.masked_fill(empty, 0.0)


class TTALayer(nn.Module):
    """Post-LN Transformer block with separate query and key/value inputs (BERT layer layout).

    ``h = LN(q + Wo·Attn(Wq q, Wk kv, Wv kv; M))``, ``out = LN(h + W2 act(W1 h))``. With ``query = kv`` and a
    padding mask it is exactly a BERT layer (same parameter names as :func:`tta_from_bert` copies).
    """

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, dropout: float = 0.1,
                 layer_norm_eps: float = 1e-12, activation: str = "gelu") -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"TTALayer(): argument 'hidden_size' ({hidden_size}) must be divisible by "
                             f"'num_heads' ({num_heads})")
        self.num_heads = num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.attn_out = nn.Linear(hidden_size, hidden_size)
        self.attn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.ffn_in = nn.Linear(hidden_size, intermediate_size)
        self.ffn_out = nn.Linear(intermediate_size, hidden_size)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout
        if activation not in ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh"):
            fail("TTALayer", "activation", "'gelu', 'gelu_new', 'gelu_pytorch_tanh' or 'relu'", activation)
        self.activation = activation

    def _act(self, x: Tensor) -> Tensor:
        if self.activation == "relu":
            return F.relu(x)
        if self.activation == "gelu":
            return F.gelu(x)
        return F.gelu(x, approximate="tanh")

    def _heads(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, query: Tensor, kv: Tensor, mask: Tensor) -> Tensor:
        b, t, d = query.shape
        a = attend(
            self._heads(self.query(query)),
            self._heads(self.key(kv)),
            self._heads(self.value(kv)),
            mask,
            self.attn_dropout if self.training else 0.0,
        )
        a = a.transpose(1, 2).reshape(b, t, d)
        h = self.attn_norm(query + self.dropout(self.attn_out(a)))
        return self.ffn_norm(h + self.dropout(self.ffn_out(self._act(self.ffn_in(h)))))


class TTAEncoder(nn.Module):
    """T-TA language autoencoder: ``logits[:, i]`` predicts token ``i`` from all the other tokens.

    Args:
        vocab_size: V. hidden_size: d. num_layers: L (the paper: 3). num_heads: H.
        intermediate_size: FFN width (default ``4·hidden_size``).
        max_position: number of position embeddings.
        pad_id: padding id (``attention_mask`` defaults to ``input_ids != pad_id``; pads get no loss).
        dropout: hidden and attention dropout.
        self_mask: remove the diagonal (``M_ij = nonpad_j ∧ i ≠ j``); ``False`` for fine-tuning uses
            (the post), which lets position ``i`` see its own token.
        shared_kv: re-read the raw ``E + P`` in every layer (T-TA). ``False`` feeds each layer's output as
            the next keys/values (BERT-style) — it leaks ``x_i`` into position ``i``; the negative control of
            the tests and the lab, never for training T-TA.

    ``forward(input_ids, attention_mask=None, token_type_ids=None, labels=None, output_hidden_states=False)``
    returns :class:`TTAOutput`; with ``labels`` (normally ``input_ids``; ``-100`` and pads ignored)
    ``loss`` is the mean cross-entropy over all labelled positions of the one pass.

    Shape:
        input_ids ``[B, T]`` → logits ``[B, T, V]``, hidden_states ``[B, T, d]``.

    Source: kexue.fm/archives/7661; arXiv:2004.08097.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int = 256,
        num_layers: int = 3,
        num_heads: int = 4,
        intermediate_size: int | None = None,
        max_position: int = 512,
        pad_id: int = 0,
        dropout: float = 0.1,
        self_mask: bool = True,
        *,
        shared_kv: bool = True,
        layer_norm_eps: float = 1e-12,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        fn = "TTAEncoder"
        v = check_int("vocab_size", vocab_size, fn=fn, min=1)
        d = check_int("hidden_size", hidden_size, fn=fn, min=1)
        nl = check_int("num_layers", num_layers, fn=fn, min=1)
        nh = check_int("num_heads", num_heads, fn=fn, min=1)
        ff = check_int("intermediate_size", intermediate_size, fn=fn, min=1, allow_none=True)
        mp = check_int("max_position", max_position, fn=fn, min=1)
        pid = check_int("pad_id", pad_id, fn=fn, min=0)
        p = check_number("dropout", dropout, fn=fn, min=0.0, max=1.0, max_inclusive=False)
        assert v is not None and d is not None and nl is not None and nh is not None and mp is not None
        assert pid is not None and p is not None
        if d % nh:
            raise ValueError(f"{fn}(): argument 'hidden_size' ({d}) must be divisible by 'num_heads' ({nh})")
        if pid >= v:
            fail(fn, "pad_id", f"< vocab_size ({v})", pad_id)
        self.vocab_size, self.hidden_size, self.pad_id, self.max_position = v, d, pid, mp
        self.self_mask = check_bool("self_mask", self_mask, fn=fn)
        self.shared_kv = check_bool("shared_kv", shared_kv, fn=fn)
        self.word_embeddings = nn.Embedding(v, d)
        self.position_embeddings = nn.Embedding(mp, d)
        self.query_embedding = nn.Parameter(torch.zeros(d))  # e_q: the constant token of the queries
        self.kv_norm = nn.LayerNorm(d, eps=layer_norm_eps)
        self.query_norm = nn.LayerNorm(d, eps=layer_norm_eps)
        self.dropout = nn.Dropout(p)
        self.layers = nn.ModuleList(
            TTALayer(d, nh, ff if ff is not None else 4 * d, p, layer_norm_eps, activation) for _ in range(nl)
        )
        self.output_bias = nn.Parameter(torch.zeros(v))
        self._init_weights()

    def _init_weights(self) -> None:
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                nn.init.normal_(mod.weight, std=0.02)
            if isinstance(mod, nn.Linear) and mod.bias is not None:
                nn.init.zeros_(mod.bias)
        nn.init.normal_(self.query_embedding, std=0.02)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.word_embeddings

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        output_hidden_states: bool = False,
        inputs_embeds: Tensor | None = None,
    ) -> TTAOutput:
        """Run T-TA; ``inputs_embeds`` (``[B, T, d]``) replaces the word-embedding lookup if given."""
        fn = "TTAEncoder.forward"
        check_tensor("input_ids", input_ids, fn=fn, kind="int", ndim=2)
        b, t = input_ids.shape
        if t > self.max_position:
            fail(fn, "input_ids", f"at most max_position={self.max_position} tokens per row", input_ids)
        if attention_mask is None:
            nonpad = input_ids != self.pad_id
        else:
            check_tensor("attention_mask", attention_mask, fn=fn, kind=("bool", "int", "float"), ndim=2)
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"{fn}(): argument 'attention_mask' must have the shape of 'input_ids' "
                                 f"{tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}")
            nonpad = attention_mask.bool()
        if inputs_embeds is None:
            e = self.word_embeddings(input_ids)
        else:
            check_tensor("inputs_embeds", inputs_embeds, fn=fn, kind="float", ndim=3)
            if inputs_embeds.shape != (b, t, self.hidden_size):
                fail(fn, "inputs_embeds", f"a [{b}, {t}, {self.hidden_size}] tensor", inputs_embeds)
            e = inputs_embeds
        pos = self.position_embeddings(torch.arange(t, device=input_ids.device))[None]
        kv = self.dropout(self.kv_norm(e + pos))
        hidden = self.dropout(self.query_norm(pos + self.query_embedding)).expand(b, t, -1)
        mask = tta_mask(attention_mask=nonpad) if self.self_mask else padding_mask(nonpad)
        states = [hidden]
        for layer in self.layers:
            hidden = layer(hidden, kv, mask)
            states.append(hidden)
            if not self.shared_kv:
                kv = hidden
        logits = F.linear(hidden, self.word_embeddings.weight, self.output_bias)
        loss = None
        if labels is not None:
            check_tensor("labels", labels, fn=fn, kind="int")
            if labels.shape != input_ids.shape:
                raise ValueError(f"{fn}(): argument 'labels' must have the shape of 'input_ids' "
                                 f"{tuple(input_ids.shape)}, got {tuple(labels.shape)}")
            target = labels.masked_fill(~nonpad, -100)
            loss = F.cross_entropy(logits.float().reshape(-1, self.vocab_size), target.reshape(-1),
                                   ignore_index=-100)
        return TTAOutput(loss=loss, logits=logits, hidden_states=hidden,
                         all_hidden_states=tuple(states) if output_hidden_states else None)


def tta_from_bert(
    bert: nn.Module,
    num_layers: int | None = None,
    *,
    mask_token_id: int | None = None,
    self_mask: bool = True,
) -> TTAEncoder:
    """Build a :class:`TTAEncoder` from a Hugging Face BERT's embeddings and its first ``num_layers`` layers.

    Copies the word/position embeddings and the embedding LayerNorm (used for both ``KV = LN(E + P + T_0)``
    and ``Q_0 = LN(P + T_0 + e_q)``; the segment-0 embedding ``T_0`` is folded into the position table), every
    layer's q/k/v/o projections, LayerNorms and FFN weights (:class:`TTALayer` with ``query = kv`` is exactly
    the BERT layer). ``e_q`` is the ``[MASK]`` embedding (``mask_token_id``; zeros if not given), as in the
    reference code. The output layer is tied to the word embeddings (BERT's MLM transform is not used).

    Args:
        bert: a ``BertModel`` or a model with a ``.bert`` attribute (``BertForMaskedLM``, ...).
        num_layers: how many of the first layers to use (default all; the paper uses 3).
        mask_token_id: id of ``[MASK]`` for the query embedding.
        self_mask: as in :class:`TTAEncoder`.
    """
    fn = "tta_from_bert"
    check_module("bert", bert, fn=fn)
    core = getattr(bert, "bert", bert)
    emb = getattr(core, "embeddings", None)
    layers = getattr(getattr(core, "encoder", None), "layer", None)
    config = getattr(core, "config", None)
    if emb is None or layers is None or config is None or not hasattr(emb, "word_embeddings"):
        fail(fn, "bert", "a Hugging Face BertModel (or a model with a .bert attribute)", bert, exc=TypeError)
    nl = check_int("num_layers", num_layers, fn=fn, min=1, max=len(layers), allow_none=True)
    n = len(layers) if nl is None else nl
    act = getattr(config, "hidden_act", "gelu")
    if not isinstance(act, str) or act not in ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh"):
        fail(fn, "bert", "a BERT whose hidden_act is gelu, gelu_new or relu", act)
    vocab, d = emb.word_embeddings.weight.shape
    model = TTAEncoder(
        vocab, d, n, config.num_attention_heads, config.intermediate_size,
        emb.position_embeddings.weight.shape[0], pad_id=int(getattr(config, "pad_token_id", 0) or 0),
        dropout=float(config.hidden_dropout_prob), self_mask=self_mask,
        layer_norm_eps=float(config.layer_norm_eps), activation=act,
    )
    with torch.no_grad():
        model.word_embeddings.weight.copy_(emb.word_embeddings.weight)
        pos = emb.position_embeddings.weight
        if hasattr(emb, "token_type_embeddings"):
            pos = pos + emb.token_type_embeddings.weight[0]
        model.position_embeddings.weight.copy_(pos)
        for norm in (model.kv_norm, model.query_norm):
            norm.load_state_dict(emb.LayerNorm.state_dict())
        if mask_token_id is not None:
            mid = check_int("mask_token_id", mask_token_id, fn=fn, min=0, max=vocab - 1)
            model.query_embedding.copy_(emb.word_embeddings.weight[mid])
        else:
            model.query_embedding.zero_()
        model.output_bias.zero_()
        for ours, theirs in zip(model.layers, list(layers)[:n]):
            att = theirs.attention
            pairs: list[tuple[Any, Any]] = [
                (ours.query, att.self.query), (ours.key, att.self.key), (ours.value, att.self.value),
                (ours.attn_out, att.output.dense), (ours.attn_norm, att.output.LayerNorm),
                (ours.ffn_in, theirs.intermediate.dense), (ours.ffn_out, theirs.output.dense),
                (ours.ffn_norm, theirs.output.LayerNorm),
            ]
            for dst, src in pairs:
                dst.load_state_dict(src.state_dict())
    return model
