"""Spec optimization.md §5.6 (1-3): exponentiated gradient (post 8968)."""

from __future__ import annotations

import pytest
import torch

from trainwell.optim import ExponentiatedGradient

D = torch.float64


def test_positivity_and_log_space_equivalence() -> None:
    g = torch.Generator().manual_seed(0)
    theta = torch.nn.Parameter(torch.rand(64, generator=g, dtype=D) + 1e-3)
    log_ref = theta.detach().log()
    opt = ExponentiatedGradient([theta], lr=0.05)
    for _ in range(10_000):
        grad = torch.randn(64, generator=g, dtype=D) * torch.rand(64, generator=g, dtype=D) * 10
        theta.grad = grad
        opt.step()
        log_ref = log_ref - 0.05 * grad
        assert bool((theta > 0).all())
    torch.testing.assert_close(theta.detach().log(), log_ref, rtol=0, atol=1e-9)


def test_single_step_exact_and_zero_absorbing() -> None:
    g = torch.Generator().manual_seed(1)
    theta0 = torch.rand(10, generator=g, dtype=D) + 0.5
    theta0[3] = 0.0
    theta = torch.nn.Parameter(theta0.clone())
    grad = torch.randn(10, generator=g, dtype=D)
    theta.grad = grad
    ExponentiatedGradient([theta], lr=0.3).step()
    expected = torch.exp(theta0.log() - 0.3 * grad)  # GD on φ = log θ with ∇θ L in place of ∇φ L
    torch.testing.assert_close(theta.detach(), expected, rtol=1e-12, atol=1e-12)
    assert float(theta.detach()[3]) == 0.0


def test_simplex_eg_converges_to_best_vertex() -> None:
    c = torch.tensor([0.9, 0.4, 0.15, 0.7], dtype=D)
    theta = torch.nn.Parameter(torch.full((4,), 0.25, dtype=D))
    opt = ExponentiatedGradient([theta], lr=0.5, normalize_dim=0)
    for _ in range(300):
        theta.grad = c.clone()  # linear loss c·θ
        opt.step()
        torch.testing.assert_close(theta.sum(), torch.tensor(1.0, dtype=D), rtol=0, atol=1e-12)
    assert int(theta.argmax()) == 2 and float(theta.detach()[2]) > 0.999


def test_clamp_prevents_overflow() -> None:
    theta = torch.nn.Parameter(torch.ones(3, dtype=torch.float32))
    theta.grad = torch.tensor([-1e30, 1e30, 0.0])
    ExponentiatedGradient([theta], lr=1.0, max_exponent=50.0).step()
    assert bool(torch.isfinite(theta).all()) and bool((theta > 0).all())
    torch.testing.assert_close(theta.detach(), torch.tensor([50.0, -50.0, 0.0]).exp())


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="'params'"):
        ExponentiatedGradient([torch.nn.Parameter(torch.tensor([1.0, -0.5]))], lr=0.1)
    with pytest.raises(ValueError, match="'lr'"):
        ExponentiatedGradient([torch.nn.Parameter(torch.ones(2))], lr=-0.1)
    with pytest.raises(ValueError, match="'max_exponent'"):
        ExponentiatedGradient([torch.nn.Parameter(torch.ones(2))], lr=0.1, max_exponent=0)
