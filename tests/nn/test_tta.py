"""T-TA (models.md §2.6): self-invariance, zero gradient at i, non-triviality, the leak control,
one-pass loss, padding, length 1, HF-BERT weight reuse and argument errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainwell.nn import TTAEncoder, TTALayer, tta_from_bert


def _model(**kw: object) -> TTAEncoder:
    torch.manual_seed(0)
    args = {"vocab_size": 50, "hidden_size": 32, "num_layers": 2, "num_heads": 4, "max_position": 32,
            "dropout": 0.0}
    args.update(kw)
    m = TTAEncoder(**args).eval()  # type: ignore[arg-type]
    with torch.no_grad():  # larger weights than the 0.02 init so that every path matters
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return m


def _ids(b: int = 2, t: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, 50, (b, t), generator=torch.Generator().manual_seed(seed))


def test_self_invariance_is_bit_identical_at_every_position() -> None:
    m = _model()
    ids = _ids()
    with torch.no_grad():
        base = m(ids).logits
        for i in range(ids.shape[1]):
            for new in (1, 17, 49):
                x = ids.clone()
                x[:, i] = new
                out = m(x).logits
                assert torch.equal(out[:, i], base[:, i]), i
        # non-trivial: changing token i changes some other position
        x = ids.clone()
        x[:, 3] = (x[:, 3] % 48) + 1
        assert float((m(x).logits - base).abs().amax(-1)[:, [j for j in range(12) if j != 3]].max()) > 1e-4


def test_zero_gradient_of_hidden_i_wrt_embedding_output_i() -> None:
    m = _model()
    ids = _ids(b=1)
    e = m.word_embeddings(ids).detach().requires_grad_()
    out = m(ids, inputs_embeds=e)
    w = torch.randn(32)  # a LayerNorm output sums to a constant: project on a random direction
    for i in (0, 5, 11):
        (g,) = torch.autograd.grad((out.hidden_states[0, i] * w).sum(), e, retain_graph=True)
        assert torch.equal(g[0, i], torch.zeros_like(g[0, i]))
        assert float(g[0].abs().sum()) > 0


def test_negative_control_bert_style_kv_leaks() -> None:
    leak = _model(shared_kv=False)
    ids = _ids()
    with torch.no_grad():
        base = leak(ids).logits
        x = ids.clone()
        x[:, 4] = (x[:, 4] % 48) + 1
        assert float((leak(x).logits[:, 4] - base[:, 4]).abs().max()) > 1e-4
    # and without the self mask the token itself is visible in one layer already
    open_ = _model(self_mask=False, num_layers=1)
    with torch.no_grad():
        assert float((open_(x).logits[:, 4] - open_(ids).logits[:, 4]).abs().max()) > 1e-4


def test_loss_is_mean_ce_of_the_one_pass_and_pads_are_ignored() -> None:
    m = _model()
    ids = _ids()
    ids[1, 9:] = 0
    out = m(ids, labels=ids)
    keep = ids != 0
    ref = F.cross_entropy(out.logits[keep], ids[keep])
    torch.testing.assert_close(out.loss, ref)
    assert out.logits.shape == (2, 12, 50) and out.hidden_states.shape == (2, 12, 32)
    assert out["logits"] is out.logits and out.keys() == ["loss", "logits", "hidden_states"]
    out.loss.backward()
    assert m.word_embeddings.weight.grad is not None


def test_padding_invariance_and_length_one() -> None:
    m = _model()
    ids = _ids(b=1, t=7)
    with torch.no_grad():
        a = m(ids).logits
        padded = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], 1)
        b = m(padded).logits
        torch.testing.assert_close(b[:, :7], a, atol=1e-5, rtol=1e-5)
        one = m(ids[:, :1])
        assert torch.isfinite(one.logits).all()
        mask = torch.ones_like(padded)
        mask[:, 7:] = 0
        torch.testing.assert_close(m(padded, attention_mask=mask).logits, b)


def test_train_mode_dropout_and_bf16_autocast() -> None:
    m = _model(dropout=0.1).train()
    ids = _ids()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(ids, labels=ids)
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_layer_with_query_equal_kv_is_a_bert_layer_and_tta_from_bert() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    bert = transformers.BertModel(cfg).eval()
    tta = tta_from_bert(bert, num_layers=2, mask_token_id=3).eval()
    assert isinstance(tta.layers[0], TTALayer) and len(tta.layers) == 2
    h = torch.randn(2, 10, 32)
    pad = torch.ones(2, 10, 10, dtype=torch.bool)
    with torch.no_grad():
        ref = (
            bert.encoder.layer[0](h)[0]
            if isinstance(bert.encoder.layer[0](h), tuple)
            else bert.encoder.layer[0](h)
        )
        torch.testing.assert_close(tta.layers[0](h, h, pad), ref, atol=1e-5, rtol=1e-5)
        # with the diagonal open and queries = the BERT embeddings, the first layer reproduces BERT's
        ids = torch.randint(1, 128, (2, 10))
        kv = bert.embeddings(ids)
        torch.testing.assert_close(
            tta.kv_norm(tta.word_embeddings(ids) + tta.position_embeddings.weight[:10]),
            kv,
            atol=1e-5,
            rtol=1e-5,
        )
        out = tta(ids)
    assert out.logits.shape == (2, 10, 128)
    torch.testing.assert_close(tta.query_embedding, bert.embeddings.word_embeddings.weight[3])
    with pytest.raises(TypeError, match="BertModel"):
        tta_from_bert(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: TTAEncoder(0), ValueError, "vocab_size"),
        (lambda: TTAEncoder(10, hidden_size=30, num_heads=4), ValueError, "divisible"),
        (lambda: TTAEncoder(10, pad_id=10), ValueError, "pad_id"),
        (lambda: TTAEncoder(10, dropout=1.5), ValueError, "dropout"),
        (
            lambda: TTAEncoder(10, hidden_size=8, num_heads=2)(torch.zeros(3, dtype=torch.long)),
            ValueError,
            "2-D",
        ),
        (lambda: TTAEncoder(10, hidden_size=8, num_heads=2)(torch.zeros(2, 3)), TypeError, "input_ids"),
        (
            lambda: TTAEncoder(10, hidden_size=8, num_heads=2, max_position=4)(
                torch.ones(1, 5, dtype=torch.long)
            ),
            ValueError,
            "max_position",
        ),
        (
            lambda: TTAEncoder(10, hidden_size=8, num_heads=2)(
                torch.ones(1, 5, dtype=torch.long), attention_mask=torch.ones(1, 4)
            ),
            ValueError,
            "shape",
        ),
        (
            lambda: TTAEncoder(10, hidden_size=8, num_heads=2)(
                torch.ones(1, 5, dtype=torch.long), labels=torch.ones(1, 4, dtype=torch.long)
            ),
            ValueError,
            "labels",
        ),
    ],
)
def test_bad_inputs(call, exc, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc, match=match):
        call()
