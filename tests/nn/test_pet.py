"""PET (models.md §4.6): pattern building, label scores, collator masking, few/zero-shot on a tiny MLM."""

from __future__ import annotations

import math

import pytest
import torch

from trainwell.nn import Pattern, PETClassifier, PETCollator, Verbalizer, mlm_loss, pet_log_scores

transformers = pytest.importorskip("transformers")

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CHARS = list("很不满意好差太挺体育财经新闻下面报导一则。，的书店服务质量价格便宜贵快慢送货")
WORDS = ["it", "was", ".", "good", "bad", "great", "movie", "the", "not"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vocab")
    path = folder / "vocab.txt"
    path.write_text("\n".join(SPECIAL + CHARS + WORDS) + "\n", encoding="utf-8")
    return transformers.BertTokenizerFast.from_pretrained(str(folder))


def _mlm(vocab_size: int, seed: int = 0, layers: int = 2):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers,
                                  num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.BertForMaskedLM(cfg).eval()


def test_pattern_places_masks_after_cls(tok) -> None:
    p = Pattern("____满意。{text}", mask_token="____")
    ids, pos = p.build(tok, "服务很好", n_masks=1)
    toks = tok.convert_ids_to_tokens(ids)
    assert toks == ["[CLS]", "[MASK]", "满", "意", "。", "服", "务", "很", "好", "[SEP]"]
    assert pos == [1]
    ids, pos = p.build(tok, "服务很好", n_masks=2)
    assert pos == [1, 2] and [ids[i] for i in pos] == [tok.mask_token_id] * 2
    # slot after the text, English words
    q = Pattern("{text} it was [MASK].")
    ids, pos = q.build(tok, "the movie", n_masks=1)
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "the", "movie", "it", "was", "[MASK]", ".", "[SEP]"]
    assert pos == [5]
    # truncation keeps the pattern and the slot
    ids, pos = p.build(tok, "很" * 50, n_masks=1, max_length=12)
    assert len(ids) == 12 and ids[pos[0]] == tok.mask_token_id and ids[-1] == tok.sep_token_id


def test_pattern_errors(tok) -> None:
    with pytest.raises(ValueError, match=r"Pattern.*mask slot"):
        Pattern("满意。{text}")
    with pytest.raises(ValueError, match=r"Pattern.*.\{text\}."):
        Pattern("[MASK]满意。")
    with pytest.raises(TypeError, match=r"Pattern.*'template'"):
        Pattern(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"max_length"):
        Pattern("下面报导一则[MASK]新闻。{text}").build(tok, "x", n_masks=2, max_length=5)


def test_verbalizer_tokens_and_errors(tok) -> None:
    v = Verbalizer({"sports": "体育", "finance": ["财经"]})
    ids = v.token_ids(tok)
    assert ids == [[tok.convert_tokens_to_ids(["体", "育"])], [tok.convert_tokens_to_ids(["财", "经"])]]
    with pytest.raises(ValueError, match=r"'火箭'.*not in the tokenizer's vocabulary"):
        Verbalizer({0: "火箭", 1: "体育"}).token_ids(tok)
    with pytest.raises(ValueError, match=r"same token length"):
        Verbalizer({0: "很", 1: "体育"}).token_ids(tok)
    with pytest.raises(TypeError, match=r"Verbalizer"):
        Verbalizer([("a", "b")])  # type: ignore[arg-type]


def _manual_scores(model, tok, pattern, words: dict, texts: list[str]) -> torch.Tensor:
    """Independent float64 computation: Σ_j log_softmax(logits)[m_j, v_j], logsumexp over a label's words."""
    out = []
    for t in texts:
        w0 = next(iter(words.values()))
        L = len(tok.encode(w0 if isinstance(w0, str) else w0[0], add_special_tokens=False))
        ids, pos = pattern.build(tok, t, n_masks=L)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
        lp = logits - torch.logsumexp(logits, -1, keepdim=True)
        row = []
        for ws in words.values():
            ws = [ws] if isinstance(ws, str) else ws
            per = [
                sum(float(lp[m, v]) for m, v in zip(pos, tok.encode(w, add_special_tokens=False))) for w in ws
            ]
            row.append(math.log(sum(math.exp(s) for s in per)))
        out.append(row)
    return torch.tensor(out, dtype=torch.float64)


