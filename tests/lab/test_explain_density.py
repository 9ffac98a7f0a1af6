"""The ``explain`` and ``density`` lab experiments: tiny end-to-end runs, schema and judges."""

from __future__ import annotations

import json

import pytest
import torch

from trainwell.lab.base import MethodStats
from trainwell.lab.experiments import registry
from trainwell.lab.runner import run_experiment

s = lambda *v: MethodStats(list(v))  # noqa: E731


@pytest.mark.slow
def test_explain_tiny_run(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from trainwell.lab.experiments.explain import EXPERIMENT, METHODS, NEG_ROW, POS_ROW

    assert registry()["explain"] is EXPERIMENT and EXPERIMENT.seeds["quick"] >= 3
    res = run_experiment(EXPERIMENT, out=tmp_path, mode="tiny", seeds=1, progress=False, log=lambda *a: None)
    folder = tmp_path / "explain"
    on_disk = json.loads((folder / "results.json").read_text())
    assert set(on_disk["results"]) == set(METHODS)
    assert on_disk["claim_holds"] == res["claim_holds"] == (
        on_disk["results"][NEG_ROW]["mean"] > on_disk["results"][POS_ROW]["mean"]
    )
    info = on_disk["info"][0]
    assert 0.0 <= info["test_acc"] <= 1.0 and info["explained"]["negative"] > 0
    # IG is complete to the quadrature error; gradient×input is not
    assert info["ig_median_rel_delta"] < 0.05
    assert info["gxi_median_rel_delta"] >= 0.0
    html = (folder / "heatmaps.html").read_text(encoding="utf-8")
    assert html.count("<span") > 8 and "negative review" in html
    assert sorted(p.name for p in folder.glob("heatmap_*.png"))


def test_explain_helpers() -> None:
    from trainwell.lab.experiments.explain import judge, negativity_stats, spearman

    assert spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0])) == pytest.approx(1.0)
    assert spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    scores = torch.tensor([[0.5, 0.1, -0.2, 9.0], [0.05, 0.02, 0.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])
    st = negativity_stats(scores, mask, torch.tensor([0, 1]))
    assert st["top_neg"] == pytest.approx(0.5) and st["top_pos"] == pytest.approx(0.05)  # padding ignored
    assert st["share_neg"] == pytest.approx(0.5 / 0.8)
    from trainwell.lab.experiments.explain import NEG_ROW, POS_ROW

    assert judge({NEG_ROW: s(0.3, 0.32), POS_ROW: s(0.1, 0.12)})
    assert not judge({NEG_ROW: s(0.3, 0.32), POS_ROW: s(0.29, 0.33)})


@pytest.mark.slow
def test_density_tiny_run(tmp_path) -> None:
    from trainwell.lab.experiments.density import EXPERIMENT, METHODS

    assert registry()["density"] is EXPERIMENT
    res = run_experiment(EXPERIMENT, out=tmp_path, mode="tiny", seeds=1, progress=False, log=lambda *a: None)
    on_disk = json.loads((tmp_path / "density" / "results.json").read_text())
    assert set(on_disk["results"]) == set(METHODS) and isinstance(res["claim_holds"], bool)
    for m in METHODS:
        assert on_disk["results"][m]["mean"] < 0  # log-likelihoods of 784 binary pixels
    info = on_disk["info"][0]
    assert info["dims"] in (784, 64)


def test_density_judge() -> None:
    from trainwell.lab.experiments.density import EVAL_K, TRAINED, judge

    def table(vae: list[float], iwae: list[float]) -> dict[str, MethodStats]:
        out = {}
        for t, vals in zip(TRAINED, (vae, iwae)):
            for k, v in zip(EVAL_K, vals):
                out[f"{t} · eval K={k}"] = s(v, v + 0.1)
        return out

    assert judge(table([-110, -107, -106, -105.9], [-109, -106, -105, -104.8]))
    assert not judge(table([-110, -107, -106, -105.9], [-110, -107, -106, -105.9]))  # no IWAE gain
    assert not judge(table([-110, -107, -104, -103], [-109, -106, -103, -101]))  # gains do not shrink
    assert not judge(table([-110, -111, -106, -105.9], [-109, -106, -105, -104.8]))  # falls at K=10
