"""Global-norm gradient clipping, hard (torch's) or soft, under relaxed smoothness.

Source: kexue.fm/archives/7469; Zhang, He, Sra, Jadbabaie, ICLR 2020, arXiv:1905.11881.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from trainwell._validation import check_bool, check_choice, check_number, check_tensor, fail
from trainwell.optim._foreach import default_foreach, device_has_foreach, group_by_device_and_dtype

__all__ = ["CLIP_MODES", "Clipped", "clip_coefficient", "clip_grad_norm_"]

CLIP_MODES = ("hard", "soft")


def clip_coefficient(total_norm: Tensor, max_norm: float, mode: str = "hard", eps: float = 1e-6) -> Tensor:
    """The factor every gradient is multiplied by, as a tensor (no host sync).

    hard: ``min(1, γ / (‖g‖ + eps))`` (exactly torch's ``clip_grad_norm_``);
    soft: ``γ / (‖g‖ + γ)``, which is always within a factor 2 of the hard factor:
    ``½·min(1, γ/‖g‖) ≤ γ/(‖g‖+γ) ≤ min(1, γ/‖g‖)``. With ``η = 1/L0`` and ``γ = L0/L1`` the soft step
    ``η·g·γ/(‖g‖+γ) = g/(L0 + L1‖g‖)`` is the optimal step under (L0, L1)-smoothness.
    An infinite norm gives factor 0 (grads become NaN where they were inf, 0 elsewhere); GradScaler then
    skips the step, so nothing is raised.
    """
    check_tensor("total_norm", total_norm, fn="clip_coefficient", kind="float")
    check_number("max_norm", max_norm, fn="clip_coefficient", min=0.0, min_inclusive=False)
    check_choice("mode", mode, CLIP_MODES, fn="clip_coefficient")
    check_number("eps", eps, fn="clip_coefficient", min=0.0)
    if mode == "hard":
        return torch.clamp(max_norm / (total_norm + eps), max=1.0)
    return max_norm / (total_norm + max_norm)


@torch.no_grad()
def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float = 1.0,
    mode: str = "hard",
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """Clip the gradients of ``parameters`` by their global norm, in place; return the pre-clip norm.

    ``g ← g · c`` with ``c = min(1, γ/(‖g‖+eps))`` (``mode="hard"``, identical to
    ``torch.nn.utils.clip_grad_norm_``) or ``c = γ/(‖g‖+γ)`` (``mode="soft"``, post 7469: the optimal
    step size under (L0, L1)-smoothness is soft clipping with γ = L0/L1). The soft factor is at most 2×
    smaller than the hard one, so switching modes may warrant up to a 2× larger learning rate.

    The factor is a tensor multiplied into every gradient: no Python branch on its value, so no
    device-to-host sync. Grads are grouped by (device, dtype) and use ``torch._foreach_norm`` /
    ``torch._foreach_mul_`` where the device supports it (``foreach=None`` picks automatically).

    Usage with AMP: call ``scaler.unscale_(optimizer)`` before clipping, then ``scaler.step(optimizer)``.
    With buffer-style gradient accumulation clip once, just before the step, on the accumulated gradient;
    with ``AccumSGDM``/``AccumAdamW`` (built-in accumulation) the mean gradient never exists, so clipping
    applies to each micro-batch gradient. Under DDP clip after the all-reduce (grads are identical).

    Args:
        parameters: tensors (or one tensor) whose ``.grad`` is clipped; tensors without grad are skipped.
        max_norm: the threshold γ > 0.
        mode: ``"hard"`` (default) or ``"soft"``.
        norm_type: p of the p-norm (``float('inf')`` for the max norm).
        error_if_nonfinite: raise ``RuntimeError`` when the total norm is NaN or inf (forces a sync).
        foreach: force (True) or forbid (False) the foreach kernels; None picks per device.
        eps: added to the norm in hard mode (torch's 1e-6).

    Returns:
        The total norm of the gradients before clipping (a 0-dim tensor).

    Source: kexue.fm/archives/7469; arXiv:1905.11881.
    """
    fn = "clip_grad_norm_"
    gamma = check_number("max_norm", max_norm, fn=fn, min=0.0, min_inclusive=False)
    check_choice("mode", mode, CLIP_MODES, fn=fn)
    p_norm = check_number("norm_type", norm_type, fn=fn, min=0.0, min_inclusive=False)
    check_bool("error_if_nonfinite", error_if_nonfinite, fn=fn)
    check_number("eps", eps, fn=fn, min=0.0)
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    first_device = grads[0].device
    grouped = group_by_device_and_dtype(grads)

    def use_foreach(device: torch.device, tensors: list[Tensor]) -> bool:
        if foreach is None:
            return default_foreach(tensors, on_cpu=True)  # as torch's clip_grad_norm_
        if foreach and not device_has_foreach(device):
            raise RuntimeError(f"{fn}(): foreach=True but {device.type} tensors have no foreach kernels")
        return bool(foreach)

    norms: list[Tensor] = []
    for (device, _), tensors in grouped.items():
        if use_foreach(device, tensors):
            norms.extend(torch._foreach_norm(tensors, p_norm))
        else:
            norms.extend(torch.linalg.vector_norm(g, p_norm) for g in tensors)
    total_norm = torch.linalg.vector_norm(torch.stack([n.to(first_device) for n in norms]), p_norm)
    if error_if_nonfinite and bool(torch.logical_or(total_norm.isnan(), total_norm.isinf())):
        raise RuntimeError(
            f"{fn}(): the total norm of order {p_norm} of the gradients is non-finite, so it cannot be "
            "clipped. Pass error_if_nonfinite=False to clip anyway (AMP: GradScaler then skips the step)."
        )
    coef = clip_coefficient(total_norm, gamma, mode, eps)
    for (device, _), tensors in grouped.items():
        coef_d = coef.to(device)
        if use_foreach(device, tensors):
            torch._foreach_mul_(tensors, coef_d)
        else:
            for g in tensors:
                g.mul_(coef_d)
    return total_norm


class Clipped:
    """Wrap an optimizer so that ``step()`` clips the global gradient norm first.

    ``Clipped(opt, max_norm, mode)`` behaves like ``opt`` (``param_groups``, ``state``, ``zero_grad``,
    ``state_dict`` are the base optimizer's). The pre-clip norm of the last step is ``last_norm`` and the
    fraction of clipped steps ``clipped_fraction`` (diagnostics for post 7469's smoothness plot). It is not
    a ``torch.optim.Optimizer`` subclass: attach LR schedulers to the base optimizer. With
    GradScaler, call ``scaler.unscale_(wrapped)`` before ``scaler.step(wrapped)`` happens implicitly:
    ``scaler.step`` unscales first, and the clip inside ``step`` then sees unscaled grads.

    Shape:
        params (of the base optimizer): any shapes; the norm is taken over all their gradients together;
        ``last_norm``: a scalar tensor.

    Example::

        model = nn.Linear(8, 2)
        opt = Clipped(torch.optim.SGD(model.parameters(), lr=0.1), max_norm=1.0, mode="soft")
        model(torch.randn(16, 8)).square().mean().backward()
        opt.step()  # clips the global gradient norm, then steps; opt.last_norm: the norm before
    """

    def __init__(self, optimizer: torch.optim.Optimizer, max_norm: float = 1.0, mode: str = "hard",
                 norm_type: float = 2.0) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            fail("Clipped", "optimizer", "a torch.optim.Optimizer", optimizer, exc=TypeError)
        check_number("max_norm", max_norm, fn="Clipped", min=0.0, min_inclusive=False)
        check_choice("mode", mode, CLIP_MODES, fn="Clipped")
        check_number("norm_type", norm_type, fn="Clipped", min=0.0, min_inclusive=False)
        self.optimizer = optimizer
        self.max_norm = float(max_norm)
        self.mode = mode
        self.norm_type = float(norm_type)
        self.last_norm: Tensor | None = None
        self._steps = 0
        self._clipped = 0

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:
        return self.optimizer.state

    @property
    def clipped_fraction(self) -> float:
        """Fraction of steps whose pre-clip norm exceeded ``max_norm``."""
        return self._clipped / self._steps if self._steps else 0.0

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)

    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.last_norm = clip_grad_norm_(params, self.max_norm, mode=self.mode, norm_type=self.norm_type)
        self._steps += 1
        self._clipped += int(bool(self.last_norm > self.max_norm))
        self.optimizer.step()
        return loss
