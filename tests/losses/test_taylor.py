"""Tests for trainwell.losses.taylor: Taylor softmax and its cross-entropy (post 7919)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

from trainwell.losses import TaylorCrossEntropy, TaylorSoftmax, taylor_cross_entropy, taylor_softmax
from trainwell.numerics.taylor_positivity import taylor_exp_minimizer


def f_ref(x: float, n: int) -> float:
    return sum(x**k / math.factorial(k) for k in range(n + 1))


def test_reference_values_and_rows() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, generator=g, dtype=torch.float64) * 3
    t = torch.randint(0, 5, (4,), generator=g)
    for n in (2, 4, 6):
        p = taylor_softmax(x, n)
        want = [[f_ref(v, n) / sum(f_ref(u, n) for u in row) for v in row] for row in x.tolist()]
        torch.testing.assert_close(p, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)
        torch.testing.assert_close(p.sum(-1), torch.ones(4, dtype=torch.float64))
        assert bool((p > 0).all())
        loss = taylor_cross_entropy(x, t, n, reduction="none")
        torch.testing.assert_close(loss, -p[torch.arange(4), t].log(), rtol=0, atol=1e-12)
    torch.testing.assert_close(taylor_softmax(x.T, 2, dim=0), taylor_softmax(x, 2).T)


def test_monotone_preserves_order() -> None:
    x = torch.linspace(-8, 3, 23, dtype=torch.float64).unsqueeze(0)
    for n in (2, 4, 8):
        p = taylor_softmax(x, n, monotone=True)[0]
        assert bool((p[1:] >= p[:-1]).all())
        assert not bool((taylor_softmax(x, n)[0][1:] >= taylor_softmax(x, n)[0][:-1]).all())
        x_star, _f_star = taylor_exp_minimizer(n)
        low = taylor_softmax(
            torch.tensor([[x_star - 5, x_star - 1, 0.0]], dtype=torch.float64), n, monotone=True
        )
        assert low[0, 0] == low[0, 1]


def test_limit_softmax_and_less_peaked_and_not_shift_invariant() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 6, generator=g, dtype=torch.float64)
    for n in (2, 4):
        errs = [
            float((taylor_softmax(eps * x, n) - torch.softmax(eps * x, -1)).abs().max())
            for eps in (1e-1, 5e-2)
        ]
        assert errs[1] < errs[0] * 0.5 ** (n + 1) * 1.5  # error O(ε^{n+1})
    gap = torch.tensor([[5.0, 0.0, 0.0]], dtype=torch.float64)
    assert float(taylor_softmax(gap, 2).max()) < float(torch.softmax(gap, -1).max())
    assert not torch.allclose(taylor_softmax(x + 3, 2), taylor_softmax(x, 2))


def test_gradcheck_and_extremes() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 4, (3,), generator=g)
    assert gradcheck(lambda a: taylor_cross_entropy(a, t, 4, reduction="none"), (x,))
    assert gradcheck(lambda a: taylor_softmax(a, 2, monotone=True), (x,))
    big = (torch.tensor([[1.0, -1.0, 0.5], [-1.0, 1.0, 0.0]]) * 1e4).requires_grad_()
    for n in (2, 10, 12):
        loss = taylor_cross_entropy(big, torch.tensor([0, 2]), n, reduction="sum")
        loss.backward()
        assert big.grad is not None and bool(torch.isfinite(loss)) and bool(torch.isfinite(big.grad).all())
        assert loss.dtype == torch.float32
        big.grad = None


def test_dtypes_module_ignore_and_bf16() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 4, generator=g)
    t = torch.randint(0, 4, (5,), generator=g)
    ref = taylor_cross_entropy(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = taylor_cross_entropy(x.bfloat16(), t)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=0)
    assert taylor_softmax(x.half()).dtype == torch.float32
    torch.testing.assert_close(TaylorCrossEntropy(4)(x, t), taylor_cross_entropy(x, t, 4))
    torch.testing.assert_close(TaylorSoftmax(4)(x), taylor_softmax(x, 4))
    t2 = t.clone()
    t2[0] = -100
    none = taylor_cross_entropy(x, t2, reduction="none")
    assert none[0] == 0
    torch.testing.assert_close(taylor_cross_entropy(x, t2), none.sum() / 4)


@settings(max_examples=15, deadline=None)
@given(
    rows=st.integers(1, 5),
    classes=st.integers(2, 6),
    seed=st.integers(0, 10_000),
    order=st.sampled_from([2, 4, 6]),
)
def test_reductions_and_permutation(rows: int, classes: int, seed: int, order: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, classes, generator=g, dtype=torch.float64) * 3
    t = torch.randint(0, classes, (rows,), generator=g)
    none = taylor_cross_entropy(x, t, order, reduction="none")
    torch.testing.assert_close(taylor_cross_entropy(x, t, order, reduction="sum"), none.sum())
    torch.testing.assert_close(taylor_cross_entropy(x, t, order, reduction="mean"), none.mean())
    perm = torch.randperm(classes, generator=g)
    torch.testing.assert_close(
        taylor_cross_entropy(x[:, perm], perm.argsort()[t], order, reduction="none"), none
    )
    torch.testing.assert_close(taylor_softmax(x[:, perm], order), taylor_softmax(x, order)[:, perm])


def test_bad_inputs() -> None:
    x = torch.randn(3, 4)
    t = torch.tensor([0, 1, 2])
    for bad in (3, 1, 0):
        with pytest.raises(ValueError, match="'order'"):
            taylor_softmax(x, bad)
        with pytest.raises(ValueError, match="'order'"):
            taylor_cross_entropy(x, t, bad)
    with pytest.raises(ValueError, match="'order'"):
        TaylorSoftmax(5)
    with pytest.raises(ValueError, match="'target'"):
        taylor_cross_entropy(x, t + 3)
    with pytest.raises(ValueError, match="'target'"):
        taylor_cross_entropy(x, t[:2])
    with pytest.raises(TypeError, match="'input'"):
        taylor_softmax(t)
    with pytest.raises(ValueError, match="'dim'"):
        taylor_softmax(x, 2, dim=2)
    assert F.softmax(x, -1).shape == taylor_softmax(x).shape
