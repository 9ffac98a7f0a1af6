"""Token attributions on a tiny random Hugging Face BERT classifier, captum LIG equality, heat-map
rendering."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from trainwell.explain import render_tokens, token_attributions

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert() -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64, num_labels=3,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.BertForSequenceClassification(cfg).eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 128, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    ids[1, 8:] = 0
    tt = torch.zeros_like(ids)
    tt[:, 6:] = 1
    return ids, mask, tt


def test_complete_within_one_percent_and_positions_not_interpolated(bert: nn.Module) -> None:
    ids, mask, tt = _batch()
    r = token_attributions(bert, ids, mask, tt, n_steps=64)
    with torch.no_grad():
        p = bert(input_ids=ids, attention_mask=mask, token_type_ids=tt).logits.softmax(-1)
        emb = bert.get_input_embeddings()
        # F(baseline): zero *token* embedding, real positions and segments (inputs_embeds path)
        p0 = bert(
            inputs_embeds=torch.zeros_like(emb(ids)), attention_mask=mask, token_type_ids=tt
        ).logits.softmax(-1)
    idx = torch.arange(3), r.target
    d_f = p[idx] - p0[idx]
    assert torch.equal(r.target, p.argmax(-1))
    assert torch.allclose(r.scores.sum(1) - d_f, r.delta, atol=1e-6)
    assert (r.delta.abs() / d_f.abs()).max() < 0.01
    assert torch.equal(r.scores[1, 8:], torch.zeros(4)) and torch.equal(r.display[1, 8:], torch.zeros(4))
    assert r.display.max() <= 1 and r.display.min() >= 0
    assert torch.allclose(r.display[:, 0:8].amax(1), torch.ones(3))


def test_equals_captum_layer_integrated_gradients(bert: nn.Module) -> None:
    captum_attr = pytest.importorskip("captum.attr")
    ids, mask, tt = _batch()

    def f(i: torch.Tensor, m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return bert(input_ids=i, attention_mask=m, token_type_ids=t).logits.softmax(-1)

    lig = captum_attr.LayerIntegratedGradients(f, bert.get_input_embeddings())
    target = torch.tensor([0, 2, 1])
    for method in ("gausslegendre", "riemann_trapezoid", "riemann_middle"):
        ref, ref_d = lig.attribute(
            ids,
            baselines=torch.zeros_like(ids),
            target=target,
            n_steps=16,
            method=method,
            additional_forward_args=(mask, tt),
            return_convergence_delta=True,
            internal_batch_size=12,
        )
        r = token_attributions(
            bert,
            ids,
            mask,
            tt,
            target=target,
            baseline="pad",
            n_steps=16,
            method=method,
            internal_batch_size=12,
        )
        assert (r.scores - ref.sum(-1) * mask).abs().max() < 1e-6
        assert (r.delta - ref_d).abs().max() < 1e-6


def test_logit_output_baselines_and_chunking(bert: nn.Module) -> None:
    ids, mask, _ = _batch()
    full = token_attributions(
        bert, ids, mask, target=1, output="logit", baseline="mask", mask_token_id=3, n_steps=20
    )
    part = token_attributions(
        bert, ids, mask, target=1, output="logit", baseline=3, n_steps=20, internal_batch_size=5
    )
    assert torch.allclose(full.scores, part.scores, atol=1e-5)
    with torch.no_grad():
        lg = bert(input_ids=ids, attention_mask=mask).logits[:, 1]
        lg0 = bert(input_ids=torch.full_like(ids, 3), attention_mask=mask).logits[:, 1]
    assert torch.allclose(full.scores.sum(1) - (lg - lg0), full.delta, atol=1e-4)
    emb = bert.get_input_embeddings()(torch.full_like(ids, 3)).detach()
    tens = token_attributions(bert, ids, mask, target=1, output="logit", baseline=emb, n_steps=20)
    assert torch.allclose(tens.scores, full.scores, atol=1e-6)


def test_bf16_autocast(bert: nn.Module) -> None:
    ids, mask, _ = _batch()
    ref = token_attributions(bert, ids, mask, target=0, n_steps=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r = token_attributions(bert, ids, mask, target=0, n_steps=32)
    assert r.scores.dtype == torch.float32 and torch.isfinite(r.scores).all()
    cos = torch.nn.functional.cosine_similarity(r.scores.flatten(), ref.scores.flatten(), dim=0)
    assert cos > 0.9


def test_weights_frozen_only_during_call(bert: nn.Module) -> None:
    ids, mask, _ = _batch()
    token_attributions(bert, ids, mask, target=0, n_steps=4)
    assert all(p.requires_grad for p in bert.parameters()) and all(p.grad is None for p in bert.parameters())


class _CharModel(nn.Module):
    """A non-HF model: any module with get_input_embeddings() and forward(input_ids)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.head = nn.Linear(8, 2)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.emb

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.emb(input_ids)).mean(1))


