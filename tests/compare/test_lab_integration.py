"""The lab's report tables show the paired CI that the judges (and trainwell compare) use."""

from __future__ import annotations

from trainwell.compare.stats import paired_bootstrap_ci
from trainwell.lab.report import paired_ci_cell, paired_ci_header, results_markdown


def _res(values: dict[str, list[float]]) -> dict:
    return {
        "experiment": "toy",
        "metric": "acc",
        "claim": "c",
        "claim_holds": True,
        "mode": "quick",
        "seeds": 3,
        "results": {m: {"mean": sum(v) / len(v), "std": 0.0, "values": v} for m, v in values.items()},
    }


def test_report_cell_is_the_paired_bootstrap_ci() -> None:
    r = _res({"base": [0.70, 0.74, 0.72], "x": [0.72, 0.77, 0.73]})
    lo, hi = paired_bootstrap_ci([0.02, 0.03, 0.01])
    assert paired_ci_cell(r, "x") == f"{0.02:+.4f} [{lo:+.4f}, {hi:+.4f}]"
    assert paired_ci_cell(r, "base") == "—"
    assert paired_ci_header(r) == "Δ vs base [95% paired CI]"
    md = results_markdown([r])
    assert "Δ vs base [95% paired CI]" in md and f"[{lo:+.4f}, {hi:+.4f}]" in md
    one = _res({"base": [0.7], "x": [0.8]})
    assert "no CI" in paired_ci_cell(one, "x")
