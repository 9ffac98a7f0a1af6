"""Tiny-mode smoke runs of the optimizer/numerics lab experiments, plus the word-corpus loaders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from trainwell.lab.base import MethodStats
from trainwell.lab.datasets import corpora
from trainwell.lab.experiments import accumulation, clipping, dimension, mitchell, zeroth_order
from trainwell.lab.runner import run_experiment


def _run(module: object, tmp_path: Path) -> dict:
    exp = module.EXPERIMENT  # type: ignore[attr-defined]
    run_experiment(exp, out=tmp_path, mode="tiny", seeds=1, progress=False, log=lambda *a: None)
    folder = tmp_path / exp.name
    assert (folder / "table.md").exists()
    assert (folder / "metric.png").exists()
    data = json.loads((folder / "results.json").read_text())
    for key in ("experiment", "metric", "results", "claim", "claim_holds"):
        assert key in data
    assert data["experiment"] == exp.name
    assert isinstance(data["claim_holds"], bool)
    assert set(data["results"]) >= set(exp.methods)
    for stats in data["results"].values():
        assert set(stats) >= {"mean", "std", "values"}
        assert len(stats["values"]) == 1 and math.isfinite(stats["mean"])
    return data


def test_mitchell_experiment(tmp_path: Path) -> None:
    data = _run(mitchell, tmp_path)
    # exact math even in tiny mode (7-bit grid contains 1.5 × 1.5)
    assert data["results"][mitchell.MUL]["mean"] == pytest.approx(1 / 9, abs=1e-9)
    assert data["claim_holds"] is True
    assert (tmp_path / "mitchell" / "error_surface.png").exists()


def test_clipping_experiment(tmp_path: Path) -> None:
    data = _run(clipping, tmp_path)
    assert (tmp_path / "clipping" / "curves.png").exists()
    assert data["info"][0]["theta4"]["soft_clip_monotone_2000_steps"] is True
    assert data["info"][0]["theta4"]["gd_eta0.01_from_10_exceeds_1e6_at_step"] <= 5


def test_accumulation_experiment(tmp_path: Path) -> None:
    data = _run(accumulation, tmp_path)
    assert all(0.0 <= s["mean"] <= 1.0 for s in data["results"].values())


def test_zeroth_order_experiment(tmp_path: Path) -> None:
    data = _run(zeroth_order, tmp_path)
    assert -1.0 <= data["results"][zeroth_order.COS_INIT]["mean"] <= 1.0


def test_dimension_experiment(tmp_path: Path) -> None:
    data = _run(dimension, tmp_path)
    assert (tmp_path / "dimension" / "dimension.png").exists()
    assert data["info"][0]["corpus"] in ("kjv", "peoples_daily")


def test_judges_are_not_trivially_true() -> None:
    def s(v: float) -> MethodStats:
        return MethodStats([v])

    # dimension: saturation at 8 (far below n* ≈ 57) must fail; at 64 must pass
    early = {f"n={d}": s(5.0 if d == 4 else 4.0) for d in dimension.DIMS}
    assert dimension.saturation_dim(early) == 8 and dimension.judge(early) is False
    late = {f"n={d}": s(max(4.0, 5.0 - 0.02 * d)) for d in dimension.DIMS}
    assert dimension.judge(late) is True
    # accumulation: plain beating gating must fail
    acc = {m: s(0.8) for m in accumulation.METHODS}
    acc[accumulation.PLAIN] = s(0.85)
    assert accumulation.judge(acc) is False
    # clipping: GD at the clipping lr not diverging must fail
    clip = {
        "GD (tuned)": s(0.2),
        "hard clip (tuned)": s(-0.7),
        "soft clip (tuned)": s(-0.6),
        "GD at clip lr": s(1.0),
    }
    assert clipping.judge(clip) is False
    clip["GD at clip lr"] = s(clipping.DIVERGED)
    assert clipping.judge(clip) is True
    # zeroth order: a weak cosine must fail
    zo = {"REINFORCE": s(0.95), "ZO (accuracy)": s(0.94), "initial model": s(0.1),
          zeroth_order.COS_INIT: s(0.3), zeroth_order.COS_WARM: s(0.9), "CE (gradient)": s(0.96)}
    assert zeroth_order.judge(zo) is False
    # mitchell: an error bound off by more than 1e-3 must fail
    mi = {m: s(1 / 9) for m in mitchell.METHODS}
    mi[mitchell.DIV] = s(1 / 8)
    assert mitchell.judge(mi) is True
    mi[mitchell.MUL] = s(0.1)
    assert mitchell.judge(mi) is False


def test_peoples_daily_loader() -> None:
    sents = corpora.load_peoples_daily_sentences()
    tokens = corpora.load_peoples_daily_tokens()
    assert len(tokens) == sum(len(x) for x in sents) > 500_000
    assert all("/" not in w for w in tokens[:1000])
    assert "，" not in set(tokens[:5000])  # punctuation (tag w) dropped


def test_kjv_loader() -> None:
    if not corpora.kjv_available():
        with pytest.raises(corpora.CorpusUnavailable, match="bible-kjv"):
            corpora.load_kjv_tokens()
        pytest.skip("Debian package bible-kjv not installed (make data installs it)")
    sents = corpora.load_kjv_sentences()
    assert len(sents) == 31102
    assert sents[0][:4] == ["in", "the", "beginning", "god"]
    assert sents[-1][-1] == "amen"
    assert len(corpora.load_kjv_tokens()) > 700_000


def test_kjv_missing_binary_message(monkeypatch: pytest.MonkeyPatch) -> None:
    corpora._kjv_sentences.cache_clear()
    monkeypatch.setattr(corpora, "_bible_binary", lambda: None)
    try:
        with pytest.raises(corpora.CorpusUnavailable, match="apt-get install bible-kjv"):
            corpora.load_kjv_sentences()
        assert corpora.kjv_available() is False
    finally:
        corpora._kjv_sentences.cache_clear()
