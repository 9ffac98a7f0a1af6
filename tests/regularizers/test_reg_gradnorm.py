"""Gradient normalization (§8): gradient-norm formulas on piecewise-linear critics, invariances, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainwell.regularizers import GradientNormalized, grad_normalize

torch.set_num_threads(1)


def critic(act: nn.Module, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), act, nn.Linear(16, 8), act, nn.Linear(8, 1)).double()


def per_sample_grad_norm(f, x):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x).sum(), x)
    return g.flatten(1).norm(dim=1)


@pytest.mark.parametrize("act", [nn.ReLU(), nn.LeakyReLU(0.2)])
def test_gn_gradient_norm_formula(act):
    D = critic(act)
    x = torch.randn(32, 5, dtype=torch.float64)
    d = D(x).detach().squeeze(1)
    G = per_sample_grad_norm(D, x)
    gn = GradientNormalized(D)
    out = gn(x)
    assert out.shape == (32, 1)
    assert bool((out.abs() < 1).all())
    torch.testing.assert_close(out.detach().squeeze(1), d / (G + d.abs()))
    got = per_sample_grad_norm(gn, x)  # autograd through the normalized critic (double backprop)
    expected = G**2 / (G + d.abs()) ** 2
    torch.testing.assert_close(got, expected)
    assert bool((got <= 1 + 1e-12).all())
    assert bool((torch.sign(out.detach().squeeze(1)) == torch.sign(d)).all())
    # GraN
    gran = GradientNormalized(D, kind="gran", eps=0.3)
    torch.testing.assert_close(gran(x).detach().squeeze(1), d * G / (G**2 + 0.3))
    torch.testing.assert_close(per_sample_grad_norm(gran, x), G**2 / (G**2 + 0.3))


def test_scale_invariance_linear_closed_form_and_limits():
    D = critic(nn.ReLU(), seed=1)
    x = torch.randn(16, 5, dtype=torch.float64)
    scaled = nn.Sequential(D, nn.Linear(1, 1, bias=False).double())
    with torch.no_grad():
        scaled[1].weight.fill_(7.5)
    torch.testing.assert_close(grad_normalize(scaled, x), grad_normalize(D, x))
    # linear critic D = wᵀx + b: D̂ = (wᵀx + b)/(‖w‖ + |wᵀx + b|)
    lin = nn.Linear(5, 1).double()
    v = (x @ lin.weight.T + lin.bias).detach()
    torch.testing.assert_close(grad_normalize(lin, x), v / (lin.weight.norm() + v.abs()))
    # GraN → D/‖∇D‖ as ε → 0
    d = D(x).detach()
    G = per_sample_grad_norm(D, x).unsqueeze(1)
    torch.testing.assert_close(grad_normalize(D, x, kind="gran", eps=1e-14), d / G, rtol=1e-8, atol=1e-10)
    # D = 0 ⇒ D̂ = 0 (no 0/0)
    zero = nn.Linear(5, 1).double()
    with torch.no_grad():
        zero.weight.zero_()
        zero.bias.zero_()
    assert float(grad_normalize(zero, x).detach().abs().max()) == 0.0
    assert float(grad_normalize(zero, x, kind="gran").detach().abs().max()) == 0.0


def test_generator_receives_gradients_and_no_grad_mode():
    D = critic(nn.LeakyReLU(0.2), seed=2)
    G = nn.Linear(3, 5).double()
    z = torch.randn(8, 3, dtype=torch.float64)
    loss = -GradientNormalized(D)(G(z)).mean()
    loss.backward()
    assert G.weight.grad is not None and float(G.weight.grad.abs().sum()) > 0
    assert D[0].weight.grad is not None  # critic params get second-order gradients too
    with torch.no_grad():
        out = grad_normalize(D, z @ torch.randn(3, 5, dtype=torch.float64))
    assert not out.requires_grad


def test_bf16_critic_returns_float32():
    D = critic(nn.ReLU(), seed=3).to(torch.bfloat16)
    out = grad_normalize(D, torch.randn(4, 5, dtype=torch.bfloat16))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_bad_inputs():
    D = critic(nn.ReLU())
    with pytest.raises(ValueError, match="'kind'"):
        GradientNormalized(D, kind="sn")
    with pytest.raises(ValueError, match="'eps'"):
        GradientNormalized(D, kind="gran", eps=0.0)
    with pytest.raises(ValueError, match="'critic'"):
        grad_normalize(nn.Linear(5, 3).double(), torch.randn(4, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="'module'"):
        GradientNormalized(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'x'"):
        grad_normalize(D, torch.ones(4, 5, dtype=torch.long))
