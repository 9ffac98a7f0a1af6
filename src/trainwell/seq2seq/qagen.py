"""Question–answer pair generation from a passage with one UniLM model: passage → answer → question.

Sequence ``[CLS] passage [SEP] answer [SEP] question [SEP]`` with segment 0 on ``[CLS] passage [SEP]`` and 1
after; the UniLM mask and the shifted segment-masked loss train ``p(answer, question | passage)`` with the
answer first. Decoding reads up to the first ``[SEP]`` as the answer (nucleus sampling, top-p 0.95: many
answers are valid) and up to the second as the question (beam search: faithful to the passage). With
``constrain_answer_to_span=True`` a logit mask keeps the answer a contiguous token span of the passage
(the allowed next tokens are those that extend the answer so far to a passage substring).

Source: kexue.fm/archives/7630; UniLM (arXiv:1905.03197).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from trainwell._validation import check_bool, check_int, check_module, check_number, fail
from trainwell.seq2seq.unilm import UniLMSeq2Seq, decode_text, encode_text, pad_rows, special_ids

__all__ = ["QAGenerationCollator", "QAPairGenerator", "span_processor"]


class QAGenerationCollator:
    """Batches ``(passage, answer, question)`` triples as ``[CLS] p [SEP] a [SEP] q [SEP]``.

    Args:
        tokenizer: BERT-style tokenizer.
        max_p, max_a, max_q: token budgets of passage, answer and question (post: 128, 16, 64).

    Returns (``__call__``):
        ``input_ids``, ``token_type_ids`` (0 on ``[CLS] p [SEP]``, 1 after), ``attention_mask`` and ``labels``
        (answer, question and both closing ``[SEP]`` tokens; ``-100`` elsewhere). Items are tuples or mappings
        with ``passage``/``answer``/``question`` keys.
    """

    def __init__(self, tokenizer: Any, max_p: int = 128, max_a: int = 16, max_q: int = 64) -> None:
        fn = "QAGenerationCollator"
        self.tokenizer = tokenizer
        self.cls_id, self.sep_id, self.pad_id = special_ids(tokenizer, fn)
        self.max_p = int(check_int("max_p", max_p, fn=fn, min=1) or 1)
        self.max_a = int(check_int("max_a", max_a, fn=fn, min=1) or 1)
        self.max_q = int(check_int("max_q", max_q, fn=fn, min=1) or 1)

    def encode(
        self, passage: str, answer: str | None = None, question: str | None = None
    ) -> tuple[list[int], list[int]]:
        """``(ids, segments)``; stops after the passage (or the answer) when the later parts are ``None``."""
        ids = [self.cls_id, *encode_text(self.tokenizer, passage)[: self.max_p], self.sep_id]
        types = [0] * len(ids)
        for part, budget in ((answer, self.max_a), (question, self.max_q)):
            if part is None:
                break
            toks = [*encode_text(self.tokenizer, part)[:budget], self.sep_id]
            ids += toks
            types += [1] * len(toks)
        return ids, types

    def __call__(self, items: Sequence[Any]) -> dict[str, Tensor]:
        rows = []
        for it in items:
            if isinstance(it, Mapping):
                p, a, q = it["passage"], it["answer"], it["question"]
            else:
                p, a, q = it
            rows.append(self.encode(str(p), str(a), str(q)))
        return pad_rows(rows, self.pad_id, labels="segment")


def span_processor(passage_ids: Sequence[int], start: int, sep_id: int) -> Any:
    """A ``logits_processor`` keeping the tokens generated after ``start`` a contiguous span of the passage.

    At each step the allowed tokens are the passage tokens that follow an occurrence of the answer so far
    (any passage token at the first step), plus ``sep_id`` once the answer is non-empty. Rows that have
    already emitted ``sep_id`` are left alone. Vectorised over rows.
    """
    p = torch.tensor(list(passage_ids), dtype=torch.long)
    if p.numel() == 0:
        fail("span_processor", "passage_ids", "a non-empty token list", list(passage_ids))

    def process(input_ids: Tensor, scores: Tensor) -> Tensor:
        ans = input_ids[:, start:]
        m = ans.shape[1]
        pp = p.to(scores.device)
        n = pp.numel()
        allowed = torch.zeros_like(scores, dtype=torch.bool)
        if m == 0:
            allowed[:, pp] = True
        elif m < n:
            windows = pp.unfold(0, m, 1)[: n - m]  # starts with a following token
            match = (windows[None] == ans[:, None, :]).all(-1)  # [R, n-m]
            nxt = pp[m:][None].expand(ans.shape[0], -1)
            allowed.scatter_(1, torch.where(match, nxt, torch.full_like(nxt, sep_id)), True)
            allowed[:, sep_id] = True
        else:
            allowed[:, sep_id] = True
        if m > 0:
            allowed[:, sep_id] = True
            ended = (ans == sep_id).any(dim=1)
            allowed[ended] = True
        return scores.masked_fill(~allowed, float("-inf"))

    return process


class QAPairGenerator:
    """Generate ``(question, answer)`` pairs from a passage with a trained :class:`UniLMSeq2Seq`.

    Args:
        model: a ``UniLMSeq2Seq`` trained on :class:`QAGenerationCollator` batches.
        tokenizer: its tokenizer (defaults to ``model.tokenizer``).
    """

    def __init__(self, model: UniLMSeq2Seq, tokenizer: Any = None) -> None:
        fn = "QAPairGenerator"
        check_module("model", model, fn=fn, cls=UniLMSeq2Seq)
        self.model = model
        self.tokenizer = tokenizer if tokenizer is not None else model.tokenizer
        if self.tokenizer is None:
            fail(fn, "tokenizer", "a BERT-style tokenizer (or a model that has one)", None, exc=TypeError)
        self.cls_id, self.sep_id, self.pad_id = special_ids(self.tokenizer, fn)

    def generate_answer_ids(
        self,
        passage: str,
        num: int = 1,
        *,
        answer_top_p: float | None = 0.95,
        constrain_answer_to_span: bool = True,
        max_a: int = 16,
        max_p: int = 128,
        generator: torch.Generator | None = None,
    ) -> tuple[list[int], list[list[int]]]:
        """``(passage token ids, [answer token ids] * num)``; answers are sampled (``answer_top_p=None``:
        greedy)."""
        p_ids = encode_text(self.tokenizer, passage)[:max_p]
        prompt = [self.cls_id, *p_ids, self.sep_id]
        proc = span_processor(p_ids, len(prompt), self.sep_id) if constrain_answer_to_span else None
        do_sample = answer_top_p is not None
        answers = self.model.generate_ids(
            [prompt] * num,
            eos_token_id=self.sep_id,
            pad_token_id=self.pad_id,
            max_new_tokens=max_a + 1,
            do_sample=do_sample,
            top_p=answer_top_p if do_sample else None,
            logits_processor=proc,
            generator=generator,
        )
        return p_ids, answers

    def generate_question(
        self,
        passage: str,
        answer: str | Sequence[int],
        *,
        question_beam: int = 1,
        max_q: int = 64,
        max_p: int = 128,
    ) -> str:
        """The (deterministic, beam-searched) question for a given answer."""
        p_ids = encode_text(self.tokenizer, passage)[:max_p]
        a_ids = encode_text(self.tokenizer, answer) if isinstance(answer, str) else [int(i) for i in answer]
        return self._questions(p_ids, [a_ids], question_beam, max_q)[0]

    def _questions(self, p_ids: list[int], answers: list[list[int]], beams: int, max_q: int) -> list[str]:
        prompts, segs = [], []
        for a in answers:
            ids = [self.cls_id, *p_ids, self.sep_id, *a, self.sep_id]
            prompts.append(ids)
            segs.append([0] * (len(p_ids) + 2) + [1] * (len(a) + 1))
        qs = self.model.generate_ids(
            prompts,
            segs,
            eos_token_id=self.sep_id,
            pad_token_id=self.pad_id,
            max_new_tokens=max_q + 1,
            num_beams=beams,
        )
        return [decode_text(self.tokenizer, q) for q in qs]

    def generate(
        self,
        passage: str,
        num_pairs: int = 1,
        *,
        answer_top_p: float | None = 0.95,
        question_beam: int = 1,
        constrain_answer_to_span: bool = True,
        max_a: int = 16,
        max_q: int = 64,
        max_p: int = 128,
        generator: torch.Generator | None = None,
    ) -> list[tuple[str, str]]:
        """``num_pairs`` ``(question, answer)`` pairs: answers sampled (nucleus), questions by beam search.

        Decoding of each part stops at its ``[SEP]``: the answer ends at the first, the question at the
        second.
        With ``constrain_answer_to_span`` (default) every answer is a contiguous token span of the passage.
        Pairs with an empty answer are kept (the model chose to stop at once).
        """
        fn = "QAPairGenerator.generate"
        if not isinstance(passage, str):
            fail(fn, "passage", "a str", passage, exc=TypeError)
        check_int("num_pairs", num_pairs, fn=fn, min=1)
        check_number(
            "answer_top_p", answer_top_p, fn=fn, min=0.0, max=1.0, min_inclusive=False, allow_none=True
        )
        check_int("question_beam", question_beam, fn=fn, min=1)
        check_bool("constrain_answer_to_span", constrain_answer_to_span, fn=fn)
        p_ids, answers = self.generate_answer_ids(
            passage,
            num_pairs,
            answer_top_p=answer_top_p,
            constrain_answer_to_span=constrain_answer_to_span,
            max_a=max_a,
            max_p=max_p,
            generator=generator,
        )
        answers = [a[:max_a] for a in answers]
        questions = self._questions(p_ids, answers, question_beam, max_q)
        return [(q, decode_text(self.tokenizer, a)) for q, a in zip(questions, answers)]
