"""The multi-pass step protocol: one shape for every object that runs several passes per training step.

FGM, PGD, VAT, FastGradientPenalty, ParameterGradientPenalty and ContrastiveGradCache each run more
than one forward/backward per optimizer step. They all expose the same method::

    loss = obj.step(closure, backward=None, scaler=None)   # .grad filled, loss detached
    optimizer.step()

* ``closure()`` runs the forward pass and returns the scalar loss (VAT also accepts logits or
  ``(loss, logits)``; ContrastiveGradCache takes the batch views instead of a closure);
* ``backward(loss)`` is how a loss is backpropagated into ``.grad`` (default ``loss.backward()``; e.g.
  ``accelerator.backward`` or ``lambda l: scaler.scale(l).backward()``);
* ``scaler`` is a ``torch.amp.GradScaler``: the default backward scales the loss, and directions taken
  with ``autograd.grad`` are unscaled;
* the return value is the step's loss as a detached tensor (never a Python float: no host sync).

Framework adapters, the technique registry and ``compare`` build on exactly this protocol; they check it
with ``isinstance(obj, MultiPassStep)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["BackwardFn", "MultiPassStep"]

BackwardFn = Callable[[Tensor], Any]


@runtime_checkable
class MultiPassStep(Protocol):
    """An object whose ``step`` runs all passes of one training step and leaves the gradients in ``.grad``."""

    def step(
        self,
        closure: Callable[[], Any],
        *,
        backward: BackwardFn | None = None,
        scaler: Any = None,
    ) -> Tensor:
        """Run the passes; fill ``.grad``; return the detached loss."""
        ...
