"""The base class of the loss modules (the role of torch's ``_Loss``).

It validates and stores ``reduction`` once and writes ``extra_repr`` from a declared list of fields, so
a new loss module is its ``__init__`` arguments, a ``forward`` that calls the functional form, and::

    class MyLoss(Loss):
        _repr_fields = ("gamma",)      # shown by repr() before the reduction

        def __init__(self, gamma: float = 2.0, reduction: str = "mean") -> None:
            super().__init__(reduction)
            self.gamma = check_number("gamma", gamma, fn="MyLoss", min=0.0)
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from trainwell._validation import check_reduction

__all__ = ["Loss"]


class Loss(nn.Module):
    """Base of trainwell's loss modules: ``reduction`` checked once, ``extra_repr`` from ``_repr_fields``.

    Args:
        reduction: ``'none' | 'mean' | 'sum'`` (default ``'mean'``), or ``None`` for a module without
            one (e.g. :class:`~trainwell.losses.TaylorSoftmax`, which returns probabilities).
    """

    #: attributes shown by ``repr()`` (in this order; ``reduction`` follows when the module has one)
    _repr_fields: ClassVar[tuple[str, ...]] = ()
    reduction: str

    def __init__(self, reduction: str | None = "mean") -> None:
        super().__init__()
        if reduction is not None:
            self.reduction = check_reduction(reduction, fn=type(self).__name__)

    def extra_repr(self) -> str:
        parts = [f"{name}={getattr(self, name)!r}" for name in self._repr_fields]
        if "reduction" in self.__dict__:
            parts.append(f"reduction={self.reduction!r}")
        return ", ".join(parts)
