"""The ``regularize`` lab experiment: tiny end-to-end run, schema, judge and effect sizes."""

from __future__ import annotations

import json
import math

import pytest
import torch

from trainwell.lab.base import MethodStats
from trainwell.lab.experiments import registry
from trainwell.lab.experiments.regularize import (
    EXPERIMENT,
    METHODS,
    TextCNN,
    effect_sizes,
    judge,
)
from trainwell.lab.runner import run_experiment


def test_registered_with_all_methods() -> None:
    assert registry()["regularize"] is EXPERIMENT
    assert METHODS == ["baseline", "noise", "FGM", "FGM ε→0 (control)", "PGD", "GP", "fast GP", "R-Drop",
                       "flooding", "WEISSI"]
    assert EXPERIMENT.seeds["quick"] >= 3 and EXPERIMENT.full_runtime


def test_tiny_run_writes_results_with_schema(tmp_path) -> None:
    res = run_experiment(EXPERIMENT, out=tmp_path, mode="tiny", seeds=1, progress=False, log=lambda *a: None)
    folder = tmp_path / "regularize"
    on_disk = json.loads((folder / "results.json").read_text())
    for key in ("experiment", "metric", "results", "claim", "claim_holds"):
        assert key in on_disk
    assert on_disk["experiment"] == "regularize" and on_disk["metric"] == "test_acc"
    assert set(on_disk["results"]) == set(METHODS)
    for stats in on_disk["results"].values():
        assert set(stats) >= {"mean", "std", "values"} and len(stats["values"]) == 1
        assert 0.0 <= stats["mean"] <= 1.0
    assert isinstance(on_disk["claim_holds"], bool)
    assert on_disk["claim_holds"] == res["claim_holds"]
    assert set(on_disk["effects"]) == set(METHODS) - {"baseline"}
    assert (folder / "table.md").is_file() and (folder / "effects.md").is_file()
    assert (folder / "effects.png").is_file() and (folder / "metric.png").is_file()
    info = on_disk["info"][0]
    assert info["sizes"]["test"] == 3472 and info["sizes"]["dev"] == 1736
    # The paired deltas in the cell agree with the aggregated values.
    for m in METHODS:
        d = on_disk["results"][m]["mean"] - on_disk["results"]["baseline"]["mean"]
        assert info["delta_vs_baseline"][m] == pytest.approx(d, abs=1e-4)


def test_judge_requires_both_fgm_and_gp_above_baseline() -> None:
    s = lambda *v: MethodStats(list(v))  # noqa: E731
    assert judge({"baseline": s(0.80, 0.81), "FGM": s(0.82, 0.83), "GP": s(0.815, 0.82)})
    assert not judge({"baseline": s(0.80, 0.81), "FGM": s(0.82, 0.83), "GP": s(0.80, 0.80)})
    assert not judge({"baseline": s(0.80, 0.81), "FGM": s(0.79, 0.80), "GP": s(0.82, 0.83)})
    assert not judge({"baseline": s(0.80), "FGM": s(0.9)})  # GP missing: cannot hold
    # paired rule: a gain on every seed counts even when the seeds' spread is larger than the gain ...
    assert judge({"baseline": s(0.70, 0.74), "FGM": s(0.72, 0.76), "GP": s(0.72, 0.76)})
    # ... and a higher mean with a loss on one seed does not (CI of the paired differences covers 0)
    assert not judge({"baseline": s(0.70, 0.74), "FGM": s(0.75, 0.73), "GP": s(0.72, 0.76)})


def test_effect_sizes_paired_statistics() -> None:
    base = MethodStats([0.80, 0.70, 0.75])
    other = MethodStats([0.82, 0.71, 0.78])  # diffs 0.02, 0.01, 0.03
    e = effect_sizes({"baseline": base, "x": other})["x"]
    assert e["delta"] == pytest.approx(0.02)
    assert e["paired_se"] == pytest.approx(0.01 / math.sqrt(3))  # sd of diffs = 0.01
    assert e["pooled_std"] == pytest.approx(math.sqrt((other.std**2 + base.std**2) / 2))
    assert e["within_noise"] is False  # 0.02 > 2·0.00577
    noisy = effect_sizes({"baseline": base, "y": MethodStats([0.83, 0.68, 0.76])})["y"]
    assert noisy["within_noise"] is True
    assert (
        effect_sizes({"baseline": MethodStats([0.8]), "z": MethodStats([0.9])})["z"]["within_noise"] is None
    )


def test_model_masks_padding() -> None:
    torch.manual_seed(0)
    model = TextCNN(20, emb_dim=8, channels=6).eval()
    ids = torch.tensor([[3, 4, 5, 0, 0, 0]])
    longer = torch.tensor([[3, 4, 5, 0, 0, 0, 0, 0, 0]])
    torch.testing.assert_close(model(ids), model(longer))  # extra padding changes nothing
    assert model.get_input_embeddings() is model.embedding
