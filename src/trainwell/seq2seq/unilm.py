"""UniLM seq2seq on a bidirectional encoder ("BERT + UniLM"): mask, shifted segment-masked loss, decoding.

Input ``[CLS] source [SEP] target [SEP]`` with segment ids 0 on ``[CLS] source [SEP]`` and 1 on
``target [SEP]``. Under the UniLM mask (:func:`trainwell.nn.masks.unilm_mask`: query ``i`` may attend key
``j`` iff ``c_j <= c_i`` with ``c`` the cumulative segment sum) the encoder reads the source both ways and the
target left to right, so its MLM head becomes a seq2seq decoder. The loss is next-token cross-entropy with
weights ``w_t = s_{t+1} · nonpad_{t+1}``: every target token is trained, including the first (predicted
from the ``[SEP]`` closing the source) and the final ``[SEP]`` (the stop signal).

Source: kexue.fm/archives/6933 and /7809; Dong et al., "Unified Language Model Pre-training"
(arXiv:1905.03197).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainwell._validation import check_int, check_module, check_tensor, fail
from trainwell.nn.masks import to_hf_mask, unilm_mask
from trainwell.seq2seq.decoding import LogitsProcessor, generate

__all__ = [
    "LMOutput", "Seq2SeqCollator", "UniLMCachedStep", "UniLMSeq2Seq", "shifted_lm_loss", "unilm_labels",
]

IGNORE = -100


@dataclass
class LMOutput:
    """What the seq2seq and dialogue models return (Hugging Face ``ModelOutput`` style).

    Attributes:
        loss: mean next-token cross-entropy over the labelled positions (``None`` without labels).
        logits: ``[B, T, V]``; position ``t`` predicts token ``t + 1``.
        hidden_states: the wrapped model's hidden states when asked for (last = final hidden state).
    """

    loss: Tensor | None
    logits: Tensor
    hidden_states: tuple[Tensor, ...] | None = None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def shifted_lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Next-token cross-entropy: ``logits[:, t]`` predicts ``labels[:, t + 1]``; ``-100`` is ignored.

    ``labels`` are aligned with the inputs (Hugging Face convention: the shift happens here). Computed in
    float32; ``Σ_t w_t CE_t / Σ_t w_t`` with ``w_t = [labels_{t+1} != -100]`` (0 when nothing is labelled).

    Shape:
        logits ``[B, T, V]``, labels ``[B, T]`` -> scalar.
    """
    fn = "shifted_lm_loss"
    check_tensor("logits", logits, fn=fn, kind="float", ndim=3)
    check_tensor("labels", labels, fn=fn, kind="int", ndim=2)
    if tuple(labels.shape) != tuple(logits.shape[:2]):
        fail(fn, "labels", f"shape {tuple(logits.shape[:2])} (the leading dims of 'logits')", labels)
    lg = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    tg = labels[:, 1:].reshape(-1)
    n = (tg != IGNORE).sum()
    total = F.cross_entropy(lg, tg, ignore_index=IGNORE, reduction="sum")
    return total / n.clamp(min=1)


