"""Tests for trainwell.losses.flooding (post 7643)."""

from __future__ import annotations

import pytest
import torch

from trainwell.losses import Flooding, flooding


def quad_setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(4, 4, generator=g, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(4, dtype=torch.float64)
    theta0 = torch.randn(4, generator=g, dtype=torch.float64)
    return a, theta0


def test_value_gradient_and_b_zero() -> None:
    w = torch.tensor([0.3, -1.2], dtype=torch.float64, requires_grad=True)
    for b in (0.0, 0.05, 2.0, 10.0):
        loss = (w**2).sum()
        flooded = flooding(loss, b)
        assert float(flooded.detach()) >= max(float(loss.detach()), b) - 1e-15
        (g_f,) = torch.autograd.grad(flooded, w, retain_graph=True)
        (g_l,) = torch.autograd.grad(loss, w)
        lv = float(loss.detach())
        if lv >= b:
            torch.testing.assert_close(flooded, loss)
        if lv > b:
            torch.testing.assert_close(g_f, g_l)
        else:
            torch.testing.assert_close(g_f, -g_l)
    assert Flooding(1.0)(torch.tensor(0.25)).item() == 1.75


def step(theta: torch.Tensor, a: torch.Tensor, lr: float, b: float) -> torch.Tensor:
    p = theta.clone().requires_grad_()
    opt = torch.optim.SGD([p], lr=lr)
    flooding(0.5 * p @ a @ p, b).backward()
    opt.step()
    return p.detach()


def test_descent_then_ascent_is_gradient_step_on_gradient_norm() -> None:
    a, theta0 = quad_setup()
    eps = 1e-2
    loss = lambda th: float(0.5 * th @ a @ th)  # noqa: E731
    theta1 = theta0 - eps * a @ theta0
    b = 0.5 * (loss(theta0) + loss(theta1))  # above b at θ0 (descent), below at θ1 (ascent)
    theta2 = step(step(theta0, a, eps, b), a, eps, b)
    torch.testing.assert_close(theta2, theta0 - eps**2 * a @ a @ theta0, rtol=0, atol=1e-13)
    # ascent first (L < b at θ0), then descent: the same expression
    up = theta0 + eps * a @ theta0
    b2 = 0.5 * (loss(theta0) + loss(up))
    theta2b = step(step(theta0, a, eps, b2), a, eps, b2)
    torch.testing.assert_close(theta2b, theta0 - eps**2 * a @ a @ theta0, rtol=0, atol=1e-13)
    # two step sizes (b-free variant): θ − (ε₁−ε₂)Aθ − ε₁ε₂A²θ exactly
    e1, e2 = 2e-2, 5e-3
    th = theta0 - e1 * a @ theta0
    th = th + e2 * a @ th
    torch.testing.assert_close(
        th, theta0 - (e1 - e2) * a @ theta0 - e1 * e2 * a @ a @ theta0, rtol=0, atol=1e-13
    )


def test_nonquadratic_gap_is_third_order() -> None:
    def loss_fn(th: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.cosh(th)).sum() + 0.1 * (th**4).sum()

    theta0 = torch.tensor([0.7, -0.4, 1.1], dtype=torch.float64)
    gaps = []
    for eps in (2e-2, 1e-2):
        p = theta0.clone().requires_grad_()
        b = float(loss_fn(p).detach()) - 1e-9  # just below: first step descends
        (g,) = torch.autograd.grad(flooding(loss_fn(p), b), p)
        p1 = (p - eps * g).detach().requires_grad_()
        (g1,) = torch.autograd.grad(flooding(loss_fn(p1), b), p1)  # below b now: ascent
        two_step = p1.detach() - eps * g1
        q = theta0.clone().requires_grad_()
        (gq,) = torch.autograd.grad(loss_fn(q), q, create_graph=True)
        (hg,) = torch.autograd.grad(0.5 * (gq**2).sum(), q)
        gaps.append(float((two_step - (theta0 - eps**2 * hg)).norm()))
    assert 5.0 < gaps[0] / gaps[1] < 11.0  # O(ε³): ≈ 8× smaller when ε halves


def test_reference_decides_the_sign() -> None:
    w = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    loss = (w**2).sum() / 100  # 0.05 < b
    b = 0.1
    (g_ref_high,) = torch.autograd.grad(flooding(loss, b, reference=torch.tensor(0.3)), w, retain_graph=True)
    (g_plain,) = torch.autograd.grad(loss, w, retain_graph=True)
    torch.testing.assert_close(g_ref_high, g_plain)  # effective batch above b: descend
    (g_ref_low,) = torch.autograd.grad(flooding(loss, b, reference=0.01), w, retain_graph=True)
    torch.testing.assert_close(g_ref_low, -g_plain)
    torch.testing.assert_close(flooding(loss, b, reference=loss.detach()), flooding(loss, b))
    # micro-batches flooded with the accumulated reference all share one sign
    parts = [(w**2).sum() / 100, (w**2).sum() / 2]
    ref = sum(float(p.detach()) for p in parts) / 2
    total = sum(flooding(p, b, reference=ref) for p in parts)
    (g_acc,) = torch.autograd.grad(total, w, retain_graph=True)
    (g_sum,) = torch.autograd.grad(sum(parts), w)
    torch.testing.assert_close(g_acc, g_sum)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="'loss'"):
        flooding(torch.ones(3), 0.1)
    with pytest.raises(TypeError, match="'loss'"):
        flooding(1.0, 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'level'"):
        flooding(torch.tensor(1.0), float("nan"))
    with pytest.raises(ValueError, match="'reference'"):
        flooding(torch.tensor(1.0), 0.1, reference=torch.ones(2))
