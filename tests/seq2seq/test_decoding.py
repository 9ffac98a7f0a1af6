"""generate / greedy_search / beam_search / sample: equivalences, exhaustive search, KV cache, stops,
errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor

from trainwell.seq2seq import beam_search, generate, greedy_search, sample

from .conftest import tiny_gpt2


class TableLM:
    """Next-token log-probs from a fixed table indexed by (step, last token): an LM we can search
    exhaustively."""

    def __init__(self, vocab: int = 4, steps: int = 4, prompt_len: int = 2, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(steps + 1, vocab, vocab, generator=g, dtype=torch.float64) * 2
        self.prompt_len = prompt_len
        self.calls = 0

    def __call__(self, ids: Tensor) -> Tensor:
        self.calls += 1
        step = ids.shape[1] - self.prompt_len
        return self.table[step, ids[:, -1]].float()

    def logp(self, prompt_last: int, seq: tuple[int, ...]) -> float:
        total, last = 0.0, prompt_last
        for step, tok in enumerate(seq):
            total += float(torch.log_softmax(self.table[step, last].float().double(), -1)[tok])
            last = tok
        return total


def test_greedy_matches_argmax_loop() -> None:
    lm = TableLM()
    ids = torch.tensor([[0, 1], [2, 3]])
    out = greedy_search(lm, ids, max_new_tokens=4)
    ref = ids.clone()
    for _ in range(4):
        ref = torch.cat([ref, lm(ref).argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("eos", [None, 3])
def test_beam_one_equals_greedy_and_topk1_sampling_equals_greedy(eos: int | None) -> None:
    lm = TableLM(vocab=6, steps=8, seed=1)
    ids = torch.randint(0, 6, (5, 2), generator=torch.Generator().manual_seed(0))
    g = greedy_search(lm, ids, max_new_tokens=8, eos_token_id=eos, pad_token_id=0)
    b = beam_search(lm, ids, num_beams=1, max_new_tokens=8, eos_token_id=eos, pad_token_id=0)
    s = sample(lm, ids, max_new_tokens=8, top_k=1, eos_token_id=eos, pad_token_id=0,
               generator=torch.Generator().manual_seed(5))
    tiny_p = sample(lm, ids, max_new_tokens=8, top_p=1e-6, eos_token_id=eos, pad_token_id=0)
    assert torch.equal(g, b) and torch.equal(g, s) and torch.equal(g, tiny_p)


@pytest.mark.parametrize("length_penalty", [1.0, 0.0])
def test_exhaustive_beam_finds_the_argmax_sequence(length_penalty: float) -> None:
    vocab, steps = 3, 3
    lm = TableLM(vocab=vocab, steps=steps, seed=2)
    prompt = torch.tensor([[1, 2]])
    eos = 0
    out = beam_search(lm, prompt, num_beams=vocab**steps, max_new_tokens=steps, eos_token_id=eos,
                      pad_token_id=eos, length_penalty=length_penalty)
    # brute force: every sequence that stops at its first end token or runs to max length
    best, best_seq = -math.inf, None
    for n in range(1, steps + 1):
        for seq in itertools.product(range(vocab), repeat=n):
            if eos in seq[:-1] or (n < steps and seq[-1] != eos):
                continue
            score = lm.logp(2, seq) / (n**length_penalty)
            if score > best:
                best, best_seq = score, seq
    assert best_seq is not None
    assert out[0, 2:].tolist()[: len(best_seq)] == list(best_seq)


def test_beam_search_is_batched_row_independent() -> None:
    lm = TableLM(vocab=7, steps=6, seed=3)
    ids = torch.randint(0, 7, (4, 2), generator=torch.Generator().manual_seed(1))
    together = beam_search(lm, ids, num_beams=3, max_new_tokens=6, eos_token_id=2, pad_token_id=6)
    for i in range(4):
        alone = beam_search(lm, ids[i : i + 1], num_beams=3, max_new_tokens=6, eos_token_id=2, pad_token_id=6)
        n = alone.shape[1]
        assert together[i, :n].tolist() == alone[0].tolist()
        assert (together[i, n:] == 6).all()


def test_early_stop_and_padding() -> None:
    calls = {"n": 0}

    def fn(ids: Tensor) -> Tensor:
        calls["n"] += 1
        logits = torch.zeros(ids.shape[0], 5)
        step = ids.shape[1] - 1
        # batch row r ends (token 4) from step r on; before that it says 1 (beams: rows b*K..b*K+K-1)
        ends = torch.arange(ids.shape[0]) // (ids.shape[0] // 3) <= step
        logits[ends, 4] = 5.0
        logits[~ends, 1] = 5.0
        return logits

    out = greedy_search(
        fn, torch.zeros(3, 1, dtype=torch.long), max_new_tokens=10, eos_token_id=4, pad_token_id=0
    )
    assert calls["n"] == 3 and out.shape == (3, 4)
    assert out[:, 1:].tolist() == [[4, 0, 0], [1, 4, 0], [1, 1, 4]]
    calls["n"] = 0
    out = beam_search(
        fn,
        torch.zeros(3, 1, dtype=torch.long),
        num_beams=2,
        max_new_tokens=10,
        eos_token_id=4,
        pad_token_id=0,
    )
    # the last row's two hypotheses end at steps 3 and 4: decoding stops there, not at max_new_tokens
    assert calls["n"] == 4 and out[:, 1:].tolist() == [[4, 0, 0], [1, 4, 0], [1, 1, 4]]


def test_logits_processor_hf_signature() -> None:
    lm = TableLM(vocab=5, steps=5)
    seen = []

    def forbid_three(input_ids: Tensor, scores: Tensor) -> Tensor:
        seen.append((tuple(input_ids.shape), tuple(scores.shape)))
        scores = scores.clone()
        scores[:, 3] = -float("inf")
        return scores

    ids = torch.tensor([[0, 3], [1, 2]])
    for kw in ({}, {"num_beams": 2}, {"do_sample": True, "top_k": 3}):
        seen.clear()
        out = generate(lm, ids, max_new_tokens=5, logits_processor=forbid_three, **kw)
        assert not (out[:, 2:] == 3).any()
        rows = 2 * kw.get("num_beams", 1)
        assert seen[0] == ((rows, 2), (rows, 5)) and seen[-1][0][1] == 2 + len(seen) - 1


def test_sampling_is_reproducible_and_respects_top_k() -> None:
    lm = TableLM(vocab=8, steps=6, seed=4)
    ids = torch.zeros(64, 2, dtype=torch.long)
    a = sample(lm, ids, max_new_tokens=6, top_k=2, generator=torch.Generator().manual_seed(0))
    b = sample(lm, ids, max_new_tokens=6, top_k=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and len({tuple(r) for r in a.tolist()}) > 1
    # the first new token is one of the two most likely ones
    top2 = set(torch.topk(lm.table[0, 0], 2).indices.tolist())
    assert set(a[:, 2].tolist()) <= top2


def test_hf_model_kv_cache_equals_recompute_and_transformers() -> None:
    model = tiny_gpt2(vocab_size=40, eos=1)
    with torch.no_grad():
        model.transformer.wte.weight[1] *= 5  # make the end token likely so rows end at different steps
    ids = torch.randint(2, 40, (3, 4), generator=torch.Generator().manual_seed(0))

    def recompute(x: Tensor) -> Tensor:
        return model(x).logits[:, -1]

    for nb in (1, 3):
        cached = generate(model, ids, max_new_tokens=12, num_beams=nb, eos_token_id=1, pad_token_id=1)
        plain = generate(recompute, ids, max_new_tokens=12, num_beams=nb, eos_token_id=1, pad_token_id=1)
        nocache = generate(
            model, ids, max_new_tokens=12, num_beams=nb, eos_token_id=1, pad_token_id=1, use_cache=False
        )
        hf = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=12,
            num_beams=nb,
            do_sample=False,
            eos_token_id=1,
            pad_token_id=1,
        )
        assert torch.equal(cached, plain) and torch.equal(cached, nocache)
        assert torch.equal(cached, hf)


def test_errors_name_the_argument() -> None:
    lm = TableLM()
    ids = torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(TypeError, match=r"generate\(\).*'input_ids'"):
        generate(lm, ids.float(), max_new_tokens=2)
    with pytest.raises(ValueError, match="'num_beams'"):
        generate(lm, ids, max_new_tokens=2, num_beams=0)
    with pytest.raises(ValueError, match="'num_beams'"):
        generate(lm, ids, max_new_tokens=2, num_beams=2, do_sample=True)
    with pytest.raises(ValueError, match="'top_p'"):
        generate(lm, ids, max_new_tokens=2, do_sample=True, top_p=1.5)
    with pytest.raises(TypeError, match="'model_or_fn'"):
        generate(lambda x: x, ids, max_new_tokens=2)
    with pytest.raises(TypeError, match="keyword"):
        generate(lm, ids, max_new_tokens=2, attention_mask=torch.ones_like(ids))
    assert torch.equal(generate(lm, ids, max_new_tokens=0), ids)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extreme_and_low_precision_logits(dtype: torch.dtype) -> None:
    table = (torch.randn(5, 5, generator=torch.Generator().manual_seed(0)) * 1e4).to(dtype)

    def fn(ids: Tensor) -> Tensor:
        return table[ids[:, -1]]

    ids = torch.tensor([[0], [1], [2]])
    g = greedy_search(fn, ids, max_new_tokens=6)
    assert torch.equal(g, beam_search(fn, ids, num_beams=1, max_new_tokens=6))
    b = beam_search(fn, ids, num_beams=3, max_new_tokens=6)
    s = sample(
        fn, ids, max_new_tokens=6, top_p=0.9, temperature=0.5, generator=torch.Generator().manual_seed(0)
    )
    for out in (g, b, s):
        assert out.shape == (3, 7) and int(out.min()) >= 0 and int(out.max()) < 5
    assert torch.equal(s, g)  # with gaps of ~1e4 the nucleus holds only the argmax


def test_left_padded_batch_matches_transformers_and_unpadded_rows() -> None:
    model = tiny_gpt2(vocab_size=40, eos=1)
    with torch.no_grad():
        model.transformer.wte.weight[1] *= 4
    ids = torch.randint(2, 40, (3, 6), generator=torch.Generator().manual_seed(0))
    am = torch.ones_like(ids)
    am[0, :2] = 0
    am[1, :4] = 0
    ids[am == 0] = 1
    for nb in (1, 3):
        ours = generate(
            model, ids, attention_mask=am, max_new_tokens=8, num_beams=nb, eos_token_id=1, pad_token_id=1
        )
        hf = model.generate(
            ids,
            attention_mask=am,
            max_new_tokens=8,
            num_beams=nb,
            do_sample=False,
            eos_token_id=1,
            pad_token_id=1,
        )
        assert torch.equal(ours, hf)
        for r in range(3):
            alone = generate(
                model,
                ids[r : r + 1, am[r].bool()],
                max_new_tokens=8,
                num_beams=nb,
                eos_token_id=1,
                pad_token_id=1,
            )
            n = alone.shape[1] - int(am[r].sum())
            assert alone[0, -n:].tolist() == ours[r, 6 : 6 + n].tolist()
