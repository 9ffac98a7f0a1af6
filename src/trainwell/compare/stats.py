"""Paired statistics over seeds: bootstrap CI of the mean difference, exact sign-flip p-value, Holm.

Design: every technique and the baseline are trained on the same seeds with the same initial weights and
data order, so the unit of analysis is the per-seed difference ``d_s = metric(technique, s) −
metric(baseline, s)``.

* :func:`paired_bootstrap_ci` — percentile bootstrap of ``mean(d)``: ``n_resamples`` (≥ 10,000) resamples
  of the ``n`` differences with replacement from a seeded generator; the CI is the
  ``(1−confidence)/2`` and ``(1+confidence)/2`` quantiles of the resampled means.
* :func:`sign_flip_p_value` — the exact permutation test of "no effect" for paired data: under H0 each
  ``d_s`` is symmetric about 0, so all ``2^n`` sign patterns are equally likely; the p-value is the
  share of patterns whose ``|mean|`` (two-sided) is at least the observed one. With ``n`` seeds the
  smallest two-sided p is ``2/2^n`` (0.0625 for 5 seeds, 0.25 for 3).
* :func:`holm` — Holm's step-down adjustment over the techniques of one comparison.
* :func:`verdict` — "helps" / "hurts" when the CI excludes 0 on the good / bad side, else
  "no detectable difference". The lab's judges use the same rule (:meth:`MethodStats.clearly_above`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainwell._validation import check_bool, check_finite_number, check_int, fail

__all__ = [
    "PairedEffect",
    "holm",
    "paired_bootstrap_ci",
    "paired_effect",
    "sign_flip_p_value",
    "verdict",
]

MIN_RESAMPLES = 10_000
_EXACT_MAX_N = 20  # 2^20 ≈ 1e6 sign patterns: exact enumeration stays cheap


def _as_diffs(name: str, values: Any, fn: str, min_len: int = 1) -> np.ndarray:
    try:
        a = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        fail(fn, name, "a sequence of real numbers", values, exc=TypeError)
    if a.size < min_len:
        fail(fn, name, f"at least {min_len} value(s)", f"{a.size} value(s)")
    if not np.all(np.isfinite(a)):
        fail(fn, name, "finite numbers (no NaN/inf)", [float(x) for x in a[:8]])
    return a


def paired_bootstrap_ci(
    diffs: Sequence[float],
    confidence: float = 0.95,
    n_resamples: int = MIN_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean of paired differences.

    Args:
        diffs: per-seed differences ``d_s`` (at least 1; with 1 the CI is ``(d, d)``).
        confidence: coverage in (0, 1) (default 0.95).
        n_resamples: bootstrap resamples, at least 10,000 (default 10,000).
        seed: seed of the resampling generator (``numpy.random.default_rng``); same seed, same CI.

    Returns:
        ``(low, high)``: the ``(1−c)/2`` and ``(1+c)/2`` quantiles (linear interpolation) of the
        resampled means.
    """
    fn = "paired_bootstrap_ci"
    d = _as_diffs("diffs", diffs, fn)
    c = check_finite_number("confidence", confidence, fn=fn, min=0.0, max=1.0, min_inclusive=False,
                            max_inclusive=False)
    b = check_int("n_resamples", n_resamples, fn=fn, min=MIN_RESAMPLES)
    s = check_int("seed", seed, fn=fn, min=0)
    assert b is not None and s is not None
    n = d.size
    if n == 1 or np.all(d == d[0]):
        return float(d[0]), float(d[0])
    rng = np.random.default_rng(s)
    means = np.empty(b, dtype=np.float64)
    chunk = max(1, 2_000_000 // n)  # bounded memory for many seeds
    for start in range(0, b, chunk):
        stop = min(b, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = d[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - c) / 2, (1 + c) / 2])
    return float(lo), float(hi)


