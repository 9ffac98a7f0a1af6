"""Kernel choice shared by trainwell's optimizers and clipping (one rule, no private torch imports).

torch's rules, written down here: optimizers default to the ``torch._foreach_*`` kernels on CUDA/XPU,
where one launch per list beats one per tensor, and to the per-tensor loop on CPU (it keeps each tensor
in cache); ``clip_grad_norm_`` uses foreach on CPU too (``on_cpu=True``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

__all__ = ["FOREACH_DEVICES", "default_foreach", "device_has_foreach", "group_by_device_and_dtype"]

#: devices where foreach is the optimizers' default (the kernels also run on CPU)
FOREACH_DEVICES = ("cuda", "xpu")


def device_has_foreach(device: torch.device) -> bool:
    """Whether ``device`` has foreach kernels at all (CPU, CUDA, XPU)."""
    return device.type in ("cpu", *FOREACH_DEVICES)


def default_foreach(tensors: Iterable[Tensor | None], *, on_cpu: bool = False) -> bool:
    """``foreach=None`` resolved: True when every tensor is dense and on a foreach device (CPU too with
    ``on_cpu``)."""
    ts = [t for t in tensors if t is not None]
    devices = ("cpu", *FOREACH_DEVICES) if on_cpu else FOREACH_DEVICES
    return bool(ts) and all(t.device.type in devices and not t.is_sparse for t in ts)


def group_by_device_and_dtype(
    tensors: Sequence[Tensor],
) -> dict[tuple[torch.device, torch.dtype], list[Tensor]]:
    """Tensors bucketed by (device, dtype), order kept within a bucket (one foreach call per bucket)."""
    out: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for t in tensors:
        out.setdefault((t.device, t.dtype), []).append(t)
    return out
