"""Contract tests run over every row of the optimizer catalog (``tests/contract/optim_catalog.py``).

To add an optimizer, add a row to ``OPTIMIZERS`` there (see its docstring). Properties: it decreases a
convex quadratic; ``state_dict`` round trip mid-run resumes bit-exactly; per-group ``lr`` is honoured
(lr = 0 freezes a group); ``step(closure)`` returns the closure's loss; float64 parameters stay float64;
``zero_grad`` clears the gradients; a bad ``lr`` raises an error naming it.
"""

from __future__ import annotations

import pytest
import torch
from tests.contract.optim_catalog import OPTIMIZERS, OptimCase

TARGET = torch.tensor([0.5, 1.5, 2.0, 0.8], dtype=torch.float64)


def _params(dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    return [
        torch.nn.Parameter(torch.ones(4, dtype=dtype)),
        torch.nn.Parameter(torch.full((2, 2), 1.2, dtype=dtype)),
    ]


def _loss(params: list[torch.Tensor]) -> torch.Tensor:
    flat = torch.cat([p.reshape(-1) for p in params])
    return ((flat[:4] - TARGET.to(flat.dtype)) ** 2).sum() + ((flat[4:] - 1.0) ** 2).sum()


def _run(case: OptimCase, opt: object, params: list[torch.Tensor], steps: int) -> None:
    for _ in range(steps):
        opt.zero_grad()  # type: ignore[attr-defined]

        def closure() -> torch.Tensor:
            return _loss(params)

        if case.needs_closure:
            with torch.no_grad():
                opt.step(closure)  # type: ignore[attr-defined]
        else:
            _loss(params).backward()
            opt.step()  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", OPTIMIZERS, ids=repr)
def test_decreases_a_quadratic(case: OptimCase) -> None:
    params = _params()
    start = float(_loss(params).detach())
    _run(case, case.make(params, lr=0.05), params, 20)
    assert float(_loss(params)) < start
    if case.positive:
        assert all(bool((p > 0).all()) for p in params)


@pytest.mark.parametrize("case", OPTIMIZERS, ids=repr)
def test_state_dict_round_trip_resumes_bit_exactly(case: OptimCase) -> None:
    ref_params = _params()
    ref = case.make(ref_params, lr=0.05)
    _run(case, ref, ref_params, 6)
    params = _params()
    opt = case.make(params, lr=0.05)
    _run(case, opt, params, 3)
    saved = opt.state_dict()
    weights = [p.detach().clone() for p in params]
    params2 = [torch.nn.Parameter(w.clone()) for w in weights]
    opt2 = case.make(params2, lr=0.05)
    opt2.load_state_dict(saved)
    _run(case, opt2, params2, 3)
    for a, b in zip(params2, ref_params):
        assert torch.equal(a, b)


@pytest.mark.parametrize("case", OPTIMIZERS, ids=repr)
def test_param_group_lr_is_honoured(case: OptimCase) -> None:
    params = _params()
    frozen = params[1].detach().clone()
    opt = case.make([{"params": [params[0]]}, {"params": [params[1]], "lr": 0.0}], lr=0.05)
    _run(case, opt, params, 4)
    if case.exact:
        assert torch.equal(params[1].detach(), frozen)
    else:
        torch.testing.assert_close(params[1].detach(), frozen, atol=1e-6, rtol=0)
    assert not torch.equal(params[0].detach(), torch.ones(4))
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["lr"] == 0.0


@pytest.mark.parametrize("case", OPTIMIZERS, ids=repr)
def test_step_with_closure_returns_its_loss(case: OptimCase) -> None:
    params = _params()
    opt = case.make(params, lr=0.05)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _loss(params)
        if not case.needs_closure:
            loss.backward()
        return loss

    expected = float(_loss(params).detach())
    if case.needs_closure:
        with torch.no_grad():
            out = opt.step(closure)
    else:
        out = opt.step(closure)
    assert out is not None and float(out) == pytest.approx(expected, rel=1e-6 if case.exact else 1e-4)


@pytest.mark.parametrize("case", OPTIMIZERS, ids=repr)
def test_float64_parameters_stay_float64(case: OptimCase) -> None:
    params = _params(torch.float64)
    opt = case.make(params, lr=0.05)
    _run(case, opt, params, 3)
    assert all(p.dtype == torch.float64 for p in params)
    for state in opt.state.values():
        for v in state.values():
            if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() > 0:
                assert v.dtype == torch.float64


@pytest.mark.parametrize("case", [c for c in OPTIMIZERS if not c.needs_closure], ids=repr)
def test_zero_grad_clears(case: OptimCase) -> None:
    params = _params()
    opt = case.make(params, lr=0.05)
    _loss(params).backward()
    opt.zero_grad()
    assert all(p.grad is None or not p.grad.any() for p in params)


@pytest.mark.parametrize(
    "case", [c for c in OPTIMIZERS if not c.name.startswith(("clipped", "step_size"))], ids=repr
)
def test_bad_lr_names_the_argument(case: OptimCase) -> None:
    with pytest.raises(ValueError, match="'lr'"):
        case.make(_params(), lr=-1.0)
