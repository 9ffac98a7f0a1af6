"""PET: few/zero-shot text classification with a masked language model, by cloze pattern and label words.

A :class:`Pattern` wraps the text in a natural-language cloze with a slot, e.g. ``"____满意。{text}"``
("__ satisfied." + review) or ``"It was [MASK]. {text}"``; a :class:`Verbalizer` maps each label to
one or more label words (e.g. ``{1: "很", 0: "不"}``: "very" / "not"). The slot becomes ``L`` mask
tokens, ``L`` the token length of the label words (all equal). One forward pass reads the MLM's
distributions at the slots; the score of label word ``v = (v_1..v_L)`` at slots ``(m_1..m_L)`` is

    log score(v | x) = Σ_j log p_MLM(v_j | P(x))_{m_j}

and a label's score sums its words' scores (``logsumexp`` of the log scores). Zero-shot needs only a
pretrained MLM head; few-shot training fine-tunes the MLM on the cloze (:class:`PETCollator`,
:meth:`PETClassifier.fit`): the slot is always masked and its target is the label word; with
``mlm_probability > 0`` the rest of the text gets BERT's random masking (15%: 80% mask, 10% random,
10% kept) and unlabelled texts join as plain MLM examples without the pattern — the auxiliary MLM
objective of the author's recipe.

Source: kexue.fm/archives/7764; Schick & Schütze, arXiv:2001.07676 and arXiv:2009.07118.

Reported (post; Chinese sentiment, valid/test accuracy %; M2 = RoBERTa-wwm-ext base; patterns
P1 ``"__满意。"+text``, P2 ``text+"__满意。"``, P3 ``"__好。"+text``, P4 ``"__理想。"+text``,
P5 ``"感觉如何？__满意。"+text``)::

    |                        | P1          | P2          | P3          | P4          | P5          |
    | M1 Google BERT-base    | 66.94/67.60 | 57.56/56.13 | 58.83/59.69 | 83.70/83.33 | 75.98/76.13 |
    | M2 RoBERTa-wwm-ext     | 85.17/84.27 | 70.63/68.69 | 58.55/59.12 | 81.81/82.28 | 80.25/81.62 |
    | M3 UER BERT-base       | 66.75/68.64 | 50.45/50.97 | 68.97/70.11 | 81.95/81.48 | 61.49/62.58 |
    | M4 UER BERT-large      | 83.56/85.08 | 72.52/72.10 | 76.46/77.03 | 88.25/87.45 | 82.43/83.56 |
    | M2 + MLM on unlabelled | 88.05/87.53 | 71.01/68.78 | 81.05/81.24 | 86.40/85.65 | 87.26/87.40 |
    | M2 few-shot (~200)     | 89.29/89.18 | 84.71/82.76 | 88.91/89.05 | 89.31/89.13 | 89.07/88.75 |
    | M2 semi-supervised     | 90.09/89.76 | 79.58/79.35 | 90.19/88.96 | 90.05/89.54 | 89.88/89.23 |

Standard fine-tuning with the same ~200 labels: ≈ 88.93.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainwell._validation import check_choice, check_int, check_module, check_number, fail

__all__ = ["PETClassifier", "PETCollator", "Pattern", "Verbalizer", "mlm_loss", "pet_log_scores"]


def _mask_id(tokenizer: Any, fn: str) -> int:
    mid = getattr(tokenizer, "mask_token_id", None)
    if mid is None:
        fail(fn, "tokenizer", "a tokenizer with a mask token (mask_token_id)", tokenizer, exc=TypeError)
    return int(mid)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def _special_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a single sequence (e.g. [CLS] / [SEP]).

    Read off ``encode(mask_token)`` with and without special tokens, so it works for any tokenizer
    (BERT, RoBERTa, ...) without tokenizer-specific methods.
    """
    cached = getattr(tokenizer, "_trainwell_pet_frame", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    probe = str(tokenizer.mask_token)
    raw = list(tokenizer.encode(probe, add_special_tokens=False))
    full = list(tokenizer.encode(probe, add_special_tokens=True))
    for i in range(len(full) - len(raw) + 1):
        if full[i : i + len(raw)] == raw:
            frame = (full[:i], full[i + len(raw) :])
            break
    else:  # pragma: no cover - a tokenizer whose special tokens rewrite the text
        frame = ([], [])
    try:
        tokenizer._trainwell_pet_frame = frame
    except (AttributeError, TypeError):  # pragma: no cover - a frozen tokenizer object
        pass
    return frame


def _wrap_special(tokenizer: Any, ids: list[int]) -> tuple[list[int], int]:
    """Add the tokenizer's special tokens around ``ids``; return them and the offset of ``ids[0]``."""
    head, tail = _special_frame(tokenizer)
    return head + ids + tail, len(head)


def _n_special(tokenizer: Any) -> int:
    head, tail = _special_frame(tokenizer)
    return len(head) + len(tail)


class Pattern:
    """A cloze template: text goes at ``{text}``, the label slot at ``mask_token``.

    Args:
        template: e.g. ``"____满意。{text}"`` (with ``mask_token="____"``) or ``"It was [MASK]. {text}"``;
            it must hold ``{text}`` once and the slot ``mask_token`` once.
        mask_token: the slot marker inside ``template`` (default ``"[MASK]"``). It is replaced by as many
            of the tokenizer's mask tokens as the label words have tokens.

    Example: with a char-level BERT tokenizer, ``Pattern("____满意。{text}", mask_token="____")`` and
    one-character label words give ``[CLS] [MASK] 满 意 。 t e x t [SEP]`` with the slot at position 1.
    """

    def __init__(self, template: str, mask_token: str = "[MASK]") -> None:
        fn = "Pattern"
        if not isinstance(template, str):
            fail(fn, "template", "a str", template, exc=TypeError)
        if not isinstance(mask_token, str) or not mask_token:
            fail(fn, "mask_token", "a non-empty str", mask_token, exc=TypeError)
        if template.count("{text}") != 1:
            fail(fn, "template", "a str holding '{text}' exactly once", template)
        if template.count(mask_token) != 1:
            fail(fn, "template", f"a str holding the mask slot {mask_token!r} exactly once", template)
        self.template = template
        self.mask_token = mask_token
        slot = template.index(mask_token)
        text_at = template.index("{text}")
        if text_at < slot < text_at + len("{text}"):
            fail(fn, "template", "a template whose mask slot is outside '{text}'", template)
        self._slot_first = slot < text_at
        if self._slot_first:
            a, rest = template.split(mask_token)
            b, c = rest.split("{text}")
        else:
            a, rest = template.split("{text}")
            b, c = rest.split(mask_token)
        self._pieces = (a, b, c)

    def build(
        self, tokenizer: Any, text: str, n_masks: int, max_length: int = 128
    ) -> tuple[list[int], list[int]]:
        """Token ids of the filled pattern (with special tokens) and the positions of the slot's masks.

        The text is truncated (from its end) so that the sequence fits ``max_length``.
        """
        fn = "Pattern.build"
        if not isinstance(text, str):
            fail(fn, "text", "a str", text, exc=TypeError)
        check_int("n_masks", n_masks, fn=fn, min=1)
        check_int("max_length", max_length, fn=fn, min=1)
        mask = _mask_id(tokenizer, fn)
        a, b, c = (_encode(tokenizer, s) if s else [] for s in self._pieces)
        budget = max_length - _n_special(tokenizer) - len(a) - len(b) - len(c) - n_masks
        if budget < 0:
            fail(fn, "max_length", f">= {max_length - budget} (the pattern alone needs it)", max_length)
        t = _encode(tokenizer, text)[:budget]
        slot = [mask] * n_masks
        if self._slot_first:
            ids, start = a + slot + b + t + c, len(a)
        else:
            ids, start = a + t + b + slot + c, len(a) + len(t) + len(b)
        full, offset = _wrap_special(tokenizer, ids)
        return full, [offset + start + j for j in range(n_masks)]

    def __repr__(self) -> str:
        return f"Pattern({self.template!r}, mask_token={self.mask_token!r})"


class Verbalizer:
    """Label → label word(s). Many words per label are allowed; all words need the same token length.

    Args:
        words: ``{label: word}`` or ``{label: [word, ...]}``; labels in insertion order are the classes.
    """

    def __init__(self, words: Mapping[Any, str | Sequence[str]]) -> None:
        fn = "Verbalizer"
        if not isinstance(words, Mapping) or not words:
            fail(fn, "words", "a non-empty mapping {label: word or [words]}", words, exc=TypeError)
        self.words: dict[Hashable, list[str]] = {}
        for label, w in words.items():
            ws = [w] if isinstance(w, str) else list(w)
            if not ws or not all(isinstance(x, str) and x for x in ws):
                fail(fn, f"words[{label!r}]", "a non-empty word or a non-empty list of non-empty words", w)
            self.words[label] = ws
        self.labels: list[Hashable] = list(self.words)

    def token_ids(self, tokenizer: Any) -> list[list[list[int]]]:
        """Per label, per word, the word's token ids; checks the words are in the vocabulary, same length."""
        fn = "Verbalizer.token_ids"
        unk = getattr(tokenizer, "unk_token_id", None)
        out: list[list[list[int]]] = []
        length: int | None = None
        for label, ws in self.words.items():
            per: list[list[int]] = []
            for w in ws:
                ids = _encode(tokenizer, w)
                if not ids or (unk is not None and unk in ids):
                    raise ValueError(
                        f"{fn}(): label word {w!r} of label {label!r} is not in the tokenizer's vocabulary "
                        f"(it tokenizes to {tokenizer.convert_ids_to_tokens(ids)})"
                    )
                if length is None:
                    length = len(ids)
                elif len(ids) != length:
                    raise ValueError(
                        f"{fn}(): all label words must have the same token length (the slot has one size), "
                        f"got {w!r} with {len(ids)} tokens and another word with {length}"
                    )
                per.append(ids)
            out.append(per)
        return out

    def index(self, label: Hashable) -> int:
        """Class index of ``label``."""
        if label not in self.words:
            fail("Verbalizer.index", "label", "one of " + ", ".join(repr(x) for x in self.labels), label)
        return self.labels.index(label)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"Verbalizer({self.words!r})"


def pet_log_scores(
    log_probs: Tensor, mask_positions: Tensor, word_ids: Sequence[Sequence[Sequence[int]]]
) -> Tensor:
    """Label log scores from MLM log-probabilities at the slot positions.

    ``score[b, c] = logsumexp_{w ∈ words(c)} Σ_j log_probs[b, m_{b,j}, w_j]``.

    Shape:
        log_probs ``[B, T, V]``, mask_positions ``[B, L]`` (long), result ``[B, C]``.
    """
    fn = "pet_log_scores"
    B, L = mask_positions.shape
    at = log_probs.gather(1, mask_positions.unsqueeze(-1).expand(B, L, log_probs.shape[-1]))  # [B, L, V]
    cols = []
    for per in word_ids:
        ws = torch.tensor(per, dtype=torch.long, device=log_probs.device)  # [W, L]
        if ws.shape[1] != L:
            fail(fn, "word_ids", f"words of {L} tokens (the slot size)", ws.shape[1])
        s = at.gather(2, ws.t().unsqueeze(0).expand(B, L, ws.shape[0])).sum(1)  # [B, W]
        cols.append(torch.logsumexp(s, dim=-1))
    return torch.stack(cols, dim=-1)


def _logits(model: Any, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    out = model(input_ids=input_ids, attention_mask=attention_mask)
    logits = out if isinstance(out, Tensor) else out.logits
    return logits.float()


def _model_vocab(model: Any) -> int | None:
    config = getattr(model, "config", None)
    v = getattr(config, "vocab_size", None)
    if isinstance(v, int):
        return v
    if isinstance(model, nn.Module) and hasattr(model, "get_output_embeddings"):
        emb = getattr(model, "get_output_embeddings")()  # noqa: B009 - nn.Module's __getattr__ types it as Tensor
        if emb is not None and hasattr(emb, "weight"):
            return int(emb.weight.shape[0])
    return None


class PETCollator:
    """Builds PET training batches: ``input_ids``, ``attention_mask``, ``labels`` (−100 = no target).

    A labelled example ``(text, label)`` is the filled pattern; its slot is always the mask token and
    its targets are the tokens of the label's first word. With ``mlm_probability > 0`` the other
    non-special tokens are also masked at random as in BERT (of the chosen: 80% → mask, 10% → random
    token, 10% kept; targets = the original tokens) and unlabelled examples ``(text, None)`` become
    plain MLM examples of the raw text (no pattern, no slot). With ``mlm_probability = 0`` (default)
    the labels are −100 everywhere outside the slot, and unlabelled examples are refused.

    Args:
        tokenizer: a Hugging Face tokenizer of the MLM (needs a mask and a pad token).
        pattern: the :class:`Pattern`. verbalizer: the :class:`Verbalizer`.
        mlm_probability: random-masking rate of the auxiliary MLM objective, in [0, 1) (default 0).
        max_length: longest sequence (default 128).
        generator: torch generator for the random masking (default: the global RNG).

    Examples are ``(text, label)`` tuples or ``{"text": ..., "label": ...}`` dicts.
    """

    def __init__(
        self,
        tokenizer: Any,
        pattern: Pattern,
        verbalizer: Verbalizer,
        mlm_probability: float = 0.0,
        max_length: int = 128,
        generator: torch.Generator | None = None,
    ) -> None:
        fn = "PETCollator"
        check_module("pattern", pattern, fn=fn, cls=Pattern)
        check_module("verbalizer", verbalizer, fn=fn, cls=Verbalizer)
        self.mask_id = _mask_id(tokenizer, fn)
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            fail(fn, "tokenizer", "a tokenizer with a pad token (pad_token_id)", tokenizer, exc=TypeError)
        self.pad_id = int(pad)
        p = check_number("mlm_probability", mlm_probability, fn=fn, min=0.0, max=1.0, max_inclusive=False)
        assert p is not None
        self.mlm_probability = p
        self.max_length = int(check_int("max_length", max_length, fn=fn, min=2) or 0)
        self.tokenizer, self.pattern, self.verbalizer = tokenizer, pattern, verbalizer
        self.word_ids = verbalizer.token_ids(tokenizer)
        self.n_masks = len(self.word_ids[0][0])
        self.vocab_size = len(tokenizer)
        self.generator = generator
        # never randomly masked: [CLS], [SEP], padding, [UNK], ... (the slot is excluded separately)
        self.special_ids = torch.tensor(
            sorted(set(getattr(tokenizer, "all_special_ids", [])) | {self.pad_id})
        )

    def _example(self, ex: Any) -> tuple[str, Any]:
        if isinstance(ex, Mapping):
            return ex["text"], ex.get("label")
        if isinstance(ex, (tuple, list)) and len(ex) == 2:
            return ex[0], ex[1]
        fail("PETCollator", "examples", "(text, label) tuples or {'text', 'label'} dicts", ex, exc=TypeError)

    def __call__(self, examples: Sequence[Any]) -> dict[str, Tensor]:
        fn = "PETCollator"
        rows: list[list[int]] = []
        targets: list[list[int]] = []
        slots: list[list[int]] = []
        for ex in examples:
            text, label = self._example(ex)
            if label is None:
                if self.mlm_probability == 0.0:
                    fail(fn, "label", "a label of the verbalizer (unlabelled texts need mlm_probability > 0)",
                         label)
                ids, _ = _wrap_special(self.tokenizer, _encode(self.tokenizer, text)[: self.max_length -
                                                                                     _n_special(self.tokenizer)])
                rows.append(ids)
                targets.append([-100] * len(ids))
                slots.append([])
                continue
            c = self.verbalizer.index(label)
            ids, pos = self.pattern.build(self.tokenizer, text, self.n_masks, self.max_length)
            lab = [-100] * len(ids)
            for j, m in enumerate(pos):
                lab[m] = self.word_ids[c][0][j]
            rows.append(ids)
            targets.append(lab)
            slots.append(pos)
        T = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), T), dtype=torch.long)
        labels = torch.full((len(rows), T), -100, dtype=torch.long)
        for i, (r, lab) in enumerate(zip(rows, targets)):
            input_ids[i, : len(r)] = torch.tensor(r)
            attention[i, : len(r)] = 1
            labels[i, : len(r)] = torch.tensor(lab)
        special = torch.isin(input_ids, self.special_ids)
        slot_mask = torch.zeros_like(special)
        for i, pos in enumerate(slots):
            slot_mask[i, pos] = True
        if self.mlm_probability > 0:
            g = self.generator
            eligible = ~special & ~slot_mask & (attention == 1)
            chosen = (torch.rand(input_ids.shape, generator=g) < self.mlm_probability) & eligible
            labels = torch.where(chosen, input_ids, labels)
            u = torch.rand(input_ids.shape, generator=g)
            to_mask = chosen & (u < 0.8)
            to_random = chosen & (u >= 0.8) & (u < 0.9)
            rnd = torch.randint(self.vocab_size, input_ids.shape, generator=g)
            input_ids = torch.where(to_mask, torch.full_like(input_ids, self.mask_id), input_ids)
            input_ids = torch.where(to_random, rnd, input_ids)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


