"""Optimizers and optimisation tools from kexue.fm: clipping, built-in accumulation, EG, ZO, PG, init.

``trainwell.optim.init`` (non-square initialisation) is a submodule: ``from trainwell.optim import init``.
"""

from __future__ import annotations

from trainwell.optim import init
from trainwell.optim.accumulate import (
    AccumAdamW,
    AccumSGDM,
    UpdateStepScheduler,
    accum_adamw,
    accum_sgdm,
    enable_update_in_backward,
)
from trainwell.optim.clip import Clipped, clip_coefficient, clip_grad_norm_
from trainwell.optim.exponentiated import ExponentiatedGradient
from trainwell.optim.policy_gradient import optimal_baseline, reinforce_loss, sample_with_log_probs
from trainwell.optim.step_size import StepSizeAdaptation
from trainwell.optim.zeroth_order import (
    MGSResult,
    ZerothOrder,
    mgs_log_weights,
    mgs_step,
    sampling_view_step,
    zo_grad,
)

__all__ = [
    "AccumAdamW",
    "AccumSGDM",
    "Clipped",
    "ExponentiatedGradient",
    "MGSResult",
    "StepSizeAdaptation",
    "UpdateStepScheduler",
    "ZerothOrder",
    "accum_adamw",
    "accum_sgdm",
    "clip_coefficient",
    "clip_grad_norm_",
    "enable_update_in_backward",
    "init",
    "mgs_log_weights",
    "mgs_step",
    "optimal_baseline",
    "reinforce_loss",
    "sample_with_log_probs",
    "sampling_view_step",
    "zo_grad",
]
