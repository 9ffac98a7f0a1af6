"""The shared argument checks: every message names the function, the argument, expected and received."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainwell import _validation as v


def test_number_bounds_and_types() -> None:
    assert v.check_number("gamma", 2, fn="focal_loss", min=0) == 2.0
    with pytest.raises(ValueError, match=r"focal_loss\(\): argument 'gamma' must be >= 0, got -1"):
        v.check_number("gamma", -1, fn="focal_loss", min=0)
    with pytest.raises(ValueError, match="'tau' must be > 0"):
        v.check_number("tau", 0.0, min=0, min_inclusive=False)
    with pytest.raises(ValueError, match="'p' must be < 1"):
        v.check_number("p", 1.0, max=1, max_inclusive=False)
    with pytest.raises(TypeError, match="'lr' must be a real number, got True"):
        v.check_number("lr", True)
    with pytest.raises(TypeError, match="'lr' must be a real number"):
        v.check_number("lr", "0.1")
    with pytest.raises(ValueError, match="not NaN"):
        v.check_number("lr", math.nan)
    assert v.check_number("x", None, allow_none=True) is None
    assert v.check_number("x", torch.tensor(0.5)) == 0.5
    with pytest.raises(ValueError, match="finite"):
        v.check_finite_number("eps", math.inf)


def test_int_bool_choice_reduction() -> None:
    assert v.check_int("steps", 3, min=1) == 3
    with pytest.raises(TypeError, match=r"'steps' must be an int, got 2\.5"):
        v.check_int("steps", 2.5)
    with pytest.raises(TypeError, match="'steps' must be an int"):
        v.check_int("steps", True)
    with pytest.raises(ValueError, match="'steps' must be >= 1, got 0"):
        v.check_int("steps", 0, min=1)
    with pytest.raises(ValueError, match="'steps' must be <= 5"):
        v.check_int("steps", 6, max=5)
    with pytest.raises(TypeError, match="'flag' must be a bool"):
        v.check_bool("flag", 1)
    assert v.check_reduction("sum") == "sum"
    with pytest.raises(ValueError, match=r"'reduction' must be one of 'none', 'mean', 'sum', got 'avg'"):
        v.check_reduction("avg")
    with pytest.raises(TypeError, match="'reduction'"):
        v.check_reduction(None)
    with pytest.raises(ValueError, match="'mode' must be one of 'hard', 'soft'"):
        v.check_choice("mode", "medium", ("hard", "soft"))


def test_tensor_checks() -> None:
    x = torch.zeros(2, 3)
    assert v.check_tensor("input", x, kind="float", ndim=2) is x
    with pytest.raises(TypeError, match=r"'input' must be a torch.Tensor, got list"):
        v.check_tensor("input", [1.0])
    with pytest.raises(TypeError, match="'target' must be a tensor of dtype kind int"):
        v.check_tensor("target", x, kind="int")
    with pytest.raises(ValueError, match="'input' must be a 3-D tensor, got Tensor"):
        v.check_tensor("input", x, ndim=3)
    with pytest.raises(ValueError, match="at least 3 dims"):
        v.check_tensor("input", x, min_ndim=3)
    with pytest.raises(
        ValueError, match=r"'target' must have the same shape as 'input' \(2, 3\), got \(3, 2\)"
    ):
        v.check_same_shape("input", x, "target", torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"'target' must have shape \(2,\)"):
        v.check_shape_prefix("input", x, "target", torch.zeros(3, dtype=torch.long))
    v.check_shape_prefix("input", x, "target", torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="last dim is 4"):
        v.check_last_dim("log_prior", torch.zeros(3), 4)
    with pytest.raises(ValueError, match="must broadcast"):
        v.check_broadcastable("input", x, "weight", torch.zeros(4))
    with pytest.raises(ValueError, match="scalar tensor"):
        v.check_scalar_tensor("loss", x)
    assert v.check_scalar_tensor("loss", torch.tensor(1.0)).numel() == 1


def test_labels_and_probabilities() -> None:
    v.check_labels("target", torch.tensor([0, 2, 1]), 3)
    with pytest.raises(ValueError, match=r"'target' must hold class indices in \[0, 3\), got 3"):
        v.check_labels("target", torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match="got -2"):
        v.check_labels("target", torch.tensor([0, -2]), 3, ignore_index=-100)
    v.check_labels("target", torch.tensor([0, -100]), 3, ignore_index=-100)
    v.check_probabilities("target", torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match=r"'target' must hold values in \[0, 1\], got 1.5"):
        v.check_probabilities("target", torch.tensor([0.0, 1.5]))
    with pytest.raises(ValueError, match="got nan"):
        v.check_probabilities("target", torch.tensor([0.0, float("nan")]))


def test_module_and_callable() -> None:
    v.check_module("embedding", nn.Embedding(3, 2), cls=nn.Embedding)
    with pytest.raises(TypeError, match="'embedding' must be an instance of Embedding, got Linear module"):
        v.check_module("embedding", nn.Linear(2, 2), cls=nn.Embedding)
    with pytest.raises(TypeError, match="'closure' must be callable"):
        v.check_callable("closure", 3)


def test_value_checks_skipped_under_compile() -> None:
    def f(t: torch.Tensor) -> torch.Tensor:
        v.check_labels("target", t, 3)
        return t * 2

    compiled = torch.compile(f, backend="eager", fullgraph=True)
    assert torch.equal(compiled(torch.tensor([0, 1, 2])), torch.tensor([0, 2, 4]))


def test_describe_containers_by_type_keys_shape_only() -> None:
    """Regression (issue 9): error messages printed whole tensors/dicts."""
    from collections import OrderedDict

    from trainwell._validation import _describe

    big = OrderedDict((f"k{i}", torch.randn(50, 50)) for i in range(10))
    text = _describe(big)
    assert "OrderedDict(" in text and "'k0': Tensor(shape=(50, 50)" in text and "10 keys" in text
    assert len(text) < 500
    lst = _describe([torch.zeros(3), {"a": 1}, [1, 2, 3], 4, 5])
    assert lst.startswith("list of length 5") and "dict with 1 keys" in lst and "list of length 3" in lst
    assert len(_describe("x" * 1000)) < 80
    assert _describe(object()) == "object"


def test_fail_message_stays_short_for_a_model_output() -> None:
    from trainwell._validation import fail

    class Output(dict):  # what Hugging Face ModelOutput looks like to isinstance checks
        pass

    with pytest.raises(TypeError) as err:
        fail(
            "f", "x", "a tensor", Output(logits=torch.randn(64, 1000), loss=torch.tensor(1.0)), exc=TypeError
        )
    msg = str(err.value)
    assert "Output('logits': Tensor(shape=(64, 1000)" in msg and len(msg) < 300


def test_check_leading_dims() -> None:
    v.check_leading_dims("a", torch.zeros(2, 3, 4), "b", torch.zeros(2, 3, 7), 1, fn="f")
    v.check_leading_dims("a", torch.zeros(2, 3, 4), "b", torch.zeros(2, 5, 7), 2, fn="f")
    with pytest.raises(ValueError, match=r"f\(\): argument 'b' must have the leading dims \(2, 3\)"):
        v.check_leading_dims("a", torch.zeros(2, 3, 4), "b", torch.zeros(3, 3, 7), 1, fn="f")


def test_overloads_narrow_without_asserts() -> None:
    assert v.check_int("k", 3, fn="f", min=1) + 1 == 4  # typed int, not int | None
    assert v.check_number("x", 2, fn="f") * 2.0 == 4.0
    assert v.check_number("x", None, fn="f", allow_none=True) is None
    assert v.check_finite_number("x", None, fn="f", allow_none=True) is None
