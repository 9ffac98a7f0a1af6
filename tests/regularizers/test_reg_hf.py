"""Hugging Face regressions for the regularizers (tiny random BERTs built from a config)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainwell.regularizers import (
    FGM,
    PGD,
    VAT,
    FastGradientPenalty,
    MultiPassStep,
    ParameterGradientPenalty,
    capture_embedding_output,
    gradient_penalty,
)

transformers = pytest.importorskip("transformers")


def _model(attn: str) -> nn.Module:
    cfg = transformers.BertConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, num_labels=2, attn_implementation=attn,
    )
    return transformers.BertForSequenceClassification(cfg).eval()


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(0, 128, (3, 8), generator=g), "labels": torch.tensor([0, 1, 1])}


@pytest.mark.parametrize("mode", ["matrix", "output"])
def test_fgm_unused_embedding_raises_in_both_modes(mode: str) -> None:
    model = _model("eager")
    unused = nn.Embedding(10, 32)
    fgm = FGM(unused, epsilon=0.5, mode=mode)
    batch = _batch()
    with pytest.raises(ValueError, match="'embedding' must be a module that closure\\(\\) calls"):
        fgm.step(lambda: model(**batch).loss)
    assert all(p.grad is None for p in model.parameters())  # nothing ran half-way into .grad


def test_exact_gradient_penalty_under_sdpa_says_what_to_do() -> None:
    model = _model("sdpa")
    with capture_embedding_output(model.get_input_embeddings()) as outs:
        loss = model(**_batch()).loss
    with pytest.raises(RuntimeError, match=r'attn_implementation="eager".*FastGradientPenalty'):
        gradient_penalty(loss, outs[0])


def test_exact_gradient_penalty_under_eager_attention_works() -> None:
    model = _model("eager")
    with capture_embedding_output(model.get_input_embeddings()) as outs:
        loss = model(**_batch()).loss
    (loss + gradient_penalty(loss, outs[0])).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_fast_gradient_penalty_works_under_sdpa() -> None:
    model = _model("sdpa")
    batch = _batch()
    FastGradientPenalty(model.get_input_embeddings(), epsilon=0.1).step(lambda: model(**batch).loss)
    assert model.get_input_embeddings().weight.grad is not None


def test_vat_closure_calling_the_model_twice_says_what_happened() -> None:
    torch.manual_seed(0)
    emb = nn.Embedding(20, 8)
    head = nn.Linear(8, 3)

    def m(u: torch.Tensor) -> torch.Tensor:
        return head(emb(u)).mean(1)

    u = torch.randint(0, 20, (4, 5))
    y = torch.tensor([0, 1, 2, 0])
    vat = VAT(emb, epsilon=1.0, xi=1e-3, power_iterations=2)
    with pytest.warns(RuntimeWarning, match="do not depend on call\\(s\\) \\[0\\]") as rec:
        vat.step(lambda: (nn.functional.cross_entropy(m(u), y), m(u)))
    assert not any("floating-point resolution" in str(w.message) for w in rec)
    assert vat.last_perturbation is not None
    assert float(vat.last_perturbation[0].abs().sum()) == 0.0 and float(vat.last_perturbation[1].norm()) > 0


def test_every_multi_pass_object_follows_the_protocol() -> None:
    emb = nn.Embedding(5, 4)
    ids = torch.tensor([[1, 2]])
    for obj in (FGM(emb), PGD(emb), FastGradientPenalty(emb), ParameterGradientPenalty(emb)):
        assert isinstance(obj, MultiPassStep)
        out = obj.step(lambda: emb(ids).sum())
        assert isinstance(out, torch.Tensor) and not out.requires_grad
    vat = VAT(emb)
    assert isinstance(vat, MultiPassStep)
    out = vat.step(lambda: emb(ids))  # VAT's closure returns logits
    assert isinstance(out, torch.Tensor) and not out.requires_grad
