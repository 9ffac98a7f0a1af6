"""Mitchell's logarithmic multiplication and division: a product becomes one integer addition.

Write a positive number as ``p = 2^n (1 + x)`` with ``x in [0, 1)`` and approximate
``log2(1 + x) ≈ x``. Then ``log2 p ≈ n + x`` is just the IEEE-754 bit pattern read as a fixed-point
number, and a product is ``float(bits(a) + bits(b) - B)`` with ``B = bias << mantissa_bits``:

    x1 + x2 <  1:  p·q ≈ 2^(n1+n2)   (1 + x1 + x2)
    x1 + x2 >= 1:  p·q ≈ 2^(n1+n2+1) (x1 + x2)          (the mantissa carry into the exponent)

The ratio approximate/exact lies in ``[8/9, 1]``: the product is never overestimated and is at most
1/9 too small (worst case ``x1 = x2 = 1/2``). Division ``bits(a) - bits(b) + B`` lies in ``[1, 9/8]``
of the exact quotient. Source: kexue.fm/archives/7991; J. N. Mitchell, IRE Trans. Electronic
Computers 1962; M. Mogami, arXiv:2012.03458 (training without multiplications).

This is a numerics reference implementation, not a speed-up: on CPUs and GPUs the bit juggling is
slower than the native multiply. Real gains need hardware built around the integer adder.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from trainwell._validation import check_choice, fail

__all__ = ["mitchell_divide", "mitchell_multiply"]

# dtype -> (integer view dtype, mantissa bits, exponent bits)
_FLOAT_LAYOUT: dict[torch.dtype, tuple[torch.dtype, int, int]] = {
    torch.float16: (torch.int16, 10, 5),
    torch.bfloat16: (torch.int16, 7, 8),
    torch.float32: (torch.int32, 23, 8),
    torch.float64: (torch.int64, 52, 11),
}
_SUBNORMAL = ("flush", "exact")
_BACKWARD = ("exact", "mitchell")


# --------------------------------------------------------------------------------------------- helpers


def _prepare(a: Any, b: Any, fn: str) -> tuple[Tensor, Tensor]:
    """Validate, promote to a common dtype and broadcast."""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        fail(fn, "a", "a torch.Tensor (at least one of 'a', 'b' must be a tensor)", a, exc=TypeError)
    for name, v in (("a", a), ("b", b)):
        if isinstance(v, Tensor):
            if v.dtype == torch.bool or v.is_complex():
                fail(fn, name, "a real float or integer tensor", v, exc=TypeError)
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            fail(fn, name, "a torch.Tensor or a real number", v, exc=TypeError)
    dtype = torch.result_type(a, b)
    ref = a if isinstance(a, Tensor) else b
    ta = a.to(dtype) if isinstance(a, Tensor) else torch.tensor(a, dtype=dtype, device=ref.device)
    tb = b.to(dtype) if isinstance(b, Tensor) else torch.tensor(b, dtype=dtype, device=ref.device)
    if ta.device != tb.device:
        fail(fn, "b", f"a tensor on the same device as 'a' ({ta.device})", tb)
    try:
        ta, tb = torch.broadcast_tensors(ta, tb)
    except RuntimeError:
        raise ValueError(
            f"{fn}(): argument 'b' {tuple(tb.shape)} must broadcast against 'a' {tuple(ta.shape)}"
        ) from None
    return ta, tb


def _fields(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(biased exponent, mantissa field, sign bit) of a float tensor, as int64 tensors."""
    view, mbits, ebits = _FLOAT_LAYOUT[x.dtype]
    bits = x.view(view).to(torch.int64)
    total = torch.iinfo(view).bits
    if total < 64:
        bits = bits & ((1 << total) - 1)  # undo sign extension of the narrower view
        sign = (bits >> (total - 1)) & 1
    else:
        sign = (bits < 0).to(torch.int64)
        bits = bits & 0x7FFF_FFFF_FFFF_FFFF
    exponent = (bits >> mbits) & ((1 << ebits) - 1)
    mantissa = bits & ((1 << mbits) - 1)
    return exponent, mantissa, sign


def _assemble(exponent: Tensor, mantissa: Tensor, dtype: torch.dtype) -> Tensor:
    """Positive float from in-range (exponent, mantissa) fields."""
    view, mbits, _ = _FLOAT_LAYOUT[dtype]
    bits = (exponent << mbits) | mantissa
    # Every positive pattern fits the signed view, so the narrowing cast is exact.
    return bits.to(view).view(dtype)