def sign_flip_p_value(diffs: Sequence[float], alternative: str = "two-sided", *, n_resamples: int = 200_000,
                      seed: int = 0) -> float:
    """Exact sign-flip permutation p-value of ``mean(d) = 0`` for paired differences.

    All ``2^n`` sign patterns are enumerated for ``n ≤ 20``; beyond that ``n_resamples`` random patterns
    (seeded, plus the observed one) estimate it. Ties with the observed statistic count as "at least as
    extreme" (relative tolerance 1e-12), so all-zero differences give p = 1.

    Args:
        diffs: per-seed differences (at least 1).
        alternative: ``"two-sided"`` (``|mean| ≥ |observed|``), ``"greater"`` (``mean ≥ observed``) or
            ``"less"``.
    """
    fn = "sign_flip_p_value"
    d = _as_diffs("diffs", diffs, fn)
    if alternative not in ("two-sided", "greater", "less"):
        fail(fn, "alternative", "one of 'two-sided', 'greater', 'less'", alternative)
    n = d.size
    obs = float(d.mean())
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    if n <= _EXACT_MAX_N:
        codes = np.arange(2**n, dtype=np.int64)
        signs = 1.0 - 2.0 * ((codes[:, None] >> np.arange(n)) & 1)
        extra = 0
    else:
        r = check_int("n_resamples", n_resamples, fn=fn, min=1)
        assert r is not None
        rng = np.random.default_rng(seed)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(r, n))
        extra = 1  # the observed pattern itself (Phipson & Smyth)
    means = (signs * d).mean(axis=1)
    if alternative == "two-sided":
        hits = np.count_nonzero(np.abs(means) >= abs(obs) - tol)
    elif alternative == "greater":
        hits = np.count_nonzero(means >= obs - tol)
    else:
        hits = np.count_nonzero(means <= obs + tol)
    return float((hits + extra) / (means.size + extra))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order.

    With ``p_(1) ≤ … ≤ p_(m)``: ``p̃_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j))``.
    """
    fn = "holm"
    p = _as_diffs("p_values", p_values, fn, min_len=0)
    if np.any((p < 0) | (p > 1)):
        fail(fn, "p_values", "values in [0, 1]", [float(x) for x in p[:8]])
    m = p.size
    order = np.argsort(p, kind="stable")
    adj = np.empty(m, dtype=np.float64)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p[i])))
        adj[i] = running
    return [float(x) for x in adj]


def verdict(ci_low: float, ci_high: float, higher_is_better: bool = True) -> str:
    """``"helps"`` / ``"hurts"`` when the CI of the paired difference excludes 0, else
    ``"no detectable difference"``."""
    check_bool("higher_is_better", higher_is_better, fn="verdict")
    if math.isnan(ci_low) or math.isnan(ci_high):
        return "no detectable difference"
    if ci_low > 0:
        return "helps" if higher_is_better else "hurts"
    if ci_high < 0:
        return "hurts" if higher_is_better else "helps"
    return "no detectable difference"


@dataclass(frozen=True)
class PairedEffect:
    """The paired comparison of one technique with the baseline over ``n`` seeds."""

    n: int
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    diffs: tuple[float, ...]


def paired_effect(
    treatment: Sequence[float],
    baseline: Sequence[float],
    confidence: float = 0.95,
    n_resamples: int = MIN_RESAMPLES,
    seed: int = 0,
) -> PairedEffect:
    """Mean paired difference ``treatment − baseline`` with its bootstrap CI and sign-flip p-value.

    ``treatment[i]`` and ``baseline[i]`` must come from the same seed.
    """
    fn = "paired_effect"
    t = _as_diffs("treatment", treatment, fn)
    b = _as_diffs("baseline", baseline, fn)
    if t.size != b.size:
        fail(fn, "treatment", f"as many values as 'baseline' ({b.size}, one per seed)", f"{t.size} values")
    d = t - b
    lo, hi = paired_bootstrap_ci(d, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return PairedEffect(n=int(d.size), diff=float(d.mean()), ci_low=lo, ci_high=hi,
                        p_value=sign_flip_p_value(d), diffs=tuple(float(x) for x in d))