class PETClassifier:
    """Zero/few-shot classifier from a masked language model, a :class:`Pattern` and a :class:`Verbalizer`.

    Args:
        mlm_model: any Hugging Face ``*ForMaskedLM`` (or a module ``(input_ids, attention_mask) -> logits``
            ``[B, T, V]``) with a trained MLM head.
        tokenizer: its tokenizer (same vocabulary; checked against the model's vocabulary size).
        pattern, verbalizer: the cloze and the label words.
        max_length: longest input (default 128).
        mode: ``"parallel"`` (default, one forward with all slot tokens masked, the post's scoring) or
            ``"max_first"`` (PET paper: per label word, fill the most confident remaining slot and re-run).
    """

    def __init__(
        self,
        mlm_model: Any,
        tokenizer: Any,
        pattern: Pattern,
        verbalizer: Verbalizer,
        max_length: int = 128,
        mode: str = "parallel",
    ) -> None:
        fn = "PETClassifier"
        if not callable(mlm_model):
            fail(fn, "mlm_model", "a masked language model (callable)", mlm_model, exc=TypeError)
        check_module("pattern", pattern, fn=fn, cls=Pattern)
        check_module("verbalizer", verbalizer, fn=fn, cls=Verbalizer)
        check_int("max_length", max_length, fn=fn, min=2)
        check_choice("mode", mode, ("parallel", "max_first"), fn=fn)
        _mask_id(tokenizer, fn)
        v_model = _model_vocab(mlm_model)
        if v_model is not None and len(tokenizer) > v_model:
            raise ValueError(
                f"{fn}(): the tokenizer does not match the model: it has {len(tokenizer)} tokens but the "
                f"model's vocabulary has {v_model}"
            )
        self.model, self.tokenizer, self.pattern, self.verbalizer = mlm_model, tokenizer, pattern, verbalizer
        self.max_length, self.mode = max_length, mode
        self.word_ids = verbalizer.token_ids(tokenizer)
        self.n_masks = len(self.word_ids[0][0])
        self.collator = PETCollator(tokenizer, pattern, verbalizer, max_length=max_length)

    @property
    def labels(self) -> list[Hashable]:
        return self.verbalizer.labels

    def _device(self) -> torch.device:
        if isinstance(self.model, nn.Module):
            for p in self.model.parameters():
                return p.device
        return torch.device("cpu")

    def _batch(self, texts: Sequence[str]) -> tuple[Tensor, Tensor, Tensor]:
        built = [self.pattern.build(self.tokenizer, t, self.n_masks, self.max_length) for t in texts]
        T = max(len(ids) for ids, _ in built)
        input_ids = torch.full((len(built), T), self.collator.pad_id, dtype=torch.long)
        attention = torch.zeros((len(built), T), dtype=torch.long)
        for i, (ids, _) in enumerate(built):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
        positions = torch.tensor([pos for _, pos in built], dtype=torch.long)
        dev = self._device()
        return input_ids.to(dev), attention.to(dev), positions.to(dev)

    def _check_texts(self, texts: Any, fn: str) -> list[str]:
        if isinstance(texts, str) or not isinstance(texts, Iterable):
            fail(fn, "texts", "a sequence of str", texts, exc=TypeError)
        out = list(texts)
        if not out or not all(isinstance(t, str) for t in out):
            fail(fn, "texts", "a non-empty sequence of str", texts, exc=TypeError)
        return out

    @torch.no_grad()
    def score(self, texts: Sequence[str], batch_size: int = 64) -> Tensor:
        """Label log scores ``[N, C]``: ``logsumexp`` over a label's words of ``Σ_j log p(v_j)`` (slots)."""
        fn = "PETClassifier.score"
        texts = self._check_texts(texts, fn)
        check_int("batch_size", batch_size, fn=fn, min=1)
        was = self.model.training if isinstance(self.model, nn.Module) else None
        if isinstance(self.model, nn.Module):
            self.model.eval()
        try:
            out = []
            for i in range(0, len(texts), batch_size):
                ids, att, pos = self._batch(texts[i : i + batch_size])
                if self.mode == "parallel" or self.n_masks == 1:
                    lp = torch.log_softmax(_logits(self.model, ids, att), dim=-1)
                    out.append(pet_log_scores(lp, pos, self.word_ids).cpu())
                else:
                    out.append(self._max_first(ids, att, pos).cpu())
            return torch.cat(out)
        finally:
            if was is not None:
                self.model.train(was)

    def _max_first(self, ids: Tensor, att: Tensor, pos: Tensor) -> Tensor:
        B, L = pos.shape
        cols = []
        for per in self.word_ids:
            word_scores = []
            for w in per:
                wt = torch.tensor(w, device=ids.device)
                cur = ids.clone()
                total = torch.zeros(B, device=ids.device)
                open_ = torch.ones(B, L, dtype=torch.bool, device=ids.device)
                for _ in range(L):
                    lp = torch.log_softmax(_logits(self.model, cur, att), dim=-1)
                    at = lp.gather(1, pos.unsqueeze(-1).expand(B, L, lp.shape[-1]))  # [B, L, V]
                    s = at.gather(2, wt.view(1, L, 1).expand(B, L, 1)).squeeze(-1)  # [B, L]
                    s = s.masked_fill(~open_, float("-inf"))
                    best = s.argmax(-1)
                    total = total + s.gather(1, best[:, None]).squeeze(1)
                    open_[torch.arange(B), best] = False
                    cur[torch.arange(B), pos[torch.arange(B), best]] = wt[best]
                word_scores.append(total)
            cols.append(torch.logsumexp(torch.stack(word_scores, -1), -1))
        return torch.stack(cols, -1)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> Tensor:
        """Class probabilities ``[N, C]``: the softmax of :meth:`score` over the labels."""
        return torch.softmax(self.score(texts, batch_size=batch_size), dim=-1)

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> list[Hashable]:
        """The label with the highest score, per text."""
        idx = self.score(texts, batch_size=batch_size).argmax(-1).tolist()
        return [self.labels[i] for i in idx]

    def fit(
        self,
        texts: Sequence[str],
        labels: Sequence[Hashable],
        *,
        unlabeled: Sequence[str] | None = None,
        epochs: int = 10,
        batch_size: int = 32,
        lr: float = 1e-5,
        mlm_probability: float = 0.0,
        optimizer: torch.optim.Optimizer | None = None,
        generator: torch.Generator | None = None,
    ) -> PETClassifier:
        """Few-shot training: fine-tune the MLM on the cloze (CE of the label-word tokens at the slot).

        With ``mlm_probability > 0`` the auxiliary MLM objective is on: random masking of the labelled
        texts and ``unlabeled`` raw texts as plain MLM examples (author's recipe: 0.15). The loss is the
        MLM cross-entropy averaged over every position with a target. Adam(W) at ``lr`` unless an
        ``optimizer`` is given (post: lr 1e-5, batch 32 for a base-size model).
        """
        fn = "PETClassifier.fit"
        texts = self._check_texts(texts, fn)
        labels = list(labels)
        if len(labels) != len(texts):
            fail(fn, "labels", f"a sequence of {len(texts)} labels (one per text)", len(labels))
        for y in labels:
            self.verbalizer.index(y)
        check_int("epochs", epochs, fn=fn, min=0)
        check_int("batch_size", batch_size, fn=fn, min=1)
        check_number("lr", lr, fn=fn, min=0.0)
        if not isinstance(self.model, nn.Module):
            fail(fn, "mlm_model", "an nn.Module to train", self.model, exc=TypeError)
        unl = [] if unlabeled is None else self._check_texts(unlabeled, fn)
        if unl and mlm_probability == 0:
            fail(
                fn,
                "mlm_probability",
                "> 0 when unlabeled texts are given (they only carry the MLM objective)",
                mlm_probability,
            )
        collate = PETCollator(self.tokenizer, self.pattern, self.verbalizer, mlm_probability=mlm_probability,
                              max_length=self.max_length, generator=generator)
        data: list[tuple[str, Any]] = list(zip(texts, labels)) + [(t, None) for t in unl]
        opt = optimizer if optimizer is not None else torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad], lr=lr)
        dev = self._device()
        self.model.train()
        for _ in range(epochs):
            order = torch.randperm(len(data), generator=generator).tolist()
            for i in range(0, len(order), batch_size):
                batch = collate([data[j] for j in order[i : i + batch_size]])
                batch = {k: v.to(dev) for k, v in batch.items()}
                loss = mlm_loss(
                    _logits(self.model, batch["input_ids"], batch["attention_mask"]), batch["labels"]
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.model.eval()
        return self


def mlm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over the positions with a target (``labels != -100``); 0 when there are none."""
    flat = labels.reshape(-1)
    if bool((flat != -100).any()):
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), flat, ignore_index=-100)
    return logits.sum() * 0.0

