"""Regularizers from kexue.fm: noise, gradient penalties, FGM/PGD, VAT, WEISSI, gradient normalization.

Two-pass regularizers (FGM, PGD, FastGradientPenalty, ParameterGradientPenalty, VAT) share one
protocol, used from a plain training loop::

    reg = FGM(model.get_input_embeddings(), epsilon=0.5)
    optimizer.zero_grad()
    loss = reg.step(lambda: model(**batch).loss)   # passes + backward; weights restored bit-exactly
    optimizer.step()

``step(closure, *, backward=None, scaler=None) -> Tensor`` is written down once as the
``typing.Protocol`` :class:`MultiPassStep` (``isinstance(obj, MultiPassStep)`` holds for each of them
and for :class:`trainwell.losses.ContrastiveGradCache`). It supports GradScaler, gradient accumulation
(directions come from the current micro-batch only) and DDP (``ddp_model=``: extra passes run under
``no_sync()``).
Flooding and R-Drop are losses: see :mod:`trainwell.losses`.
"""

from __future__ import annotations

from trainwell._step import MultiPassStep
from trainwell.regularizers._common import freeze_bn_stats
from trainwell.regularizers.adversarial import FGM, PGD
from trainwell.regularizers.gradient_penalty import (
    FastGradientPenalty,
    ParameterGradientPenalty,
    capture_embedding_output,
    gradient_penalty,
    parameter_gradient_penalty,
)
from trainwell.regularizers.gradnorm import GradientNormalized, grad_normalize
from trainwell.regularizers.inequality import GradientBound, input_parameter_gradient_bound
from trainwell.regularizers.noise import (
    GaussianNoise,
    jacobian_penalty,
    noise_consistency_loss,
    noisy_loss,
    random_sign_gradient_penalty,
    weight_noise,
)
from trainwell.regularizers.vat import VAT, vat_loss, vat_perturbation
from trainwell.regularizers.weissi import (
    balance_weight_scales,
    l2_penalty,
    weight_scale_shift,
    weissi_penalty,
)

__all__ = [
    "FGM",
    "PGD",
    "VAT",
    "FastGradientPenalty",
    "GaussianNoise",
    "GradientBound",
    "GradientNormalized",
    "MultiPassStep",
    "ParameterGradientPenalty",
    "balance_weight_scales",
    "capture_embedding_output",
    "freeze_bn_stats",
    "grad_normalize",
    "gradient_penalty",
    "input_parameter_gradient_bound",
    "jacobian_penalty",
    "l2_penalty",
    "noise_consistency_loss",
    "noisy_loss",
    "parameter_gradient_penalty",
    "random_sign_gradient_penalty",
    "vat_loss",
    "vat_perturbation",
    "weight_noise",
    "weight_scale_shift",
    "weissi_penalty",
]
