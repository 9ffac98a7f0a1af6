"""QAGenerationCollator / QAPairGenerator: layout, mask independence, two-[SEP] stop, span constraint."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from trainwell.seq2seq import QAGenerationCollator, QAPairGenerator, UniLMSeq2Seq
from trainwell.seq2seq.qagen import span_processor

from .conftest import tiny_bert

PASSAGE = "今天天气很好，我们去加减乘除"


def test_collator_layout(tokenizer) -> None:
    col = QAGenerationCollator(tokenizer, max_p=128, max_a=16, max_q=64)
    b = col([(PASSAGE, "很好", "天气是多少?")])
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    p, a, q = enc(PASSAGE), enc("很好"), enc("天气是多少?")
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert b["input_ids"][0].tolist() == [cls, *p, sep, *a, sep, *q, sep]
    assert b["token_type_ids"][0].tolist() == [0] * (len(p) + 2) + [1] * (len(a) + len(q) + 2)
    lab = b["labels"][0]
    assert int((lab != -100).sum()) == len(a) + len(q) + 2  # answer, question and both [SEP]s
    short = QAGenerationCollator(tokenizer, max_p=3, max_a=1, max_q=2)([(PASSAGE, "很好", "天气是多少?")])
    assert short["input_ids"].shape[1] == 1 + 3 + 1 + 1 + 1 + 2 + 1


def test_passage_states_independent_of_answer_and_question(tokenizer) -> None:
    model = UniLMSeq2Seq(tiny_bert(tokenizer.vocab_size), tokenizer)
    col = QAGenerationCollator(tokenizer)
    a = col([(PASSAGE, "很好", "天气?")])
    b = col([(PASSAGE, "我们", "你好?")])
    n_p = int((a["token_type_ids"][0] == 0).sum())
    ha = model(**a, output_hidden_states=True).hidden_states
    hb = model(**b, output_hidden_states=True).hidden_states
    for x, y in zip(ha, hb):
        assert torch.equal(x[:, :n_p], y[:, :n_p])


class Scripted(nn.Module):
    """An 'encoder' that writes a fixed script after the passage: 2 answer tokens, [SEP], 1 question token,
    [SEP], then garbage; it counts its calls."""

    def __init__(self, vocab: int, script: list[int]) -> None:
        super().__init__()
        self.vocab, self.script, self.calls = vocab, script, 0
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
        self.calls += 1
        b, t = input_ids.shape
        out = torch.zeros(b, t, self.vocab)
        k = int(token_type_ids[0].sum())  # tokens in segment 1 so far
        out[:, -1, self.script[min(k, len(self.script) - 1)]] = 10.0
        return out + self.dummy


def test_decoding_stops_after_the_second_sep(tokenizer) -> None:
    v, sep = tokenizer.vocab_size, tokenizer.sep_token_id
    p = tokenizer.encode(PASSAGE, add_special_tokens=False)
    garbage = tokenizer.convert_tokens_to_ids("x")
    script = [p[0], p[1], sep, p[3], sep, garbage, garbage, garbage]
    enc = Scripted(v, script)
    gen = QAPairGenerator(UniLMSeq2Seq(enc, tokenizer))
    [(question, answer)] = gen.generate(PASSAGE, num_pairs=1, answer_top_p=None)
    assert answer == tokenizer.decode(p[:2]).replace(" ", "")
    assert question == tokenizer.decode([p[3]]).replace(" ", "")
    assert enc.calls == 3 + 2  # answer: 2 tokens + [SEP]; question: 1 token + [SEP]; nothing after


def test_span_constrained_answers_are_passage_spans(tokenizer) -> None:
    model = UniLMSeq2Seq(tiny_bert(tokenizer.vocab_size, seed=5), tokenizer)
    gen = QAPairGenerator(model)
    p = tokenizer.encode(PASSAGE, add_special_tokens=False)
    g = torch.Generator().manual_seed(0)
    _, answers = gen.generate_answer_ids(PASSAGE, 50, constrain_answer_to_span=True, generator=g, max_a=6)
    spans = {tuple(p[i:j]) for i in range(len(p)) for j in range(i, len(p) + 1)}
    assert all(tuple(a) in spans for a in answers)
    assert len({tuple(a) for a in answers}) > 1
    _, free = gen.generate_answer_ids(PASSAGE, 50, constrain_answer_to_span=False, generator=g, max_a=6)
    assert sum(tuple(a) not in spans for a in free) > 0  # the random model leaves the passage unconstrained
    # the processor alone: with a one-token prefix only its successors in the passage (and [SEP]) survive
    proc = span_processor(p, 1, tokenizer.sep_token_id)
    scores = proc(torch.tensor([[0, p[2]]]), torch.zeros(1, tokenizer.vocab_size))
    allowed = set(torch.nonzero(torch.isfinite(scores[0])).flatten().tolist())
    assert allowed == {p[i + 1] for i in range(len(p) - 1) if p[i] == p[2]} | {tokenizer.sep_token_id}


def test_answers_vary_questions_deterministic(tokenizer) -> None:
    model = UniLMSeq2Seq(tiny_bert(tokenizer.vocab_size, seed=6), tokenizer)
    gen = QAPairGenerator(model)
    g = torch.Generator().manual_seed(1)
    pairs = [gen.generate(PASSAGE, num_pairs=1, generator=g, max_a=4, max_q=6)[0] for _ in range(6)]
    assert len({a for _, a in pairs}) > 1
    q1 = gen.generate_question(PASSAGE, "天气", question_beam=2, max_q=6)
    q2 = gen.generate_question(PASSAGE, "天气", question_beam=2, max_q=6)
    assert q1 == q2
    out = gen.generate(PASSAGE, num_pairs=3, generator=g, max_a=4, max_q=6)
    assert len(out) == 3 and all(isinstance(q, str) and isinstance(a, str) for q, a in out)
