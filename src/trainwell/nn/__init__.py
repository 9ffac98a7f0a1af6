"""trainwell.nn: model parts — attention masks, FAVOR+, T-TA, the Hugging Face attention swap,
BERT-of-Theseus compression and PET prompts."""

from trainwell.nn.hf_attention import favor_modules, replace_attention, restore_attention
from trainwell.nn.masks import (
    causal_mask,
    masked_attention,
    masked_softmax,
    padding_mask,
    to_hf_mask,
    tta_mask,
    unilm_mask,
)
from trainwell.nn.performer import FavorAttention, favor_attention, favor_features, random_projection
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
from trainwell.nn.tta import TTAEncoder, TTALayer, TTAOutput, tta_from_bert

__all__ = [
    "ConstantReplacement",
    "FavorAttention",
    "LinearReplacement",
    "PETClassifier",
    "PETCollator",
    "Pattern",
    "ReplacementScheduler",
    "TTAEncoder",
    "TTALayer",
    "TTAOutput",
    "TheseusModuleList",
    "TheseusSwitch",
    "Verbalizer",
    "causal_mask",
    "compress",
    "export_successor",
    "favor_attention",
    "favor_features",
    "favor_modules",
    "masked_attention",
    "masked_softmax",
    "mlm_loss",
    "padding_mask",
    "pet_log_scores",
    "random_projection",
    "replace_attention",
    "restore_attention",
    "to_hf_mask",
    "tta_from_bert",
    "tta_mask",
    "unilm_mask",
]
