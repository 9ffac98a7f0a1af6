"""Taylor polynomials of exp: evaluation and the minimum of the even-order ones (post 7919).

``f_n(x) = Σ_{k=0}^{n} x^k / k!`` is strictly positive on the real line for even ``n``: it tends to
``+∞`` at both ends, and at a stationary point ``f_n'(x) = f_{n-1}(x) = 0`` so ``f_n(x) = x^n / n! > 0``
(``x = 0`` is not stationary). ``f_{n-1}`` is strictly increasing (its derivative ``f_{n-2}`` is positive),
so the minimiser ``x_n*`` is its unique real root.

Source: kexue.fm/archives/7919; Taylor softmax arXiv:2011.11538.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from trainwell._validation import check_int, check_tensor, fail

__all__ = ["taylor_exp", "taylor_exp_minimizer"]


def taylor_exp(x: Tensor, order: int) -> Tensor:
    """Evaluate ``f_n(x) = Σ_{k≤n} x^k / k!`` elementwise by Horner's rule.

    ``f_n(x) = 1 + x(1 + x/2(1 + x/3(… (1 + x/n))))``: ``n`` multiply-adds, no powers or factorials.
    float32 and float64 inputs are computed in their own dtype; half/bfloat16 (and integer) inputs are
    computed and returned in float32 (values grow like ``|x|^n / n!``, which overflows half quickly).
    Any ``order ≥ 0`` is accepted here (odd orders are *not* positive everywhere).

    Args:
        x: input tensor.
        order: the degree ``n`` (int ≥ 0).
    """
    fn = "taylor_exp"
    check_tensor("x", x, fn=fn, kind=("float", "int", "bool"))
    n = check_int("order", order, fn=fn, min=0)
    xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
    out = torch.ones_like(xf)
    for k in range(n, 0, -1):
        out = 1.0 + out * xf / k
    return out


def _f(x: float, n: int) -> float:
    """``f_n(x)`` in float64 by Horner's rule."""
    out = 1.0
    for k in range(n, 0, -1):
        out = 1.0 + out * x / k
    return out


@functools.cache
def taylor_exp_minimizer(order: int) -> tuple[float, float]:
    """Minimiser and minimum ``(x_n*, f_n(x_n*))`` of the even-order Taylor polynomial of exp.

    ``x_n*`` is the unique real root of ``f_{n-1}`` (strictly increasing), found in float64 by Newton's
    method safeguarded with bisection; the minimum is returned as ``(x_n*)^n / n!``, which equals
    ``f_n(x_n*)`` at the root and avoids the cancellation of summing the alternating series.
    Known values (post 7919): n=2 → (−1, 0.5); n=4 → (−1.59607, 0.270395); n=6 → (−2.18061, 0.149325).

    Args:
        order: even ``n ≥ 2``.

    Raises:
        ValueError: if ``order`` is odd or < 2 (odd orders have no minimum: they go to −∞).
    """
    fn = "taylor_exp_minimizer"
    n = check_int("order", order, fn=fn, min=2)
    if n % 2:
        fail(fn, "order", "an even int >= 2 (odd-order Taylor polynomials of exp are unbounded below)", order)
    g = n - 1  # f_n' = f_{n-1}; find its root
    lo, hi = -1.0, 0.0
    while _f(lo, g) > 0.0:
        lo *= 2.0
    x = 0.5 * (lo + hi)
    for _ in range(200):
        fx = _f(x, g)
        if fx == 0.0:
            break
        if fx > 0.0:
            hi = x
        else:
            lo = x
        step = fx / _f(x, g - 1)  # f_{n-1}' = f_{n-2} > 0
        nx = x - step
        if not (lo < nx < hi):
            nx = 0.5 * (lo + hi)
        if abs(nx - x) <= 1e-15 * max(1.0, abs(x)):
            x = nx
            break
        x = nx
    return x, x**n / math.factorial(n)
