"""Integrated gradients: exactness, completeness, axioms, captum equality, chunking and errors (models.md
§9.6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from trainwell.explain import METHODS, IntegratedGradients, integrated_gradients, quadrature

ALL = ["trapezoid", "riemann_left", "riemann_right", "riemann_middle", "midpoint", "gausslegendre"]


def _mlp(seed: int, d_in: int = 32, hidden: int = 64, classes: int = 3) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, classes)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / math.sqrt(max(p.shape[-1], 1)))
    return net


def _prob(net: nn.Module):  # F = softmax probability
    return lambda x: net(x).softmax(-1)


def test_quadrature_rules_integrate_polynomials() -> None:
    # weights sum to 1 and integrate α exactly (the correct rules); captum's trapezoid sums to (n-1)/n
    for m in ALL:
        w, a = quadrature(m, 10)
        assert len(w) == len(a) == 10
        assert sum(w) == pytest.approx(1.0, abs=1e-12)
        assert min(a) >= 0 and max(a) <= 1
    w, a = quadrature("gausslegendre", 5)
    assert sum(wi * ai**8 for wi, ai in zip(w, a)) == pytest.approx(1 / 9, abs=1e-13)
    w, _ = quadrature("riemann_trapezoid", 10)
    assert sum(w) == pytest.approx(0.9, abs=1e-12)
    assert set(METHODS) >= set(ALL) | {"riemann_trapezoid"}


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("n", [1, 2, 7, 50])
def test_linear_function_exact(method: str, n: int) -> None:
    if method == "trapezoid" and n < 2:
        pytest.skip("trapezoid needs two points")
    g = torch.Generator().manual_seed(n)
    w = torch.randn(6, dtype=torch.float64, generator=g)
    x = torch.randn(4, 6, dtype=torch.float64, generator=g)
    xb = torch.randn(4, 6, dtype=torch.float64, generator=g)
    attr, delta = integrated_gradients(lambda t: t @ w + 0.7, x, xb, n_steps=n, method=method)
    assert torch.allclose(attr, w * (x - xb), atol=1e-12, rtol=0)
    assert delta.abs().max() < 1e-12


def test_completeness_trapezoid_50_steps_random_mlps() -> None:
    errs = []
    for seed in range(50):
        net = _mlp(seed)
        x = torch.randn(1, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(100 + seed))
        tgt = int(net(x).argmax())
        _, delta = integrated_gradients(_prob(net), x, target=tgt, n_steps=50)
        with torch.no_grad():
            d_f = float(net(x).softmax(-1)[0, tgt] - net(torch.zeros_like(x)).softmax(-1)[0, tgt])
        if abs(d_f) > 1e-3:
            errs.append(abs(float(delta[0])) / abs(d_f))
    assert len(errs) >= 40
    assert max(errs) < 0.01


def test_riemann_right_error_shrinks_like_one_over_n() -> None:
    e20, e300 = [], []
    for seed in range(20):
        net = _mlp(seed)
        x = torch.randn(1, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(7 + seed)) * 2
        tgt = int(net(x).argmax())
        for n, store in ((20, e20), (300, e300)):
            _, d = integrated_gradients(_prob(net), x, target=tgt, n_steps=n, method="riemann_right")
            store.append(abs(float(d[0])))
    assert np.median(e20) / np.median(e300) > 5.0


def test_dummy_feature_and_equal_baseline_give_zero() -> None:
    net = _mlp(0, d_in=5)
    f = lambda t: net(torch.cat([t[:, :4], torch.zeros_like(t[:, 4:])], 1)).softmax(-1)  # noqa: E731
    x = torch.randn(3, 5, dtype=torch.float64)
    attr, _ = integrated_gradients(f, x, target=1)
    assert torch.equal(attr[:, 4], torch.zeros(3, dtype=torch.float64))
    attr0, delta0 = integrated_gradients(_prob(net), x, baselines=x.clone(), target=[0, 1, 2])
    assert torch.equal(attr0, torch.zeros_like(x))
    assert delta0.abs().max() < 1e-15  # F(x) and F(x̄) come from different rows of one batched matmul


def test_implementation_invariance() -> None:
    # two functionally identical networks: hidden units permuted and a scaled ReLU pair
    net = _mlp(3, d_in=8, hidden=16)
    perm = torch.randperm(16)
    twin = _mlp(4, d_in=8, hidden=16)
    with torch.no_grad():
        twin[0].weight.copy_(net[0].weight[perm])
        twin[0].bias.copy_(net[0].bias[perm])
        twin[2].weight.copy_(net[2].weight[:, perm])
        twin[2].bias.copy_(net[2].bias)
    x = torch.randn(4, 8, dtype=torch.float64)
    a1, _ = integrated_gradients(_prob(net), x, target=2, n_steps=30)
    a2, _ = integrated_gradients(_prob(twin), x, target=2, n_steps=30)
    assert torch.allclose(a1, a2, atol=1e-12)
    # relu(2x)/2 == relu(x): a different parameterisation of the same function
    a3, _ = integrated_gradients(lambda t: torch.relu(2 * t).sum(1) / 2, x, n_steps=30)
    a4, _ = integrated_gradients(lambda t: torch.relu(t).sum(1), x, n_steps=30)
    assert torch.allclose(a3, a4, atol=1e-12)


def test_tuple_inputs_additional_args_and_chunking_are_consistent() -> None:
    net = _mlp(5, d_in=6)

    def f(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, offset: float) -> torch.Tensor:
        return net(torch.cat([a, b], 1) * scale + offset).softmax(-1)

    a, b = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    scale = torch.rand(5, 1, dtype=torch.float64) + 0.5
    full, d_full = integrated_gradients(f, (a, b), target=torch.tensor([0, 1, 2, 0, 1]), n_steps=20,
                                        additional_forward_args=(scale, 0.1))
    assert isinstance(full, tuple) and full[0].shape == a.shape and full[1].shape == b.shape
    for ibs in (1, 3, 7, 64):  # chunks smaller than the batch, not aligned with steps, larger than all rows
        part, d_part = integrated_gradients(f, (a, b), target=torch.tensor([0, 1, 2, 0, 1]), n_steps=20,
                                            internal_batch_size=ibs, additional_forward_args=(scale, 0.1))
        assert all(torch.allclose(p, q, atol=1e-13) for p, q in zip(part, full))
        assert torch.allclose(d_part, d_full, atol=1e-13)
    # completeness holds over both inputs together
    fx, f0 = f(a, b, scale, 0.1), f(torch.zeros_like(a), torch.zeros_like(b), scale, 0.1)
    tot = full[0].sum(1) + full[1].sum(1)
    idx = torch.arange(5), torch.tensor([0, 1, 2, 0, 1])
    assert torch.allclose(tot - (fx[idx] - f0[idx]), d_full, atol=1e-12)


def test_baseline_forms_broadcast() -> None:
    w = torch.randn(3, 4, dtype=torch.float64)
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    f = lambda t: (t * w).sum((1, 2))  # noqa: E731
    ref, _ = integrated_gradients(f, x, torch.full_like(x, 0.5), n_steps=3)
    for b in (
        0.5,
        torch.full((3, 4), 0.5, dtype=torch.float64),
        torch.full((1, 3, 4), 0.5, dtype=torch.float64),
    ):
        got, _ = integrated_gradients(f, x, b, n_steps=3)
        assert torch.allclose(got, ref, atol=1e-14)


def test_one_backward_per_chunk() -> None:
    calls = []
    net = _mlp(1, d_in=4)

    def f(t: torch.Tensor) -> torch.Tensor:
        calls.append(t.shape[0])
        return net(t).softmax(-1)

    x = torch.randn(3, 4, dtype=torch.float64)
    integrated_gradients(f, x, target=0, n_steps=10, internal_batch_size=8, method="trapezoid")
    # 30 rows in chunks of 8 -> 4 forwards; trapezoid has both end points, so no extra forward for delta
    assert calls == [8, 8, 8, 6]
    calls.clear()
    integrated_gradients(f, x, target=0, n_steps=10, method="gausslegendre")
    assert calls == [30, 3, 3]  # one path batch, then F(x̄) and F(x)


def test_bf16_autocast_accumulates_in_float32() -> None:
    net = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 3))
    x = torch.randn(4, 16)
    ref, _ = integrated_gradients(lambda t: net(t).softmax(-1), x, target=1, n_steps=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, d = integrated_gradients(lambda t: net(t).softmax(-1), x, target=1, n_steps=32)
    assert got.dtype == torch.float32 and d.dtype == torch.float32
    assert torch.isfinite(got).all()
    cos = torch.nn.functional.cosine_similarity(got.flatten(), ref.flatten(), dim=0)
    assert cos > 0.98
    # bf16 input: attributions come back in float32
    a16, _ = integrated_gradients(lambda t: net(t.float()).softmax(-1), x.bfloat16(), target=1, n_steps=8)
    assert a16.dtype == torch.float32


def test_extreme_inputs_stay_finite() -> None:
    net = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    x = torch.full((2, 8), 1e4)
    attr, delta = integrated_gradients(lambda t: net(t).softmax(-1), x, target=0)
    assert torch.isfinite(attr).all() and torch.isfinite(delta).all()


def test_class_form_matches_function_and_captum_shape() -> None:
    net = _mlp(2, d_in=5)
    x = torch.randn(3, 5, dtype=torch.float64)
    ig = IntegratedGradients(_prob(net))
    attr = ig.attribute(x, target=1, n_steps=12)
    attr2, delta2 = ig.attribute(x, target=1, n_steps=12, return_convergence_delta=True)
    ref, dref = integrated_gradients(_prob(net), x, target=1, n_steps=12)
    assert torch.equal(attr, ref) and torch.equal(attr2, ref) and torch.equal(delta2, dref)
    assert ig.has_convergence_delta() and ig.multiplies_by_inputs


def test_model_parameters_restored_and_unchanged() -> None:
    net = _mlp(0, d_in=4)
    net[0].weight.requires_grad_(False)
    before = [p.detach().clone() for p in net.parameters()]
    integrated_gradients(net, torch.randn(2, 4, dtype=torch.float64), target=0)
    assert [p.requires_grad for p in net.parameters()] == [False, True, True, True]
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert all(p.grad is None for p in net.parameters())


# ------------------------------------------------------------------------------------------ captum


@pytest.mark.parametrize(
    "ours,theirs",
    [
        ("gausslegendre", "gausslegendre"),
        ("riemann_left", "riemann_left"),
        ("riemann_right", "riemann_right"),
        ("riemann_middle", "riemann_middle"),
        ("riemann_trapezoid", "riemann_trapezoid"),
    ],
)
def test_equals_captum_integrated_gradients(ours: str, theirs: str) -> None:
    captum_attr = pytest.importorskip("captum.attr")
    net = _mlp(11, d_in=10).float()
    x = torch.randn(6, 10)
    xb = torch.randn(1, 10) * 0.1
    tgt = [0, 1, 2, 2, 1, 0]
    ig = captum_attr.IntegratedGradients(lambda t: net(t).softmax(-1))
    ref, ref_d = ig.attribute(x, xb, target=tgt, n_steps=25, method=theirs, return_convergence_delta=True)
    got, d = integrated_gradients(
        lambda t: net(t).softmax(-1), x, xb, target=tgt, n_steps=25, method=ours, internal_batch_size=40
    )
    assert (got - ref).abs().max() < 1e-6
    assert (d - ref_d).abs().max() < 1e-6


def test_captum_trapezoid_relation_and_tuple_inputs() -> None:
    captum_attr = pytest.importorskip("captum.attr")
    net = _mlp(12, d_in=6)
    a, b = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64)
    f = lambda p, q: net(torch.cat([p, q], 1)).softmax(-1)  # noqa: E731
    ig = captum_attr.IntegratedGradients(f)
    ref = ig.attribute((a, b), target=1, n_steps=20, method="riemann_trapezoid")
    ours, _ = integrated_gradients(f, (a, b), target=1, n_steps=20, method="trapezoid")
    # captum's trapezoid weights are ours times (n-1)/n
    for r, o in zip(ref, ours):
        assert torch.allclose(r, o * 19 / 20, atol=1e-12)


# ------------------------------------------------------------------------------------------ errors


def test_bad_inputs_raise_clear_errors() -> None:
    net = _mlp(0, d_in=4).float()
    f = lambda t: net(t).softmax(-1)  # noqa: E731
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match=r"integrated_gradients\(\): argument 'baselines' must have"):
        integrated_gradients(f, x, torch.zeros(2, 5), target=0)
    with pytest.raises(ValueError, match=r"argument 'target' must hold class indices in \[0, 3\), got 3"):
        integrated_gradients(f, x, target=3)
    with pytest.raises(ValueError, match=r"argument 'target' must hold class indices in \[0, 3\), got -1"):
        integrated_gradients(f, x, target=[0, -1])
    with pytest.raises(ValueError, match=r"argument 'n_steps' must be >= 1, got 0"):
        integrated_gradients(f, x, target=0, n_steps=0)
    with pytest.raises(ValueError, match=r"'n_steps' must be >= 2 for method='trapezoid'"):
        integrated_gradients(f, x, target=0, n_steps=1)
    with pytest.raises(ValueError, match=r"argument 'method' must be one of"):
        integrated_gradients(f, x, target=0, method="simpson")
    with pytest.raises(ValueError, match=r"argument 'target' must be a class index"):
        integrated_gradients(f, x)  # 3 scores per example, no target
    with pytest.raises(TypeError, match=r"argument 'inputs' must be a floating-point tensor"):
        integrated_gradients(f, torch.ones(2, 4, dtype=torch.long), target=0)
    with pytest.raises(ValueError, match=r"argument 'target' must be a sequence of 2 ints"):
        integrated_gradients(f, x, target=[0, 1, 2])
    with pytest.raises(ValueError, match=r"argument 'internal_batch_size' must be >= 1"):
        integrated_gradients(f, x, target=0, internal_batch_size=0)
    with pytest.raises(TypeError, match=r"argument 'forward_fn' must be callable"):
        integrated_gradients(3, x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"argument 'inputs\[1\]' must be a tensor with batch size 2"):
        integrated_gradients(lambda p, q: p.sum(1), (x, torch.randn(3, 4)))
