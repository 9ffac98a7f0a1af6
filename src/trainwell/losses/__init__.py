"""Loss functions from kexue.fm: ZLPR multi-label CE, logit adjustment and the imbalance family,
AM-Softmax, Taylor softmax, R-Drop consistency, flooding, and InfoNCE with exact large-batch gradient
accumulation (``ContrastiveGradCache``).

Every loss has a functional form ``name(input, target, ..., reduction="mean")`` and an ``nn.Module``
twin (a :class:`Loss`: ``reduction`` checked once, a uniform ``repr``); inputs may carry any leading dims
``[..., C]``; computation is float32 under autocast (float64 stays float64). Empty batches: ``'none'``
gives an empty tensor, ``'mean'`` and ``'sum'`` give 0 with a zero gradient (never NaN); NaN inputs are
not screened (that would cost a device sync per call) and propagate to a NaN loss.
"""

from __future__ import annotations

from trainwell.losses._base import Loss
from trainwell.losses.class_balanced import (
    ClassBalancedCrossEntropy,
    class_balanced_cross_entropy,
    class_balanced_weights,
)
from trainwell.losses.consistency import (
    RDROP_CONVENTIONS,
    RDropLoss,
    convert_rdrop_alpha,
    rdrop_forward,
    rdrop_loss,
    rdrop_loss_scale,
    symmetric_kl,
)
from trainwell.losses.contrastive import ContrastiveGradCache, InfoNCELoss, info_nce_loss
from trainwell.losses.dice import DiceLoss, F1WeightedCrossEntropy, dice_loss, f1_weighted_cross_entropy
from trainwell.losses.flooding import Flooding, flooding
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
from trainwell.losses.margin import AMSoftmax, am_softmax_loss, am_softmax_psi, retrieval_topk_accuracy
from trainwell.losses.multilabel import (
    MultilabelCategoricalCrossEntropy,
    MultilabelRankLoss,
    SparseMultilabelCategoricalCrossEntropy,
    multilabel_categorical_crossentropy,
    multilabel_rank_loss,
    sparse_multilabel_categorical_crossentropy,
    zlpr_probabilities,
)
from trainwell.losses.taylor import TaylorCrossEntropy, TaylorSoftmax, taylor_cross_entropy, taylor_softmax

__all__ = [
    "RDROP_CONVENTIONS",
    "AMSoftmax",
    "BinaryFocalLoss",
    "ClassBalancedCrossEntropy",
    "ContrastiveGradCache",
    "DiceLoss",
    "F1WeightedCrossEntropy",
    "Flooding",
    "FocalLoss",
    "HardTruncatedLoss",
    "InfoNCELoss",
    "LogitAdjustedCrossEntropy",
    "Loss",
    "MultilabelCategoricalCrossEntropy",
    "MultilabelRankLoss",
    "RDropLoss",
    "SoftenedTruncatedLoss",
    "SparseMultilabelCategoricalCrossEntropy",
    "TaylorCrossEntropy",
    "TaylorSoftmax",
    "am_softmax_loss",
    "am_softmax_psi",
    "binary_focal_loss",
    "class_balanced_cross_entropy",
    "class_balanced_weights",
    "convert_rdrop_alpha",
    "dice_loss",
    "f1_weighted_cross_entropy",
    "flooding",
    "focal_loss",
    "hard_truncated_loss",
    "info_nce_loss",
    "log_prior_from_counts",
    "logit_adjusted_cross_entropy",
    "multilabel_categorical_crossentropy",
    "multilabel_rank_loss",
    "posthoc_logit_adjust",
    "rdrop_forward",
    "rdrop_loss",
    "rdrop_loss_scale",
    "retrieval_topk_accuracy",
    "softened_truncated_loss",
    "sparse_multilabel_categorical_crossentropy",
    "symmetric_kl",
    "taylor_cross_entropy",
    "taylor_softmax",
    "zlpr_probabilities",
]
