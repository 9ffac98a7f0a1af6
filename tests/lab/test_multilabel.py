"""The ``multilabel`` lab experiment (tiny mode) and its F1 / threshold helpers."""

from __future__ import annotations

import json

import pytest
import torch
from sklearn.metrics import f1_score

from trainwell.lab.base import MethodStats
from trainwell.lab.experiments import multilabel as ml
from trainwell.lab.runner import run_experiment


def _random_problem(seed: int = 0, n: int = 120, labels: int = 6):
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, labels, generator=g) < torch.linspace(0.05, 0.6, labels)).float()
    prob = (0.6 * target + 0.7 * torch.rand(n, labels, generator=g)).clamp(0, 1)
    return prob, target


def test_tiny_run_writes_schema(tmp_path):
    run_experiment(ml.EXPERIMENT, out=tmp_path, mode="tiny", seeds=1, progress=False, log=lambda *a: None)
    exp_dir = tmp_path / "multilabel"
    for name in ("results.json", "table.md", "metric.png", "curves.png"):
        assert (exp_dir / name).is_file(), name
    res = json.loads((exp_dir / "results.json").read_text())
    assert res["experiment"] == "multilabel" and res["metric"] == "test micro-F1"
    assert isinstance(res["claim"], str) and "0.01" in res["claim"] and isinstance(res["claim_holds"], bool)
    assert list(res["results"]) == ml.METHODS
    for stats in res["results"].values():
        assert set(stats) >= {"mean", "std", "values"} and 0.0 <= stats["mean"] <= 1.0
    assert set(res["secondary"]["macro-F1"]) == set(ml.METHODS)
    info = res["info"][0]
    assert info["split"] == [1450, 483, 484]
    assert 0.05 <= info["bce_global_threshold"] <= 0.95 and len(info["bce_per_class_thresholds"]) == 14


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_scores_match_sklearn(seed):
    prob, target = _random_problem(seed)
    pred = prob > 0.5
    micro, macro = ml.f1_scores(pred, target)
    assert micro == pytest.approx(f1_score(target.numpy(), pred.numpy(), average="micro", zero_division=0))
    assert macro == pytest.approx(f1_score(target.numpy(), pred.numpy(), average="macro", zero_division=0))


def _f1(pred, target) -> float:
    # Independent float64 reference: 2TP / (2TP + FP + FN), 0 when undefined.
    p, t = pred.numpy().astype(bool), target.numpy().astype(bool)
    tp, fp, fn = (p & t).sum(), (p & ~t).sum(), (~p & t).sum()
    return 0.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def test_threshold_tuning_matches_brute_force():
    prob, target = _random_problem(3)
    grid = torch.linspace(0.05, 0.95, 91).tolist()
    best_micro = max(_f1(prob > g, target) for g in grid)
    t = ml.tune_global_threshold(prob, target)
    assert _f1(prob > t, target) == pytest.approx(best_micro)
    per_class = ml.tune_per_class_thresholds(prob, target)
    for c in range(target.shape[1]):
        best = max(_f1(prob[:, c] > g, target[:, c]) for g in grid)
        assert _f1(prob[:, c] > per_class[c], target[:, c]) == pytest.approx(best)


def _stats(zlpr, tuned):
    return {"ZLPR (t=0)": MethodStats(zlpr), "BCE (t=0.5)": MethodStats([0.6, 0.6]),
            "BCE (tuned t)": MethodStats(tuned), "BCE (per-class t)": MethodStats([0.62, 0.62])}


@pytest.mark.parametrize(
    ("zlpr", "holds"), [([0.66, 0.66], True), ([0.652, 0.652], True), ([0.64, 0.64], False)]
)
def test_judge_on_par_within_one_point(zlpr, holds):
    assert ml.judge(_stats(zlpr, [0.661, 0.661])) is holds


def test_judge_tolerance_widens_to_the_pooled_std():
    # tuned mean 0.66 with std 0.0566: pooled std 0.04 > one point, so 0.64 counts as on par.
    assert ml.judge(_stats([0.64, 0.64], [0.62, 0.70])) is True
    assert ml.judge(_stats([0.61, 0.61], [0.62, 0.70])) is False
    # The better of the two tuned BCE variants is the reference.
    stats = _stats([0.64, 0.64], [0.60, 0.60])
    stats["BCE (per-class t)"] = MethodStats([0.7, 0.7])
    assert ml.judge(stats) is False
