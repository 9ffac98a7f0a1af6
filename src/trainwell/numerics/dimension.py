"""How many dimensions an embedding of N items needs: the minimum-entropy rule ``n > 8.33 log N``.

Model ``p(w_i, w_j) = exp(<u_i, v_j>) / Z`` with entries of magnitude about 1 (``|u| ≈ √n``) and
directions uniform on the sphere, so ``<u, v> = n cos θ`` with angle density
``p_n(θ) = Γ(n/2) / (Γ((n-1)/2) √π) · sin^(n-2) θ`` on ``[0, π]``. Its entropy is
``H ≈ 2 log N + h_n`` with

    h_n = log E[e^(n cos θ)] - E[e^(n cos θ) n cos θ] / E[e^(n cos θ)].

A discrete entropy cannot be negative, so ``H < 0`` means the n-dimensional space has room to spare
for N items. Laplace's method gives ``h_n ≈ -½ log φ · n ≈ -0.2406 n`` (φ the golden ratio), hence
``n > 2 log N / 0.2406 ≈ 8.31 log N``; the post rounds to ``8.33 log N``. Worked values: N = 1e5 →
95.9, N = 5e6 → 128.5, N = 512 (an attention context) → 52.0. It is an order-of-magnitude rule
(tens vs hundreds), not an optimum. Source: kexue.fm/archives/7695 and kexue.fm/archives/8711.
"""

from __future__ import annotations

import math

import numpy as np

from trainwell._validation import check_choice, check_int, check_number

__all__ = ["entropy_dim", "entropy_h", "head_dim_lower_bound", "min_embedding_dim"]

_GRID = 16385  # trapezoid nodes on [0, π]; the integrands are smooth and vanish at both ends for n > 2
_LOG_PHI = math.log((1 + math.sqrt(5)) / 2)


def entropy_h(n: float) -> float:
    """The dimension term ``h_n`` of the embedding entropy ``H ≈ 2 log N + h_n``, by quadrature.

    ``h_n = log E[e^(n cos θ)] - E[e^(n cos θ) n cos θ] / E[e^(n cos θ)]`` with θ distributed as
    ``p_n(θ) ∝ sin^(n-2) θ`` on ``[0, π]``. Evaluated with the trapezoid rule in float64 log space
    (the weights ``sin^(n-2) θ · e^(n cos θ)`` overflow for n ≳ 700 otherwise), so any n works.
    Reference values (post): ``h_32 = -7.77471``, ``h_64 = -15.4734``, ``h_128 = -30.8718``;
    ``h_n / n → -½ log φ ≈ -0.2406``.

    Args:
        n: embedding dimension, a real number >= 2 (non-integer n interpolates smoothly).

    Source: kexue.fm/archives/7695.
    """
    nf = check_number("n", n, fn="entropy_h", min=2.0)
    if not math.isfinite(nf):
        raise ValueError(f"entropy_h(): argument 'n' must be finite, got {n!r}")
    theta = np.linspace(0.0, math.pi, _GRID)
    trap = np.full(_GRID, theta[1] - theta[0])
    trap[[0, -1]] *= 0.5
    with np.errstate(divide="ignore"):
        log_sin = np.log(np.sin(theta))
    log_sin[[0, -1]] = -np.inf  # sin(π) is 1e-16 in floating point, not 0
    log_norm = math.lgamma(nf / 2) - math.lgamma((nf - 1) / 2) - 0.5 * math.log(math.pi)
    s = nf * np.cos(theta)
    log_density = (nf - 2) * log_sin + log_norm if nf > 2 else np.full(_GRID, log_norm)
    log_w = log_density + s + np.log(trap)  # log of p_n(θ) e^(n cos θ) dθ
    peak = float(np.max(log_w))
    w = np.exp(log_w - peak)
    log_mean = peak + math.log(float(w.sum()))  # log E[e^(n cos θ)]
    tilted = float((w * s).sum() / w.sum())  # E[e^s s] / E[e^s]
    return log_mean - tilted


