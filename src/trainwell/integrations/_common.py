"""What the framework adapters share: technique checks, DDP wiring, the step, R-Drop on HF outputs.

Private module. The adapters are thin: a framework decides *how* to backpropagate (``accelerator.backward``,
``LightningModule.manual_backward``), by what factor a micro-batch loss is scaled under gradient
accumulation, and which module is the DDP wrapper; the technique decides *what* to backpropagate through
the multi-pass step protocol ``technique.step(closure, backward=..., scaler=...)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from trainwell._validation import check_choice, check_finite_number, fail
from trainwell.regularizers._common import call_closure

__all__ = [
    "CLIP_MODES",
    "attach_ddp_model",
    "check_adapter_options",
    "check_technique",
    "needs_logits",
    "rdrop_model_loss",
    "run_step",
]

CLIP_MODES = ("hard", "soft")
_MISSING = object()


def check_technique(technique: Any, *, fn: str) -> Any:
    """``None`` or an object following the multi-pass step protocol (a callable ``step`` attribute)."""
    if technique is None:
        return None
    from trainwell.losses import ContrastiveGradCache

    if isinstance(technique, ContrastiveGradCache):
        fail(
            fn,
            "technique",
            "an object whose step(closure, backward=..., scaler=...) takes a closure (FGM, PGD, VAT, "
            "FastGradientPenalty, ParameterGradientPenalty); ContrastiveGradCache.step takes the batch "
            "views: call it from your own loop (see docs/integrations.md)",
            technique,
            exc=TypeError,
        )
    if not callable(getattr(technique, "step", None)):
        fail(
            fn,
            "technique",
            "None or an object with step(closure, *, backward=None, scaler=None) (FGM, PGD, VAT, "
            "FastGradientPenalty, ParameterGradientPenalty)",
            technique,
            exc=TypeError,
        )
    return technique


def check_adapter_options(
    *, fn: str, technique: Any, rdrop_alpha: Any, flood_level: Any, clip_mode: Any
) -> tuple[float | None, float | None, str]:
    """Validate the options every adapter takes; return ``(rdrop_alpha, flood_level, clip_mode)``."""
    alpha = None if rdrop_alpha is None else check_finite_number("rdrop_alpha", rdrop_alpha, fn=fn, min=0.0)
    level = None if flood_level is None else check_finite_number("flood_level", flood_level, fn=fn)
    if not isinstance(clip_mode, str):
        fail(fn, "clip_mode", "one of 'hard', 'soft'", clip_mode, exc=TypeError)
    mode = check_choice("clip_mode", clip_mode, CLIP_MODES, fn=fn)
    if alpha is not None and needs_logits(technique):
        fail(fn, "rdrop_alpha", "None with VAT (VAT's closure returns logits, R-Drop's a loss)", rdrop_alpha)
    return alpha, level, mode


def needs_logits(technique: Any) -> bool:
    """True for techniques whose closure returns ``(loss, logits)`` rather than a scalar loss (VAT)."""
    from trainwell.regularizers import VAT

    return isinstance(technique, VAT)


def attach_ddp_model(technique: Any, ddp_model: Any) -> None:
    """Give ``technique`` the DDP wrapper (so its direction passes run under ``no_sync()``) if it takes one.

    Only a technique that has a ``ddp_model`` attribute still set to ``None`` is changed: a wrapper the user
    passed explicitly is kept, and techniques without the attribute are left alone.
    """
    if technique is None or ddp_model is None:
        return
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(ddp_model, DistributedDataParallel) and getattr(technique, "ddp_model", _MISSING) is None:
        technique.ddp_model = ddp_model


def run_step(
    technique: Any,
    closure: Callable[[], Any],
    backward: Callable[[Tensor], Any],
    scaler: Any,
    *,
    fn: str,
) -> Tensor:
    """One training step on one micro-batch: ``technique.step`` or, without a technique, one plain pass.

    Returns the detached loss the technique reports (the clean loss for FGM/PGD/gradient penalties,
    ``sup + α·LDS`` for VAT), before any accumulation factor that ``backward`` applies.
    """
    if technique is None:
        loss = call_closure(closure, fn=fn)
        backward(loss)
        return loss.detach()
    out = technique.step(closure, backward=backward, scaler=scaler)
    if not isinstance(out, Tensor):
        fail(fn, "technique", "an object whose step() returns the detached loss tensor", out, exc=TypeError)
    return out.detach()


def rdrop_model_loss(
    model: Callable[..., Any],
    inputs: Mapping[str, Any],
    alpha: float = 4.0,
    *,
    labels_key: str = "labels",
) -> Tensor:
    """R-Drop loss of a Hugging Face classifier on one batch: one forward on ``[x; x]``, eq. (7.1).

    The labels are taken out of ``inputs`` (so the model computes no loss of its own), the other tensors are
    duplicated along dim 0 by :func:`trainwell.losses.rdrop_forward`, the ``.logits`` of the output are split
    in two and :func:`trainwell.losses.rdrop_loss` gives ``mean_i[CE¹ + CE² + α·½(KL¹² + KL²¹)]``. The model
    must be in ``train()`` mode (independent dropout masks). Token-level models work too: logits ``[B, L, C]``
    with labels ``[B, L]`` (``-100`` ignored).

    Source: kexue.fm/archives/8496; Liang et al., arXiv:2106.14448.

    Args:
        model: the model (possibly DDP-wrapped); called as ``model(**inputs_without_labels)``.
        inputs: the batch, a mapping holding ``labels_key``.
        alpha: the KL weight α ≥ 0 (default 4, Su's choice for BERT-base).
        labels_key: the key of the class indices in ``inputs`` (default ``"labels"``).

    Returns:
        The scalar R-Drop loss (float32 under autocast).
    """
    from trainwell.losses import rdrop_forward, rdrop_loss

    fn = "rdrop_model_loss"
    if not isinstance(inputs, Mapping):
        fail(fn, "inputs", "a mapping of model inputs (a tokenizer/collator batch)", inputs, exc=TypeError)
    if labels_key not in inputs:
        fail(
            fn, "inputs", f"a batch holding the class indices under {labels_key!r}", f"keys {sorted(inputs)}"
        )
    rest = {k: v for k, v in inputs.items() if k != labels_key}
    if isinstance(model, nn.Module) and not model.training:
        warnings.warn(
            "rdrop_model_loss(): the model is in eval() mode, so both passes use the same (no) dropout and "
            "the KL term is 0; call model.train() (Lightning keeps the mode a module had before fit())",
            RuntimeWarning,
            stacklevel=2,
        )

    def logits_of(**kw: Any) -> Tensor:
        out = model(**kw)
        logits = out if isinstance(out, Tensor) else getattr(out, "logits", None)
        if logits is None and isinstance(out, Mapping):
            logits = out.get("logits")
        if not isinstance(logits, Tensor):
            fail(fn, "model", "a model returning logits or an output with .logits", out, exc=TypeError)
        return logits

    logits1, logits2 = rdrop_forward(logits_of, **rest)
    return rdrop_loss(logits1, logits2, inputs[labels_key], alpha)
