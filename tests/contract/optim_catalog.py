"""The optimizer catalog: one row per optimizer (or optimizer wrapper), shared by the contract tests.

Adding a row (any family): append an :class:`OptimCase` to ``OPTIMIZERS``:

* ``name``: the test id;
* ``make(params, **hyper)``: builds it on a list of parameters or param-group dicts; ``hyper`` is
  ``{"lr": ...}`` (the one hyperparameter every row accepts);
* ``needs_closure``: ``step`` must get a closure that recomputes the loss (zeroth-order methods);
* ``positive``: the parameters must stay positive (exponentiated gradient);
* ``exact=False``: the method perturbs the parameters in place and undoes it by regenerating the noise
  (memory-free zeroth order, as MeZO), so an ``lr = 0`` group moves by rounding only, and ``step``
  returns the mean of the evaluated losses (≈ the closure's loss to O(σ²)).

Every row then runs every test of ``test_optim_contract.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from trainwell.optim import (
    AccumAdamW,
    AccumSGDM,
    Clipped,
    ExponentiatedGradient,
    StepSizeAdaptation,
    ZerothOrder,
)


@dataclass(frozen=True)
class OptimCase:
    name: str
    make: Callable[..., Any]
    needs_closure: bool = False
    positive: bool = False
    exact: bool = True

    def __repr__(self) -> str:
        return self.name


OPTIMIZERS: list[OptimCase] = [
    OptimCase("accum_adamw_k1", lambda p, **h: AccumAdamW(p, weight_decay=0.01, **h)),
    OptimCase("accum_adamw_k2", lambda p, **h: AccumAdamW(p, accum_steps=2, **h)),
    OptimCase("accum_adamw_fused", lambda p, **h: AccumAdamW(p, weight_decay=0.01, fused=True, **h)),
    OptimCase("accum_adamw_foreach", lambda p, **h: AccumAdamW(p, accum_steps=2, foreach=True, **h)),
    OptimCase("accum_sgdm_k2", lambda p, **h: AccumSGDM(p, accum_steps=2, **h)),
    OptimCase("exponentiated_gradient", lambda p, **h: ExponentiatedGradient(p, **h), positive=True),
    OptimCase("zeroth_order", lambda p, **h: ZerothOrder(p, num_samples=2, seed=0, **h), needs_closure=True,
              exact=False),
    OptimCase("clipped_adamw", lambda p, **h: Clipped(torch.optim.AdamW(p, **h), max_norm=0.5)),
    OptimCase("step_size_adaptation", lambda p, **h: StepSizeAdaptation(torch.optim.SGD(p, **h))),
]
