"""The ``imbalance`` lab experiment (tiny mode) and its metric helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from trainwell.lab.base import MethodStats
from trainwell.lab.experiments import imbalance
from trainwell.lab.runner import run_experiment


def test_tiny_run_writes_schema_and_posthoc_reuses_the_ce_model(tmp_path, monkeypatch):
    # With the adjustment replaced by the identity, "post-hoc LA" must equal "CE" exactly:
    # it is a readout of the CE model, not a separately trained one.
    monkeypatch.setattr(imbalance, "posthoc_logit_adjust", lambda logits, log_prior, tau=1.0: logits)
    res = run_experiment(imbalance.EXPERIMENT, out=tmp_path, mode="tiny", seeds=1, progress=False,
                         log=lambda *a: None)
    exp_dir = tmp_path / "imbalance"
    for name in ("results.json", "table.md", "metric.png", "curves.png"):
        assert (exp_dir / name).is_file(), name
    on_disk = json.loads((exp_dir / "results.json").read_text())
    assert on_disk["experiment"] == "imbalance" and on_disk["metric"] == "balanced test accuracy"
    assert isinstance(on_disk["claim"], str) and isinstance(on_disk["claim_holds"], bool)
    assert list(on_disk["results"]) == imbalance.METHODS
    for stats in on_disk["results"].values():
        assert set(stats) >= {"mean", "std", "values"} and len(stats["values"]) == 1
        assert 0.0 <= stats["mean"] <= 1.0
    assert res["results"]["post-hoc LA"]["values"] == res["results"]["CE"]["values"]
    info = on_disk["info"][0]
    assert info["per_class_accuracy"]["post-hoc LA"] == info["per_class_accuracy"]["CE"]
    assert info["counts"] == [int(300 * 100 ** (-c / 9)) for c in range(10)]
    assert set(on_disk["secondary"]) == {"head acc (classes 0-2)", "tail acc (classes 7-9)"}


def test_balanced_accuracy_matches_sklearn():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (200,), generator=g)
    pred = torch.where(torch.rand(200, generator=g) < 0.6, target, torch.randint(0, 5, (200,), generator=g))
    ours = imbalance.balanced_accuracy(pred, target, 5)
    assert ours == pytest.approx(balanced_accuracy_score(target.numpy(), pred.numpy()), abs=1e-6)
    per = imbalance.per_class_accuracy(pred, target, 6)
    assert torch.isnan(per[5])  # class absent from the targets
    assert np.allclose(per[:5].numpy(), [(pred[target == c] == c).float().mean() for c in range(5)])


@pytest.mark.parametrize(
    ("la", "posthoc", "holds"), [(0.8, 0.79, True), (0.8, 0.7, False), (0.69, 0.8, False)]
)
def test_judge_needs_both_adjustments_above_ce(la, posthoc, holds):
    stats = {"CE": MethodStats([0.70, 0.72]), "reweight": MethodStats([0.75]), "focal": MethodStats([0.7]),
             "LA loss": MethodStats([la]), "post-hoc LA": MethodStats([posthoc])}
    assert imbalance.judge(stats) is holds
