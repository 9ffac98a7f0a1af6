from __future__ import annotations

import math

import pytest
import torch

from trainwell.numerics import mitchell_divide, mitchell_multiply


def _split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 (n, frac) with |x| = 2^n (1 + frac), frac in [0, 1) — independent of the bit trick."""
    m, e = torch.frexp(x.double().abs())
    return (e - 1).double(), 2 * m - 1


def _ref_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    n1, x1 = _split(a)
    n2, x2 = _split(b)
    s = x1 + x2
    mag = torch.where(s < 1, torch.exp2(n1 + n2) * (1 + s), torch.exp2(n1 + n2 + 1) * s)
    return torch.where((a < 0) ^ (b < 0), -mag, mag)


def _ref_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    n1, x1 = _split(a)
    n2, x2 = _split(b)
    d = x1 - x2
    mag = torch.where(d >= 0, torch.exp2(n1 - n2) * (1 + d), torch.exp2(n1 - n2 - 1) * (2 + d))
    return torch.where((a < 0) ^ (b < 0), -mag, mag)


def _mantissa_grid(bits: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    m = 1 + torch.arange(2**bits, dtype=torch.float64) / 2**bits
    a, b = torch.meshgrid(m, m, indexing="ij")
    return a.reshape(-1).to(dtype), b.reshape(-1).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_all_fp16_mantissa_pairs_ratio_in_eight_ninths_to_one(dtype: torch.dtype) -> None:
    a, b = _mantissa_grid(10, dtype)
    out = mitchell_multiply(a, b)
    assert out.dtype == dtype
    ratio = out.double() / (a.double() * b.double())
    assert float(ratio.min()) >= 8 / 9 - 1e-15
    assert float(ratio.max()) <= 1.0
    # the worst case is exactly 1.5 x 1.5 -> 2 (8/9) and nowhere else
    worst = int(ratio.argmin())
    assert float(a[worst]) == 1.5 and float(b[worst]) == 1.5
    assert float(ratio[worst]) == pytest.approx(8 / 9, abs=1e-15)
    # bitwise the case formula (exactly representable here)
    assert torch.equal(out.double(), _ref_mul(a, b))
    # exact iff one mantissa is zero
    exact = ratio == 1
    assert torch.equal(exact, (a == 1) | (b == 1))


def test_all_bf16_mantissa_pairs_and_scaled_exponents() -> None:
    a, b = _mantissa_grid(7, torch.bfloat16)
    for ea, eb in [(0, 0), (5, -3), (-40, 20), (60, 60)]:
        sa, sb = a * 2.0**ea, b * 2.0**eb
        out = mitchell_multiply(sa, sb)
        ratio = out.double() / (sa.double() * sb.double())
        assert float(ratio.min()) >= 8 / 9 - 1e-15 and float(ratio.max()) <= 1.0
        assert torch.equal(out.double(), _ref_mul(sa, sb))


def test_division_ratio_in_one_to_nine_eighths_over_all_fp16_mantissas() -> None:
    a, b = _mantissa_grid(10, torch.float32)
    out = mitchell_divide(a, b)
    ratio = out.double() / (a.double() / b.double())
    assert float(ratio.min()) >= 1.0 - 1e-15
    assert float(ratio.max()) <= 9 / 8 + 1e-7
    assert float(ratio.max()) > 9 / 8 - 1e-3  # the bound is approached
    ref = _ref_div(a, b)
    assert torch.allclose(out.double(), ref, rtol=2**-23, atol=0)


def test_float32_random_pairs_match_case_formula_bitwise() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.exp(torch.empty(100_000).uniform_(math.log(0.01), math.log(100), generator=g))
    b = torch.exp(torch.empty(100_000).uniform_(math.log(0.01), math.log(100), generator=g))
    out = mitchell_multiply(a, b)
    ref = _ref_mul(a, b).float()  # exact in float64, one rounding to float32
    assert torch.equal(out, ref)
    ratio = out.double() / (a.double() * b.double())
    assert 8 / 9 - 1e-12 <= float(ratio.min()) and float(ratio.max()) <= 1.0
    # float64 too: the field arithmetic must not overflow the int64 view
    a64, b64 = a.double() * 1e200, b.double() * 1e-100
    out64 = mitchell_multiply(a64, b64)
    r64 = out64 / (a64 * b64)
    assert float(r64.min()) >= 8 / 9 - 1e-12 and float(r64.max()) <= 1.0 + 1e-15


def test_regression_example_from_post() -> None:
    out = mitchell_multiply(torch.tensor(12.3), torch.tensor(4.56))
    assert float(out) == pytest.approx(53.68, rel=1e-6)
    assert float(out) / 56.088 == pytest.approx(1 - 0.0429, abs=1e-4)


def test_powers_of_two_are_exact_and_commutative() -> None:
    g = torch.Generator().manual_seed(1)
    b = torch.randn(1000, generator=g) * 10
    for k in range(-30, 31, 7):
        p = torch.full_like(b, 2.0**k)
        assert torch.equal(mitchell_multiply(p, b), p * b)
        assert torch.equal(mitchell_multiply(b, p), p * b)
        assert torch.equal(mitchell_divide(b, p), b / p)
    a = torch.randn(1000, generator=g)
    assert torch.equal(mitchell_multiply(a, b), mitchell_multiply(b, a))


def test_monotone_and_continuous_across_the_carry() -> None:
    x = torch.linspace(1.0, 4.0, 20001)
    y = mitchell_multiply(x, torch.tensor(1.3))
    assert bool((y[1:] >= y[:-1]).all())
    # across x1 + x2 = 1 (x1 = 0.7 for b = 1.3) the two cases meet: no jump bigger than a grid step
    jumps = (y[1:] - y[:-1]).abs()
    assert float(jumps.max()) < 4 * 3.0 / 20000 * 2.6


def test_signs_zeros_and_specials() -> None:
    a = torch.tensor([3.0, -3.0, 3.0, -3.0])
    b = torch.tensor([1.5, 1.5, -1.5, -1.5])
    out = mitchell_multiply(a, b)
    mag = _ref_mul(torch.tensor(3.0), torch.tensor(1.5)).item()
    assert out.tolist() == [mag, -mag, -mag, mag]
    assert mitchell_divide(a, b).tolist() == [float(v) for v in _ref_div(a, b).float()]
    z = torch.tensor([0.0, -0.0, 0.0, -0.0])
    w = torch.tensor([2.5, 2.5, -2.5, -2.5])
    r = mitchell_multiply(z, w)
    assert torch.equal(r, z * w) and torch.equal(torch.signbit(r), torch.signbit(z * w))
    inf, nan = float("inf"), float("nan")
    sa = torch.tensor([inf, -inf, inf, nan, 1.0, 0.0])
    sb = torch.tensor([2.0, 3.0, 0.0, 1.0, nan, 0.0])
    assert torch.allclose(mitchell_multiply(sa, sb), sa * sb, equal_nan=True)
    assert torch.allclose(mitchell_divide(sa, sb), sa / sb, equal_nan=True)
    assert torch.isinf(mitchell_divide(torch.tensor(1.0), torch.tensor(0.0)))


def test_overflow_underflow_and_subnormals() -> None:
    big = torch.tensor([3e38, -3e38])
    assert mitchell_multiply(big, torch.tensor(4.0)).tolist() == [float("inf"), float("-inf")]
    tiny = torch.tensor(1.5e-30)
    r = mitchell_multiply(tiny, -tiny)
    assert float(r) == 0.0 and bool(torch.signbit(r))
    assert float(mitchell_divide(torch.tensor(1e30), torch.tensor(1e-30))) == float("inf")
    sub = torch.tensor(1e-40)  # float32 subnormal
    assert float(mitchell_multiply(sub, torch.tensor(3.0))) == 0.0
    assert float(mitchell_multiply(sub, torch.tensor(3.0), subnormal="exact")) == float(sub * 3.0)
    assert float(mitchell_divide(sub, torch.tensor(1e-3), subnormal="exact")) == float(sub / 1e-3)


def test_integer_tensors_shift_and_add() -> None:
    vals = list(range(-70, 71))
    a = torch.tensor(vals).repeat_interleave(len(vals))
    b = torch.tensor(vals).repeat(len(vals))
    out = mitchell_multiply(a, b)
    assert out.dtype == torch.int64
    expected = [round(v) for v in _ref_mul(a.double(), b.double()).tolist()]
    expected = [0 if x == 0 or y == 0 else e for x, y, e in zip(a.tolist(), b.tolist(), expected)]
    assert out.tolist() == expected
    nz = (a != 0) & (b != 0)
    ratio = out[nz].double() / (a[nz] * b[nz]).double()
    assert float(ratio.min()) >= 8 / 9 - 1e-15 and float(ratio.max()) <= 1.0
    a, b = torch.tensor([7, 1 << 20], dtype=torch.int32), torch.tensor([9, 3], dtype=torch.int32)
    i32 = mitchell_multiply(a, b)
    assert i32.dtype == torch.int32 and i32.tolist() == [60, 3 << 20]  # 7·9: 32·(1 + 0.75 + 0.125)
    q = mitchell_divide(torch.tensor([7, 100, -9]), torch.tensor([3, 7, 4]))
    assert q.dtype == torch.get_default_dtype()
    ratio_q = q.double() / torch.tensor([7 / 3, 100 / 7, -9 / 4], dtype=torch.float64)
    assert float(ratio_q.min()) >= 1.0 - 1e-7 and float(ratio_q.max()) <= 9 / 8 + 1e-7


def test_broadcasting_and_python_scalars() -> None:
    a = torch.full((3, 1), 1.5)
    b = torch.tensor([1.0, 1.5, 2.0])
    out = mitchell_multiply(a, b)
    assert out.shape == (3, 3)
    assert torch.equal(out[0], torch.tensor([1.5, 2.0, 3.0]))
    assert torch.equal(mitchell_multiply(a, 2.0), a * 2.0)
    assert torch.equal(mitchell_multiply(2, b), b * 2)


def test_autograd_straight_through() -> None:
    g = torch.Generator().manual_seed(3)
    a = (torch.rand(50, generator=g) + 0.5).requires_grad_()
    b = (torch.rand(50, generator=g) + 0.5).requires_grad_()
    w = torch.randn(50, generator=g)
    (mitchell_multiply(a, b) * w).sum().backward()
    assert a.grad is not None and b.grad is not None
    assert torch.equal(a.grad, w * b.detach()) and torch.equal(b.grad, w * a.detach())
    ga_exact = a.grad.clone()
    a.grad = None
    b.grad = None
    wp = w.abs() + 0.1
    (mitchell_multiply(a, b, backward="mitchell") * wp).sum().backward()
    assert a.grad is not None
    exact = wp * b.detach()
    ratio = a.grad / exact
    assert float(ratio.min()) >= 8 / 9 - 1e-6 and float(ratio.max()) <= 1.0 + 1e-7
    assert ga_exact.shape == a.grad.shape
    a.grad = None
    b.grad = None
    mitchell_divide(a, b).sum().backward()
    assert b.grad is not None and a.grad is not None
    assert torch.allclose(a.grad, 1 / b.detach()) and torch.allclose(b.grad, -a.detach() / b.detach() ** 2)


def test_argument_validation() -> None:
    x = torch.ones(3)
    with pytest.raises(TypeError, match="'a'"):
        mitchell_multiply(torch.ones(3, dtype=torch.bool), x)
    with pytest.raises(TypeError, match="'b'"):
        mitchell_multiply(x, "2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'a'"):
        mitchell_multiply(2.0, 3.0)
    with pytest.raises(ValueError, match="'b'"):
        mitchell_multiply(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="'subnormal'"):
        mitchell_multiply(x, x, subnormal="keep")
    with pytest.raises(ValueError, match="'backward'"):
        mitchell_divide(x, x, backward="fast")
    with pytest.raises(TypeError, match="'a'"):
        mitchell_divide(torch.ones(2, dtype=torch.complex64), x)