def _float_op(a: Tensor, b: Tensor, divide: bool, subnormal: str) -> Tensor:
    _, mbits, ebits = _FLOAT_LAYOUT[a.dtype]
    e_max = (1 << ebits) - 1
    bias = (1 << (ebits - 1)) - 1
    ea, ma, sa = _fields(a)
    eb, mb, sb = _fields(b)
    one = 1 << mbits
    if divide:
        # log2 a - log2 b in fixed point; a borrow out of the mantissa lowers the exponent by one.
        diff = ma - mb
        borrow = (diff < 0).to(torch.int64)
        mantissa = diff + borrow * one
        exponent = ea - eb + bias - borrow
    else:
        total = ma + mb
        carry = (total >= one).to(torch.int64)
        mantissa = total - carry * one
        exponent = ea + eb - bias + carry
    overflow = exponent >= e_max
    underflow = exponent <= 0
    safe_e = exponent.clamp(1, e_max - 1)
    mag = _assemble(safe_e, mantissa, a.dtype)
    mag = torch.where(overflow, torch.full_like(mag, float("inf")), mag)
    mag = torch.where(underflow, torch.zeros_like(mag), mag)
    out = torch.where((sa ^ sb).bool(), -mag, mag)

    exact = a / b if divide else a * b
    sub_a = (ea == 0) & (ma != 0)
    sub_b = (eb == 0) & (mb != 0)
    # Zeros, infinities and NaNs follow IEEE exactly (the exact op already gets them right).
    special = (ea == 0) & (ma == 0) | (eb == 0) & (mb == 0) | (ea == e_max) | (eb == e_max)
    if subnormal == "exact":
        special = special | sub_a | sub_b
    else:
        # Flush-to-zero: a subnormal operand counts as a signed zero.
        za = torch.where(sub_a, torch.zeros_like(a), a).copysign(a)
        zb = torch.where(sub_b, torch.zeros_like(b), b).copysign(b)
        flushed = za / zb if divide else za * zb
        out = torch.where(sub_a | sub_b, flushed, out)
    return torch.where(special, exact, out)


def _bit_length_minus_one(x: Tensor) -> Tensor:
    """floor(log2 x) for positive int64 ``x`` by a branch-free binary search over shifts."""
    n = torch.zeros_like(x)
    for s in (32, 16, 8, 4, 2, 1):
        hi = x >> s
        mask = hi > 0
        x = torch.where(mask, hi, x)
        n = n + mask.to(torch.int64) * s
    return n


