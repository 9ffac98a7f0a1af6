"""trainwell.nn: model parts — attention masks, FAVOR+, T-TA, Hugging Face attention swap (Theseus, PET too)."""

# Imports and __all__ are grouped in one block per family (so parallel additions stay separate), not sorted.
# ruff: noqa: I001, RUF022

from trainwell.nn.masks import (
    causal_mask,
    masked_attention,
    masked_softmax,
    padding_mask,
    to_hf_mask,
    tta_mask,
    unilm_mask,
)

# --- attention parts (FAVOR+, T-TA, HF attention swap) ---
from trainwell.nn.hf_attention import favor_modules, replace_attention, restore_attention
from trainwell.nn.performer import FavorAttention, favor_attention, favor_features, random_projection
from trainwell.nn.tta import TTAEncoder, TTALayer, TTAOutput, tta_from_bert

# --- end attention parts ---

__all__ = [
    "causal_mask",
    "masked_attention",
    "masked_softmax",
    "padding_mask",
    "to_hf_mask",
    "tta_mask",
    "unilm_mask",
    # --- attention parts ---
    "FavorAttention",
    "TTAEncoder",
    "TTALayer",
    "TTAOutput",
    "favor_attention",
    "favor_features",
    "favor_modules",
    "random_projection",
    "replace_attention",
    "restore_attention",
    "tta_from_bert",
    # --- end attention parts ---
]
