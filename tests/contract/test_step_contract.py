"""Contract tests run over every row of the multi-pass step catalog (``tests/contract/step_catalog.py``).

To add an object, add a row to ``STEPS`` there (see its docstring). Properties: it is a
``MultiPassStep``; ``step`` returns a detached 0-dim tensor; strength 0 equals a plain step; the
parameters are restored bit-exactly after the step and after an exception mid-step; an exception
mid-step leaves ``.grad`` as it was; an argument error names the argument.
"""

from __future__ import annotations

import pytest
import torch
from tests.contract.step_catalog import STEPS, StepCase, tiny_batch, tiny_model

from trainwell.regularizers import MultiPassStep


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("case", STEPS, ids=repr)
def test_protocol_and_detached_tensor(case: StepCase) -> None:
    model = tiny_model()
    obj = case.make(model, 0.5)
    assert isinstance(obj, MultiPassStep)
    out = obj.step(case.closure(model, tiny_batch()))
    assert isinstance(out, torch.Tensor) and out.dim() == 0 and not out.requires_grad
    assert any(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("case", [c for c in STEPS if not c.returns_logits], ids=repr)
def test_zero_strength_is_a_plain_step(case: StepCase) -> None:
    model, batch = tiny_model(), tiny_batch()
    plain = case.closure(model, batch)()
    plain.backward()
    ref = _grads(model)
    model.zero_grad()
    out = case.make(model, 0.0).step(case.closure(model, batch))
    torch.testing.assert_close(out, plain.detach())
    for k, g in _grads(model).items():
        torch.testing.assert_close(g, ref[k], msg=k)


@pytest.mark.parametrize("case", [c for c in STEPS if c.returns_logits], ids=repr)
def test_zero_strength_adds_no_gradient(case: StepCase) -> None:
    """Logit closures (VAT): ε = 0 gives LDS = 0 exactly and a gradient that is 0 up to rounding."""
    model = tiny_model()
    out = case.make(model, 0.0).step(case.closure(model, tiny_batch()))
    assert out.item() == 0.0
    assert all(p.grad is None or float(p.grad.abs().max()) < 1e-7 for p in model.parameters())


@pytest.mark.parametrize("case", STEPS, ids=repr)
def test_parameters_restored_bit_exactly(case: StepCase) -> None:
    model = tiny_model()
    before = _snapshot(model)
    case.make(model, 0.7).step(case.closure(model, tiny_batch()))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("case", STEPS, ids=repr)
def test_exception_mid_step_leaves_grads_and_weights(case: StepCase) -> None:
    model, batch = tiny_model(), tiny_batch()
    # gradients from an earlier micro-batch must survive the interrupted step
    (model(batch[0]).sum() if case.returns_logits else case.closure(model, batch)()).backward()
    grads, weights = _grads(model), _snapshot(model)
    inner = case.closure(model, batch)
    calls = [0]

    def closure() -> object:
        calls[0] += 1
        if calls[0] == 2:  # the first extra pass
            raise KeyboardInterrupt("interrupted mid-step")
        return inner()

    with pytest.raises(KeyboardInterrupt):
        case.make(model, 0.7).step(closure)
    for k, g in _grads(model).items():
        assert g is not None and torch.equal(g, grads[k]), k  # type: ignore[arg-type]
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k


@pytest.mark.parametrize("case", STEPS, ids=repr)
def test_bad_closure_names_the_argument(case: StepCase) -> None:
    model = tiny_model()
    with pytest.raises(TypeError, match="'closure'"):
        case.make(model, 0.5).step(3)
    with pytest.raises(TypeError, match="'backward'"):
        case.make(model, 0.5).step(case.closure(model, tiny_batch()), backward=3)