def min_embedding_dim(vocab_size: float, coef: float = 8.33, rounding: str | None = "ceil") -> float:
    """Smallest embedding dimension the minimum-entropy rule allows for ``vocab_size`` items (n > c·log N).

    ``n > 8.33 log N`` (natural log), from ``H ≈ 2 log N - 0.2406 n < 0``. The default
    (``rounding="ceil"``) returns the smallest integer satisfying the strict inequality, so the result
    never violates the bound it is named for: ``min_embedding_dim(1e5) == 96`` (raw 95.90),
    ``min_embedding_dim(1e6) == 116`` (raw 115.08), ``min_embedding_dim(5e6) == 129`` (raw 128.49).
    The post quotes its values rounded to the nearest integer ("N = 10^5 ⇒ ≈96, N = 5·10^6 ⇒ ≈128");
    ``rounding="round"`` reproduces those, ``None`` gives the raw float. Use :func:`entropy_dim` for
    the exact crossing of ``H = 0``.

    Args:
        vocab_size: number of items N (vocabulary size, sequence length), > 1.
        coef: the constant; 8.33 as in the post (the Laplace value is ``2 / (½ log φ) ≈ 8.31``).
        rounding: ``"ceil"`` (default: smallest integer ``n > coef·log N``), ``"round"`` (nearest, as
            the post quotes) or ``None``.

    Returns:
        An ``int`` when rounding, else a ``float``.

    Source: kexue.fm/archives/7695, kexue.fm/archives/8711.
    """
    fn = "min_embedding_dim"
    n_items = check_number("vocab_size", vocab_size, fn=fn, min=1.0, min_inclusive=False)
    c = check_number("coef", coef, fn=fn, min=0.0, min_inclusive=False)
    check_choice("rounding", rounding, ("ceil", "round", None), fn=fn)
    if not math.isfinite(n_items) or not math.isfinite(c):
        raise ValueError(
            f"{fn}(): arguments 'vocab_size' and 'coef' must be finite, got {vocab_size!r}, {coef!r}"
        )
    raw = c * math.log(n_items)
    if rounding == "ceil":
        return math.floor(raw) + 1  # strict: n > raw even when raw is an integer
    if rounding == "round":
        return round(raw)
    return raw


def head_dim_lower_bound(seq_len: int, coef: float = 8.33, rounding: str | None = "ceil") -> float:
    """Attention head size suggested by the same rule for a context of ``seq_len`` positions.

    Attention logits ``<q_i, k_j>`` are the same object as Skip-gram scores (kexue.fm/archives/8706),
    so ``d_head > 8.33 log(seq_len)``: 512 positions give 51.97 (→ 52; the standard head is 64).
    """
    check_int("seq_len", seq_len, fn="head_dim_lower_bound", min=2)
    return min_embedding_dim(seq_len, coef=coef, rounding=rounding)


def entropy_dim(vocab_size: float) -> float:
    """The dimension where the approximate entropy ``2 log N + h_n`` crosses zero (exact quadrature).

    Solves ``h_n = -2 log N`` for real ``n >= 2`` by bisection (``h_n`` is decreasing in n). Unlike
    :func:`min_embedding_dim` this keeps the ``O(log n)`` terms that the linear ``-0.2406 n`` drops,
    so it is slightly different from ``8.31 log N`` (e.g. about 96 for N = 1e5). Returns 2.0 when
    ``N`` is so small that already ``h_2 + 2 log N <= 0``.
    """
    n_items = check_number("vocab_size", vocab_size, fn="entropy_dim", min=1.0, min_inclusive=False)
    if not math.isfinite(n_items):
        raise ValueError(f"entropy_dim(): argument 'vocab_size' must be finite, got {vocab_size!r}")
    target = -2.0 * math.log(n_items)
    lo, hi = 2.0, 16.0
    if entropy_h(lo) <= target:
        return lo
    while entropy_h(hi) > target:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if entropy_h(mid) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-9:
            break
    return 0.5 * (lo + hi)
