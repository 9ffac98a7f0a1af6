"""Tests for trainwell.losses.margin: AM-Softmax and the retrieval metric (post 5743)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

from trainwell.losses import AMSoftmax, am_softmax_loss, am_softmax_psi, retrieval_topk_accuracy


def cosines(rows: int = 6, classes: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(rows, 8, generator=g, dtype=torch.float64), dim=-1)
    w = F.normalize(torch.randn(classes, 8, generator=g, dtype=torch.float64), dim=-1)
    t = torch.randint(0, classes, (rows,), generator=g)
    return z @ w.T, t


def test_reference_margin_zero_and_strictly_larger() -> None:
    cos, t = cosines()
    s, m = 30.0, 0.35
    want = []
    for row, y in zip(cos.tolist(), t.tolist()):
        target = s * (row[y] - m)
        others = [s * c for i, c in enumerate(row) if i != y]
        mx = max([target, *others])
        want.append(mx + math.log(math.exp(target - mx) + sum(math.exp(o - mx) for o in others)) - target)
    got = am_softmax_loss(cos, t, s, m, reduction="none")
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)
    plain = F.cross_entropy(s * cos, t, reduction="none")
    torch.testing.assert_close(am_softmax_loss(cos, t, s, 0.0, reduction="none"), plain, rtol=0, atol=1e-12)
    assert bool((got > plain).all())


def test_three_implementations_agree() -> None:
    cos, t = cosines(seed=1)
    s, m = 20.0, 0.2
    onehot = F.one_hot(t, 5).double()
    via_onehot = F.cross_entropy(s * (cos - m * onehot), t, reduction="none")
    # the post's form: logZ over [cos_1..cos_n, cos_t − m], then remove the un-margined target term
    cos_t = cos.gather(1, t[:, None])
    log_z = torch.logsumexp(torch.cat([s * cos, s * (cos_t - m)], 1), 1, keepdim=True)
    log_z = log_z + torch.log1p(-torch.exp(s * cos_t - log_z))
    via_post = (log_z - s * (cos_t - m)).squeeze(1)
    got = am_softmax_loss(cos, t, s, m, reduction="none")
    torch.testing.assert_close(got, via_onehot, rtol=0, atol=1e-12)
    torch.testing.assert_close(got, via_post, rtol=0, atol=1e-10)


def test_gradient_wrt_cosines() -> None:
    cos, t = cosines(seed=2)
    s, m = 30.0, 0.35
    c = cos.clone().requires_grad_()
    am_softmax_loss(c, t, s, m, reduction="sum").backward()
    onehot = F.one_hot(t, 5).double()
    want = s * (torch.softmax(s * (cos - m * onehot), -1) - onehot)
    assert c.grad is not None
    torch.testing.assert_close(c.grad, want, rtol=0, atol=1e-10)
    for psi in ("additive", "simpler"):
        assert gradcheck(
            lambda a, p=psi: am_softmax_loss(a, t, 5.0, 0.2, reduction="none", psi=p),
            (c.detach().clone().requires_grad_(),),
        )


def test_simpler_psi() -> None:
    theta = torch.linspace(0, math.pi, 721, dtype=torch.float64)
    c = torch.cos(theta)
    psi = am_softmax_psi(c, psi="simpler")
    assert bool((psi <= c + 1e-12).all())
    torch.testing.assert_close(psi, torch.minimum(torch.cos(4 * theta), c), rtol=0, atol=1e-12)
    cos, t = cosines(seed=3)
    assert bool(
        (
            am_softmax_loss(cos, t, psi="simpler", reduction="none")
            >= F.cross_entropy(30 * cos, t, reduction="none") - 1e-12
        ).all()
    )


def test_module_scale_invariance_and_no_sync() -> None:
    torch.manual_seed(0)
    head = AMSoftmax(8, 5, scale=30.0, margin=0.35).double()
    z = torch.randn(6, 8, dtype=torch.float64)
    t = torch.randint(0, 5, (6,))
    loss = head(z, t)
    torch.testing.assert_close(loss, am_softmax_loss(head.cosine(z), t))
    torch.testing.assert_close(head(3.7 * z, t), loss)
    loss.backward()
    assert head.weight.grad is not None and bool(torch.isfinite(head.weight.grad).all())
    with torch.no_grad():
        head.weight.mul_(torch.rand(5, 1, dtype=torch.float64) + 0.2)
    torch.testing.assert_close(head(z, t), loss.detach())
    with pytest.raises(ValueError, match="'embeddings'"):
        head(torch.randn(6, 7, dtype=torch.float64), t)
    with pytest.raises(ValueError, match="'target'"):
        head(z, t[:3])
    with pytest.raises(TypeError, match="'target'"):
        head(z, t.double())


def test_float32_under_bf16_autocast() -> None:
    torch.manual_seed(1)
    head = AMSoftmax(8, 5)
    z = torch.randn(6, 8)
    t = torch.randint(0, 5, (6,))
    ref = head(z, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(z.bfloat16(), t)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=0)


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 6), classes=st.integers(2, 6), seed=st.integers(0, 10_000))
def test_reductions_and_permutation(rows: int, classes: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    cos = torch.rand(rows, classes, generator=g, dtype=torch.float64) * 2 - 1
    t = torch.randint(0, classes, (rows,), generator=g)
    none = am_softmax_loss(cos, t, reduction="none")
    torch.testing.assert_close(am_softmax_loss(cos, t, reduction="sum"), none.sum())
    torch.testing.assert_close(am_softmax_loss(cos, t, reduction="mean"), none.mean())
    perm = torch.randperm(classes, generator=g)
    torch.testing.assert_close(am_softmax_loss(cos[:, perm], perm.argsort()[t], reduction="none"), none)


def test_retrieval_metric() -> None:
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    emb = F.one_hot(groups, 4).float()
    assert retrieval_topk_accuracy(emb, groups, (1, 2)) == {1: 1.0, 2: 1.0}
    # swap two embeddings across groups: those two queries miss at k=1
    emb2 = emb.clone()
    emb2[[1, 2]] = emb2[[2, 1]]
    acc = retrieval_topk_accuracy(emb2, groups, 1, chunk_size=2)
    assert acc[1] == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="'groups'"):
        retrieval_topk_accuracy(emb, groups[:3])
    with pytest.raises(ValueError, match="'k'"):
        retrieval_topk_accuracy(emb, groups, 0)


def test_bad_inputs() -> None:
    cos, t = cosines()
    assert (
        am_softmax_loss(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)).item() == 0.0
    )  # empty: 0, not NaN
    with pytest.raises(ValueError, match="'scale'"):
        am_softmax_loss(cos, t, scale=0.0)
    with pytest.raises(ValueError, match="'margin'"):
        am_softmax_loss(cos, t, margin=-0.1)
    with pytest.raises(ValueError, match="'psi'"):
        am_softmax_loss(cos, t, psi="cubic")
    with pytest.raises(ValueError, match="'target'"):
        am_softmax_loss(cos, t + 5)
    with pytest.raises(ValueError, match="'num_classes'"):
        AMSoftmax(4, 0)


def test_module_checks_the_label_range_like_the_functional() -> None:
    """Regression (issue 8): AMSoftmax.forward did not check the label range as am_softmax_loss does."""
    head = AMSoftmax(4, 3)
    msg = r"AMSoftmax\(\): argument 'target' must hold class indices in \[0, 3\)"
    with pytest.raises(ValueError, match=msg):
        head(torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="'target'"):
        am_softmax_loss(torch.rand(2, 3), torch.tensor([0, -1]))
