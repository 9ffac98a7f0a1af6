"""Yeast multi-label: ZLPR ("softmax + CE" for multi-label) at threshold 0 vs sigmoid + BCE.

Claim checked (kexue.fm/archives/7359; Su et al., "ZLPR", arXiv:2208.02955): the multi-label
categorical cross-entropy needs no decision-threshold tuning — predicting every class with score > 0
is on par with sigmoid + binary cross-entropy whose threshold was tuned on a validation split.

Protocol: Yeast (2417 genes × 103 features, 14 labels; ``river.datasets.Yeast``), split 60/20/20 into
train/val/test by seed, features standardised on train. One MLP (103 → 256 → 256 → 14, ReLU, dropout
0.2), Adam (lr 1e-3, weight decay 1e-4), batch 64, up to 20 epochs (40 in full mode) keeping the
weights of the epoch with the lowest validation loss (each model's own loss: threshold-free early
stopping, same rule for both); the same initial weights and batch order for both losses within a seed.
Methods:

* ``ZLPR (t=0)`` — ``multilabel_categorical_crossentropy``, predict ``s > 0``; nothing tuned.
* ``BCE (t=0.5)`` — ``BCEWithLogits``, predict ``σ(s) > 0.5``.
* ``BCE (tuned t)`` — the same BCE model with ONE global threshold chosen on the validation split to
  maximise micro-F1 (grid 0.05, 0.06, …, 0.95).
* ``BCE (per-class t)`` — the same BCE model with one threshold per class chosen on the validation
  split to maximise that class's F1 (same grid).
* ``ZLPR (tuned t, ref.)`` — reference only (not used by the judge): the ZLPR model with one global
  threshold on ``σ(2s)`` tuned like ``BCE (tuned t)``; it tells the loss apart from its fixed threshold.

Primary metric: test micro-F1; secondary: test macro-F1 (per-class F1 averaged; a class with no true
and no predicted positives counts as F1 = 0, as scikit-learn's default). "On par" is decided in
:func:`judge`: ZLPR's mean micro-F1 is at least the better tuned BCE mean minus a tolerance equal to
the larger of 0.01 (one point) and the pooled std of the two methods.

Measured (quick mode, 5 seeds): ZLPR (t=0) 0.6545 ± 0.0055, BCE (t=0.5) 0.6475 ± 0.0042, BCE (tuned t)
0.6714 ± 0.0066, BCE (per-class t) 0.6158 ± 0.0204, ZLPR (tuned t, ref.) 0.6706 ± 0.0041 — the claim does
not hold here: untuned ZLPR beats untuned BCE, but a tuned global threshold is worth ~1.7 points to
either loss (validation-loss early stopping picks epoch 4–8; a fixed 15-epoch run gave the same gap).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainwell.lab.base import Experiment, MethodStats, RunContext, SeedResult
from trainwell.lab.datasets.yeast import MultiLabelSplit, load_yeast
from trainwell.losses import multilabel_categorical_crossentropy

__all__ = ["EXPERIMENT", "f1_scores", "judge", "tune_global_threshold", "tune_per_class_thresholds"]

METHODS = ["ZLPR (t=0)", "BCE (t=0.5)", "BCE (tuned t)", "BCE (per-class t)", "ZLPR (tuned t, ref.)"]
GRID = torch.linspace(0.05, 0.95, 91)
SETTINGS: dict[str, dict[str, Any]] = {
    "tiny": {"epochs": 3, "hidden": 64, "batch": 64, "lr": 1e-3, "early_stop": True},
    "quick": {"epochs": 20, "hidden": 256, "batch": 64, "lr": 1e-3, "early_stop": True},
    "full": {"epochs": 40, "hidden": 256, "batch": 64, "lr": 1e-3, "early_stop": True},
}


def f1_scores(pred: Tensor, target: Tensor) -> tuple[float, float]:
    """Micro-F1 and macro-F1 of 0/1 predictions ``[n, L]`` against 0/1 targets ``[n, L]``."""
    p, t = pred.bool(), target.bool()
    tp = (p & t).sum(0).double()
    fp = (p & ~t).sum(0).double()
    fn = (~p & t).sum(0).double()
    denom_micro = 2 * tp.sum() + fp.sum() + fn.sum()
    micro = float(2 * tp.sum() / denom_micro) if denom_micro > 0 else 0.0
    denom = 2 * tp + fp + fn
    per_class = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))
    return micro, float(per_class.mean())


def tune_global_threshold(prob: Tensor, target: Tensor, grid: Tensor = GRID) -> float:
    """The grid threshold on probabilities that maximises micro-F1 (smallest one on ties)."""
    scores = [f1_scores(prob > t, target)[0] for t in grid.tolist()]
    return float(grid[max(range(len(scores)), key=lambda i: (scores[i], -i))])


def tune_per_class_thresholds(prob: Tensor, target: Tensor, grid: Tensor = GRID) -> Tensor:
    """One grid threshold per class maximising that class's F1 on (prob, target)."""
    t = target.bool()
    pred = prob.unsqueeze(0) > grid.view(-1, 1, 1)  # [G, n, L]
    tp = (pred & t).sum(1).double()
    fp = (pred & ~t).sum(1).double()
    fn = (~pred & t).sum(1).double()
    denom = 2 * tp + fp + fn
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))  # [G, L]
    return grid[f1.argmax(0)]  # argmax returns the first (smallest) threshold on ties


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(d_in, hidden),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(hidden, d_out),
    )


@torch.no_grad()
def _scores(model: nn.Module, x: Tensor) -> Tensor:
    model.eval()
    out = model(x)
    model.train()
    return out


