"""Semi-supervised Chinese sentiment, 1% labels: virtual adversarial training (and R-Drop) vs labeled-only.

Claim checked (kexue.fm/archives/7466, repeated in 8496; BERT, Chinese sentiment, 1% of ~20k training
reviews labeled, the rest unlabeled, mean of 3 runs): adding the VAT loss on unlabeled batches beats
training on the labeled reviews alone — dev / test 88.93 / 89.34 → 89.83 / 90.37 (R-Drop's label-free
KL term: 90.37 / 90.14). ``claim_holds`` is True when the mean test accuracy of ``VAT`` is above that
of ``labeled only``; ``effects.md`` gives Δ, its paired standard error and whether it is within noise.

Data: the fixed split of :mod:`trainwell.lab.datasets.sentiment`. The first 1% of the training
reviews (in the loader's fixed, class-interleaved order: 122 reviews in full and quick mode) keep
their labels; the other training reviews are used without labels (quick mode: the next 3,000).
Selection: dev accuracy every ``eval_every`` steps; the test accuracy at the best dev point is
reported, for every method alike (a 1,736-review labeled dev set is generous for a 122-label
problem, as in the post, which also reports the best dev epoch).

Model: the character CNN of :mod:`trainwell.lab.experiments.regularize`, trained from scratch with
Adam (single-threaded). Every step draws a labeled batch (cross-entropy). Methods, identical otherwise
(same initial weights and the same labeled / unlabeled batches within a seed):

* ``labeled only`` — nothing else.
* ``VAT`` — plus one :class:`~trainwell.regularizers.VAT` step on an unlabeled batch (perturbation of
  the embedding output, per-sample norm ε = 0.1, one power iteration, finite-difference step ξ = 0.1,
  weight α = 1); its gradient is added to the supervised one before the optimizer step. ε was chosen
  on *dev* accuracy from {0.1, 0.3, 1, 3} with the quick setting on seeds 1–3 (the runner's seeds
  are 1234…, so the reported cells are not the ones ε was chosen on): mean best dev accuracy 65.0,
  65.0, 64.4, 62.7 (labeled only 64.0); ε = 1 was the earlier a-priori value.
* ``VAT ε=0.01 (control)`` — the same VAT step with ε = 0.01, where the virtual-adversarial loss is
  ≈ 0 (the helper replays the clean pass's dropout masks, so only the tiny perturbation differs).
  It changes nothing but the random stream the labeled steps see (VAT draws a random direction and
  runs extra passes), so its Δ against ``labeled only`` is the noise floor of this comparison: on
  the probe seeds it gained +0.6 dev points by itself, about two thirds of VAT's +1.0. Read VAT's
  effect against this control, not only against ``labeled only``.
* ``R-Drop`` — plus the label-free R-Drop term on an unlabeled batch: two dropout passes (p = 0.3)
  and ``α·½[KL(P¹‖P²) + KL(P²‖P¹)]``, α = 1 (:func:`~trainwell.losses.symmetric_kl`; Su's
  semi-supervised use of R-Drop, post 8496).

Modes: tiny 20 steps on 300 unlabeled reviews (seconds). Quick 240 steps, 48 characters, 3,000 unlabeled
reviews, 32-d embeddings / 64 filters (≈ 60 s of CPU for 4 methods × 3 seeds; the labeled-only dev
accuracy peaks at step 120–160, and probes with 360–480 steps, an unlabeled batch of 32 or a 16-d /
32-filter model did not raise VAT's dev accuracy). Full mode (``--full``) fine-tunes the packaged MiniLM
on the English Pang & Lee sentences instead: 300 labels, the other 2,500 training sentences unlabeled,
methods labeled only / VAT / FGM (labels only), 3 seeds (:mod:`trainwell.lab.experiments._finetune`).
The earlier char-CNN full setting (notes below) used 1,500 steps, 100 characters, all 12,033 unlabeled
reviews, 64-d / 128 filters. With 122 labels a char-CNN from scratch reaches only ≈
64–66% test accuracy (the post's BERT starts from pretraining and reaches 89%), and the test accuracy at
the best dev point moves by ±1–2 points between seeds: expect differences of that size to be within
noise. Quick run, seeds 1234–1236 (test, paired Δ vs labeled only ± SE): labeled only 64.64 ± 2.24, VAT
+0.16 ± 0.51, control +0.02 ± 0.69, R-Drop −0.85 ± 0.58 — all within noise: the judge's "VAT mean >
labeled-only mean" can come out either way here. A one-seed probe of the full setting (128 characters)
gave labeled only 67.7% test, VAT 66.0% with the earlier ε = 1: VAT's dev accuracy peaked at 65.6% (step
300), then fell and stayed at ≈ 62.8% to the end, so from-scratch VAT did not help there; full mode with
ε = 0.1 has not been run.

The post alternates two optimizers (supervised step, then an unlabeled step at half the learning
rate); here both gradients go into one Adam step, which is the usual PyTorch form of "labeled CE +
VAT loss". ξ = 0.1 instead of the paper's 1e-6: with a per-sample unit direction spread over
``max_len × d`` entries, 1e-6 falls below float32 resolution of the embedding values (the text
version of VAT, Miyato et al. arXiv 1605.07725, uses a finite-difference constant of 0.1 as well).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainwell.lab.base import Experiment, MethodStats, RunContext, SeedResult
from trainwell.lab.experiments.regularize import (
    TextCNN,
    accuracy,
    effect_sizes,
    load_text_data,
    single_thread,
)
from trainwell.lab.io import atomic_write_text

__all__ = ["EXPERIMENT", "HPARAMS", "METHODS"]

CONTROL = "VAT ε=0.01 (control)"
METHODS = ["labeled only", "VAT", CONTROL, "R-Drop"]
REFERENCE = "labeled only"

#: Fixed hyperparameters (a priori; not tuned on test).
HPARAMS: dict[str, Any] = {
    "labeled_fraction": 0.01,
    "vat_epsilon": 0.1,  # chosen on dev (probe seeds 1–3) from {0.1, 0.3, 1, 3}
    "control_epsilon": 0.01,
    "vat_xi": 0.1,
    "vat_power_iterations": 1,
    "vat_alpha": 1.0,
    "rdrop_alpha": 1.0,
}


@dataclass(frozen=True)
class _Config:
    n_unlabeled: int | None
    max_len: int
    emb_dim: int
    channels: int
    steps: int
    eval_every: int
    labeled_batch: int
    unlabeled_batch: int
    lr: float


def _config(ctx: RunContext) -> _Config:
    return ctx.pick(
        tiny=_Config(n_unlabeled=300, max_len=32, emb_dim=16, channels=16, steps=20, eval_every=10,
                     labeled_batch=16, unlabeled_batch=32, lr=5e-3),
        quick=_Config(n_unlabeled=3000, max_len=48, emb_dim=32, channels=64, steps=240, eval_every=40,
                      labeled_batch=32, unlabeled_batch=64, lr=3e-3),
        full=_Config(n_unlabeled=None, max_len=100, emb_dim=64, channels=128, steps=1500, eval_every=100,
                     labeled_batch=32, unlabeled_batch=64, lr=1e-3),
    )


def _train(method: str, x_lab: Tensor, y_lab: Tensor, x_unl: Tensor, data: Any, cfg: _Config, seed: int,
           ctx: RunContext) -> dict[str, Any]:
    from trainwell.techniques import get_technique

    hp = HPARAMS
    torch.manual_seed(seed)
    model = TextCNN(data.vocab_size, emb_dim=cfg.emb_dim, channels=cfg.channels)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def ce(m: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        return F.cross_entropy(m(batch[0]), batch[1])

    # every method is the registry's plain step on the labelled batch, plus (except the reference) one
    # registry technique on the unlabelled batch (target None: its consistency term alone)
    supervised = get_technique("baseline").build(model, ce, opt)
    eps = hp["control_epsilon"] if method == CONTROL else hp["vat_epsilon"]
    vat = f"vat:epsilon={eps}:xi={hp['vat_xi']}:power_iterations={hp['vat_power_iterations']}" \
          f":alpha={hp['vat_alpha']}"
    spec = {
        REFERENCE: None,
        "VAT": vat,
        CONTROL: vat,
        # one forward on [x; x]: dropout draws independent masks for the two copies
        "R-Drop": f"rdrop:alpha={hp['rdrop_alpha']}:concat=true",
    }[method]
    unlabeled = None if spec is None else get_technique(spec).build(model, ce, opt)
    order = torch.Generator().manual_seed(seed)  # same labeled / unlabeled batches for every method
    torch.manual_seed(seed + 1)
    n_lab, n_unl = len(x_lab), len(x_unl)
    lab_perm, unl_perm = torch.randperm(n_lab, generator=order), torch.randperm(n_unl, generator=order)
    li = ui = 0
    best_dev, best_test, best_step = -1.0, 0.0, 0
    dev_curve: list[float] = []
    unl_curve: list[float] = []
    seconds = 0.0
    model.train()
    t0 = time.perf_counter()
    for step in ctx.iterate(range(1, cfg.steps + 1), desc=f"{method} s{seed}", total=cfg.steps):
        if li + cfg.labeled_batch > n_lab:
            lab_perm, li = torch.randperm(n_lab, generator=order), 0
        if ui + cfg.unlabeled_batch > n_unl:
            unl_perm, ui = torch.randperm(n_unl, generator=order), 0
        lidx = lab_perm[li : li + cfg.labeled_batch]
        uidx = unl_perm[ui : ui + cfg.unlabeled_batch]
        li += cfg.labeled_batch
        ui += cfg.unlabeled_batch
        opt.zero_grad(set_to_none=True)
        supervised((x_lab[lidx], y_lab[lidx]))
        if unlabeled is not None:
            unl_curve.append(float(unlabeled((x_unl[uidx], None))))
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            seconds += time.perf_counter() - t0
            dev = accuracy(model, data.x_dev, data.y_dev)
            dev_curve.append(dev)
            if dev > best_dev:
                best_dev, best_step = dev, step
                best_test = accuracy(model, data.x_test, data.y_test)
            t0 = time.perf_counter()
    return {"test": best_test, "dev": best_dev, "best_step": best_step, "seconds": seconds,
            "dev_curve": dev_curve, "unl_curve": unl_curve}


def run_seed(ctx: RunContext) -> SeedResult:
    if ctx.full:  # MiniLM on Pang & Lee, 300 labels + unlabeled sentences (see _finetune)
        from trainwell.lab.experiments._finetune import vat_full_seed

        return vat_full_seed(ctx)
    with single_thread():
        return _run_seed(ctx)


def _run_seed(ctx: RunContext) -> SeedResult:
    cfg = _config(ctx)
    # The unlabeled pool is the training split after the labeled prefix; the vocabulary may use the
    # unlabeled text too (no labels involved).
    full = load_text_data(None, cfg.max_len)
    n_lab = max(2, round(HPARAMS["labeled_fraction"] * len(full.x_train)))
    x_lab, y_lab = full.x_train[:n_lab], full.y_train[:n_lab]
    x_unl = full.x_train[n_lab:] if cfg.n_unlabeled is None else full.x_train[n_lab : n_lab + cfg.n_unlabeled]
    values: dict[str, float] = {}
    dev: dict[str, float] = {}
    secs: dict[str, float] = {}
    curves: dict[str, list[float]] = {}
    best: dict[str, int] = {}
    for method in METHODS:
        r = _train(method, x_lab, y_lab, x_unl, full, cfg, ctx.seed, ctx)
        values[method], dev[method], secs[method] = r["test"], r["dev"], round(r["seconds"], 3)
        curves[f"{method}/dev accuracy"] = r["dev_curve"]
        if r["unl_curve"]:
            curves[f"{method}/unlabeled loss"] = r["unl_curve"]
        best[method] = r["best_step"]
    info = {
        "sizes": {
            "labeled": n_lab,
            "unlabeled": len(x_unl),
            "dev": len(full.x_dev),
            "test": len(full.x_test),
        },
        "labeled_positive": int(y_lab.sum()),
        "config": cfg.__dict__,
        "hparams": HPARAMS,
        "best_step": best,
        "delta_vs_labeled_only": {m: round(values[m] - values[REFERENCE], 5) for m in METHODS},
        "selection": "test accuracy at the evaluation step with the best dev accuracy",
    }
    return SeedResult(values=values, secondary={"dev_acc": dev, "train_s": secs}, curves=curves, info=info)


def judge(stats: dict[str, MethodStats]) -> bool:
    """VAT beats labeled-only: the 95% CI of the paired per-seed test-accuracy difference is above 0."""
    if "VAT" not in stats or REFERENCE not in stats:
        return False
    return stats["VAT"].clearly_above(stats[REFERENCE])


def _plot(res: dict[str, Any], cells: list[SeedResult], out_dir: Path) -> list[Path]:
    stats = {m: MethodStats(list(r["values"])) for m, r in res["results"].items()}
    effects = effect_sizes(stats, reference=REFERENCE)
    res["effects"] = effects
    lines = [
        f"# Effect sizes vs labeled only (`{res['experiment']}`, {res['mode']} mode, {res['seeds']} seeds)",
        "",
        "| method | Δ test acc (points) | paired SE | pooled std | within noise (|Δ| < 2 SE) |",
        "|---|---|---|---|---|",
    ]
    for m, e in effects.items():
        w = "n/a (1 seed)" if e["within_noise"] is None else ("yes" if e["within_noise"] else "no")
        lines.append(f"| {m} | {100 * e['delta']:+.2f} | {100 * e['paired_se']:.2f} | "
                     f"{100 * e['pooled_std']:.2f} | {w} |")
    atomic_write_text(out_dir / "effects.md", "\n".join(lines) + "\n")
    return []


EXPERIMENT = Experiment(
    name="vat",
    title="Semi-supervised sentiment, few labels: VAT on unlabeled text vs labeled only (char-CNN quick, "
          "MiniLM full)",
    metric="test_acc",
    claim="Adding the VAT loss on unlabeled reviews beats training on the 1% labeled reviews alone (post, "
    "BERT: test 89.34 → 90.37); judged as the 95% paired-bootstrap CI of VAT − labeled only (per seed) "
    "above 0.",
    methods=METHODS,
    run_seed=run_seed,
    judge=judge,
    source="kexue.fm/archives/7466; kexue.fm/archives/8496; arXiv 1704.03976, 1605.07725, 2106.14448",
    reported="dev / test: no VAT 88.93 / 89.34, VAT 89.83 / 90.37, R-Drop 90.37 / 90.14 (BERT, 1% labeled)",
    seeds={"tiny": 1, "quick": 3, "full": 3},
    full_runtime="measured 20.9 min on 2 quiet CPU threads (MiniLM, 300 labels + 2,500 unlabeled Pang & Lee "
                 "sentences, 152 steps, 3 methods × 3 seeds)",
    plot=_plot,
    version="4",  # methods built from the technique registry
)