def test_plain_module_with_get_input_embeddings() -> None:
    m = _CharModel()
    ids = torch.randint(1, 20, (2, 5))
    r = token_attributions(m, ids, n_steps=40)
    with torch.no_grad():
        p = m(ids).softmax(-1)
        p0 = m.head(torch.zeros(2, 8)).softmax(-1)
    idx = torch.arange(2), r.target
    assert torch.allclose(r.scores.sum(1), p[idx] - p0[idx], atol=1e-4)


def test_errors(bert: nn.Module) -> None:
    ids, mask, _ = _batch()
    with pytest.raises(ValueError, match=r"token_attributions\(\): argument 'baseline' must be one of"):
        token_attributions(bert, ids, baseline="unk")
    with pytest.raises(ValueError, match=r"argument 'baseline' must have the embeddings' shape"):
        token_attributions(bert, ids, baseline=torch.zeros(3, 12, 5))
    with pytest.raises(ValueError, match=r"argument 'target' must hold class indices in \[0, 3\), got 5"):
        token_attributions(bert, ids, target=5)
    with pytest.raises(ValueError, match=r"argument 'n_steps' must be >= 1"):
        token_attributions(bert, ids, n_steps=0)
    with pytest.raises(ValueError, match=r"argument 'attention_mask' must have the same shape"):
        token_attributions(bert, ids, mask[:, :4])
    with pytest.raises(TypeError, match=r"argument 'input_ids' must be a tensor of dtype kind int"):
        token_attributions(bert, ids.float())
    with pytest.raises(TypeError, match=r"get_input_embeddings"):
        token_attributions(nn.Linear(3, 3), ids)


def test_render_html_escapes_and_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from trainwell.explain.tokens import cjk_font

    toks = ["<b>", "很", "好", "&", "bad"]
    ctx = pytest.warns(UserWarning, match="no CJK font") if cjk_font() is None else warnings.catch_warnings()
    with ctx:
        html = render_tokens(
            toks,
            torch.tensor([0.5, -1.0, 0.2, 0.0, 1.0]),
            title="a <title>",
            html_path=tmp_path / "t.html",
            png_path=tmp_path / "t.png",
        )
    assert "&lt;b&gt;" in html and "<b>" not in html.replace("&lt;b&gt;", "") and "&amp;" in html
    assert "a &lt;title&gt;" in html and html.count("<span") == 5
    assert (tmp_path / "t.html").read_text(encoding="utf-8").startswith("<!doctype html>")
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # signed scores: the most negative token is blue, the most positive red, zero is white
    assert "background:#408cff" in html and "background:#ff4d40" in html and "background:#ffffff" in html
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        render_tokens(["great", "movie"], [0.1, 0.9], png_path=tmp_path / "en.png")
    assert (tmp_path / "en.png").is_file()
    with pytest.raises(ValueError, match=r"render_tokens\(\): argument 'scores' must be one score per token"):
        render_tokens(["a", "b"], [1.0])
    with pytest.raises(TypeError, match=r"argument 'tokens' must be a sequence of str"):
        render_tokens("ab", [1.0, 2.0])
