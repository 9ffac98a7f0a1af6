"""Noise injection (§1): module/context-manager behaviour, Taylor expansions A and B, random-sign identity."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from trainwell.regularizers import (
    GaussianNoise,
    jacobian_penalty,
    noise_consistency_loss,
    noisy_loss,
    random_sign_gradient_penalty,
    weight_noise,
)

torch.set_num_threads(1)


def smooth_net(d=3, k=4, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, k)).double()


def test_gaussian_noise_module():
    layer = GaussianNoise(0.5)
    x = torch.zeros(20000, dtype=torch.float64)
    y = layer(x)
    assert abs(float(y.std()) - 0.5) < 0.02 and abs(float(y.mean())) < 0.02
    layer.eval()
    assert layer(x) is x
    assert GaussianNoise(0.0)(x) is x
    with pytest.raises(ValueError, match="'sigma'"):
        GaussianNoise(-1.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_weight_noise_restores_bit_exactly(dtype):
    net = smooth_net().to(dtype)
    saved = [p.detach().clone() for p in net.parameters()]
    x = torch.randn(5, 3, dtype=dtype)
    with weight_noise(net, 0.1, generator=torch.Generator().manual_seed(0)) as noises:
        assert any(not torch.equal(p, s) for p, s in zip(net.parameters(), saved))
        net(x).float().pow(2).sum().backward()
    assert all(torch.equal(p, s) for p, s in zip(net.parameters(), saved))
    # the gradient was taken at θ + ε
    noisy = copy.deepcopy(net)
    with torch.no_grad():
        for p, e in zip(noisy.parameters(), noises):
            p.add_(e)
    noisy(x).float().pow(2).sum().backward()
    for p, q in zip(net.parameters(), noisy.parameters()):
        assert torch.equal(p.grad, q.grad)
    with pytest.raises(RuntimeError, match="boom"), weight_noise(net, 1.0):
        raise RuntimeError("boom")
    assert all(torch.equal(p, s) for p, s in zip(net.parameters(), saved))


def test_noisy_loss_sigma_to_zero_and_linear_mse_exact():
    net = smooth_net()
    x = torch.randn(4, 3, dtype=torch.float64)
    y = torch.randn(4, 4, dtype=torch.float64)

    def mse(out, t):
        return (out - t).pow(2).sum(-1).mean()

    clean = mse(net(x), y)
    torch.testing.assert_close(noisy_loss(net, x, y, mse, 0.0, 3), clean)
    gaps = [
        abs(float((noisy_loss(net, x, y, mse, s, 2, antithetic=True) - clean).detach())) for s in (1e-2, 1e-3)
    ]
    assert gaps[1] < gaps[0] / 20  # O(σ²) with antithetic noise
    # linear model + MSE: E‖W(x+ε)+b−y‖² = ‖Wx+b−y‖² + σ²‖W‖_F² (Monte Carlo, 40k draws per sample)
    torch.manual_seed(1)
    lin = nn.Linear(3, 4).double()
    sigma = 0.3
    with torch.no_grad():
        mc = noisy_loss(
            lin, x, y, mse, sigma, 40000, antithetic=True, generator=torch.Generator().manual_seed(2)
        )
        exact = mse(lin(x), y) + sigma**2 * lin.weight.pow(2).sum()
    assert abs(float(mc / exact) - 1) < 5e-3


def test_expansion_a_laplacian():
    """(E l(x+ε) − l(x)) / (σ²/2·Δ_x l) → 1 as σ → 0 (antithetic Monte Carlo, 200k pairs)."""
    net = smooth_net(seed=3)
    torch.manual_seed(3)
    x = torch.randn(1, 3, dtype=torch.float64)
    y = torch.tensor([1])

    def ce(out, t):
        return F.cross_entropy(out, t)

    H = torch.autograd.functional.hessian(lambda v: ce(net(v.unsqueeze(0)), y), x[0])
    lap = torch.diagonal(H).sum()
    errs = []
    for sigma in (0.1, 0.05):
        with torch.no_grad():
            mc = noisy_loss(
                net, x, y, ce, sigma, 200000, antithetic=True, generator=torch.Generator().manual_seed(0)
            )
            clean = ce(net(x), y)
        errs.append(abs(float((mc - clean) / (0.5 * sigma**2 * lap)) - 1))
    assert errs[1] < errs[0] and errs[1] < 0.01, errs


def jac(net, x):
    return torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0))[0], x)  # [k, d]


def test_expansion_b_kl_and_mse():
    """E KL(f(x) ‖ f(x+ε)) / (σ²/2·Σ p_i‖∇ log p_i‖²) → 1 and E‖Δf‖² / (σ²‖J‖_F²) → 1."""
    net = smooth_net(seed=3)
    x = torch.randn(1, 3, dtype=torch.float64)
    logp = lambda v: F.log_softmax(net(v.unsqueeze(0))[0], -1)  # noqa: E731
    J = torch.autograd.functional.jacobian(logp, x[0])
    p = logp(x[0]).exp()
    sigma = 0.05
    kl_ref = 0.5 * sigma**2 * (p * J.pow(2).sum(1)).sum()
    mse_ref = sigma**2 * jac(net, x[0]).pow(2).sum()
    with torch.no_grad():
        kl = noise_consistency_loss(
            net, x, sigma, kind="kl", n_samples=100000, generator=torch.Generator().manual_seed(0)
        )
        mse = noise_consistency_loss(
            net, x, sigma, kind="mse", n_samples=100000, generator=torch.Generator().manual_seed(1)
        )
    assert abs(float(kl / kl_ref) - 1) < 0.03
    assert abs(float(mse / mse_ref) - 1) < 0.03
    # exactly zero (value and gradient) at σ = 0
    net.zero_grad()
    z = noise_consistency_loss(net, x, 0.0, kind="kl")
    assert float(z.detach()) == 0.0
    z.backward()
    assert all(float(q.grad.abs().max()) < 1e-15 for q in net.parameters())
    zm = noise_consistency_loss(net, x, 0.0, kind="mse")
    assert float(zm.detach()) == 0.0


def test_random_sign_identity_exact_over_all_patterns():
    net = smooth_net(k=4, seed=4)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    out = net(x)
    w = torch.rand(2, 4, dtype=torch.float64)
    # independent reference Σ_i λ_i‖∇_x f_i‖² from the Jacobian
    ref = torch.stack([(w[b] * jac(net, x[b].detach()).pow(2).sum(1)).sum() for b in range(2)])
    signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=8)), dtype=torch.float64).view(-1, 2, 4)
    est = random_sign_gradient_penalty(out, x, w, signs=signs, reduction="none")
    torch.testing.assert_close(est, ref)
    torch.testing.assert_close(jacobian_penalty(out, x, w, reduction="none"), ref)
    # unbiased with random draws
    mc = random_sign_gradient_penalty(
        out, x, w, n_projections=3000, reduction="none", generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(mc, ref, rtol=0.08, atol=0)
    # trainable: gradcheck through the double backward
    net2 = smooth_net(k=2, seed=5)
    W = net2[0].weight

    def pen(wt):
        xx = x.detach().requires_grad_(True)
        o = net2[2](torch.tanh(F.linear(xx, wt, net2[0].bias)))
        return jacobian_penalty(o, xx)

    assert torch.autograd.gradcheck(pen, (W.detach().requires_grad_(True),))


@settings(max_examples=15, deadline=None)
@given(k=st.integers(1, 5), seed=st.integers(0, 1000))
def test_random_sign_enumeration_property(k, seed):
    net = smooth_net(k=k, seed=seed)
    x = torch.randn(1, 3, dtype=torch.float64, requires_grad=True)
    out = net(x)
    signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=k)), dtype=torch.float64).view(-1, 1, k)
    torch.testing.assert_close(random_sign_gradient_penalty(out, x, signs=signs), jacobian_penalty(out, x))


def test_target_noise_cross_entropy_is_linear():
    """E_ỹ CE(ỹ, p) = CE(E ỹ, p): label smoothing is CE against the mean target."""
    torch.manual_seed(0)
    logits = torch.randn(3, 5, dtype=torch.float64)
    targets = torch.softmax(torch.randn(7, 3, 5, dtype=torch.float64), -1)
    avg = torch.stack([F.cross_entropy(logits, t) for t in targets]).mean()
    torch.testing.assert_close(avg, F.cross_entropy(logits, targets.mean(0)))


def test_bad_inputs():
    net = smooth_net()
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="'sigma'"):
        noisy_loss(net, x, y, F.mse_loss, -0.1)
    with pytest.raises(ValueError, match="'n_samples'"):
        noisy_loss(net, x, y, F.mse_loss, 0.1, 3, antithetic=True)
    with pytest.raises(ValueError, match="'target'"):
        noisy_loss(net, x, y[:1], F.mse_loss, 0.1)
    with pytest.raises(ValueError, match="'weights'"):
        random_sign_gradient_penalty(net(x), x, -torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="'inputs'"):
        jacobian_penalty(net(x), x.detach())
    with pytest.raises(ValueError, match="'signs'"):
        random_sign_gradient_penalty(net(x), x, signs=torch.ones(2, 3))
    with pytest.raises(ValueError, match="'kind'"):
        noise_consistency_loss(net, x, 0.1, kind="js")
    with pytest.raises(ValueError, match="'sigma'"), weight_noise(net, -1.0):
        pass