def test_score_equals_manual_log_prob_sum_single_and_multi_token(tok) -> None:
    model = _mlm(len(tok))
    texts = ["服务很好", "价格太贵了", "送货快"]
    for pattern, words in [
        (Pattern("____满意。{text}", mask_token="____"), {1: "很", 0: "不"}),
        (Pattern("下面报导一则[MASK]新闻。{text}"), {"sports": "体育", "finance": "财经", "news": "新闻"}),
        (Pattern("[MASK]满意。{text}"), {1: ["很", "挺", "太"], 0: "不"}),
    ]:
        clf = PETClassifier(model, tok, pattern, Verbalizer(words))
        got = clf.score(texts)
        want = _manual_scores(model, tok, pattern, words, texts)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
        if all(isinstance(w, str) for w in words.values()):
            # exp of the log score is the product of the slot probabilities; same argmax either way
            probs = []
            for t in texts:
                L = len(tok.encode(next(iter(words.values())), add_special_tokens=False))
                ids, pos = pattern.build(tok, t, n_masks=L)
                with torch.no_grad():
                    pr = torch.softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
                probs.append(
                    [
                        math.prod(
                            float(pr[m, v]) for m, v in zip(pos, tok.encode(w, add_special_tokens=False))
                        )
                        for w in words.values()
                    ]
                )
            prod = torch.tensor(probs, dtype=torch.float64)
            torch.testing.assert_close(got.double().exp(), prod, rtol=1e-4, atol=1e-12)
            assert torch.equal(prod.argmax(-1), got.argmax(-1))
        pp = clf.predict_proba(texts)
        torch.testing.assert_close(pp, torch.softmax(got, -1))
        torch.testing.assert_close(pp.sum(-1), torch.ones(len(texts)))
        assert clf.predict(texts) == [list(words)[i] for i in got.argmax(-1).tolist()]


def test_adding_an_unrelated_label_only_adds_a_column(tok) -> None:
    model = _mlm(len(tok), seed=1)
    pattern = Pattern("[MASK]满意。{text}")
    texts = ["服务很好", "价格太贵了"]
    a = PETClassifier(model, tok, pattern, Verbalizer({1: "很", 0: "不"})).score(texts)
    b = PETClassifier(model, tok, pattern, Verbalizer({1: "很", 0: "不", 2: "挺"})).score(texts)
    assert b.shape == (2, 3)
    torch.testing.assert_close(b[:, :2], a, rtol=0, atol=1e-6)


def test_pet_log_scores_direct() -> None:
    torch.manual_seed(0)
    lp = torch.log_softmax(torch.randn(2, 5, 7, dtype=torch.float64), -1)
    pos = torch.tensor([[1, 2], [3, 4]])
    words = [[[0, 1]], [[2, 3], [4, 5]]]
    got = pet_log_scores(lp, pos, words)
    for b in range(2):
        want0 = lp[b, pos[b, 0], 0] + lp[b, pos[b, 1], 1]
        want1 = torch.logaddexp(
            lp[b, pos[b, 0], 2] + lp[b, pos[b, 1], 3], lp[b, pos[b, 0], 4] + lp[b, pos[b, 1], 5]
        )
        torch.testing.assert_close(got[b], torch.stack([want0, want1]))


def test_max_first_equals_parallel_for_single_token_and_manual_for_two(tok) -> None:
    model = _mlm(len(tok), seed=2)
    texts = ["服务很好", "价格太贵了"]
    p1 = Pattern("[MASK]满意。{text}")
    v1 = Verbalizer({1: "很", 0: "不"})
    par = PETClassifier(model, tok, p1, v1).score(texts)
    mf = PETClassifier(model, tok, p1, v1, mode="max_first").score(texts)
    torch.testing.assert_close(mf, par)
    # two tokens: fill the more confident slot first, re-run, add the other slot's log-prob
    p2 = Pattern("下面报导一则[MASK]新闻。{text}")
    v2 = Verbalizer({"sports": "体育", "finance": "财经"})
    got = PETClassifier(model, tok, p2, v2, mode="max_first").score(texts)
    for i, t in enumerate(texts):
        ids, pos = p2.build(tok, t, n_masks=2)
        for c, w in enumerate(["体育", "财经"]):
            wt = tok.encode(w, add_special_tokens=False)
            with torch.no_grad():
                lp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
            s = [float(lp[pos[j], wt[j]]) for j in range(2)]
            first = max(range(2), key=lambda j: s[j])
            filled = list(ids)
            filled[pos[first]] = wt[first]
            with torch.no_grad():
                lp2 = torch.log_softmax(model(input_ids=torch.tensor([filled])).logits[0].double(), -1)
            other = 1 - first
            want = s[first] + float(lp2[pos[other], wt[other]])
            assert float(got[i, c]) == pytest.approx(want, abs=1e-4)


