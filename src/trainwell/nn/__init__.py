"""trainwell.nn: model parts — attention masks (more parts land here: FAVOR+, T-TA, Theseus, PET)."""

from trainwell.nn.masks import (
    causal_mask,
    masked_attention,
    masked_softmax,
    padding_mask,
    to_hf_mask,
    tta_mask,
    unilm_mask,
)

__all__ = [
    "causal_mask",
    "masked_attention",
    "masked_softmax",
    "padding_mask",
    "to_hf_mask",
    "tta_mask",
    "unilm_mask",
]
