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

from trainwell._validation import check_callable, fail

__all__ = ["BackwardFn", "MultiPassStep", "grad_scale", "resolve_backward"]

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


def resolve_backward(backward: Any, scaler: Any, *, fn: str) -> BackwardFn:
    """The callable used for every backward that must fill ``.grad``.

    ``backward`` wins when given; otherwise ``scaler.scale(loss).backward()`` when a GradScaler is given;
    otherwise ``loss.backward()``.
    """
    check_callable("backward", backward, fn=fn, allow_none=True)
    if scaler is not None and not (hasattr(scaler, "scale") and hasattr(scaler, "get_scale")):
        fail(fn, "scaler", "a torch.amp.GradScaler or None", scaler, exc=TypeError)
    if backward is not None:
        return backward  # type: ignore[no-any-return]
    if scaler is not None:
        return lambda loss: scaler.scale(loss).backward()
    return lambda loss: loss.backward()


def grad_scale(scaler: Any) -> float:
    """The factor the loss is multiplied by before ``autograd.grad`` (so fp16 gradients do not underflow)."""
    if scaler is None or not scaler.is_enabled():
        return 1.0
    return float(scaler.get_scale())
