"""trainwell.nn: model parts — attention masks, BERT-of-Theseus compression, PET prompts."""

from trainwell.nn.masks import (
    causal_mask,
    masked_attention,
    masked_softmax,
    padding_mask,
    to_hf_mask,
    tta_mask,
    unilm_mask,
)
from trainwell.nn.pet import Pattern, PETClassifier, PETCollator, Verbalizer, mlm_loss, pet_log_scores
from trainwell.nn.theseus import (
    ConstantReplacement,
    LinearReplacement,
    ReplacementScheduler,
    TheseusModuleList,
    TheseusSwitch,
    compress,
    export_successor,
)

__all__ = [
    "ConstantReplacement",
    "LinearReplacement",
    "PETClassifier",
    "PETCollator",
    "Pattern",
    "ReplacementScheduler",
    "TheseusModuleList",
    "TheseusSwitch",
    "Verbalizer",
    "causal_mask",
    "compress",
    "export_successor",
    "masked_attention",
    "masked_softmax",
    "mlm_loss",
    "padding_mask",
    "pet_log_scores",
    "to_hf_mask",
    "tta_mask",
    "unilm_mask",
]
