"""Report wording and plots: tiny runs are not judged, one seed has no spread, runtimes survive the cache."""

from __future__ import annotations

import json
import time

import pytest

import trainwell.lab.experiments as experiments_pkg
from trainwell.lab import runner
from trainwell.lab.base import Experiment, MethodStats, RunContext, SeedResult
from trainwell.lab.cli import main
from trainwell.lab.report import claims_summary, fmt_stats, fmt_time, seeds_phrase, summary_table


def _run_seed(ctx: RunContext) -> SeedResult:
    time.sleep(0.05)  # a measurable compute time per cell
    a = 0.5 + 0.01 * (ctx.seed % 7)
    return SeedResult(
        values={"a": a, "b": a - 0.1},
        curves={"a/loss": [1.0, 0.5], "b/loss": [1.0, 0.7]},
        info={"curve_xlabel": "epoch"},
    )


# The claim is false on every seed, so a judged run says "does NOT hold".
TOY = Experiment(
    name="toy2",
    title="Toy",
    metric="score",
    claim="b beats a",
    methods=["a", "b"],
    run_seed=_run_seed,
    judge=lambda s: s["b"].mean > s["a"].mean,
    seeds={"tiny": 1, "quick": 2, "full": 3},
)


def _quiet(*_a: object, **_k: object) -> None:
    return None


def test_tiny_mode_is_not_judged(tmp_path) -> None:
    res = runner.run_experiment(TOY, out=tmp_path, mode="tiny", progress=False, log=_quiet, plots=False)
    assert res["judged"] is False and res["claim_holds"] is False  # the judge still ran (schema)
    text = claims_summary([res])
    assert "not judged" in text and "NOT hold" not in text
    assert "[tiny, 1 seed]" in text and "1 seeds" not in text
    assert "not judged" in summary_table([res]) and "NO" not in summary_table([res])
    table = (tmp_path / "toy2" / "table.md").read_text()
    assert "not judged" in table and "1 seed)" in table and "± 0.0000" not in table
    quick = runner.run_experiment(TOY, out=tmp_path, mode="quick", progress=False, log=_quiet, plots=False)
    assert quick["judged"] is True and "does NOT hold" in claims_summary([quick])


def test_one_seed_has_no_spread_and_seed_plural() -> None:
    assert fmt_stats(MethodStats([0.8]).to_json()) == "0.8000"
    assert fmt_stats(MethodStats([0.8, 0.9]).to_json()) == "0.8500 ± 0.0707"
    assert seeds_phrase(1) == "1 seed" and seeds_phrase(3) == "3 seeds"
    assert fmt_time(42.2) == "42 s" and fmt_time(600) == "10.0 min" and fmt_time(float("nan")) == "?"


def test_cached_cells_keep_their_runtime(tmp_path) -> None:
    first = runner.run_experiment(TOY, out=tmp_path, mode="quick", progress=False, log=_quiet, plots=False)
    again = runner.run_experiment(TOY, out=tmp_path, mode="quick", progress=False, log=_quiet, plots=False)
    assert again["cells_computed"] == 0 and again["runtime_s"] < first["compute_s"]
    assert first["compute_s"] >= 0.1 and again["compute_s"] == pytest.approx(first["compute_s"], abs=0.01)
    from trainwell.lab.report import write_index

    write_index(tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert f"{fmt_time(first['compute_s'])} of compute" in md
    on_disk = json.loads((tmp_path / "toy2" / "results.json").read_text())
    assert on_disk["compute_s"] == again["compute_s"]


def test_plots_label_their_axes(tmp_path, monkeypatch) -> None:
    labels: list[tuple[str, str]] = []

    def capture(fig, path) -> None:
        labels.extend((ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes)

    monkeypatch.setattr(runner, "_save_fig", capture)
    runner.run_experiment(TOY, out=tmp_path, mode="quick", progress=False, log=_quiet, plots=True)
    assert len(labels) == 2 and all(x and y for x, y in labels)
    assert labels[1][0] == "epoch"  # the experiment's own curve x label


def test_list_has_a_header(monkeypatch, capsys) -> None:
    monkeypatch.setattr(experiments_pkg, "registry", lambda strict=False: {"toy2": TOY})
    assert main(["lab", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "suite", "title"] and "default" in out[1]
    assert out[2].startswith("toy2") and "Toy" in out[2]
