"""Class-imbalance losses: logit adjustment, focal loss, hard/softened truncation, reweighting, Dice/F1-CE.

Sources: kexue.fm/archives/7615 (logit adjustment, mutual-information view; paper arXiv:2007.07314),
kexue.fm/archives/7708 (reweighting vs modified losses; smooth F1 → F1-weighted CE),
kexue.fm/archives/4733 (hard truncation → its softening → focal loss; paper arXiv:1708.02002),
Cui et al., "Class-Balanced Loss Based on Effective Number of Samples", arXiv:1901.05555.

The common thread of post 7708: each of these is a reweighting of the samples or classes — applied
outside the log (class weights, focal, F1-CE) or inside it, on the logits (logit adjustment).

The implementations live one idea per file: :mod:`~trainwell.losses.logit_adjustment`,
:mod:`~trainwell.losses.focal` (focal loss and truncation), :mod:`~trainwell.losses.class_balanced` and
:mod:`~trainwell.losses.dice`; this module re-exports them so ``trainwell.losses.imbalance`` keeps working.
"""

from __future__ import annotations

from trainwell.losses.class_balanced import (
    ClassBalancedCrossEntropy,
    class_balanced_cross_entropy,
    class_balanced_weights,
)
from trainwell.losses.dice import DiceLoss, F1WeightedCrossEntropy, dice_loss, f1_weighted_cross_entropy
from trainwell.losses.focal import (
    BinaryFocalLoss,
    FocalLoss,
    HardTruncatedLoss,
    SoftenedTruncatedLoss,
    binary_focal_loss,
    focal_loss,
    hard_truncated_loss,
    softened_truncated_loss,
)
from trainwell.losses.logit_adjustment import (
    LogitAdjustedCrossEntropy,
    log_prior_from_counts,
    logit_adjusted_cross_entropy,
    posthoc_logit_adjust,
)

__all__ = [
    "BinaryFocalLoss",
    "ClassBalancedCrossEntropy",
    "DiceLoss",
    "F1WeightedCrossEntropy",
    "FocalLoss",
    "HardTruncatedLoss",
    "LogitAdjustedCrossEntropy",
    "SoftenedTruncatedLoss",
    "binary_focal_loss",
    "class_balanced_cross_entropy",
    "class_balanced_weights",
    "dice_loss",
    "f1_weighted_cross_entropy",
    "focal_loss",
    "hard_truncated_loss",
    "log_prior_from_counts",
    "logit_adjusted_cross_entropy",
    "posthoc_logit_adjust",
    "softened_truncated_loss",
]
