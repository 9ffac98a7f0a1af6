"""Contract tests run over every row of the loss catalog (``tests/contract/loss_catalog.py``).

To add a loss, add a row to ``LOSSES`` there (see its docstring); nothing here changes. Properties:
the three reductions agree with each other; leading dims are independent rows; module == functional;
float64 in → float64 out (float32 for float32/half); bf16 autocast and ±1e4 inputs stay finite; an
empty batch gives 0 ('mean', 'sum') or an empty tensor ('none'), never NaN; NaN inputs propagate;
``torch.compile`` equals eager; bad arguments raise errors that name the argument.
"""

from __future__ import annotations

import pytest
import torch
from tests.contract.loss_catalog import LOSSES, C, LossCase

N = 6


def _inputs(case: LossCase, n: int = N, dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    return case.make(torch.Generator().manual_seed(seed), n, dtype)


@pytest.mark.parametrize("case", LOSSES, ids=repr)
def test_reductions_agree(case: LossCase) -> None:
    x = _inputs(case, dtype=torch.float64)
    none = case.functional(*x, reduction="none")
    mean = case.functional(*x, reduction="mean")
    total = case.functional(*x, reduction="sum")
    assert mean.dim() == 0 and total.dim() == 0
    torch.testing.assert_close(total, none.sum())
    torch.testing.assert_close(mean, none.mean())
    if case.per_row:
        assert none.shape[:1] == (N,)  # one value per row ([N] or elementwise [N, C])


@pytest.mark.parametrize("case", [c for c in LOSSES if c.per_row], ids=repr)
def test_leading_dims_are_independent_rows(case: LossCase) -> None:
    a, b = _inputs(case, seed=1), _inputs(case, seed=2)
    stacked = tuple(torch.stack([u, v]) for u, v in zip(a, b))
    out = case.functional(*stacked, reduction="none")
    assert out.shape[:2] == (2, N)
    torch.testing.assert_close(out[0], case.functional(*a, reduction="none"))
    torch.testing.assert_close(out[1], case.functional(*b, reduction="none"))


@pytest.mark.parametrize("case", [c for c in LOSSES if c.module is not None], ids=repr)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_module_equals_functional(case: LossCase, reduction: str) -> None:
    assert case.module is not None
    x = _inputs(case)
    mod = case.module(reduction=reduction)
    torch.testing.assert_close(mod(*x), case.functional(*x, reduction=reduction))
    assert f"reduction='{reduction}'" in repr(mod)


@pytest.mark.parametrize("case", LOSSES, ids=repr)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_dtype_in_dtype_out(case: LossCase, dtype: torch.dtype) -> None:
    out = case.functional(*_inputs(case, dtype=dtype), reduction="mean")
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.isfinite(out)
    if case.module is not None:
        mod = case.module(reduction="mean")
        mod = mod.to(torch.float64) if dtype == torch.float64 else mod
        assert mod(*_inputs(case, dtype=dtype)).dtype == out.dtype


@pytest.mark.parametrize("case", LOSSES, ids=repr)
def test_bf16_autocast_and_extreme_inputs_stay_finite(case: LossCase) -> None:
    x = list(_inputs(case))
    x[0] = x[0].requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = case.functional(*x, reduction="mean")
    out.backward()
    assert out.dtype == torch.float32 and torch.isfinite(out) and torch.isfinite(x[0].grad).all()
    if case.extreme:
        big = list(_inputs(case))
        big[0] = (big[0] * 1e4).requires_grad_(True)
        out = case.functional(*big, reduction="sum")
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(big[0].grad).all()


@pytest.mark.parametrize("case", LOSSES, ids=repr)
def test_empty_batch_policy(case: LossCase) -> None:
    """Uniform policy: 'none' → empty, 'mean'/'sum' → 0 with a zero gradient (never NaN)."""
    x = list(_inputs(case, n=0))
    x[0] = x[0].requires_grad_(True)
    if case.per_row:
        assert case.functional(*x, reduction="none").numel() == 0
    for reduction in ("mean", "sum"):
        out = case.functional(*x, reduction=reduction)
        assert out.item() == 0.0, reduction
        out.backward()


@pytest.mark.parametrize("case", LOSSES, ids=repr)
def test_nan_input_propagates(case: LossCase) -> None:
    """NaN inputs are not screened (a device sync per call) but never hidden: the loss is NaN."""
    x = list(_inputs(case))
    x[0] = x[0].clone()
    x[0][0] = float("nan")
    assert torch.isnan(case.functional(*x, reduction="sum"))


@pytest.mark.parametrize("case", LOSSES, ids=repr)
def test_errors_name_the_argument(case: LossCase) -> None:
    x = _inputs(case)
    with pytest.raises(ValueError, match="'reduction'"):
        case.functional(*x, reduction="avg")
    with pytest.raises(TypeError, match=f"'{case.bad_input}'"):
        case.functional([[0.0] * C] * N, *x[1:], reduction="mean")
    if case.module is not None:
        with pytest.raises(ValueError, match="'reduction'"):
            case.module(reduction="avg")


@pytest.mark.slow
@pytest.mark.parametrize("case", LOSSES, ids=repr)
def test_compile_equals_eager(case: LossCase) -> None:
    torch._dynamo.reset()
    x = _inputs(case)
    compiled = torch.compile(lambda *a: case.functional(*a, reduction="mean"), backend="aot_eager")
    torch.testing.assert_close(compiled(*x), case.functional(*x, reduction="mean"))