def _int_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Mitchell product of integers with shifts and adds only; the result is an integer."""
    dtype = a.dtype
    a64, b64 = a.to(torch.int64), b.to(torch.int64)
    neg = (a64 < 0) ^ (b64 < 0)
    pa, pb = a64.abs(), b64.abs()
    zero = (pa == 0) | (pb == 0)
    pa, pb = torch.where(zero, torch.ones_like(pa), pa), torch.where(zero, torch.ones_like(pb), pb)
    na, nb = _bit_length_minus_one(pa), _bit_length_minus_one(pb)
    ra, rb = pa - (1 << na), pb - (1 << nb)
    # 2^(na+nb) (x1 + x2) = ra 2^nb + rb 2^na; compare it with 2^(na+nb) to pick the case.
    s = (ra << nb) + (rb << na)
    base = torch.ones_like(pa) << (na + nb)
    mag = torch.where(s < base, base + s, 2 * s)
    out = torch.where(neg, -mag, mag)
    out = torch.where(zero, torch.zeros_like(out), out)
    return out.to(dtype)


# --------------------------------------------------------------------------------------------- autograd


class _MitchellMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, subnormal: str, backward: str) -> Tensor:
        ctx.save_for_backward(a, b)
        ctx.backward_mode = backward
        ctx.subnormal = subnormal
        return _float_op(a, b, False, subnormal)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        a, b = ctx.saved_tensors
        if ctx.backward_mode == "exact":
            ga, gb = grad * b, grad * a
        else:
            ga, gb = _float_op(grad, b, False, ctx.subnormal), _float_op(grad, a, False, ctx.subnormal)
        return (ga if ctx.needs_input_grad[0] else None, gb if ctx.needs_input_grad[1] else None, None, None)


class _MitchellDiv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, subnormal: str, backward: str) -> Tensor:
        out = _float_op(a, b, True, subnormal)
        ctx.save_for_backward(a, b, out)
        ctx.backward_mode = backward
        ctx.subnormal = subnormal
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        a, b, out = ctx.saved_tensors
        if ctx.backward_mode == "exact":
            ga = grad / b
            gb = -grad * a / (b * b)
        else:
            sub = ctx.subnormal
            ga = _float_op(grad, b, True, sub)
            gb = -_float_op(_float_op(grad, out, False, sub), b, True, sub)
        return (ga if ctx.needs_input_grad[0] else None, gb if ctx.needs_input_grad[1] else None, None, None)


# --------------------------------------------------------------------------------------------- public


def mitchell_multiply(a: Tensor | float, b: Tensor | float, *, subnormal: str = "flush",
                      backward: str = "exact") -> Tensor:
    """Multiply elementwise with Mitchell's logarithmic approximation (integer addition of bit patterns).

    For floats (float16, bfloat16, float32, float64) the result is
    ``float(bits(|a|) + bits(|b|) - B)`` with ``B = bias << mantissa_bits`` (``0x3F800000`` for
    float32), computed on the exponent and mantissa fields in int64 so that nothing wraps, with the
    sign set to ``sign(a) xor sign(b)``. For positive normal inputs ``mitchell_multiply(a, b) / (a*b)``
    lies in ``[8/9, 1]``; it equals 1 exactly when either mantissa is zero (a power of two).

    Integer tensors use shifts and adds only: with ``p = 2^n1 + r1`` and ``q = 2^n2 + r2``,
    ``s = r1·2^n2 + r2·2^n1`` and the product is ``2^(n1+n2) + s`` if ``s < 2^(n1+n2)``, else ``2s``,
    which is always an integer. Results outside the dtype's range wrap like ``a * b`` does.

    Edge cases (not in the post; decisions of this library): zeros, ±inf and NaN give exactly what
    ``a * b`` gives (IEEE rules); a result whose exponent overflows is ±inf, one that underflows is a
    signed zero (no subnormal results). Subnormal inputs have no implicit leading 1, so the formula
    does not apply: ``subnormal="flush"`` (default) treats them as signed zeros, ``"exact"`` falls back
    to the exact product.

    Autograd is straight-through: the forward is piecewise linear, and the gradient used is that of
    the exact product (``backward="exact"``: ``grad·b``, ``grad·a``) or the same products computed
    with Mitchell's rule (``backward="mitchell"``, multiplication-free training as in Mogami 2020).

    Args:
        a, b: tensors (or one tensor and a Python number) broadcastable against each other; the
            dtype is ``torch.result_type(a, b)``.
        subnormal: ``"flush"`` or ``"exact"``.
        backward: ``"exact"`` or ``"mitchell"``.

    Returns:
        Tensor of the promoted dtype and broadcast shape.

    Source: kexue.fm/archives/7991; Mitchell 1962; arXiv:2012.03458.
    """
    fn = "mitchell_multiply"
    check_choice("subnormal", subnormal, _SUBNORMAL, fn=fn)
    check_choice("backward", backward, _BACKWARD, fn=fn)
    ta, tb = _prepare(a, b, fn)
    if not ta.is_floating_point():
        return _int_multiply(ta, tb)
    if ta.dtype not in _FLOAT_LAYOUT:
        fail(fn, "a", "float16, bfloat16, float32, float64 or an integer dtype", ta, exc=TypeError)
    out: Tensor = _MitchellMul.apply(ta, tb, subnormal, backward)
    return out


def mitchell_divide(a: Tensor | float, b: Tensor | float, *, subnormal: str = "flush",
                    backward: str = "exact") -> Tensor:
    """Divide elementwise with Mitchell's logarithmic approximation (integer subtraction of bit patterns).

    For floats the result is ``float(bits(|a|) - bits(|b|) + B)`` (computed on the exponent and
    mantissa fields, a mantissa borrow lowering the exponent by one) with sign ``sign(a) xor sign(b)``.
    For positive normal inputs ``mitchell_divide(a, b) / (a/b)`` lies in ``[1, 9/8]``: the quotient is
    never underestimated and is at most 12.5% too large; it is exact when the mantissas are equal or
    when ``b`` is a power of two.

    Integer tensors are divided through the float64 path (exact for ``|x| < 2^53``) and, like
    ``torch.div``, return the default float dtype.

    Edge cases as in :func:`mitchell_multiply`: division by zero, ±inf and NaN follow ``a / b``;
    exponent overflow gives ±inf, underflow a signed zero; subnormal inputs are flushed to zero
    (``subnormal="flush"``) or divided exactly (``"exact"``). Autograd is straight-through
    (``backward="exact"``: ``grad/b`` and ``-grad·a/b²``; ``"mitchell"``: the same with Mitchell ops).

    Source: kexue.fm/archives/7991; Mitchell 1962.
    """
    fn = "mitchell_divide"
    check_choice("subnormal", subnormal, _SUBNORMAL, fn=fn)
    check_choice("backward", backward, _BACKWARD, fn=fn)
    ta, tb = _prepare(a, b, fn)
    if not ta.is_floating_point():
        q: Tensor = _MitchellDiv.apply(ta.to(torch.float64), tb.to(torch.float64), subnormal, backward)
        return q.to(torch.get_default_dtype())
    if ta.dtype not in _FLOAT_LAYOUT:
        fail(fn, "a", "float16, bfloat16, float32, float64 or an integer dtype", ta, exc=TypeError)
    out: Tensor = _MitchellDiv.apply(ta, tb, subnormal, backward)
    return out
