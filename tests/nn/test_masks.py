"""Mask properties (models.md §0.1, §0.3, §2.2): written out by loops here, compared to the library."""

from __future__ import annotations

import pytest
import torch

from trainwell.nn.masks import (
    causal_mask,
    masked_attention,
    masked_softmax,
    padding_mask,
    to_hf_mask,
    tta_mask,
    unilm_mask,
)


def _loop_unilm(seg: torch.Tensor, nonpad: torch.Tensor) -> torch.Tensor:
    b, t = seg.shape
    out = torch.zeros(b, t, t, dtype=torch.bool)
    for n in range(b):
        c = [int(seg[n, : i + 1].sum()) for i in range(t)]
        for i in range(t):
            for j in range(t):
                out[n, i, j] = c[j] <= c[i] and bool(nonpad[n, j])
    return out


def test_unilm_matches_definition_and_structure():
    seg = torch.tensor([[0, 0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1, 1]])
    att = torch.tensor([[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]])
    m = unilm_mask(seg, att)
    assert m.dtype == torch.bool and m.shape == (2, 7, 7)
    assert torch.equal(m, _loop_unilm(seg, att.bool()))
    # row 1: source = positions 0..1, target 2..6
    src, tgt = slice(0, 2), slice(2, 7)
    assert not m[1, src, tgt].any()  # sources never see the target
    assert m[1, tgt, src].all()  # targets see the whole source
    assert torch.equal(m[1, tgt, tgt], torch.ones(5, 5, dtype=torch.bool).tril())
    assert not m[0, :, 6].any()  # the pad key is never attended


def test_unilm_without_mask_and_bool_segments():
    seg = torch.tensor([[0, 1, 1]])
    assert torch.equal(unilm_mask(seg), unilm_mask(seg.bool()))
    assert torch.equal(unilm_mask(seg)[0], torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))


def test_causal_and_tta_and_padding():
    att = torch.tensor([[1, 1, 0]])
    assert torch.equal(causal_mask(3), torch.ones(3, 3, dtype=torch.bool).tril())
    assert torch.equal(
        causal_mask(attention_mask=att)[0], torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 0]]).bool()
    )
    assert torch.equal(tta_mask(3), ~torch.eye(3, dtype=torch.bool))
    assert torch.equal(
        tta_mask(attention_mask=att)[0], torch.tensor([[0, 1, 0], [1, 0, 0], [1, 1, 0]]).bool()
    )
    assert torch.equal(padding_mask(att)[0], torch.tensor([[1, 1, 0]] * 3).bool())
    assert tta_mask(0).shape == (0, 0)


def test_to_hf_forms():
    m = unilm_mask(torch.tensor([[0, 0, 1, 1]]))
    three = to_hf_mask(m, "3d")
    assert three.dtype == torch.long and torch.equal(three.bool(), m)
    four = to_hf_mask(m, "4d", dtype=torch.bfloat16)
    assert four.shape == (1, 1, 4, 4) and four.dtype == torch.bfloat16
    assert torch.equal(four[:, 0] == 0, m)
    assert float(four.min()) == torch.finfo(torch.bfloat16).min


def test_masked_softmax_fully_masked_rows_are_zero_not_nan():
    s = torch.randn(2, 3, 4) * 1e4
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    mask[0, 1] = False
    mask[1, 2, 1:] = False
    p = masked_softmax(s, mask)
    assert torch.isfinite(p).all()
    assert torch.equal(p[0, 1], torch.zeros(4))
    assert torch.allclose(p[1, 2], torch.tensor([1.0, 0, 0, 0]))
    rows = p.sum(-1)
    rows[0, 1] = 1
    assert torch.allclose(rows, torch.ones_like(rows))


def test_masked_attention_equals_sdpa_where_rows_are_nonempty():
    torch.manual_seed(0)
    q, k, v = (
        torch.randn(2, 2, 5, 8, dtype=torch.float64),
        torch.randn(2, 2, 6, 8, dtype=torch.float64),
        torch.randn(2, 2, 6, 3, dtype=torch.float64),
    )
    mask = torch.rand(2, 1, 5, 6) > 0.3
    mask[..., 0] = True
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(masked_attention(q, k, v, mask), ref, atol=1e-12)
    mask[0, 0, 2] = False
    out = masked_attention(q, k, v, mask)
    assert torch.equal(out[0, :, 2], torch.zeros(2, 3, dtype=torch.float64))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: unilm_mask(torch.zeros(3)), "token_type_ids"),
        (lambda: unilm_mask(torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 4)), "attention_mask"),
        (lambda: unilm_mask(torch.zeros(1, 3)), "token_type_ids"),
        (lambda: causal_mask(), "length"),
        (lambda: causal_mask(-1), "length"),
        (lambda: tta_mask(4, torch.ones(1, 3)), "length"),
        (lambda: to_hf_mask(torch.ones(2, 3, 4, dtype=torch.bool)), "mask"),
        (lambda: to_hf_mask(torch.ones(3, 3)), "mask"),
        (lambda: to_hf_mask(torch.ones(3, 3, dtype=torch.bool), "5d"), "form"),
        (lambda: masked_attention(torch.zeros(2, 4), torch.zeros(3, 5), torch.zeros(3, 2)), "k"),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
