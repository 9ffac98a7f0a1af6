"""Lab: Mitchell's multiplication errs by at most 1/9 (kexue.fm/archives/7991).

Exact mathematics, no training: :func:`trainwell.numerics.mitchell_multiply` and
:func:`~trainwell.numerics.mitchell_divide` are evaluated on every pair of float16 mantissas
(2^10 × 2^10 values ``1 + i/1024``, computed in float32 by the bit trick), which covers every normal
16-bit pair because the relative error depends only on the mantissas. Also: 10^6 random float32 pairs
over ``[0.01, 100]``, and all bfloat16 mantissa pairs. Seeds only change the random float32 sample.

Metric: the maximum relative error ``max |approx/exact - 1|`` (lower is better). Claim holds when the
multiplication's maximum is 1/9 within 1e-3 over the grid (never larger on the random pairs), it never
overestimates, and division's maximum is 1/8 within 1e-3 (never underestimates). Secondary: the mean
relative error (≈3.85% for multiplication and ≈4.10% for division over uniform mantissas, spec §8.2).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from trainwell.lab.base import Experiment, MethodStats, RunContext, SeedResult
from trainwell.numerics import mitchell_divide, mitchell_multiply

MUL, DIV, MUL_RANDOM, MUL_BF16 = (
    "multiply (fp16 mantissa grid)",
    "divide (fp16 mantissa grid)",
    "multiply (random fp32 pairs)",
    "multiply (bf16 mantissa grid)",
)
METHODS = [MUL, DIV, MUL_RANDOM, MUL_BF16]


def _grid(bits: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    m = 1 + torch.arange(2**bits, dtype=torch.float64) / 2**bits
    a, b = torch.meshgrid(m, m, indexing="ij")
    return a.to(dtype), b.to(dtype)


def _ratios(bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _grid(bits)
    mul = mitchell_multiply(a, b).double() / (a.double() * b.double())
    div = mitchell_divide(a, b).double() / (a.double() / b.double())
    return mul, div


def run_seed(ctx: RunContext) -> SeedResult:
    bits = ctx.pick(tiny=7, quick=10, full=10)
    mul, div = _ratios(bits)
    g = torch.Generator().manual_seed(ctx.seed)
    n = ctx.pick(tiny=10_000, quick=1_000_000, full=10_000_000)
    lo, hi = math.log(0.01), math.log(100.0)
    ra = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(lo, hi, generator=g)).float()
    rb = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(lo, hi, generator=g)).float()
    rr = mitchell_multiply(ra, rb).double() / (ra.double() * rb.double())
    a16, b16 = _grid(7, torch.bfloat16)
    r16 = mitchell_multiply(a16, b16).double() / (a16.double() * b16.double())

    def max_err(r: torch.Tensor) -> float:
        return float((r - 1).abs().max())

    def mean_err(r: torch.Tensor) -> float:
        return float((r - 1).abs().mean())

    worst = int(mul.argmin())
    i, j = divmod(worst, mul.shape[1])
    example = float(mitchell_multiply(torch.tensor(12.3), torch.tensor(4.56)))
    return SeedResult(
        values={MUL: max_err(mul), DIV: max_err(div), MUL_RANDOM: max_err(rr), MUL_BF16: max_err(r16)},
        secondary={
            "mean relative error": {
                MUL: mean_err(mul),
                DIV: mean_err(div),
                MUL_RANDOM: mean_err(rr),
                MUL_BF16: mean_err(r16),
            },
            "max ratio approx/exact": {
                MUL: float(mul.max()),
                DIV: float(div.max()),
                MUL_RANDOM: float(rr.max()),
                MUL_BF16: float(r16.max()),
            },
            "min ratio approx/exact": {
                MUL: float(mul.min()),
                DIV: float(div.min()),
                MUL_RANDOM: float(rr.min()),
                MUL_BF16: float(r16.min()),
            },
        },
        info={
            "mantissa_bits": bits,
            "worst_multiply_pair": [1 + i / 2**bits, 1 + j / 2**bits],
            "random_pairs": n,
            "example_12.3x4.56": example,
            "example_relative_error": example / 56.088 - 1,
        },
    )


def judge(stats: dict[str, MethodStats]) -> bool:
    if any(m not in stats for m in METHODS):
        return False
    return bool(
        abs(stats[MUL].mean - 1 / 9) <= 1e-3
        and stats[MUL_RANDOM].mean <= 1 / 9 + 1e-9
        and stats[MUL_BF16].mean <= 1 / 9 + 1e-9
        and abs(stats[DIV].mean - 1 / 8) <= 1e-3
    )


def _plot(res: dict[str, Any], cells: list[SeedResult], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bits = int(cells[0].info.get("mantissa_bits", 10)) if cells else 10
    mul, div = _ratios(bits)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    ext = (0.0, 1.0, 0.0, 1.0)
    for ax, r, title in (
        (axes[0], 1 - mul, "multiply: 1 - approx/exact"),
        (axes[1], div - 1, "divide: approx/exact - 1"),
    ):
        im = ax.imshow(r.numpy(), origin="lower", extent=ext, cmap="viridis")
        ax.set_xlabel("mantissa x2")
        ax.set_ylabel("mantissa x1")
        ax.set_title(f"{title} (max {float(r.max()):.5f})", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    axes[0].plot([0.5], [0.5], "r+", ms=12)
    fig.suptitle("Mitchell relative error over all fp16 mantissa pairs", fontsize=10)
    fig.tight_layout()
    p = out_dir / "error_surface.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return [p]


EXPERIMENT = Experiment(
    name="mitchell",
    title="Mitchell's logarithmic multiplication: relative error over all fp16 mantissa pairs",
    metric="max relative error",
    higher_is_better=False,
    claim=(
        "Mitchell's approximate product is never too large and at most 1/9 too small (maximum reached at "
        "1.5 × 1.5); approximate division is at most 1/8 too large."
    ),
    methods=METHODS,
    run_seed=run_seed,
    judge=judge,
    source="kexue.fm/archives/7991; Mitchell 1962; arXiv:2012.03458",
    reported="Relative error of the product ≤ 1/9 ≈ 11.1%; division ≤ 12.5%; 12.3 × 4.56 ≈ 53.68 (exact "
             "56.088).",
    seeds={"tiny": 1, "quick": 1, "full": 1},
    full_runtime="≈10 s (exact sweep; full adds 10^7 random float32 pairs)",
    plot=_plot,
)
