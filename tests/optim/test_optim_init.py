"""Spec optimization.md §6.6: non-square initialisation by dimension averages (post 8725)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from trainwell.optim import init as twinit


def test_variance_formulas_and_ordering() -> None:
    for m in range(1, 513, 17):
        for n in range(1, 513, 13):
            a = twinit.average_dimension(m, n, "arithmetic")
            g = twinit.average_dimension(m, n, "geometric")
            c = twinit.average_dimension(m, n, "contraharmonic")
            assert a == (m + n) / 2 and g == math.sqrt(m * n) and c == (m * m + n * n) / (m + n)
            assert c >= a * (1 - 1e-15) and a >= g * (1 - 1e-15)
            assert (
                twinit.average_dimension(m, n, "fan_in") == m
                and twinit.average_dimension(m, n, "fan_out") == n
            )
    for m in (1, 7, 512):
        vals = {twinit.average_dimension(m, m, av) for av in twinit.AVERAGES}
        assert max(vals) - min(vals) < 1e-12 * m


def test_contraharmonic_is_the_argmin() -> None:
    for m, n in [(3, 7), (256, 1024), (100, 10)]:
        t = 1.0 / twinit.average_dimension(m, n, "contraharmonic")
        deriv = 2 * m * (m * t - 1) + 2 * n * (n * t - 1)
        assert abs(deriv) < 1e-12 * (m + n)
        grid = torch.linspace(0, 4 * t, 10_001, dtype=torch.float64)
        obj = (m * grid - 1) ** 2 + (n * grid - 1) ** 2
        assert (m * t - 1) ** 2 + (n * t - 1) ** 2 <= float(obj.min()) + 1e-15


@pytest.mark.parametrize(("average", "gain"), [("geometric", 1.0), ("arithmetic", 4 * 256 * 1024 / 1280**2)])
def test_second_moment_gains_through_expand_contract_pair(average: str, gain: float) -> None:
    m, n = 256, 1024
    g = torch.Generator().manual_seed(0)
    up, down = torch.empty(n, m), torch.empty(m, n)  # nn.Linear layout (out, in)
    twinit.nonsquare_normal_(up, average, generator=g)
    twinit.nonsquare_normal_(down, average, generator=g)
    x = torch.randn(512, m, generator=g)
    fwd = float((x @ up.T @ down.T).pow(2).sum() / x.pow(2).sum())
    dy = torch.randn(512, m, generator=g)
    bwd = float((dy @ down @ up).pow(2).sum() / dy.pow(2).sum())
    assert abs(fwd - gain) < 0.05 * gain and abs(bwd - gain) < 0.05 * gain


@pytest.mark.parametrize("fill", [twinit.nonsquare_normal_, twinit.nonsquare_uniform_])
@pytest.mark.parametrize("average", ["geometric", "arithmetic", "contraharmonic"])
def test_sample_variance_of_large_tensor(fill: Any, average: str) -> None:
    w = torch.empty(500, 2000)
    fill(w, average, gain=1.5, generator=torch.Generator().manual_seed(1))
    target = 1.5**2 / twinit.average_dimension(2000, 500, average)
    assert abs(float(w.var()) / target - 1) < 0.02
    assert abs(float(w.mean())) < 0.01 * math.sqrt(target)


def test_arithmetic_matches_xavier() -> None:
    w, x = torch.empty(300, 700), torch.empty(300, 700)
    twinit.nonsquare_normal_(w, "arithmetic", generator=torch.Generator().manual_seed(2))
    torch.nn.init.xavier_normal_(x, generator=torch.Generator().manual_seed(3))
    assert twinit.nonsquare_std(w, "arithmetic") == pytest.approx(math.sqrt(2 / 1000), rel=1e-15)
    assert abs(float(w.std()) / float(x.std()) - 1) < 0.02
    conv = torch.empty(16, 8, 3, 3)
    assert twinit.nonsquare_std(conv, "geometric") == pytest.approx((72 * 144) ** -0.25, rel=1e-15)


def test_apply_init_and_bad_inputs() -> None:
    first = torch.nn.Linear(10, 40)
    model = torch.nn.Sequential(first, torch.nn.ReLU(), torch.nn.Linear(40, 10))
    twinit.apply_init(model, "geometric", generator=torch.Generator().manual_seed(0))
    assert float(first.bias.detach().abs().sum()) == 0.0
    assert abs(float(first.weight.detach().var()) * 20 - 1) < 0.3  # σ² = 1/√(10·40) = 1/20
    with pytest.raises(ValueError, match="'average'"):
        twinit.nonsquare_normal_(torch.empty(3, 4), "harmonic")
    with pytest.raises(ValueError, match="'tensor'"):
        twinit.nonsquare_normal_(torch.empty(5))
    with pytest.raises(TypeError, match="'model'"):
        twinit.apply_init(torch.empty(3, 3))  # type: ignore[arg-type]
