"""Module forward hooks shared across trainwell (regularizers today; explain and nn use the same one).

:class:`OutputHook` records every output of a module inside a ``with`` block and can add a per-call
perturbation to it: the embedding-output mode of FGM/PGD/VAT/FastGradientPenalty and
:func:`trainwell.regularizers.capture_embedding_output` are built on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from trainwell._validation import fail

__all__ = ["OutputHook"]


class OutputHook:
    """Forward hook on a module: records each call's output and adds a per-call perturbation.

    The i-th call of the module inside one pass gets ``deltas[i]`` added to its output. Outputs that do
    not require grad (frozen embedding) are turned into grad-requiring leaves so that gradients with
    respect to them can be taken. On a clean exit the hook checks that the module ran at all, and as
    often as ``deltas`` says (``require_call=False`` skips the first check).
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        fn: str,
        deltas: Sequence[Tensor] | None = None,
        require_call: bool = True,
    ) -> None:
        self.module = module
        self.fn = fn
        self.deltas = list(deltas) if deltas is not None else None
        self.require_call = require_call
        self.outputs: list[Tensor] = []
        self._handle: Any = None

    def __enter__(self) -> OutputHook:
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()
        if exc[0] is None:
            if not self.outputs and self.require_call:
                fail(
                    self.fn,
                    "embedding",
                    "a module that closure() calls (its output is what gets perturbed)",
                    self.module,
                )
            if self.deltas is not None and len(self.outputs) != len(self.deltas):
                raise RuntimeError(
                    f"{self.fn}(): the embedding module was called {len(self.outputs)} times in this pass "
                    f"but {len(self.deltas)} times in the clean pass; closure() must run the same forward"
                )

    def _hook(self, module: nn.Module, args: Any, output: Any) -> Tensor:
        if not isinstance(output, Tensor) or not output.is_floating_point():
            fail(
                self.fn,
                "embedding",
                "a module whose forward returns a floating tensor in mode='output'",
                module,
                exc=TypeError,
            )
        i = len(self.outputs)
        if self.deltas is not None:
            if i >= len(self.deltas):
                raise RuntimeError(
                    f"{self.fn}(): the embedding module was called more often than in the clean pass; "
                    "closure() must run the same forward every time"
                )
            delta = self.deltas[i]
            if delta.shape != output.shape:
                raise RuntimeError(
                    f"{self.fn}(): embedding output shape changed between passes: "
                    f"{tuple(delta.shape)} in the clean pass, {tuple(output.shape)} now"
                )
            output = output + delta.to(output.dtype)
        if torch.is_grad_enabled() and not output.requires_grad:
            output = output.detach().requires_grad_(True)
        self.outputs.append(output)
        return output
