"""Every public module class, regularizer and optimizer documents ``Shape:`` and a runnable example.

The ``Example::`` block of each class docstring is executed here (like the docs pages in
``tests/test_docs.py``), so the snippets cannot drift from the API.
"""

from __future__ import annotations

import inspect
import textwrap
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import trainwell.losses as losses
import trainwell.optim as optim
import trainwell.regularizers as regularizers

PACKAGES = (losses, regularizers, optim)
# base classes, protocols and result records: no forward/step of their own to show
NOT_DOCUMENTED = {"Loss", "MultiPassStep", "GradientBound", "MGSResult"}
NO_TENSORS = {"UpdateStepScheduler"}  # wraps a scheduler: nothing has a shape


def _public_classes() -> list[tuple[str, type]]:
    out = []
    for pkg in PACKAGES:
        for name in pkg.__all__:
            obj = getattr(pkg, name)
            if inspect.isclass(obj) and name not in NOT_DOCUMENTED:
                out.append((name, obj))
    return out


def _example(doc: str) -> str:
    lines = doc.split("\n")
    start = next(i for i, line in enumerate(lines) if line.strip() == "Example::")
    block: list[str] = []
    for line in lines[start + 1 :]:
        if line.strip() and not line.startswith(" " * 8):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip("\n")


def _namespace() -> dict[str, Any]:
    ns: dict[str, Any] = {"torch": torch, "nn": nn, "F": F}
    for pkg in PACKAGES:
        ns.update({n: getattr(pkg, n) for n in pkg.__all__})
    return ns


CLASSES = _public_classes()


def test_the_catalog_is_not_empty() -> None:
    names = {n for n, _ in CLASSES}
    assert {"FocalLoss", "FGM", "VAT", "AccumAdamW", "ZerothOrder", "InfoNCELoss"} <= names


@pytest.mark.parametrize(("name", "cls"), CLASSES, ids=[n for n, _ in CLASSES])
def test_docstring_has_shape_and_example(name: str, cls: type) -> None:
    doc = cls.__doc__ or ""
    assert "Example::" in doc, f"{name}: no Example:: block"
    assert ">>>" not in doc, f"{name}: examples are code blocks, not doctests"
    if name not in NO_TENSORS:
        assert "\n    Shape:\n" in doc, f"{name}: no Shape: section"
    code = _example(doc)
    assert 1 <= len(code.splitlines()) <= 5, f"{name}: the example should be short"


@pytest.mark.parametrize(("name", "cls"), CLASSES, ids=[n for n, _ in CLASSES])
def test_docstring_example_runs(name: str, cls: type) -> None:
    torch.manual_seed(0)
    ns = _namespace()
    exec(compile(_example(cls.__doc__ or ""), f"<{name} example>", "exec"), ns)  # our own docstring text
