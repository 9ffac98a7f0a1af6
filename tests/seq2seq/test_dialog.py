"""DialogueLMCollator / DialogueLM: segments, labels, truncation, causality, reply segment, respond."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainwell.seq2seq import DialogueLM, DialogueLMCollator

from .conftest import tiny_bert, tiny_gpt2

DIALOGUE = ["你好", "你好吗", "我很好", "今天天气"]


def test_segments_and_labels(tokenizer) -> None:
    col = DialogueLMCollator(tokenizer, max_len=64)
    b = col([DIALOGUE, DIALOGUE[:2]])
    ids, tt, am, lab = b["input_ids"], b["token_type_ids"], b["attention_mask"], b["labels"]
    sep = tokenizer.sep_token_id
    row, seg = ids[0][am[0].bool()].tolist(), tt[0][am[0].bool()].tolist()
    assert row[0] == tokenizer.cls_token_id and seg[0] == 0
    k, expect = 0, [0]
    for u in DIALOGUE:
        n = len(tokenizer.encode(u, add_special_tokens=False))
        expect += [k % 2] * (n + 1)
        k += 1
    assert seg == expect
    for pos in [i for i, t in enumerate(row) if t == sep]:
        assert seg[pos] == seg[pos - 1]  # every [SEP] carries its utterance's segment
    for i in range(2):
        assert int((lab[i] != -100).sum()) == int(am[i].sum()) - 1
    resp = DialogueLMCollator(tokenizer, max_len=64, loss_on="responses")([DIALOGUE])["labels"][0]
    first = len(tokenizer.encode(DIALOGUE[0], add_special_tokens=False)) + 1
    assert (resp[: 1 + first] == -100).all() and torch.equal(resp[1 + first :], lab[0][1 + first : len(resp)])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=6), st.integers(2, 20))
def test_truncation_keeps_whole_utterances(lengths, max_len) -> None:
    tok = _TOK["t"]
    dialogue = [[7] * n for n in lengths]
    ids, _types, _ = DialogueLMCollator(tok, max_len=max_len).encode(dialogue)
    assert len(ids) <= max_len
    kept = ids.count(tok.sep_token_id)
    assert len(ids) == 1 + sum(n + 1 for n in lengths[:kept])
    if kept < len(dialogue):
        assert len(ids) + lengths[kept] + 1 > max_len


_TOK: dict = {}


@pytest.fixture(autouse=True)
def _share_tokenizer(tokenizer) -> None:
    _TOK["t"] = tokenizer


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_causality(tokenizer, kind: str) -> None:
    v = tokenizer.vocab_size
    model = DialogueLM(tiny_gpt2(v) if kind == "gpt2" else tiny_bert(v), tokenizer).eval()
    if model.speaker is not None:
        torch.nn.init.normal_(model.speaker.weight)
    b = DialogueLMCollator(tokenizer)([DIALOGUE])
    base = model(**b).logits
    t = b["input_ids"].shape[1]
    for j in (3, t // 2, t - 1):
        x = b["input_ids"].clone()
        x[0, j] = (x[0, j] + 11) % v
        out = model(x, b["attention_mask"], b["token_type_ids"]).logits
        assert torch.allclose(out[:, :j], base[:, :j], atol=1e-6) and not torch.allclose(
            out[:, j:], base[:, j:]
        )
    assert model.bidirectional == (kind == "bert")


@pytest.mark.parametrize("n", [1, 2, 3])
def test_reply_segment(tokenizer, n: int) -> None:
    model = DialogueLM(tiny_gpt2(tokenizer.vocab_size), tokenizer)
    _ids, types, seg = model.prompt(DIALOGUE[:n])
    assert types[-1] == (n - 1) % 2 and seg == n % 2 == 1 - types[-1]


def test_respond_stops_and_top1_is_deterministic(tokenizer) -> None:
    model = DialogueLM(tiny_bert(tokenizer.vocab_size, seed=3), tokenizer)
    a = model.respond(DIALOGUE[:2], top_k=1, max_new_tokens=5)
    b = model.respond(DIALOGUE[:2], top_k=1, max_new_tokens=5)
    assert a == b and len(tokenizer.encode(a, add_special_tokens=False)) <= 5
    # a model that always says [SEP] answers with an empty reply after one step
    with torch.no_grad():
        model.model.cls.predictions.decoder.bias[tokenizer.sep_token_id] = 1e4
        if getattr(model.model.cls.predictions, "bias", None) is not None:
            model.model.cls.predictions.bias[tokenizer.sep_token_id] = 1e4
    assert model.respond(DIALOGUE[:2]) == ""
    replies = {
        DialogueLM(tiny_gpt2(tokenizer.vocab_size), tokenizer).respond(
            DIALOGUE[:1], top_k=5, max_new_tokens=6, generator=torch.Generator().manual_seed(s)
        )
        for s in range(6)
    }
    assert len(replies) > 1  # sampling gives different replies to the same history


def test_training_step_and_errors(tokenizer) -> None:
    model = DialogueLM(tiny_gpt2(tokenizer.vocab_size), tokenizer)
    b = DialogueLMCollator(tokenizer)([DIALOGUE, DIALOGUE[1:]])
    loss = model(**b).loss
    loss.backward()
    assert model.speaker is not None and model.speaker.weight.grad is not None
    with pytest.raises(ValueError, match="'loss_on'"):
        DialogueLMCollator(tokenizer, loss_on="replies")
    with pytest.raises(TypeError, match="'history'"):
        model.respond("just a string")


def test_bert_causal_mask_is_unilm_mask_with_all_ones_segments() -> None:
    from trainwell.nn.masks import causal_mask, unilm_mask

    am = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    assert torch.equal(causal_mask(attention_mask=am), unilm_mask(torch.ones_like(am), am))
