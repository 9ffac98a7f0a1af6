"""Tests for trainwell.losses.consistency: R-Drop (post 8496) and its normalisation conventions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.autograd import gradcheck

from trainwell.losses import (
    RDropLoss,
    convert_rdrop_alpha,
    rdrop_forward,
    rdrop_loss,
    rdrop_loss_scale,
    symmetric_kl,
)


def pair(rows: int = 5, classes: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(rows, classes, generator=g, dtype=torch.float64)
    b = torch.randn(rows, classes, generator=g, dtype=torch.float64)
    t = torch.randint(0, classes, (rows,), generator=g)
    return a, b, t


def ref_rows(l1: Tensor, l2: Tensor, t: Tensor, alpha: float) -> list[float]:
    """Eq. (7.1) per example with Python floats."""
    out = []
    for r1, r2, y in zip(l1.tolist(), l2.tolist(), t.tolist()):
        z1 = sum(math.exp(v) for v in r1)
        z2 = sum(math.exp(v) for v in r2)
        p1 = [math.exp(v) / z1 for v in r1]
        p2 = [math.exp(v) / z2 for v in r2]
        kl12 = sum(a * math.log(a / b) for a, b in zip(p1, p2))
        kl21 = sum(b * math.log(b / a) for a, b in zip(p1, p2))
        out.append(-math.log(p1[y]) - math.log(p2[y]) + alpha * 0.5 * (kl12 + kl21))
    return out


def test_reference_symmetry_and_special_cases() -> None:
    a, b, t = pair()
    got = rdrop_loss(a, b, t, 2.5, reduction="none")
    torch.testing.assert_close(
        got, torch.tensor(ref_rows(a, b, t, 2.5), dtype=torch.float64), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(rdrop_loss(b, a, t, 2.5, reduction="none"), got, rtol=0, atol=1e-14)
    ce = F.cross_entropy(a, t, reduction="none") + F.cross_entropy(b, t, reduction="none")
    torch.testing.assert_close(rdrop_loss(a, b, t, 0.0, reduction="none"), ce)
    torch.testing.assert_close(
        rdrop_loss(a, a, t, 3.0, reduction="none"), 2 * F.cross_entropy(a, t, reduction="none")
    )
    kl = symmetric_kl(a, b, reduction="none")
    assert bool((kl > 0).all()) and float(symmetric_kl(a, a).abs()) < 1e-15
    torch.testing.assert_close(
        kl,
        0.5
        * (
            F.kl_div(F.log_softmax(b, -1), F.log_softmax(a, -1), log_target=True, reduction="none").sum(-1)
            + F.kl_div(F.log_softmax(a, -1), F.log_softmax(b, -1), log_target=True, reduction="none").sum(-1)
        ),
    )


def test_non_target_classes_are_seen() -> None:
    p = torch.tensor([[0.5, 0.2, 0.3]], dtype=torch.float64).log()
    q = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64).log()
    t = torch.tensor([0])
    torch.testing.assert_close(F.cross_entropy(p, t), F.cross_entropy(q, t))
    assert float(symmetric_kl(p, q)) > 0


def test_dropout_off_gives_zero_kl() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.3), nn.Linear(8, 3)).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    t = torch.randint(0, 3, (4,))
    model.eval()
    o1, o2 = rdrop_forward(model, x)
    torch.testing.assert_close(rdrop_loss(o1, o2, t, 4.0), 2 * F.cross_entropy(model(x), t))
    model.train()
    o1, o2 = rdrop_forward(model, x)
    assert float(symmetric_kl(o1, o2).detach()) > 0


def test_doubled_forward_equals_two_forwards_with_replayed_masks() -> None:
    torch.manual_seed(1)
    lin1, lin2 = nn.Linear(6, 8).double(), nn.Linear(8, 3).double()
    masks: list[Tensor] = []

    class RecordingDropout(nn.Module):
        def forward(self, h: Tensor) -> Tensor:
            m = (torch.rand_like(h) > 0.3).to(h.dtype) / 0.7
            masks.append(m)
            return h * m

    model = nn.Sequential(lin1, nn.ReLU(), RecordingDropout(), lin2)
    x = torch.randn(5, 6, dtype=torch.float64)
    o1, o2 = rdrop_forward(model, x)
    m = masks[0]
    sep1 = lin2(torch.relu(lin1(x)) * m[:5])
    sep2 = lin2(torch.relu(lin1(x)) * m[5:])
    torch.testing.assert_close(o1, sep1)
    torch.testing.assert_close(o2, sep2)
    dict_out = rdrop_forward(lambda inp: {"logits": model(inp), "n": 3}, x)
    assert dict_out[0]["logits"].shape == (5, 3) and dict_out[1]["n"] == 3


def test_conventions() -> None:
    a, b, t = pair(rows=6, seed=2)
    batch = a.shape[0]
    ce1 = F.cross_entropy(a, t, reduction="none")
    ce2 = F.cross_entropy(b, t, reduction="none")
    lp1, lp2 = F.log_softmax(a, -1), F.log_softmax(b, -1)
    kl12 = (lp1.exp() * (lp1 - lp2)).sum(-1)
    kl21 = (lp2.exp() * (lp2 - lp1)).sum(-1)
    written = {  # each convention's loss as its source code writes it
        "paper": lambda al: (ce1 + ce2 + al * (kl12 + kl21) / 2).mean(),
        "keras": lambda al: torch.cat([ce1, ce2]).mean() + al / 4 * (kl12 + kl21).mean(),
        "readme": lambda al: 0.5 * (ce1.mean() + ce2.mean()) + al * (kl12 + kl21).mean() / 2,
        "readme_sum": lambda al: 0.5 * (ce1.mean() + ce2.mean()) + al * (kl12.sum() + kl21.sum()) / 2,
    }
    alpha_paper = 3.0
    torch.testing.assert_close(rdrop_loss(a, b, t, alpha_paper), written["paper"](alpha_paper))
    for name, loss_of in written.items():
        alpha_c = convert_rdrop_alpha(alpha_paper, "paper", name, batch_size=batch)
        torch.testing.assert_close(
            loss_of(alpha_c), rdrop_loss_scale(name) * rdrop_loss(a, b, t, alpha_paper)
        )
        assert convert_rdrop_alpha(alpha_c, name, "paper", batch_size=batch) == pytest.approx(alpha_paper)
    assert convert_rdrop_alpha(4.0, "keras") == 4.0
    assert convert_rdrop_alpha(1.0, "readme_sum", batch_size=32) == 64.0
    with pytest.raises(ValueError, match="'batch_size'"):
        convert_rdrop_alpha(1.0, "readme_sum")
    with pytest.raises(ValueError, match="'source'"):
        convert_rdrop_alpha(1.0, "fairseq")


def test_padding_tokens_contribute_nothing() -> None:
    g = torch.Generator().manual_seed(3)
    a = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    b = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    t = torch.randint(0, 4, (2, 5), generator=g)
    t[0, 3:] = -100
    pad = t == -100
    base = rdrop_loss(a, b, t, 2.0)
    a2, b2 = a.clone(), b.clone()
    a2[pad] = 50.0
    b2[pad] = -50.0
    torch.testing.assert_close(rdrop_loss(a2, b2, t, 2.0), base)
    none = rdrop_loss(a, b, t, 2.0, reduction="none")
    assert none.shape == (2, 5) and bool((none[pad] == 0).all())
    torch.testing.assert_close(base, none.sum() / (~pad).sum())
    t_filled = torch.where(pad, 0, t)
    torch.testing.assert_close(rdrop_loss(a2, b2, t_filled, 2.0, pad_mask=pad), base)
    torch.testing.assert_close(RDropLoss(2.0)(a, b, t), base)
    torch.testing.assert_close(
        symmetric_kl(a2, b2, pad_mask=pad), symmetric_kl(a, b, reduction="none")[~pad].mean()
    )


def test_gradcheck_both_branches_and_bf16() -> None:
    a, b, t = pair(rows=3, seed=4)
    ar, br = a.clone().requires_grad_(), b.clone().requires_grad_()
    assert gradcheck(lambda x, y: rdrop_loss(x, y, t, 1.5, reduction="none"), (ar, br))
    a32, b32 = a.float(), b.float()
    ref = rdrop_loss(a32, b32, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rdrop_loss(a32.bfloat16(), b32.bfloat16(), t)
    assert out.dtype == torch.float32 and ref.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=0)


def test_squared_loss_optimum_is_the_dropout_average() -> None:
    torch.manual_seed(5)
    f = torch.randn(8, dtype=torch.float64)
    samples = torch.stack([f * (torch.rand(8, dtype=torch.float64) > 0.3) / 0.7 for _ in range(4000)])
    c = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([c], lr=0.5)
    for _ in range(100):
        opt.zero_grad()
        ((c - samples) ** 2).sum(-1).mean().backward()
        opt.step()
    torch.testing.assert_close(c.detach(), samples.mean(0), rtol=0, atol=1e-8)
    torch.testing.assert_close(samples.mean(0), f, rtol=0, atol=0.15)  # E_ε f(x, ε) = f(x, E ε) here (linear)


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 5), classes=st.integers(2, 5), seed=st.integers(0, 10_000), alpha=st.floats(0, 5))
def test_reductions_permutation_symmetry(rows: int, classes: int, seed: int, alpha: float) -> None:
    a, b, t = pair(rows, classes, seed)
    none = rdrop_loss(a, b, t, alpha, reduction="none")
    torch.testing.assert_close(rdrop_loss(a, b, t, alpha, reduction="sum"), none.sum())
    torch.testing.assert_close(rdrop_loss(a, b, t, alpha, reduction="mean"), none.mean())
    perm = torch.randperm(classes, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(
        rdrop_loss(a[:, perm], b[:, perm], perm.argsort()[t], alpha, reduction="none"), none
    )
    assert bool((symmetric_kl(a, b, reduction="none") >= 0).all())


def test_bad_inputs() -> None:
    a, b, t = pair()
    with pytest.raises(ValueError, match="'logits2'"):
        rdrop_loss(a, b[:, :3], t)
    with pytest.raises(ValueError, match="'alpha'"):
        rdrop_loss(a, b, t, -1.0)
    with pytest.raises(ValueError, match="'target'"):
        rdrop_loss(a, b, t + 4)
    with pytest.raises(TypeError, match="'pad_mask'"):
        rdrop_loss(a, b, t, pad_mask=t)
    with pytest.raises(ValueError, match="'model output'"):
        rdrop_forward(lambda x: x[:1], torch.zeros(2, 3))
