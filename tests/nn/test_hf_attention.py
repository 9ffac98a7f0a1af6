"""FAVOR+ inside Hugging Face BERT/RoBERTa (tiny models from configs), and the UniLM mask on a real
encoder (models.md §0.3 mask properties)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from trainwell.nn import (  # noqa: E402
    FavorAttention,
    favor_modules,
    replace_attention,
    restore_attention,
    to_hf_mask,
    unilm_mask,
)

CFG = {"vocab_size": 128, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
       "intermediate_size": 64, "max_position_embeddings": 64}


def _peaked(model: torch.nn.Module) -> torch.nn.Module:
    """Larger weights than the 0.02 init, so attention is far from uniform and its output matters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embeddings" not in name:
                p.normal_(0.0, 0.08)
    return model


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, 128, (2, 24), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 24, dtype=torch.long)
    mask[1, 17:] = 0
    return ids, mask


@pytest.mark.parametrize("arch", ["bert", "roberta", "bert-decoder"])
def test_swapped_model_approaches_exact_outputs_with_m(arch: str) -> None:
    torch.manual_seed(0)
    if arch == "roberta":
        model = transformers.RobertaModel(transformers.RobertaConfig(**CFG))
    else:
        model = transformers.BertModel(transformers.BertConfig(**CFG, is_decoder=arch == "bert-decoder"))
    model = _peaked(model).eval()
    ids, mask = _batch()
    keep = mask.bool()
    with torch.no_grad():
        exact = model(ids, attention_mask=mask).last_hidden_state
        uniform_gap = None
        errs = []
        for m in (16, 256, 8192):
            replace_attention(model, m, generator=torch.Generator().manual_seed(1))
            cores = favor_modules(model)
            assert len(cores) == 2 and all(isinstance(c, FavorAttention) for c in cores.values())
            assert all(c.causal == (arch == "bert-decoder") for c in cores.values())
            out = model(ids, attention_mask=mask).last_hidden_state
            errs.append(float((out - exact)[keep].abs().mean()))
            restore_attention(model)
        # the exact model is back, bit for bit
        assert torch.equal(model(ids, attention_mask=mask).last_hidden_state, exact)
        # the exact attention is far from uniform: a "mean of values" model differs a lot
        uniform_gap = float((exact - _uniform_attention_output(model, ids, mask))[keep].abs().mean())
    assert errs[2] < errs[1] < errs[0]
    assert errs[2] < 0.1 * uniform_gap, (errs, uniform_gap)


def _uniform_attention_output(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    saved = {n: p.clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(("query.weight", "query.bias")):
                p.zero_()
        out = model(ids, attention_mask=mask).last_hidden_state
        for n, p in model.named_parameters():
            p.copy_(saved[n])
    return out


def test_padding_and_weights_kept_and_gradients_flow() -> None:
    torch.manual_seed(0)
    model = _peaked(transformers.BertForMaskedLM(transformers.BertConfig(**CFG)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    replace_attention(model, 64)
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in before.items())  # q/k/v/o and the rest untouched
    extra = set(sd) - set(before)
    assert extra == {f"bert.encoder.layer.{i}.attention.self.trainwell_favor.projection" for i in range(2)}
    model.eval()
    ids, mask = _batch()
    with torch.no_grad():
        a = model(ids, attention_mask=mask).logits
        ids2 = ids.clone()
        ids2[1, 17:] = 5  # different tokens in the padded slots
        b = model(ids2, attention_mask=mask).logits
    torch.testing.assert_close(a[1, :17], b[1, :17], atol=1e-5, rtol=1e-5)
    model.train()
    out = model(ids, attention_mask=mask, labels=ids)
    out.loss.backward()
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad is not None
    # a 4-D padding-only mask is accepted; a UniLM mask is refused with a clear message
    model.eval()
    with torch.no_grad():
        pad4 = to_hf_mask(mask.bool()[:, None, :].expand(2, 24, 24).contiguous())
        torch.testing.assert_close(model(ids, attention_mask=pad4).logits, a, atol=1e-5, rtol=1e-5)
        tt = torch.zeros(2, 24, dtype=torch.long)
        tt[:, 12:] = 1
        with pytest.raises(ValueError, match="only key padding and plain causal"):
            model(ids, attention_mask=to_hf_mask(unilm_mask(tt, mask)))


def test_unsupported_models_and_double_swap_raise() -> None:
    gpt2 = transformers.GPT2Model(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(ValueError, match=r"found no BERT/RoBERTa-style attention module .* GPT2Model"):
        replace_attention(gpt2)
    with pytest.raises(TypeError, match="Hugging Face transformers model"):
        replace_attention(torch.nn.Linear(3, 3))
    with pytest.raises(TypeError, match="argument 'model'"):
        replace_attention("bert")  # type: ignore[arg-type]
    bert = transformers.BertModel(transformers.BertConfig(**CFG))
    with pytest.raises(ValueError, match="nb_features"):
        replace_attention(bert, 0)
    replace_attention(bert, 8)
    with pytest.raises(ValueError, match="already uses FAVOR"):
        replace_attention(bert, 8)
    restore_attention(bert)
    with pytest.raises(ValueError, match="not converted"):
        restore_attention(bert)


def test_unilm_mask_on_a_bert_encoder() -> None:
    """§0.3: with the UniLM mask, target tokens never change source outputs; target j never changes < j."""
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(**CFG)).eval()
    ids = torch.randint(5, 128, (1, 16), generator=torch.Generator().manual_seed(3))
    tt = torch.zeros(1, 16, dtype=torch.long)
    tt[:, 9:] = 1
    m4 = to_hf_mask(unilm_mask(tt))
    with torch.no_grad():
        base = model(ids, attention_mask=m4, token_type_ids=tt).last_hidden_state
        for j in (9, 12, 15):
            x = ids.clone()
            x[0, j] = 7 if int(ids[0, j]) != 7 else 8
            out = model(x, attention_mask=m4, token_type_ids=tt).last_hidden_state
            assert torch.equal(out[:, :9], base[:, :9])  # source rows: bit-identical
            torch.testing.assert_close(out[:, :j], base[:, :j], atol=0, rtol=0)
            assert float((out[:, j] - base[:, j]).abs().max()) > 1e-4


def test_redraw_interval_applies_inside_the_model() -> None:
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(**CFG))
    replace_attention(model, 16, redraw_interval=1)
    core = next(iter(favor_modules(model).values()))
    ids, mask = _batch()
    model.train()
    model(ids, attention_mask=mask)
    p0 = core.projection.clone()
    model(ids, attention_mask=mask)
    assert not torch.equal(core.projection, p0)
    model.eval()
    p1 = core.projection.clone()
    model(ids, attention_mask=mask)
    assert torch.equal(core.projection, p1)
