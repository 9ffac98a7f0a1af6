from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from trainwell.numerics import entropy_dim, entropy_h, head_dim_lower_bound, min_embedding_dim

PHI = (1 + math.sqrt(5)) / 2


def _h_reference(n: int) -> float:
    """h_n by Simpson's rule on a fine grid in float64 with a per-n max shift (independent of the library)."""
    theta = np.linspace(1e-12, math.pi - 1e-12, 200_001)
    log_f = (n - 2) * np.log(np.sin(theta)) + n * np.cos(theta)
    f = np.exp(log_f - log_f.max())
    w = np.ones_like(theta)
    w[1:-1:2], w[2:-1:2] = 4, 2
    z = (w * f).sum()
    zs = (w * f * n * np.cos(theta)).sum()
    # the normaliser of p_n cancels in the ratio; put it back for the log term
    log_norm = math.lgamma(n / 2) - math.lgamma((n - 1) / 2) - 0.5 * math.log(math.pi)
    step = theta[1] - theta[0]
    return log_norm + log_f.max() + math.log(z * step / 3) - zs / z


@pytest.mark.parametrize(
    "n, value",
    [(32, -7.77471), (64, -15.4734), (96, -23.1726), (128, -30.8718), (256, -61.6692), (512, -123.264)],
)
def test_entropy_h_matches_post_table(n: int, value: float) -> None:
    assert entropy_h(n) == pytest.approx(value, abs=1e-3 if n == 512 else 1e-4)
    assert entropy_h(n) == pytest.approx(_h_reference(n), abs=1e-6)


def test_entropy_h_slope_tends_to_half_log_phi() -> None:
    gaps = [abs(entropy_h(n) / n + 0.5 * math.log(PHI)) for n in (16, 64, 256, 512, 2048)]
    assert gaps[3] < 2e-3
    assert all(x > y for x, y in itertools.pairwise(gaps))
    assert math.isfinite(entropy_h(5000))  # log-space quadrature: no overflow far beyond n ≈ 700


def test_laplace_point_of_log_sin_plus_cos() -> None:
    theta = np.linspace(0.5, 1.3, 2_000_001)
    best = float(theta[np.argmax(np.log(np.sin(theta)) + np.cos(theta))])
    assert best == pytest.approx(math.atan(math.sqrt(PHI)), abs=1e-6)
    assert math.cos(best) == pytest.approx(1 / PHI, abs=1e-6)


def test_min_embedding_dim_worked_numbers() -> None:
    assert min_embedding_dim(1e5, rounding=None) == pytest.approx(95.90, abs=1e-2)
    assert min_embedding_dim(5e6, rounding=None) == pytest.approx(128.49, abs=1e-2)
    assert min_embedding_dim(512, rounding=None) == pytest.approx(51.97, abs=1e-2)
    assert min_embedding_dim(1e5) == 96
    assert min_embedding_dim(5e6, rounding="round") == 128  # the post's "≈128"
    assert min_embedding_dim(5e6) == 129  # default: smallest integer with n > 8.33 log N
    assert min_embedding_dim(1e5, rounding="round") == 96
    assert head_dim_lower_bound(512) == 52
    assert isinstance(min_embedding_dim(1e5), int)
    # the Laplace constant: 2 / (½ log φ)
    assert min_embedding_dim(1e5, coef=4 / math.log(PHI), rounding=None) == pytest.approx(
        2 * math.log(1e5) / (0.5 * math.log(PHI))
    )


def test_min_embedding_dim_monotone_in_vocab() -> None:
    sizes = np.logspace(0.5, 9, 60)
    raw = [min_embedding_dim(float(s), rounding=None) for s in sizes]
    ceil = [min_embedding_dim(float(s), rounding="ceil") for s in sizes]
    assert all(x < y for x, y in itertools.pairwise(raw))
    assert all(x <= y for x, y in itertools.pairwise(ceil))


def test_entropy_dim_solves_h_equals_minus_two_log_n() -> None:
    for n_items in (512, 1e5, 5e6):
        d = entropy_dim(n_items)
        assert entropy_h(d) == pytest.approx(-2 * math.log(n_items), abs=1e-6)
        # within a few percent of the linear rule
        assert d == pytest.approx(min_embedding_dim(n_items, rounding=None), rel=0.02)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="'vocab_size'"):
        min_embedding_dim(1)
    with pytest.raises(ValueError, match="'vocab_size'"):
        min_embedding_dim(-5)
    with pytest.raises(TypeError, match="'vocab_size'"):
        min_embedding_dim("1000")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'vocab_size'"):
        min_embedding_dim(float("inf"))
    with pytest.raises(ValueError, match="'coef'"):
        min_embedding_dim(1000, coef=0)
    with pytest.raises(ValueError, match="'rounding'"):
        min_embedding_dim(1000, rounding="floor")
    with pytest.raises(ValueError, match="'n'"):
        entropy_h(1.5)
    with pytest.raises(ValueError, match="'seq_len'"):
        head_dim_lower_bound(1)
    with pytest.raises(ValueError, match="'vocab_size'"):
        entropy_dim(0.5)


@pytest.mark.parametrize("n_items", [1e3, 1e5, 1e6, 5e6, 3e7, 1e9])
def test_min_embedding_dim_default_satisfies_the_bound(n_items: float) -> None:
    """Regression: N = 1e6 used to give 115 < 8.33·ln N = 115.08 (rounded to nearest)."""
    n = min_embedding_dim(n_items)
    assert n > 8.33 * math.log(n_items)
    assert n - 1 <= 8.33 * math.log(n_items)  # and it is the smallest such integer
    assert min_embedding_dim(1e6) == 116
