"""Paired statistics against independent computations: exact bootstrap distribution, enumeration, Holm."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest

from trainwell.compare.stats import (
    holm,
    paired_bootstrap_ci,
    paired_effect,
    sign_flip_p_value,
    verdict,
)


def _exact_bootstrap_quantile(d: list[float], q: float) -> float:
    """Inverse CDF of the exact bootstrap distribution of the mean (all n^n index tuples)."""
    n = len(d)
    means = Counter(round(sum(d[i] for i in idx) / n, 12) for idx in itertools.product(range(n), repeat=n))
    acc = 0.0
    total = n**n
    for v in sorted(means):
        acc += means[v] / total
        if acc >= q - 1e-12:
            return v
    return max(means)


def test_bootstrap_ci_matches_the_exact_bootstrap_distribution() -> None:
    d = [0.8, -0.3, 1.7, 0.2, 2.5]  # 5^5 = 3125 equally likely resamples
    lo, hi = paired_bootstrap_ci(d, n_resamples=40_000, seed=7)
    # Monte Carlo quantiles sit between the exact quantiles a little below and above the target level
    assert _exact_bootstrap_quantile(d, 0.015) <= lo <= _exact_bootstrap_quantile(d, 0.035)
    assert _exact_bootstrap_quantile(d, 0.965) <= hi <= _exact_bootstrap_quantile(d, 0.985)
    assert lo < float(np.mean(d)) < hi


def test_bootstrap_ci_is_seeded_and_needs_10000_resamples() -> None:
    d = [0.01, 0.03, -0.02, 0.04]
    assert paired_bootstrap_ci(d) == paired_bootstrap_ci(d)
    many = list(np.random.default_rng(0).normal(0.0, 1.0, 12))
    assert paired_bootstrap_ci(many, seed=1) != paired_bootstrap_ci(many, seed=2)
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap_ci(d, n_resamples=9_999)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap_ci(d, confidence=1.0)
    with pytest.raises(ValueError, match="diffs"):
        paired_bootstrap_ci([1.0, math.nan])
    assert paired_bootstrap_ci([0.3, 0.3, 0.3]) == (0.3, 0.3)  # no spread: a point
    # three seeds: the 2.5% quantile of the resampled means is the smallest difference (P = 1/27 > 2.5%)
    assert paired_bootstrap_ci([0.1, 0.4, 0.2]) == (pytest.approx(0.1), pytest.approx(0.4))


def test_bootstrap_ci_coverage_on_normal_differences() -> None:
    rng = np.random.default_rng(0)
    hits = sum(lo <= 1.0 <= hi for lo, hi in (paired_bootstrap_ci(rng.normal(1.0, 1.0, 20), seed=k)
                                              for k in range(150)))
    assert 0.85 <= hits / 150 <= 0.99  # percentile bootstrap: near 95%, a little under for n = 20


def _enumerate_p(d: list[float], alternative: str) -> float:
    obs = sum(d) / len(d)
    hits = 0
    for signs in itertools.product((1, -1), repeat=len(d)):
        m = sum(s * x for s, x in zip(signs, d)) / len(d)
        if alternative == "two-sided":
            hits += abs(m) >= abs(obs) - 1e-12
        elif alternative == "greater":
            hits += m >= obs - 1e-12
        else:
            hits += m <= obs + 1e-12
    return hits / 2 ** len(d)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_sign_flip_p_value_equals_enumeration(n: int, alternative: str) -> None:
    d = list(np.random.default_rng(n).normal(0.3, 1.0, n))
    assert sign_flip_p_value(d, alternative) == pytest.approx(_enumerate_p(d, alternative), abs=1e-15)


def test_sign_flip_known_values() -> None:
    assert sign_flip_p_value([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)
    assert sign_flip_p_value([1, 2, 3, 4, 5], "greater") == pytest.approx(1 / 32)
    assert sign_flip_p_value([0.0, 0.0, 0.0]) == 1.0
    assert sign_flip_p_value([1.0, -1.0]) == 1.0
    # many seeds: Monte Carlo estimate close to the exact normal-theory-free value
    d = list(np.random.default_rng(3).normal(0.0, 1.0, 24))
    assert 0.0 < sign_flip_p_value(d) <= 1.0
    with pytest.raises(ValueError, match="alternative"):
        sign_flip_p_value([1.0], "bigger")


def _holm_reference(p: list[float]) -> list[float]:
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    prev = 0.0
    for k, i in enumerate(order):
        prev = max(prev, min(1.0, (m - k) * p[i]))
        out[i] = prev
    return out


def test_holm() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []
    rng = np.random.default_rng(1)
    for _ in range(20):
        p = list(rng.uniform(0, 0.2, 7))
        adj = holm(p)
        assert adj == pytest.approx(_holm_reference(p))
        assert all(a >= b for a, b in zip(adj, p))  # never below the raw p
    with pytest.raises(ValueError, match="p_values"):
        holm([0.2, 1.5])


def test_verdict_and_paired_effect() -> None:
    assert verdict(0.01, 0.05) == "helps"
    assert verdict(-0.05, -0.01) == "hurts"
    assert verdict(-0.01, 0.05) == "no detectable difference"
    assert verdict(0.0, 0.0) == "no detectable difference"
    assert verdict(0.01, 0.05, higher_is_better=False) == "hurts"
    e = paired_effect([0.82, 0.71, 0.78], [0.80, 0.70, 0.75])
    assert e.diff == pytest.approx(0.02) and e.n == 3
    assert (e.ci_low, e.ci_high) == pytest.approx(paired_bootstrap_ci([0.02, 0.01, 0.03]), abs=1e-12)
    assert e.p_value == pytest.approx(0.25)
    with pytest.raises(ValueError, match="treatment"):
        paired_effect([0.1, 0.2], [0.1])
