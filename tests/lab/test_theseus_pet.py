"""The ``theseus`` and ``pet`` lab experiments: tiny end-to-end runs, schema and judges."""

from __future__ import annotations

import json

import pytest

from trainwell.lab.base import MethodStats

pytest.importorskip("transformers")
pytest.importorskip("snownlp")


def _s(*v: float) -> MethodStats:
    return MethodStats(list(v))


def test_theseus_tiny_run(tmp_path) -> None:
    from trainwell.lab.experiments import registry
    from trainwell.lab.experiments.theseus import EXPERIMENT, METHODS
    from trainwell.lab.runner import run_experiment

    assert registry()["theseus"] is EXPERIMENT and EXPERIMENT.seeds["quick"] >= 3
    res = run_experiment(EXPERIMENT, out=tmp_path, mode="tiny", seeds=1, progress=False, log=lambda *a: None)
    on_disk = json.loads((tmp_path / "theseus" / "results.json").read_text())
    assert set(on_disk["results"]) == set(METHODS) and on_disk["claim_holds"] == res["claim_holds"]
    info = on_disk["info"][0]
    assert info["layers"] == {"teacher (6 layers)": 6, "direct 3 layers": 3, "Theseus 3 layers": 3,
                              "direct 2 layers": 2, "Theseus 2 layers": 2}
    for stats in on_disk["results"].values():
        assert 0.0 <= stats["mean"] <= 1.0
    assert (tmp_path / "theseus" / "paired.md").is_file()


def test_theseus_judge() -> None:
    from trainwell.lab.experiments.theseus import judge

    base = {"teacher (6 layers)": _s(0.80, 0.81, 0.80), "direct 3 layers": _s(0.74, 0.75, 0.74)}
    assert judge({**base, "Theseus 3 layers": _s(0.79, 0.79, 0.78)})
    assert not judge({**base, "Theseus 3 layers": _s(0.76, 0.76, 0.75)})  # above direct, < half the gap
    assert not judge({**base, "Theseus 3 layers": _s(0.70, 0.80, 0.75)})  # inside the seed noise


def test_pet_tiny_run(tmp_path) -> None:
    from trainwell.lab.experiments import registry
    from trainwell.lab.experiments.pet import EXPERIMENT, METHODS
    from trainwell.lab.runner import run_experiment

    assert registry()["pet"] is EXPERIMENT and EXPERIMENT.seeds["quick"] >= 3
    res = run_experiment(EXPERIMENT, out=tmp_path, mode="tiny", seeds=1, progress=False, log=lambda *a: None)
    on_disk = json.loads((tmp_path / "pet" / "results.json").read_text())
    assert set(on_disk["results"]) == set(METHODS) and on_disk["claim_holds"] == res["claim_holds"]
    info = on_disk["info"][0]
    assert info["sizes"]["labelled"] == 32
    assert 0.5 <= info["majority_class_rate"] <= 0.6
    paired = (tmp_path / "pet" / "paired.md").read_text()
    assert "majority-class rate" in paired and "MLM pretraining" in paired
    # the pretrained MLM is cached next to the reports and shared with the theseus experiment
    assert list((tmp_path / ".cache").glob("mlm-*.pt"))


def test_pet_judge_and_label_sample() -> None:
    from trainwell.lab.experiments.pet import _sample_labels, judge

    assert judge({"PET few-shot": _s(0.80, 0.82), "fine-tune": _s(0.80, 0.81), "PET zero-shot": _s(0.5, 0.5)})
    assert not judge(
        {"PET few-shot": _s(0.78, 0.80), "fine-tune": _s(0.80, 0.81), "PET zero-shot": _s(0.9, 0.9)}
    )
    texts, labels = _sample_labels(200, seed=3)
    assert len(texts) == 200 and sum(labels) == 100 and len(set(texts)) == 200
    assert _sample_labels(200, seed=3) == (texts, labels) and _sample_labels(200, seed=4)[0] != texts
