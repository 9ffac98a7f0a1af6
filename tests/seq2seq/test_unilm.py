"""UniLMSeq2Seq: §0.3 mask and loss properties, collator layout, decoding, own-encoder path, overfitting."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from trainwell.seq2seq import MathSolver, Seq2SeqCollator, UniLMSeq2Seq, shifted_lm_loss, unilm_labels

from .conftest import TinyEncoder, tiny_bert


def _batch(tokenizer, pairs):
    return Seq2SeqCollator(tokenizer)(pairs)


def test_collator_layout_and_loss_weights(tokenizer) -> None:
    b = _batch(tokenizer, [("1加2", "1+2"), ("12加345", "12+345")])
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    ids, tt, am, lab = b["input_ids"], b["token_type_ids"], b["attention_mask"], b["labels"]
    row = ids[0][am[0].bool()].tolist()
    src = tokenizer.encode("1加2", add_special_tokens=False)
    tgt = tokenizer.encode("1+2", add_special_tokens=False)
    assert row == [cls, *src, sep, *tgt, sep]
    assert tt[0][am[0].bool()].tolist() == [0] * (len(src) + 2) + [1] * (len(tgt) + 1)
    assert (ids[0][~am[0].bool()] == pad).all() and (lab[0][~am[0].bool()] == -100).all()
    # the weight vector counts every target token plus the final [SEP]; pads contribute nothing
    for i, (_s, t) in enumerate([("1加2", "1+2"), ("12加345", "12+345")]):
        n_tgt = len(tokenizer.encode(t, add_special_tokens=False)) + 1
        assert int((lab[i] != -100).sum()) == n_tgt
    assert torch.equal(unilm_labels(ids, tt, am), lab)


def test_loss_is_shifted_segment_masked_ce(tokenizer) -> None:
    model = UniLMSeq2Seq(tiny_bert(tokenizer.vocab_size), tokenizer)
    b = _batch(tokenizer, [("1加2", "1+2"), ("9减3", "9-3")])
    with torch.no_grad():
        out = model(**b)
    logits = out.logits.double()
    ids, tt, am = b["input_ids"], b["token_type_ids"], b["attention_mask"]
    num, den = 0.0, 0.0
    for i in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            w = float(tt[i, t + 1] * am[i, t + 1])
            num += w * float(F.cross_entropy(logits[i, t][None], ids[i, t + 1][None]))
            den += w
    assert out.loss is not None and abs(float(out.loss) - num / den) < 1e-5
    assert torch.allclose(model.loss({k: v for k, v in b.items() if k != "labels"}), out.loss)


@pytest.mark.parametrize("own", [False, True])
def test_mask_source_invariance_and_target_causality(tokenizer, own: bool) -> None:
    torch.manual_seed(0)
    enc = TinyEncoder(vocab=tokenizer.vocab_size).eval() if own else tiny_bert(tokenizer.vocab_size)
    model = UniLMSeq2Seq(enc).eval()
    b = _batch(tokenizer, [("12加34", "12+34")])
    ids, tt, am = b["input_ids"], b["token_type_ids"], b["attention_mask"]
    n_src = int((tt[0] == 0).sum())
    base = model(ids, am, tt).logits
    # the mask itself: source rows see no target column; target rows see all source + earlier targets
    m = model.attention_mask(tt, am, torch.float32)
    allowed = (m == 0) if m.dtype.is_floating_point else m
    allowed = allowed.reshape(1, ids.shape[1], ids.shape[1])[0]
    assert not allowed[:n_src, n_src:].any() and allowed[:n_src, :n_src].all()
    tgt = allowed[n_src:, n_src:]
    assert torch.equal(tgt, torch.ones_like(tgt).tril()) and allowed[n_src:, :n_src].all()
    for j in range(n_src, ids.shape[1]):
        changed = ids.clone()
        changed[0, j] = (changed[0, j] + 7) % tokenizer.vocab_size
        out = model(changed, am, tt).logits
        assert torch.equal(out[:, :n_src], base[:, :n_src])  # source positions bit-identical
        assert torch.equal(out[:, :j], base[:, :j])  # positions before j unchanged
        assert not torch.equal(out[:, j:], base[:, j:])


def test_generate_from_texts_matches_manual_greedy(tokenizer) -> None:
    model = UniLMSeq2Seq(tiny_bert(tokenizer.vocab_size, seed=1), tokenizer)
    sep = tokenizer.sep_token_id
    src = tokenizer.encode("3加4", add_special_tokens=False)
    ids = [tokenizer.cls_token_id, *src, sep]
    seq, types = list(ids), [0] * len(ids)
    new = []
    for _ in range(6):
        x = torch.tensor([seq])
        logits = model(x, torch.ones_like(x), torch.tensor([types])).logits[0, -1]
        tok = int(logits.argmax())
        if tok == sep:
            break
        new.append(tok)
        seq.append(tok)
        types.append(1)
    got = model.generate_ids([ids], eos_token_id=sep, pad_token_id=tokenizer.pad_token_id, max_new_tokens=6)
    assert got == [new]
    # batched with left padding gives the same as one by one
    texts = ["3加4", "12减5", "7"]
    together = model.generate(texts, max_new_tokens=6)
    alone = [model.generate([t], max_new_tokens=6)[0] for t in texts]
    assert together == alone
    b1 = model.generate(texts, max_new_tokens=6, num_beams=1)
    assert b1 == together


def test_errors(tokenizer) -> None:
    model = UniLMSeq2Seq(tiny_bert(tokenizer.vocab_size))
    ids = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="token_type_ids"):
        model(ids)
    with pytest.raises(ValueError, match="token_type_ids"):
        model(ids, None, torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="UniLMSeq2Seq"):
        UniLMSeq2Seq("not a module")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tokenizer"):
        model.generate(["1加2"])
    with pytest.raises(ValueError, match="labels"):
        shifted_lm_loss(torch.zeros(1, 4, 5), torch.zeros(1, 3, dtype=torch.long))


def _problems(n: int, seed: int) -> list[tuple[str, str, int]]:
    rng = random.Random(seed)
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < n:
        pairs.add((rng.randint(1, 99), rng.randint(1, 99)))
    return [(f"{a}加{b}", f"{a}+{b}", a + b) for a, b in sorted(pairs)]


@pytest.mark.slow
def test_tiny_model_overfits_20_problems(tokenizer) -> None:
    torch.manual_seed(0)
    model = UniLMSeq2Seq(tiny_bert(tokenizer.vocab_size, seed=0, layers=2, hidden=64), tokenizer)
    data = _problems(20, 0)
    batch = Seq2SeqCollator(tokenizer)([(q, e) for q, e, _ in data])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(300):
        loss = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if float(loss.detach()) < 1e-3:
            break
    solver = MathSolver(model, num_beams=1, max_new_tokens=12)
    results = solver.solve_batch([q for q, _, _ in data])
    correct = sum(v is not None and abs(float(v) - ans) < 1e-9 for (_, v), (_, _, ans) in zip(results, data))
    assert correct == 20, results
    beam = MathSolver(model, num_beams=3, max_new_tokens=12).solve(data[0][0])
    assert beam[0] == data[0][1] and beam[1] == data[0][2]


def test_cached_decoding_is_exact(tokenizer) -> None:
    """The key/value cache changes nothing: per-step logits match a full recompute, and greedy, beam and
    sampled outputs are identical with and without it (left padding, prompts that end in target tokens)."""
    from trainwell.seq2seq.unilm import UniLMCachedStep

    model = UniLMSeq2Seq(tiny_bert(tokenizer.vocab_size, seed=3), tokenizer).eval()
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    enc = [tokenizer.encode(t, add_special_tokens=False) for t in ("3加4", "12减57", "7")]
    prompts = [[cls, *e, sep] for e in enc]
    # the second prompt carries two target-segment tokens already (as question generation does)
    prompts[1] = [*prompts[1], enc[0][0], enc[0][1]]
    segments = [[0] * len(p) for p in prompts]
    segments[1][-2:] = [1, 1]
    ids, cached = model.next_token_fn(prompts, segments, pad, use_cache=True)
    _, plain = model.next_token_fn(prompts, segments, pad, use_cache=False)
    assert isinstance(cached, UniLMCachedStep) and not isinstance(plain, UniLMCachedStep)
    g = torch.Generator().manual_seed(0)
    x = ids
    with torch.no_grad():
        for _ in range(5):
            a, b = cached(x), plain(x)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
            x = torch.cat([x, torch.randint(5, tokenizer.vocab_size, (x.shape[0], 1), generator=g)], dim=1)
        assert cached.cache is not None and cached.cache.get_seq_length() == x.shape[1] - 1
        # a shorter input starts a new decode instead of reusing the cache
        torch.testing.assert_close(cached(ids), plain(ids), atol=1e-5, rtol=1e-5)
    kw = {"eos_token_id": sep, "pad_token_id": pad, "max_new_tokens": 8}
    for extra in ({}, {"num_beams": 3}, {"num_beams": 4, "length_penalty": 0.5}):
        on = model.generate_ids(prompts, segments, **kw, **extra)
        off = model.generate_ids(prompts, segments, use_cache=False, **kw, **extra)
        assert on == off, extra
    s_on = model.generate_ids(prompts, segments, do_sample=True, top_k=5,
                              generator=torch.Generator().manual_seed(1), **kw)
    s_off = model.generate_ids(prompts, segments, do_sample=True, top_k=5, use_cache=False,
                               generator=torch.Generator().manual_seed(1), **kw)
    assert s_on == s_off


def test_encoder_that_ignores_the_cache_falls_back(tokenizer) -> None:
    class NoCache(torch.nn.Module):
        """An HF-style encoder whose forward has no cache argument."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = tiny_bert(tokenizer.vocab_size, seed=2)
            self.config = self.inner.config

        def get_input_embeddings(self) -> torch.nn.Module:
            return self.inner.get_input_embeddings()

        def forward(self, input_ids, attention_mask, token_type_ids, position_ids=None):  # type: ignore[no-untyped-def]
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids, position_ids=position_ids)

    wrapped = UniLMSeq2Seq(NoCache(), tokenizer)
    direct = UniLMSeq2Seq(tiny_bert(tokenizer.vocab_size, seed=2), tokenizer)
    assert wrapped.hf
    texts = ["3加4", "12减5"]
    assert wrapped.generate(texts, max_new_tokens=6, num_beams=2) == direct.generate(texts, max_new_tokens=6,
                                                                                     num_beams=2)
