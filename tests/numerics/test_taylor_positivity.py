"""Tests for trainwell.numerics.taylor_positivity (post 7919): even-order Taylor polynomials of exp > 0."""

from __future__ import annotations

import math

import pytest
import torch

from trainwell.numerics.taylor_positivity import taylor_exp, taylor_exp_minimizer


def direct(x: float, n: int) -> float:
    return sum(x**k / math.factorial(k) for k in range(n + 1))


def test_horner_matches_direct_sum_and_dtypes() -> None:
    x = torch.linspace(-6, 6, 49, dtype=torch.float64)
    for n in range(0, 9):
        want = torch.tensor([direct(v, n) for v in x.tolist()], dtype=torch.float64)
        torch.testing.assert_close(taylor_exp(x, n), want, rtol=1e-13, atol=1e-13)
    assert taylor_exp(x.float(), 4).dtype == torch.float32
    assert taylor_exp(x.bfloat16(), 4).dtype == torch.float32
    assert taylor_exp(torch.arange(3), 2).dtype == torch.float32


def test_even_orders_positive_odd_orders_not() -> None:
    x = torch.linspace(-50, 50, 20001, dtype=torch.float64)
    for n in range(2, 21, 2):
        assert bool((taylor_exp(x, n) > 0).all()), n
    for n in range(1, 21, 2):
        assert bool((taylor_exp(x, n) < 0).any()), n


def test_derivative_is_previous_order() -> None:
    x = torch.linspace(-4, 4, 33, dtype=torch.float64, requires_grad=True)
    for n in (2, 5, 8):
        (g,) = torch.autograd.grad(taylor_exp(x, n).sum(), x)
        torch.testing.assert_close(g, taylor_exp(x.detach(), n - 1))


@pytest.mark.parametrize(
    ("n", "x_star", "f_star"),
    [
        (2, -1.0, 0.5),
        (4, -1.59607, 0.270395),
        (6, -2.18061, 0.149325),
        (8, -2.75900, 0.0832715),
        (10, -3.33355, 0.0466991),
    ],
)
def test_minimizer_table(n: int, x_star: float, f_star: float) -> None:
    x, f = taylor_exp_minimizer(n)
    assert x == pytest.approx(x_star, abs=1e-5)
    assert f == pytest.approx(f_star, abs=1e-6)
    assert abs(direct(x, n - 1)) <= 1e-10  # stationary: f_{n-1}(x*) = 0
    assert f == pytest.approx(x**n / math.factorial(n), abs=1e-12)
    assert direct(x, n) == pytest.approx(f, abs=1e-10)
    grid = torch.linspace(x - 3, x + 3, 601, dtype=torch.float64)
    assert float(taylor_exp(grid, n).min()) >= f - 1e-12


def test_bad_orders() -> None:
    with pytest.raises(ValueError, match="'order'"):
        taylor_exp_minimizer(3)
    with pytest.raises(ValueError, match="'order'"):
        taylor_exp_minimizer(0)
    with pytest.raises(ValueError, match="'order'"):
        taylor_exp(torch.zeros(2), -1)
    with pytest.raises(TypeError, match="'order'"):
        taylor_exp(torch.zeros(2), 2.0)  # type: ignore[arg-type]
