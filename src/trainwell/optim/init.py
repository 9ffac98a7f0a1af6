"""Initialisation of non-square weights by an "average dimension" of fan-in and fan-out.

Source: kexue.fm/archives/8725 (初始化方法中非方阵的维度平均策略思考); Glorot & Bengio 2010 (Xavier).

For an m→n layer (m = fan_in, n = fan_out) forward variance preservation needs ``σ² = 1/m`` and backward
``σ² = 1/n``. Writing ``σ² = 1/d̄``:

==================  =====================  =====================================================
average             d̄                      why
==================  =====================  =====================================================
``arithmetic``      (m+n)/2                Xavier/Glorot's compromise
``geometric``       √(mn)                  an m→n→m pair sharing σ² keeps both gains exactly 1
``contraharmonic``  (m²+n²)/(m+n)          argmin of (mσ²-1)² + (nσ²-1)² (per-layer balance)
``fan_in``          m                      forward only (LeCun)
``fan_out``         n                      backward only
==================  =====================  =====================================================

with ``(m²+n²)/(m+n) ≥ (m+n)/2 ≥ √(mn)`` (equality iff m = n). Geometric suits expand/contract pairs such
as FFN up/down projections; ``arithmetic`` reproduces ``torch.nn.init.xavier_normal_``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from trainwell._validation import check_choice, check_module, check_number, check_tensor, fail

__all__ = [
    "AVERAGES",
    "apply_init",
    "average_dimension",
    "nonsquare_normal_",
    "nonsquare_std",
    "nonsquare_uniform_",
]

AVERAGES = ("geometric", "arithmetic", "contraharmonic", "fan_in", "fan_out")


def average_dimension(fan_in: int, fan_out: int, average: str = "geometric") -> float:
    """The average dimension d̄ of ``fan_in`` (m) and ``fan_out`` (n) for ``average`` (table above)."""
    fn = "average_dimension"
    m = check_number("fan_in", fan_in, fn=fn, min=0.0, min_inclusive=False)
    n = check_number("fan_out", fan_out, fn=fn, min=0.0, min_inclusive=False)
    check_choice("average", average, AVERAGES, fn=fn)
    if average == "arithmetic":
        return (m + n) / 2.0
    if average == "geometric":
        return math.sqrt(m * n)
    if average == "contraharmonic":
        return (m * m + n * n) / (m + n)
    return m if average == "fan_in" else n


def _fans(tensor: Tensor, fn: str) -> tuple[int, int]:
    check_tensor("tensor", tensor, fn=fn, kind="float")
    if tensor.dim() < 2:
        fail(fn, "tensor", "a tensor with at least 2 dims (fan_in and fan_out are undefined below)", tensor)
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(tensor)
    if fan_in == 0 or fan_out == 0:
        fail(fn, "tensor", "a non-empty weight tensor", tensor)
    return fan_in, fan_out


def nonsquare_std(tensor: Tensor, average: str = "geometric", gain: float = 1.0) -> float:
    """``gain / sqrt(d̄)`` for ``tensor``'s fans (``nn.Linear.weight`` is (out, in): m = in, n = out)."""
    fan_in, fan_out = _fans(tensor, "nonsquare_std")
    return float(gain) / math.sqrt(average_dimension(fan_in, fan_out, average))


def nonsquare_normal_(
    tensor: Tensor, average: str = "geometric", gain: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Fill ``tensor`` in place with ``N(0, gain²/d̄)``, d̄ the chosen average of fan-in and fan-out.

    ``average="arithmetic"`` is ``torch.nn.init.xavier_normal_``; the default ``"geometric"``
    (``σ² = 1/√(mn)``) is post 8725's proposal, exact for m→n→m pairs. Fans follow torch's convention
    (convolutions multiply both by the receptive field). ``gain`` as from ``nn.init.calculate_gain``.

    Source: kexue.fm/archives/8725.
    """
    fn = "nonsquare_normal_"
    check_choice("average", average, AVERAGES, fn=fn)
    check_number("gain", gain, fn=fn, min=0.0)
    fan_in, fan_out = _fans(tensor, fn)
    std = float(gain) / math.sqrt(average_dimension(fan_in, fan_out, average))
    with torch.no_grad():
        return tensor.normal_(0.0, std, generator=generator)


def nonsquare_uniform_(
    tensor: Tensor, average: str = "geometric", gain: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Fill ``tensor`` in place with ``U(-a, a)``, ``a = √3·gain/√d̄`` (same variance as the normal form).

    ``average="arithmetic"`` is ``torch.nn.init.xavier_uniform_``. Source: kexue.fm/archives/8725.
    """
    fn = "nonsquare_uniform_"
    check_choice("average", average, AVERAGES, fn=fn)
    check_number("gain", gain, fn=fn, min=0.0)
    fan_in, fan_out = _fans(tensor, fn)
    bound = math.sqrt(3.0) * float(gain) / math.sqrt(average_dimension(fan_in, fan_out, average))
    with torch.no_grad():
        return tensor.uniform_(-bound, bound, generator=generator)


def apply_init(
    model: nn.Module,
    average: str = "geometric",
    gain: float = 1.0,
    distribution: str = "normal",
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Initialise every ``nn.Linear`` / ``nn.Conv*d`` weight of ``model`` by the average (biases to 0)."""
    fn = "apply_init"
    check_module("model", model, fn=fn)
    check_choice("average", average, AVERAGES, fn=fn)
    check_choice("distribution", distribution, ("normal", "uniform"), fn=fn)
    init = nonsquare_normal_ if distribution == "normal" else nonsquare_uniform_
    for mod in model.modules():
        if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            init(mod.weight, average, gain, generator)
            if mod.bias is not None:
                with torch.no_grad():
                    mod.bias.zero_()
    return model