def test_collator_slots_targets_and_unlabelled(tok) -> None:
    pattern = Pattern("[MASK]满意。{text}")
    v = Verbalizer({"pos": "很", "neg": "不"})
    col = PETCollator(tok, pattern, v)
    batch = col([("服务好", "pos"), {"text": "价格太贵了", "label": "neg"}])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    ids, lab = batch["input_ids"], batch["labels"]
    assert ids[0, 1] == tok.mask_token_id and ids[1, 1] == tok.mask_token_id
    assert lab[0, 1] == tok.convert_tokens_to_ids("很") and lab[1, 1] == tok.convert_tokens_to_ids("不")
    keep = torch.ones_like(lab, dtype=torch.bool)
    keep[:, 1] = False
    assert bool((lab[keep] == -100).all())  # -100 outside the slot
    assert batch["attention_mask"][0].tolist() == [1] * 9 + [0] * 2 and ids[0, 9:].tolist() == [0, 0]
    with pytest.raises(ValueError, match=r"mlm_probability > 0"):
        col([("服务好", None)])
    with pytest.raises(ValueError, match=r"Verbalizer.index.*'label'"):
        col([("服务好", "maybe")])
    # with the auxiliary objective: unlabelled text has no pattern and no slot
    col2 = PETCollator(tok, pattern, v, mlm_probability=0.15, generator=torch.Generator().manual_seed(0))
    b2 = col2([("服务好", None), ("服务好", "pos")])
    raw = torch.tensor(tok("服务好")["input_ids"])  # [CLS] 服 务 好 [SEP]: no pattern, no slot
    n = len(raw)
    assert int(b2["attention_mask"][0].sum()) == n
    untouched = b2["labels"][0, :n] == -100
    assert torch.equal(b2["input_ids"][0, :n][untouched], raw[untouched])
    assert bool((b2["labels"][0, :n][~untouched] == raw[~untouched]).all())
    assert b2["input_ids"][1, 1] == tok.mask_token_id and b2["labels"][1, 1] == tok.convert_tokens_to_ids(
        "很"
    )


def test_collator_masking_rates(tok) -> None:
    pattern = Pattern("[MASK]满意。{text}")
    v = Verbalizer({1: "很", 0: "不"})
    gen = torch.Generator().manual_seed(0)
    col = PETCollator(tok, pattern, v, mlm_probability=0.15, max_length=64, generator=gen)
    rng = torch.Generator().manual_seed(1)
    body = [c for c in CHARS if c not in "很不"]
    texts = [
        "".join(body[i] for i in torch.randint(len(body), (60,), generator=rng).tolist()) for _ in range(1800)
    ]
    n_eligible = n_chosen = n_mask = n_same = n_rand = 0
    for k in range(0, len(texts), 200):
        chunk = texts[k : k + 200]
        batch = col([(t, 1) for t in chunk])
        clean = torch.tensor([pattern.build(tok, t, 1, 64)[0] for t in chunk])
        ids, lab = batch["input_ids"], batch["labels"]
        assert bool((ids[:, 1] == tok.mask_token_id).all())  # the slot is always masked
        assert bool((lab[:, 1] == tok.convert_tokens_to_ids("很")).all())
        eligible = torch.ones_like(ids, dtype=torch.bool)
        eligible[:, [0, 1, -1]] = False  # [CLS], slot, [SEP]
        chosen = (lab != -100) & eligible
        assert bool((lab[chosen] == clean[chosen]).all())  # targets are the original tokens
        n_eligible += int(eligible.sum())
        n_chosen += int(chosen.sum())
        n_mask += int((ids[chosen] == tok.mask_token_id).sum())
        n_same += int((ids[chosen] == clean[chosen]).sum())
        n_rand += int(((ids[chosen] != clean[chosen]) & (ids[chosen] != tok.mask_token_id)).sum())
        assert bool((ids[eligible & ~chosen] == clean[eligible & ~chosen]).all())
    assert n_eligible >= 100_000
    assert abs(n_chosen / n_eligible - 0.15) < 0.01
    # a random replacement may draw the original token (1 in |V|): count it with "kept"
    assert abs(n_mask / n_chosen - 0.8) < 0.02
    assert abs(n_same / n_chosen - 0.1) < 0.02 and abs(n_rand / n_chosen - 0.1) < 0.02


def test_mismatched_tokenizer_and_bad_arguments(tok) -> None:
    small = _mlm(len(tok) - 5)
    with pytest.raises(ValueError, match=r"tokenizer does not match the model"):
        PETClassifier(small, tok, Pattern("[MASK]满意。{text}"), Verbalizer({1: "很", 0: "不"}))
    model = _mlm(len(tok))
    clf = PETClassifier(model, tok, Pattern("[MASK]满意。{text}"), Verbalizer({1: "很", 0: "不"}))
    with pytest.raises(TypeError, match=r"'texts'"):
        clf.score("服务很好")
    with pytest.raises(ValueError, match=r"'mode'"):
        PETClassifier(
            model, tok, Pattern("[MASK]满意。{text}"), Verbalizer({1: "很", 0: "不"}), mode="greedy"
        )
    with pytest.raises(ValueError, match=r"'labels'"):
        clf.fit(["a", "b"], [1])
    with pytest.raises(ValueError, match=r"mlm_probability"):
        clf.fit(["服务好"], [1], unlabeled=["价格贵"])


