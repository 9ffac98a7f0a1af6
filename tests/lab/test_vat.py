"""The ``vat`` lab experiment: tiny end-to-end run, schema, labeled/unlabeled protocol and judge."""

from __future__ import annotations

import json

from trainwell.lab.base import MethodStats
from trainwell.lab.experiments import registry
from trainwell.lab.experiments.vat import EXPERIMENT, METHODS, judge
from trainwell.lab.runner import run_experiment


def test_registered() -> None:
    assert registry()["vat"] is EXPERIMENT
    assert METHODS[0] == "labeled only" and "VAT" in METHODS


def test_tiny_run_writes_results_with_schema(tmp_path) -> None:
    res = run_experiment(EXPERIMENT, out=tmp_path, mode="tiny", seeds=1, progress=False, log=lambda *a: None)
    folder = tmp_path / "vat"
    on_disk = json.loads((folder / "results.json").read_text())
    for key in ("experiment", "metric", "results", "claim", "claim_holds"):
        assert key in on_disk
    assert on_disk["experiment"] == "vat" and set(on_disk["results"]) == set(METHODS)
    for stats in on_disk["results"].values():
        assert set(stats) >= {"mean", "std", "values"} and 0.0 <= stats["mean"] <= 1.0
    # one seed: no paired CI, so the claim is never called held
    assert on_disk["claim_holds"] == res["claim_holds"] is False
    info = on_disk["info"][0]
    # 1% of the 12,155 training reviews are labeled; the unlabeled pool follows them.
    assert info["sizes"]["labeled"] == round(0.01 * 12155)
    assert 0 < info["labeled_positive"] < info["sizes"]["labeled"]
    assert (folder / "effects.md").is_file() and (folder / "table.md").is_file()


def test_judge() -> None:
    s = lambda *v: MethodStats(list(v))  # noqa: E731
    assert judge({"labeled only": s(0.6, 0.62), "VAT": s(0.65, 0.66)})
    assert not judge({"labeled only": s(0.6, 0.62), "VAT": s(0.6, 0.61)})
    assert not judge({"labeled only": s(0.6)})
    # +0.16 points with a 2-point seed spread (the quick run's numbers): noise, not a win
    assert not judge({"labeled only": s(0.62, 0.645, 0.673), "VAT": s(0.635, 0.648, 0.661)})
