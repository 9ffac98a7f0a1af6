"""Exponentiated gradient (EG): multiplicative updates that keep parameters non-negative.

Source: kexue.fm/archives/8968; Kivinen & Warmuth 1997 (EG), Amid et al. 2022, arXiv:2202.00145.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from trainwell._validation import check_bool, check_int, check_number, fail, tracing

__all__ = ["ExponentiatedGradient"]


class ExponentiatedGradient(Optimizer):
    """Exponentiated-gradient descent for non-negative parameters.

    ``θ ← θ ⊙ exp(clamp(-η·∇θ L, -max_exponent, max_exponent))``, i.e. gradient descent on ``φ = log θ``
    with ``∇θ L`` in place of ``∇φ L = θ ⊙ ∇θ L`` (the dropped factor only rescales the step). Strictly
    positive parameters stay strictly positive; an exact zero is absorbing (it never moves). It is mirror
    descent with the unnormalised-entropy mirror map; ``normalize_dim`` renormalises each slice along that
    dimension to sum to 1 after the step, which is the classical EG / exponential-weights update on the
    probability simplex.

    Shape:
        params: any shapes, entries ≥ 0; with ``normalize_dim`` each slice along that dim sums to 1.

    Example::

        w = nn.Parameter(torch.full((4,), 0.25))  # a point of the probability simplex
        opt = ExponentiatedGradient([w], lr=0.1, normalize_dim=0)
        (w * torch.tensor([4.0, 3.0, 2.0, 1.0])).sum().backward()
        opt.step()  # w stays on the simplex; mass moves to the cheapest entry

    Args:
        params: parameters (all entries must be >= 0; checked once at construction).
        lr: η >= 0 (no universal default; 1e-2 suits probability-like parameters).
        max_exponent: clamp on ``|η g|`` so ``exp`` cannot overflow (50 by default).
        normalize_dim: None, or a dimension along which parameters are renormalised to sum 1.
        maximize: ascend instead of descend.

    Source: kexue.fm/archives/8968.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        max_exponent: float = 50.0,
        normalize_dim: int | None = None,
        *,
        maximize: bool = False,
    ) -> None:
        fn = "ExponentiatedGradient"
        check_number("lr", lr, fn=fn, min=0.0)
        check_number("max_exponent", max_exponent, fn=fn, min=0.0, min_inclusive=False)
        check_int("normalize_dim", normalize_dim, fn=fn, allow_none=True)
        check_bool("maximize", maximize, fn=fn)
        defaults = dict(lr=float(lr), max_exponent=float(max_exponent), normalize_dim=normalize_dim,
                        maximize=maximize)
        super().__init__(params, defaults)
        if not tracing():
            for group in self.param_groups:
                for p in group["params"]:
                    if not p.is_floating_point():
                        fail(fn, "params", "floating-point tensors", p, exc=TypeError)
                    if p.numel() and bool((p.detach() < 0).any()):
                        fail(fn, "params", "non-negative tensors (EG multiplies, it cannot cross 0)",
                             f"a tensor with minimum {float(p.detach().min())}")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One multiplicative step ``θ ← θ·exp(-η g)`` (optionally renormalised)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, cap = group["lr"], group["max_exponent"]
            sign = 1.0 if group["maximize"] else -1.0
            for p in group["params"]:
                if p.grad is None:
                    continue
                expo = (p.grad.to(p.dtype) * (sign * lr)).clamp_(-cap, cap)
                p.mul_(expo.exp_())
                dim = group["normalize_dim"]
                if dim is not None:
                    p.div_(p.sum(dim=dim, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny))
        return loss