def test_mlm_loss_ignores_unlabelled_positions() -> None:
    logits = torch.randn(2, 3, 5, dtype=torch.float64)
    labels = torch.tensor([[-100, 2, -100], [4, -100, -100]])
    want = -(torch.log_softmax(logits[0, 1], -1)[2] + torch.log_softmax(logits[1, 0], -1)[4]) / 2
    torch.testing.assert_close(mlm_loss(logits, labels), want.float(), rtol=1e-6, atol=1e-6)
    assert float(mlm_loss(logits, torch.full((2, 3), -100))) == 0.0


def test_few_shot_fit_learns_the_cloze(tok) -> None:
    model = _mlm(len(tok), seed=3)
    clf = PETClassifier(model, tok, Pattern("[MASK]满意。{text}"), Verbalizer({"pos": "很", "neg": "不"}))
    texts = ["服务好", "质量好", "价格便宜", "送货快", "服务差", "质量差", "价格贵", "送货慢"]
    labels = ["pos"] * 4 + ["neg"] * 4
    clf.fit(texts, labels, epochs=40, batch_size=8, lr=3e-3, generator=torch.Generator().manual_seed(0))
    assert clf.predict(texts) == labels
    assert not model.training
    # the auxiliary MLM objective with unlabelled text runs too
    clf.fit(texts, labels, unlabeled=["书店的服务"], epochs=1, lr=1e-4, mlm_probability=0.15)


@pytest.mark.slow
def test_zero_shot_from_mlm_pretraining_only(tok) -> None:
    """A tiny MLM, pretrained where a cue co-occurs with 很/不 before 满意, classifies by pattern alone."""
    pos_cues, neg_cues = ["好", "便宜", "快"], ["差", "贵", "慢"]
    subj = ["服务", "质量", "价格", "送货", "书店"]
    g = torch.Generator().manual_seed(0)

    def pick(xs: list[str]) -> str:
        return xs[int(torch.randint(len(xs), (1,), generator=g))]

    corpus = []
    for _ in range(1200):
        label = int(torch.randint(2, (1,), generator=g))
        cue = pick(pos_cues if label else neg_cues)
        corpus.append(("很" if label else "不") + "满意。" + pick(subj) + cue)
    model = _mlm(len(tok), seed=4).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    mask_id = tok.mask_token_id
    for _ in range(300):
        batch = tok(
            [corpus[int(i)] for i in torch.randint(len(corpus), (32,), generator=g)],
            return_tensors="pt",
            padding=True,
        )
        ids = batch["input_ids"].clone()
        special = (ids == tok.cls_token_id) | (ids == tok.sep_token_id) | (ids == tok.pad_token_id)
        chosen = (torch.rand(ids.shape, generator=g) < 0.15) & ~special
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        ids[chosen] = mask_id
        loss = model(input_ids=ids, attention_mask=batch["attention_mask"], labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    clf = PETClassifier(model.eval(), tok, Pattern("[MASK]满意。{text}"), Verbalizer({1: "很", 0: "不"}))
    test = [(s + c, 1) for s in subj for c in pos_cues] + [(s + c, 0) for s in subj for c in neg_cues]
    pred = clf.predict([t for t, _ in test])
    acc = sum(int(p == y) for p, (_, y) in zip(pred, test)) / len(test)
    assert acc > 0.9


def test_other_masked_lm_architecture(tok) -> None:
    """Any ``*ForMaskedLM`` works: DistilBERT, scored against the manual log-prob sum."""
    torch.manual_seed(5)
    cfg = transformers.DistilBertConfig(vocab_size=len(tok), dim=32, n_layers=1, n_heads=4, hidden_dim=64,
                                        max_position_embeddings=64, dropout=0.0, attention_dropout=0.0)
    model = transformers.DistilBertForMaskedLM(cfg).eval()
    pattern, words = Pattern("[MASK]满意。{text}"), {1: "很", 0: "不"}
    got = PETClassifier(model, tok, pattern, Verbalizer(words)).score(["服务很好", "价格太贵了"])
    torch.testing.assert_close(
        got.double(),
        _manual_scores(model, tok, pattern, words, ["服务很好", "价格太贵了"]),
        rtol=1e-5,
        atol=1e-5,
    )