def unilm_labels(input_ids: Tensor, token_type_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Labels for the shifted segment-masked loss: ``input_ids`` on target tokens (segment 1, not padding).

    Position ``t`` is labelled iff ``s_t = 1`` and ``nonpad_t``, so the weight of the prediction made at
    ``t - 1`` is ``w_{t-1} = s_t · nonpad_t`` (§0.1). Other positions hold ``-100``.

    Shape:
        all ``[B, T]``; returns long ``[B, T]``.
    """
    fn = "unilm_labels"
    check_tensor("input_ids", input_ids, fn=fn, kind="int", ndim=2)
    check_tensor("token_type_ids", token_type_ids, fn=fn, kind=("int", "bool"), ndim=2)
    if token_type_ids.shape != input_ids.shape:
        fail(fn, "token_type_ids", f"shape {tuple(input_ids.shape)}", token_type_ids)
    keep = token_type_ids.long() == 1
    if attention_mask is not None:
        check_tensor("attention_mask", attention_mask, fn=fn, kind=("int", "bool", "float"), ndim=2)
        keep = keep & (attention_mask != 0)
    return torch.where(keep, input_ids.long(), torch.full_like(input_ids.long(), IGNORE))


# ----------------------------------------------------------------------------------------- tokenizers

_CJK = r"\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f"
_SPACE_BETWEEN_CJK = re.compile(
    rf"(?<=[{_CJK}])\s+(?=[{_CJK}])|(?<=[{_CJK}])\s+(?=\S)|(?<=\S)\s+(?=[{_CJK}])"
)


def special_ids(tokenizer: Any, fn: str) -> tuple[int, int, int]:
    """(cls, sep, pad) ids of a BERT-style tokenizer, with a clear error when one is missing."""
    out = []
    for name in ("cls_token_id", "sep_token_id", "pad_token_id"):
        v = getattr(tokenizer, name, None)
        if not isinstance(v, int):
            fail(fn, "tokenizer", f"a BERT-style tokenizer with an integer {name}", tokenizer, exc=TypeError)
        out.append(v)
    return out[0], out[1], out[2]


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return [int(i) for i in ids]


def decode_text(tokenizer: Any, ids: Sequence[int]) -> str:
    """Text of ``ids`` (special tokens dropped); no spaces are left between CJK characters."""
    text = tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=True)
    return _SPACE_BETWEEN_CJK.sub("", str(text)).strip()


# -------------------------------------------------------------------------------------------- collator


class Seq2SeqCollator:
    """Batches ``(source, target)`` pairs as ``[CLS] source [SEP] target [SEP]`` for :class:`UniLMSeq2Seq`.

    Args:
        tokenizer: a BERT-style tokenizer (``cls/sep/pad_token_id``, ``encode``).
        max_source_len: source tokens kept at most (the start is kept).
        max_target_len: target tokens kept at most.

    Returns (``__call__``):
        dict of ``[B, T]`` long tensors ``input_ids``, ``token_type_ids`` (0 source, 1 target),
        ``attention_mask`` and ``labels`` (target tokens and the final ``[SEP]``; ``-100`` elsewhere).
        Items may be ``(source, target)`` tuples or mappings with ``"source"`` and ``"target"`` keys; texts
        or lists of token ids.
    """

    def __init__(self, tokenizer: Any, max_source_len: int = 192, max_target_len: int = 64) -> None:
        fn = "Seq2SeqCollator"
        self.cls_id, self.sep_id, self.pad_id = special_ids(tokenizer, fn)
        self.tokenizer = tokenizer
        self.max_source_len = int(check_int("max_source_len", max_source_len, fn=fn, min=0) or 0)
        self.max_target_len = int(check_int("max_target_len", max_target_len, fn=fn, min=0) or 0)

    def _ids(self, x: Any) -> list[int]:
        if isinstance(x, str):
            return encode_text(self.tokenizer, x)
        if isinstance(x, Tensor):
            return [int(i) for i in x.tolist()]
        if isinstance(x, (list, tuple)):
            return [int(i) for i in x]
        fail("Seq2SeqCollator", "item", "texts or token-id lists", x, exc=TypeError)

    def encode(self, source: Any, target: Any | None = None) -> tuple[list[int], list[int]]:
        """``(ids, segments)`` of one example (``target=None``: the prompt ``[CLS] source [SEP]`` only)."""
        src = [self.cls_id, *self._ids(source)[: self.max_source_len], self.sep_id]
        if target is None:
            return src, [0] * len(src)
        tgt = [*self._ids(target)[: self.max_target_len], self.sep_id]
        return src + tgt, [0] * len(src) + [1] * len(tgt)

    def __call__(self, items: Sequence[Any]) -> dict[str, Tensor]:
        rows = []
        for it in items:
            if isinstance(it, Mapping):
                src, tgt = it["source"], it["target"]
            else:
                src, tgt = it
            rows.append(self.encode(src, tgt))
        return pad_rows(rows, self.pad_id, labels="segment")


def pad_rows(
    rows: Sequence[tuple[list[int], list[int]]], pad_id: int, labels: str | Sequence[list[int]] = "segment"
) -> dict[str, Tensor]:
    """Right-pad ``(ids, segments)`` rows into a batch; labels from segment 1 or given per row."""
    t = max(len(r[0]) for r in rows)
    b = len(rows)
    ids = torch.full((b, t), pad_id, dtype=torch.long)
    types = torch.zeros((b, t), dtype=torch.long)
    mask = torch.zeros((b, t), dtype=torch.long)
    lab = torch.full((b, t), IGNORE, dtype=torch.long)
    for i, (r, s) in enumerate(rows):
        n = len(r)
        ids[i, :n] = torch.tensor(r, dtype=torch.long)
        types[i, :n] = torch.tensor(s, dtype=torch.long)
        mask[i, :n] = 1
        if not isinstance(labels, str):
            lab[i, :n] = torch.tensor(labels[i], dtype=torch.long)
    if isinstance(labels, str):
        lab = unilm_labels(ids, types, mask)
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": lab}


# --------------------------------------------------------------------------------------------- model


def is_hf_model(model: nn.Module) -> bool:
    return hasattr(model, "config") and hasattr(model, "get_input_embeddings")


class UniLMSeq2Seq(nn.Module):
    """Turns a bidirectional encoder with an LM head (``BertForMaskedLM`` & co.) into a seq2seq model.

    ``forward`` builds the UniLM mask from ``token_type_ids`` (and ``attention_mask``) and hands it to the
    encoder: Hugging Face models get the additive 4-D form ``[B, 1, T, T]`` in their dtype; other modules get
    the bool ``[B, T, T]`` may-attend mask as ``attention_mask``. With ``labels`` (aligned with the inputs,
    ``-100`` = ignored; :func:`unilm_labels` gives the §0.1 weights) the output carries the shifted loss.

    Args:
        model: the encoder with its LM head; must accept ``input_ids`` (or ``inputs_embeds``),
            ``attention_mask`` and ``token_type_ids`` and return ``.logits [B, T, V]`` (or the tensor).
        tokenizer: optional BERT-style tokenizer, needed to generate from texts.

    Source: kexue.fm/archives/6933, /7809; arXiv:1905.03197.
    """

    def __init__(self, model: nn.Module, tokenizer: Any = None) -> None:
        super().__init__()
        check_module("model", model, fn="UniLMSeq2Seq")
        self.model = model
        self.tokenizer = tokenizer
        self.hf = is_hf_model(model)

    def get_input_embeddings(self) -> nn.Module:
        """The wrapped encoder's token embedding."""
        get = getattr(self.model, "get_input_embeddings", None)
        if get is None:
            raise TypeError(
                "UniLMSeq2Seq.get_input_embeddings(): the wrapped model has no get_input_embeddings()"
            )
        emb = get()
        assert isinstance(emb, nn.Module)
        return emb

    def attention_mask(
        self, token_type_ids: Tensor, attention_mask: Tensor | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """The mask passed to the encoder (4-D additive for Hugging Face models, bool 3-D otherwise)."""
        m = unilm_mask(token_type_ids, attention_mask)
        return to_hf_mask(m, "4d", dtype) if self.hf else m

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        *,
        inputs_embeds: Tensor | None = None,
        position_ids: Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> LMOutput:
        """Logits (and the shifted segment-masked loss when ``labels`` are given) under the UniLM mask.

        Shape:
            ``input_ids``/``attention_mask``/``token_type_ids``/``labels`` ``[B, T]``; ``inputs_embeds``
            ``[B, T, d]``; ``logits`` ``[B, T, V]``.
        """
        fn = "UniLMSeq2Seq.forward"
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(f"{fn}(): give exactly one of 'input_ids' and 'inputs_embeds'")
        if input_ids is not None:
            check_tensor("input_ids", input_ids, fn=fn, kind="int", ndim=2)
        if token_type_ids is None:
            raise ValueError(f"{fn}(): argument 'token_type_ids' is required (0 = source, 1 = target)")
        check_tensor("token_type_ids", token_type_ids, fn=fn, kind=("int", "bool"), ndim=2)
        shape = tuple(input_ids.shape) if input_ids is not None else tuple(inputs_embeds.shape[:2])  # type: ignore[union-attr]
        if tuple(token_type_ids.shape) != shape:
            fail(fn, "token_type_ids", f"shape {shape}", token_type_ids)
        ref = inputs_embeds if inputs_embeds is not None else next(self.model.parameters(), None)
        dtype = ref.dtype if ref is not None and ref.dtype.is_floating_point else torch.float32
        mask = self.attention_mask(token_type_ids, attention_mask, dtype)
        kw: dict[str, Any] = {"attention_mask": mask, "token_type_ids": token_type_ids.long()}
        if input_ids is not None:
            kw["input_ids"] = input_ids
        else:
            kw["inputs_embeds"] = inputs_embeds
        if position_ids is not None:
            kw["position_ids"] = position_ids
        if output_hidden_states:
            kw["output_hidden_states"] = True
        out = self.model(**kw)
        logits = out.logits if hasattr(out, "logits") else out
        hidden = getattr(out, "hidden_states", None) if output_hidden_states else None
        loss = None
        if labels is not None:
            check_tensor("labels", labels, fn=fn, kind="int", ndim=2)
            loss = shifted_lm_loss(logits, labels)
        return LMOutput(loss=loss, logits=logits, hidden_states=hidden)

    def loss(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The shifted segment-masked loss of a :class:`Seq2SeqCollator` batch (labels from segments if
        absent)."""
        labels = batch.get("labels")
        if labels is None:
            labels = unilm_labels(batch["input_ids"], batch["token_type_ids"], batch.get("attention_mask"))
        out = self(batch["input_ids"], batch.get("attention_mask"), batch["token_type_ids"], labels)
        assert out.loss is not None
        return out.loss

    # ------------------------------------------------------------------------------------- decoding

    def next_token_fn(
        self,
        prompts: Sequence[Sequence[int]],
        segments: Sequence[Sequence[int]],
        pad_id: int,
        new_segment: int = 1,
        use_cache: bool = True,
    ) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        """Left-padded prompt batch and the ``ids -> next logits`` function :func:`generate` decodes with.

        New tokens get segment ``new_segment``; positions count from each row's first real token. For a
        Hugging Face encoder whose attention takes a key/value cache (BERT, RoBERTa, ...) and
        ``use_cache=True``, the function keeps one (see :class:`UniLMCachedStep`): each step then feeds
        only the newest token. Otherwise every step recomputes the whole sequence.
        """
        dev = next(self.model.parameters()).device
        b, t0 = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((b, t0), pad_id, dtype=torch.long, device=dev)
        types = torch.zeros((b, t0), dtype=torch.long, device=dev)
        mask = torch.zeros((b, t0), dtype=torch.long, device=dev)
        for i, (p, s) in enumerate(zip(prompts, segments)):
            ids[i, t0 - len(p) :] = torch.tensor(list(p), dtype=torch.long)
            types[i, t0 - len(p) :] = torch.tensor(list(s), dtype=torch.long)
            mask[i, t0 - len(p) :] = 1
        hf = self.hf
        if hf and use_cache:
            return ids, UniLMCachedStep(self, mask, types, new_segment)

        def step(x: Tensor) -> Tensor:
            am, tt = _grow_prompt(mask, types, x, new_segment)
            pos = (am.cumsum(-1) - 1).clamp(min=0) if hf else None
            return self(x, am, tt, position_ids=pos).logits[:, -1]

        return ids, step

    @torch.no_grad()
    def generate_ids(
        self,
        prompts: Sequence[Sequence[int]],
        segments: Sequence[Sequence[int]] | None = None,
        *,
        eos_token_id: int,
        pad_token_id: int,
        max_new_tokens: int = 64,
        **generate_kwargs: Any,
    ) -> list[list[int]]:
        """Decode targets for prompts given as token ids (segment 0 unless ``segments`` say otherwise).

        Returns the new tokens of each row up to (not including) the first ``eos_token_id``.
        """
        if segments is None:
            segments = [[0] * len(p) for p in prompts]
        use_cache = bool(generate_kwargs.pop("use_cache", True))
        was_training = self.training
        self.eval()
        try:
            ids, step = self.next_token_fn(prompts, segments, pad_token_id, use_cache=use_cache)
            out = generate(
                step,
                ids,
                max_new_tokens=max_new_tokens,
                eos_token_id=eos_token_id,
                pad_token_id=pad_token_id,
                **generate_kwargs,
            )
        finally:
            self.train(was_training)
        t0 = ids.shape[1]
        res = []
        for row in out[:, t0:].tolist():
            res.append(row[: row.index(eos_token_id)] if eos_token_id in row else row)
        return res

    def generate(
        self,
        source_texts_or_ids: Sequence[str] | Sequence[Sequence[int]] | str,
        *,
        max_new_tokens: int = 64,
        num_beams: int = 1,
        do_sample: bool = False,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float = 1.0,
        length_penalty: float = 1.0,
        logits_processor: LogitsProcessor | None = None,
        generator: torch.Generator | None = None,
        max_source_len: int = 192,
    ) -> list[str] | list[list[int]]:
        """Generate the target of each source (stops at ``[SEP]``; new tokens get segment 1).

        Texts (needs ``tokenizer``) are encoded as ``[CLS] source [SEP]`` and the decoded targets are
        returned as texts; token-id sequences are taken as the whole prompt and new token ids are returned.
        Decoding runs through :func:`generate`; a Hugging Face encoder decodes with a key/value cache (exact
        under the UniLM mask, see :class:`UniLMCachedStep`), any other encoder recomputes the full sequence
        every step (as the author did).
        """
        fn = "UniLMSeq2Seq.generate"
        single = isinstance(source_texts_or_ids, str)
        items = [source_texts_or_ids] if single else list(source_texts_or_ids)
        if not items:
            fail(fn, "source_texts_or_ids", "a non-empty sequence", source_texts_or_ids)
        texts = isinstance(items[0], str)
        if texts or self.tokenizer is not None:
            if self.tokenizer is None:
                fail(
                    fn,
                    "source_texts_or_ids",
                    "token ids when the model has no tokenizer",
                    items[0],
                    exc=TypeError,
                )
            cls_id, sep_id, pad_id = special_ids(self.tokenizer, fn)
        else:
            raise TypeError(
                f"{fn}(): decoding token ids needs a tokenizer for the [SEP]/[PAD] ids; "
                "use generate_ids(..., eos_token_id=, pad_token_id=) instead"
            )
        if texts:
            prompts = [[cls_id, *encode_text(self.tokenizer, str(s))[:max_source_len], sep_id] for s in items]
        else:
            prompts = [[int(i) for i in (s.tolist() if isinstance(s, Tensor) else s)] for s in items]  # type: ignore[union-attr,call-overload]
        new = self.generate_ids(
            prompts,
            eos_token_id=sep_id,
            pad_token_id=pad_id,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=do_sample,
            top_k=top_k,
            top_p=top_p,
            temperature=temperature,
            length_penalty=length_penalty,
            logits_processor=logits_processor,
            generator=generator,
        )
        if texts:
            return [decode_text(self.tokenizer, r) for r in new]
        return new


def _grow_prompt(mask: Tensor, types: Tensor, x: Tensor, new_segment: int) -> tuple[Tensor, Tensor]:
    """Padding mask and segments of ``x`` (``[rows, t]``): the ``[B, T0]`` prompt's, repeated for beams
    (``rows = B·r``), then ones and ``new_segment`` for the ``t − T0`` generated tokens."""
    r, m = x.shape[0] // mask.shape[0], x.shape[1] - mask.shape[1]
    am = torch.cat([mask.repeat_interleave(r, 0), mask.new_ones(x.shape[0], m)], dim=1)
    tt = torch.cat([types.repeat_interleave(r, 0), types.new_full((x.shape[0], m), new_segment)], dim=1)
    return am, tt


class UniLMCachedStep:
    """``ids [B, t] -> next-token logits [B, V]`` for a Hugging Face encoder under the UniLM mask, with a
    key/value cache, for :func:`~trainwell.seq2seq.generate`.

    Exact, not an approximation: under the UniLM mask no position attends a later one (source tokens see
    only source tokens, each target token sees the source and the targets before it), so every layer's
    keys and values of the positions already decoded never change when tokens are appended. The first
    call runs the prompt with the full UniLM mask and keeps the cache; each later call whose ``ids`` are one
    token longer feeds only that token (segment ``new_segment``, the next position of its row, attending
    every real token). Beam search calls :meth:`reorder` with the surviving beams' rows. A call that does
    not extend the previous one by exactly one token (a new decode) starts over. Encoders whose attention
    ignores the cache are detected on the first call and decoded without one.

    Source: kexue.fm/archives/6933 (UniLM seq2seq); Dong et al., arXiv:1905.03197.
    """

    def __init__(self, owner: UniLMSeq2Seq, mask: Tensor, types: Tensor, new_segment: int) -> None:
        self.owner = owner
        self.mask = mask  # [B, T0] prompt padding (1 = real token), left-padded
        self.types = types  # [B, T0] prompt segments
        self.new_segment = int(new_segment)
        self.cache: Any = None
        self.length = 0
        self.am: Tensor | None = None  # [rows, length] padding of the cached rows
        self.cached = True  # False once the encoder turned out not to fill the cache
        p = next(owner.model.parameters(), None)
        self.dtype = p.dtype if p is not None and p.dtype.is_floating_point else torch.float32

    def _full(self, x: Tensor) -> Tensor:
        am, tt = _grow_prompt(self.mask, self.types, x, self.new_segment)
        pos = (am.cumsum(-1) - 1).clamp(min=0)
        mask = self.owner.attention_mask(tt, am, self.dtype)
        kw: dict[str, Any] = {"input_ids": x, "attention_mask": mask, "token_type_ids": tt,
                              "position_ids": pos}
        out = None
        if self.cached:
            from transformers import DynamicCache

            self.cache = DynamicCache(config=getattr(self.owner.model, "config", None))
            try:
                out = self.owner.model(**kw, cache=self.cache)
            except TypeError:  # a forward without a cache argument
                self.cached, self.cache = False, None
        if out is None:
            out = self.owner.model(**kw)
        if self.cached and self.cache.get_seq_length() != x.shape[1]:
            self.cached, self.cache = False, None  # the encoder did not use it: recompute every step
        self.length, self.am = x.shape[1], am
        return out.logits[:, -1]

    def __call__(self, x: Tensor) -> Tensor:
        am = self.am
        if (not self.cached or self.cache is None or am is None or x.shape[1] != self.length + 1
                or x.shape[0] != am.shape[0]):
            return self._full(x)
        am = torch.cat([am, am.new_ones(am.shape[0], 1)], dim=1)
        may = am.bool()[:, None, :]  # [rows, 1 query, T keys]: the new token attends every real token
        add = torch.zeros(may.shape, dtype=self.dtype, device=x.device).masked_fill_(
            ~may, torch.finfo(self.dtype).min)[:, None]
        out = self.owner.model(
            input_ids=x[:, -1:],
            attention_mask=add,
            token_type_ids=x.new_full((x.shape[0], 1), self.new_segment),
            position_ids=am.sum(-1, keepdim=True) - 1,
            cache=self.cache,
        )
        self.length, self.am = x.shape[1], am
        return out.logits[:, -1]

    def reorder(self, index: Tensor) -> None:
        """Keep the cache rows of ``index`` (beam search's surviving hypotheses), in that order."""
        if self.cache is not None and self.am is not None:
            self.cache.reorder_cache(index)
            self.am = self.am.index_select(0, index)