def _train(ctx: RunContext, data: MultiLabelSplit, loss_name: str) -> tuple[nn.Module, list[float], int]:
    """Train one MLP; returns the best-validation-loss model, test micro-F1 per epoch, the chosen epoch."""
    cfg = SETTINGS[ctx.mode]
    epochs, batch = int(cfg["epochs"]), int(cfg["batch"])
    torch.manual_seed(ctx.seed)  # same init for both losses
    model = _mlp(data.num_features, int(cfg["hidden"]), data.num_labels)
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]), weight_decay=1e-4)
    gen = torch.Generator().manual_seed(ctx.seed)  # same batch order for both losses
    n = data.x_train.shape[0]

    def loss_fn(s: Tensor, y: Tensor) -> Tensor:
        if loss_name == "zlpr":
            return multilabel_categorical_crossentropy(s, y)
        return F.binary_cross_entropy_with_logits(s, y)

    curve: list[float] = []
    best_val, best_state, best_epoch = math.inf, copy.deepcopy(model.state_dict()), 0
    for epoch in ctx.iterate(range(epochs), desc=f"multilabel seed {ctx.seed} {loss_name}"):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            loss = loss_fn(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        # Both natural thresholds are "score > 0" on the logits (σ(s) > 0.5 ⇔ s > 0).
        curve.append(f1_scores(_scores(model, data.x_test) > 0, data.y_test)[0])
        # Early stopping on the model's own validation loss: threshold-free, the same rule for both losses.
        val = float(loss_fn(_scores(model, data.x_val), data.y_val))
        if val < best_val or not cfg["early_stop"]:
            best_val, best_state, best_epoch = val, copy.deepcopy(model.state_dict()), epoch + 1
    model.load_state_dict(best_state)
    return model, curve, best_epoch


def run_seed(ctx: RunContext) -> SeedResult:
    data = load_yeast(ctx.seed)
    micro: dict[str, float] = {}
    macro: dict[str, float] = {}

    def record(name: str, pred: Tensor) -> None:
        micro[name], macro[name] = f1_scores(pred, data.y_test)

    zlpr, zlpr_curve, zlpr_epoch = _train(ctx, data, "zlpr")
    record("ZLPR (t=0)", _scores(zlpr, data.x_test) > 0)

    bce, bce_curve, bce_epoch = _train(ctx, data, "bce")
    prob_test = torch.sigmoid(_scores(bce, data.x_test))
    prob_val = torch.sigmoid(_scores(bce, data.x_val))
    record("BCE (t=0.5)", prob_test > 0.5)
    t_global = tune_global_threshold(prob_val, data.y_val)
    record("BCE (tuned t)", prob_test > t_global)
    t_class = tune_per_class_thresholds(prob_val, data.y_val)
    record("BCE (per-class t)", prob_test > t_class)

    # Reference, not part of the claim: the ZLPR model with a validation-tuned global threshold, which
    # separates "is the loss as good?" from "is the fixed threshold 0 as good as a tuned one?".
    # σ(2s) is ZLPR's calibrated probability (kexue.fm/archives/9064), so the same grid applies.
    t_zlpr = tune_global_threshold(torch.sigmoid(2 * _scores(zlpr, data.x_val)), data.y_val)
    record("ZLPR (tuned t, ref.)", torch.sigmoid(2 * _scores(zlpr, data.x_test)) > t_zlpr)
    return SeedResult(
        values={m: micro[m] for m in METHODS},
        secondary={"macro-F1": macro},
        curves={
            "ZLPR (t=0)/test micro-F1 per epoch": zlpr_curve,
            "BCE (t=0.5)/test micro-F1 per epoch": bce_curve,
        },
        info={
            "split": [int(data.y_train.shape[0]), int(data.y_val.shape[0]), int(data.y_test.shape[0])],
            "bce_global_threshold": t_global,
            "bce_per_class_thresholds": [round(float(t), 2) for t in t_class],
            "zlpr_tuned_threshold_sigma2s": t_zlpr,
            "zlpr_tuned_threshold_score": 0.5 * math.log(t_zlpr / (1 - t_zlpr)),
            "early_stop_epoch": {"zlpr": zlpr_epoch, "bce": bce_epoch},
            "settings": dict(SETTINGS[ctx.mode]),
        },
    )


def judge(stats: dict[str, MethodStats]) -> bool:
    """ZLPR at t=0 is "on par" with tuned BCE: mean micro-F1 ≥ best tuned BCE mean − max(0.01, pooled std)."""
    z = stats["ZLPR (t=0)"]
    best = max((stats[m] for m in ("BCE (tuned t)", "BCE (per-class t)") if m in stats), key=lambda s: s.mean)
    pooled = math.sqrt((z.std ** 2 + best.std ** 2) / 2)
    return z.mean >= best.mean - max(0.01, pooled)


EXPERIMENT = Experiment(
    name="multilabel",
    title="ZLPR vs sigmoid+BCE with tuned thresholds on Yeast (14 labels)",
    metric="test micro-F1",
    claim="ZLPR at its fixed threshold 0 is on par with sigmoid+BCE whose threshold is tuned on a validation "
    "split: its mean test micro-F1 is at least the better tuned BCE (global or per-class threshold) mean "
    "minus max(0.01, pooled std over seeds).",
    methods=METHODS,
    run_seed=run_seed,
    judge=judge,
    source="kexue.fm/archives/7359; Su et al. arXiv:2208.02955",
    reported="Post 7359: 'comparable to binary BCE with carefully tuned class weights' on several "
             "multi-label tasks, no threshold to tune (no numbers given).",
    seeds={"tiny": 1, "quick": 5, "full": 10},
    version="3",
    threads=1,  # small models: one thread is nearly as fast and never stalls a busy machine
    full_runtime="about 1 min single-threaded (10 seeds, about 4 s CPU each; quick mode measured 2.2-3.8 s "
                 "per seed)",
)
