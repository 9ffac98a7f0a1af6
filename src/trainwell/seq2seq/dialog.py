"""DialoGPT-style multi-turn chat: one left-to-right LM over the whole concatenated dialogue.

Sequence ``[CLS] u_1 [SEP] u_2 [SEP] … u_n [SEP]`` with speaker (segment) ids 0 on ``[CLS]`` and ``k mod 2``
on every token of utterance ``k`` (0-based) including its closing ``[SEP]``. Next-token cross-entropy on
every non-pad position after ``[CLS]`` trains all turns in one pass (``loss_on="all"``, the author's choice);
``loss_on="responses"`` leaves out the first utterance. The reply to a history of ``n`` utterances gets
segment ``n mod 2`` (= 1 − the last history segment) and is sampled with top-k 5 until ``[SEP]``.

Source: kexue.fm/archives/7718; LCCC / CDial-GPT, Wang et al. (arXiv:2008.03946).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from trainwell._validation import check_choice, check_int, check_module, check_tensor, fail
from trainwell.nn.masks import causal_mask, to_hf_mask
from trainwell.seq2seq.decoding import generate
from trainwell.seq2seq.unilm import (
    IGNORE,
    LMOutput,
    decode_text,
    encode_text,
    is_hf_model,
    pad_rows,
    shifted_lm_loss,
    special_ids,
)

__all__ = ["DialogueLM", "DialogueLMCollator"]


class DialogueLMCollator:
    """Batches dialogues (lists of utterances) for :class:`DialogueLM`.

    Truncation appends whole utterances in order while the total length stays ``≤ max_len`` and stops at the
    first that does not fit (an utterance is never split).

    Args:
        tokenizer: BERT-style tokenizer (``cls/sep/pad_token_id``, ``encode``).
        max_len: longest sequence in tokens (``[CLS]`` and every ``[SEP]`` included).
        loss_on: ``"all"`` (every token after ``[CLS]``) or ``"responses"`` (utterance 1 and its ``[SEP]``
            excluded).

    Returns (``__call__``):
        dict of ``[B, T]`` long tensors ``input_ids``, ``token_type_ids`` (speaker ids), ``attention_mask``
        and
        ``labels`` (aligned with the inputs, ``-100`` where no loss is taken; the model shifts them).
    """

    def __init__(self, tokenizer: Any, max_len: int = 512, loss_on: str = "all") -> None:
        fn = "DialogueLMCollator"
        self.tokenizer = tokenizer
        self.cls_id, self.sep_id, self.pad_id = special_ids(tokenizer, fn)
        self.max_len = int(check_int("max_len", max_len, fn=fn, min=2) or 2)
        self.loss_on = check_choice("loss_on", loss_on, ("all", "responses"), fn=fn)

    def _utterance(self, u: Any) -> list[int]:
        if isinstance(u, str):
            return encode_text(self.tokenizer, u)
        if isinstance(u, (list, tuple)):
            return [int(i) for i in u]
        fail("DialogueLMCollator", "utterance", "a str or a list of token ids", u, exc=TypeError)

    def encode(
        self, dialogue: Sequence[Any], max_len: int | None = None
    ) -> tuple[list[int], list[int], list[int]]:
        """``(ids, speaker ids, labels)`` of one dialogue, truncated to whole utterances."""
        if isinstance(dialogue, str) or not isinstance(dialogue, Sequence):
            fail("DialogueLMCollator", "dialogue", "a sequence of utterances", dialogue, exc=TypeError)
        limit = self.max_len if max_len is None else max_len
        ids, types, labels = [self.cls_id], [0], [IGNORE]
        for k, u in enumerate(dialogue):
            toks = [*self._utterance(u), self.sep_id]
            if len(ids) + len(toks) > limit:
                break
            ids += toks
            types += [k % 2] * len(toks)
            labels += [IGNORE] * len(toks) if (self.loss_on == "responses" and k == 0) else toks
        return ids, types, labels

    def __call__(self, dialogues: Sequence[Sequence[Any]]) -> dict[str, Tensor]:
        rows = [self.encode(d) for d in dialogues]
        return pad_rows([(r[0], r[1]) for r in rows], self.pad_id, labels=[r[2] for r in rows])


class DialogueLM(nn.Module):
    """A chat LM over concatenated turns, on a causal LM or on a bidirectional BERT-style encoder.

    - Bidirectional encoders (a config with ``type_vocab_size`` that is not a decoder, e.g. BERT) run under a
      causal mask (:func:`trainwell.nn.masks.causal_mask`, passed in Hugging Face's 4-D form) and receive the
      speaker ids as ``token_type_ids``.
    - Other models (GPT-2, Llama, ...) get a learned 2-row speaker embedding, zero-initialised, added to
      their token embeddings (``inputs_embeds``); their own attention is already causal.

    Args:
        model: the language model (returns ``.logits``).
        tokenizer: BERT-style tokenizer (``[CLS]``/``[SEP]``), needed by :meth:`respond`.
        max_len: longest sequence :meth:`respond` builds (oldest utterances are dropped first).
    """

    def __init__(self, model: nn.Module, tokenizer: Any = None, max_len: int = 512) -> None:
        super().__init__()
        fn = "DialogueLM"
        check_module("model", model, fn=fn)
        self.model = model
        self.tokenizer = tokenizer
        self.max_len = int(check_int("max_len", max_len, fn=fn, min=2) or 2)
        cfg = getattr(model, "config", None)
        self.bidirectional = bool(
            cfg is not None
            and getattr(cfg, "type_vocab_size", 0) >= 2
            and not getattr(cfg, "is_decoder", False)
        )
        self.speaker: nn.Embedding | None = None
        if not self.bidirectional:
            if not hasattr(model, "get_input_embeddings"):
                fail(fn, "model", "a model with get_input_embeddings()", model, exc=TypeError)
            emb = model.get_input_embeddings()  # type: ignore[operator]
            self.speaker = nn.Embedding(
                2, emb.weight.shape[1], device=emb.weight.device, dtype=emb.weight.dtype
            )
            nn.init.zeros_(self.speaker.weight)

    def get_input_embeddings(self) -> nn.Module:
        emb = self.model.get_input_embeddings()  # type: ignore[operator]
        assert isinstance(emb, nn.Module)
        return emb

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        *,
        inputs_embeds: Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> LMOutput:
        """Logits ``[B, T, V]`` (and the shifted next-token loss on ``labels``)."""
        fn = "DialogueLM.forward"
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(f"{fn}(): give exactly one of 'input_ids' and 'inputs_embeds'")
        if input_ids is not None:
            check_tensor("input_ids", input_ids, fn=fn, kind="int", ndim=2)
            shape = tuple(input_ids.shape)
        else:
            check_tensor("inputs_embeds", inputs_embeds, fn=fn, kind="float", ndim=3)
            shape = tuple(inputs_embeds.shape[:2])  # type: ignore[union-attr]
        if token_type_ids is None:
            src = input_ids if input_ids is not None else inputs_embeds
            assert src is not None
            token_type_ids = torch.zeros(shape, dtype=torch.long, device=src.device)
        check_tensor("token_type_ids", token_type_ids, fn=fn, kind=("int", "bool"), ndim=2)
        if tuple(token_type_ids.shape) != shape:
            fail(fn, "token_type_ids", f"shape {shape}", token_type_ids)
        kw: dict[str, Any] = {}
        if output_hidden_states:
            kw["output_hidden_states"] = True
        if self.bidirectional:
            ref = next(self.model.parameters())
            am = (
                attention_mask
                if attention_mask is not None
                else torch.ones(shape, dtype=torch.long, device=token_type_ids.device)
            )
            mask = causal_mask(attention_mask=am)
            kw["attention_mask"] = to_hf_mask(mask, "4d", ref.dtype) if is_hf_model(self.model) else mask
            kw["token_type_ids"] = token_type_ids.long()
            if input_ids is not None:
                kw["input_ids"] = input_ids
            else:
                kw["inputs_embeds"] = inputs_embeds
        else:
            assert self.speaker is not None
            emb = self.model.get_input_embeddings()(input_ids) if input_ids is not None else inputs_embeds  # type: ignore[operator]
            kw["inputs_embeds"] = emb + self.speaker(token_type_ids.long().clamp(0, 1))
            if attention_mask is not None:
                kw["attention_mask"] = attention_mask
        out = self.model(**kw)
        logits = out.logits if hasattr(out, "logits") else out
        loss = None
        if labels is not None:
            check_tensor("labels", labels, fn=fn, kind="int", ndim=2)
            loss = shifted_lm_loss(logits, labels)
        hidden = getattr(out, "hidden_states", None) if output_hidden_states else None
        return LMOutput(loss=loss, logits=logits, hidden_states=hidden)

    def prompt(self, history: Sequence[Any], reserve: int = 0) -> tuple[list[int], list[int], int]:
        """``(ids, speaker ids, reply segment)`` of a history; the latest utterances that fit are kept."""
        fn = "DialogueLM.prompt"
        if self.tokenizer is None:
            fail(fn, "tokenizer", "a tokenizer given to DialogueLM", None, exc=TypeError)
        if isinstance(history, str) or not isinstance(history, Sequence) or len(history) == 0:
            fail(fn, "history", "a non-empty sequence of utterances", history, exc=TypeError)
        col = DialogueLMCollator(self.tokenizer, max_len=self.max_len)
        n = len(history)
        limit = max(2, self.max_len - reserve)
        start = 0
        while True:
            ids, types, _ = col.encode(history[start:], max_len=limit)
            kept = sum(1 for t in ids if t == col.sep_id)
            if kept == n - start or start == n - 1:
                break
            start += 1
        # speakers keep the parity of the full history, whatever was dropped at the front
        if start % 2 == 1:
            types = [0] + [1 - t for t in types[1:]]
        return ids, types, n % 2

    @torch.no_grad()
    def respond(
        self,
        history: Sequence[Any],
        top_k: int | None = 5,
        max_new_tokens: int = 32,
        *,
        do_sample: bool = True,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> str:
        """Sample a reply to ``history`` (top-k, stop at ``[SEP]`` or after ``max_new_tokens``).

        The reply's speaker id is ``len(history) mod 2``. ``top_k=1`` (or ``do_sample=False``) is greedy.
        """
        fn = "DialogueLM.respond"
        check_int("max_new_tokens", max_new_tokens, fn=fn, min=1)
        ids, types, seg = self.prompt(history, reserve=max_new_tokens)
        _, sep_id, pad_id = special_ids(self.tokenizer, fn)
        dev = next(self.parameters()).device
        prompt = torch.tensor([ids], dtype=torch.long, device=dev)
        ptypes = torch.tensor([types], dtype=torch.long, device=dev)

        def step(x: Tensor) -> Tensor:
            m = x.shape[1] - prompt.shape[1]
            tt = torch.cat([ptypes.expand(x.shape[0], -1), ptypes.new_full((x.shape[0], m), seg)], dim=1)
            return self(x, None, tt).logits[:, -1]

        was = self.training
        self.eval()
        try:
            out = generate(
                step,
                prompt,
                max_new_tokens=max_new_tokens,
                eos_token_id=sep_id,
                pad_token_id=pad_id,
                do_sample=do_sample,
                top_k=top_k,
                temperature=temperature,
                generator=generator,
            )
        finally:
            self.train(was)
        new = out[0, prompt.shape[1] :].tolist()
        if sep_id in new:
            new = new[: new.index(sep_id)]
        return decode_text(self.tokenizer, new)
