"""Hugging Face ``transformers.Trainer`` adapter: any trainwell technique inside ``training_step``.

Two shapes, the same code:

* :class:`TrainwellTrainerMixin` — put it *first* in the bases of your own Trainer subclass
  (``class MyTrainer(TrainwellTrainerMixin, Trainer)`` or ``(TrainwellTrainerMixin, MySeq2SeqTrainer)``):
  it takes its keyword arguments, overrides ``training_step`` (and ``_clip_grad_norm`` for soft clipping
  only) and leaves everything else — ``compute_loss``, callbacks, evaluation — to the classes after it.
* :class:`TrainwellTrainer` — ``TrainwellTrainerMixin`` on ``transformers.Trainer``, ready to use.

::

    fgm = FGM(model.get_input_embeddings(), epsilon=0.5)
    trainer = TrainwellTrainer(model=model, args=args, train_dataset=ds, technique=fgm)
    trainer.train()

What happens per micro-batch (mirrors ``Trainer.training_step`` of transformers 5.x):

* the closure is one forward pass through ``self.compute_loss`` (your override included), or the R-Drop
  loss (``rdrop_alpha``), then flooding (``flood_level``) on that micro-batch loss;
* every backward the technique runs goes through ``self.accelerator.backward`` (GradScaler under fp16,
  DeepSpeed/LOMO keyword arguments kept), with the loss divided by the number of accumulated micro-batches
  exactly when ``Trainer`` divides it (not when the model already normalised it by ``num_items_in_batch``
  or ``loss_is_scaled_for_ga`` is True); directions (``autograd.grad``) use the accelerator's GradScaler
  scale so fp16 gradients do not underflow;
* under DDP the wrapped model is handed to techniques that take ``ddp_model`` (their direction passes run
  under ``no_sync()``; only the final backward all-reduces), and ``Trainer``'s own ``no_sync`` on the
  non-final micro-batches of an accumulation still applies around the whole step;
* bf16/fp16 autocast is accelerate's (around the model's forward), as without the adapter.

Without a technique, R-Drop, flooding or soft clipping the mixin calls ``Trainer.training_step`` unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Any

import transformers
from torch import Tensor, nn

from trainwell._validation import fail
from trainwell.integrations._common import (
    attach_ddp_model,
    check_adapter_options,
    check_technique,
    needs_logits,
    rdrop_model_loss,
    run_step,
)

__all__ = ["TrainwellTrainer", "TrainwellTrainerMixin"]

_FN = "TrainwellTrainer"


class TrainwellTrainerMixin:
    """Runs a trainwell technique inside ``transformers.Trainer.training_step``; composes with any Trainer.

    Put it first in the bases: ``class MyTrainer(TrainwellTrainerMixin, transformers.Trainer)``. Its
    keyword arguments are removed before the next ``__init__`` in the MRO runs.

    Args (keyword-only, on top of the Trainer's own):
        technique: ``None`` or a multi-pass object with ``step(closure, *, backward, scaler)`` —
            :class:`~trainwell.regularizers.FGM`, :class:`~trainwell.regularizers.PGD`,
            :class:`~trainwell.regularizers.VAT`, :class:`~trainwell.regularizers.FastGradientPenalty`,
            :class:`~trainwell.regularizers.ParameterGradientPenalty` (build it on the unwrapped model, e.g.
            ``FGM(model.get_input_embeddings())``). VAT's closure returns ``(loss, logits)``.
        rdrop_alpha: train on the R-Drop loss ``CE¹ + CE² + α·½(KL¹² + KL²¹)`` (eq. 7.1 of the paper, α =
            ``rdrop_alpha``; kexue.fm/archives/8496) instead of ``compute_loss``; needs ``labels``.
        flood_level: train on the flooded loss ``|L − b| + b`` of each micro-batch (kexue.fm/archives/7643).
        clip_mode: ``"hard"`` (default: Trainer's ``clip_grad_norm_``) or ``"soft"``: the accumulated,
            unscaled gradient is multiplied by ``γ/(‖g‖ + γ)`` with ``γ = args.max_grad_norm``
            (kexue.fm/archives/7469) by :func:`trainwell.optim.clip_grad_norm_`.

    Gradient accumulation: every pass of the step backpropagates ``loss / k`` (``k`` micro-batches) when
    Trainer would divide the loss, so each micro-batch contributes its own regularised objective divided by
    ``k``. R-Drop and flooding work on the micro-batch *mean* loss, so with them ``num_items_in_batch`` is not
    passed to the model and the loss is always divided by ``k``. Note: Trainer decides that a model whose
    ``forward`` takes ``**kwargs`` (e.g. ``BertForSequenceClassification``) normalises its loss by
    ``num_items_in_batch`` (and under DDP multiplies it by the world size); a classifier's mean cross-entropy
    does not, so set ``model.accepts_loss_kwargs = False`` before building the Trainer to get the mean over
    the accumulated, global batch.
    """

    trainwell_technique: Any
    trainwell_rdrop_alpha: float | None
    trainwell_flood_level: float | None
    trainwell_clip_mode: str

    def __init__(
        self,
        *args: Any,
        technique: Any = None,
        rdrop_alpha: float | None = None,
        flood_level: float | None = None,
        clip_mode: str = "hard",
        **kwargs: Any,
    ) -> None:
        tech = check_technique(technique, fn=_FN)
        alpha, level, mode = check_adapter_options(
            fn=_FN, technique=tech, rdrop_alpha=rdrop_alpha, flood_level=flood_level, clip_mode=clip_mode
        )
        super().__init__(*args, **kwargs)
        self.trainwell_technique = tech
        self.trainwell_rdrop_alpha = alpha
        self.trainwell_flood_level = level
        self.trainwell_clip_mode = mode
        if mode == "soft":
            trainer_args = getattr(self, "args", None)
            if not hasattr(super(), "_clip_grad_norm"):
                raise TypeError(
                    f"{_FN}(): clip_mode='soft' needs a transformers Trainer with a _clip_grad_norm method "
                    "(transformers >= 5.0); upgrade transformers or clip in a callback"
                )
            if trainer_args is not None and not getattr(trainer_args, "max_grad_norm", 0) > 0:
                fail(_FN, "clip_mode", "'hard' unless args.max_grad_norm > 0 (γ of soft clipping)", clip_mode)

    # ------------------------------------------------------------------------------ overridable parts
    def _trainwell_active(self) -> bool:
        return (
            self.trainwell_technique is not None
            or self.trainwell_rdrop_alpha is not None
            or self.trainwell_flood_level is not None
        )

    def _trainwell_loss_is_scaled(self, num_items_in_batch: Any) -> bool:
        """Trainer's own rule: is the loss already normalised over the accumulated batch?"""
        if self.trainwell_rdrop_alpha is not None or self.trainwell_flood_level is not None:
            return False
        explicit = getattr(self, "loss_is_scaled_for_ga", None)
        if explicit is not None:
            return bool(explicit)
        return bool(
            (getattr(self, "model_accepts_loss_kwargs", False) and num_items_in_batch is not None)
            or getattr(self, "compute_loss_func", None) is not None
        )

    def trainwell_loss(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        """One forward pass: the micro-batch loss before accumulation scaling (``(loss, logits)`` for VAT).

        Default: ``self.compute_loss`` (or the R-Drop loss with ``rdrop_alpha``), the DataParallel mean, then
        flooding. Override it to change the loss while keeping the step protocol.
        """
        trainer: Any = self
        # flooding acts on the micro-batch mean: the model must not normalise by the accumulated item count
        nib = None if self.trainwell_flood_level is not None else num_items_in_batch
        logits = None
        if self.trainwell_rdrop_alpha is not None:
            loss = rdrop_model_loss(model, inputs, self.trainwell_rdrop_alpha)
        elif needs_logits(self.trainwell_technique):
            loss, outputs = trainer.compute_loss(model, inputs, return_outputs=True, num_items_in_batch=nib)
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs[1]
        else:
            loss = trainer.compute_loss(model, inputs, num_items_in_batch=nib)
        if getattr(trainer.args, "n_gpu", 1) > 1:
            loss = loss.mean()  # DataParallel returns one loss per device
        if self.trainwell_flood_level is not None:
            from trainwell.losses import flooding

            loss = flooding(loss, self.trainwell_flood_level)
        return (loss, logits) if logits is not None else loss

    # ------------------------------------------------------------------------------------ Trainer hooks
    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> Tensor:
        """``Trainer.training_step`` with the trainwell step in place of the single forward/backward."""
        trainer: Any = self
        if not self._trainwell_active():
            return super().training_step(model, inputs, num_items_in_batch)  # type: ignore[misc, no-any-return]
        prepare_cp = getattr(trainer, "_prepare_context_parallel_inputs", None)
        cp_context: Any = contextlib.nullcontext
        if prepare_cp is not None:
            cp_context, inputs = prepare_cp(model, inputs)
        with cp_context():
            model.train()
            if hasattr(trainer.optimizer, "train") and callable(trainer.optimizer.train):
                trainer.optimizer.train()
            inputs = trainer._prepare_inputs(inputs)

            steps = getattr(trainer, "current_gradient_accumulation_steps", None)
            steps = steps or trainer.args.gradient_accumulation_steps
            factor = 1.0 if self._trainwell_loss_is_scaled(num_items_in_batch) else 1.0 / steps
            kwargs: dict[str, Any] = {}
            optim_name = str(getattr(trainer.args, "optim", ""))
            if "lomo" in optim_name.lower():
                kwargs["learning_rate"] = trainer._get_learning_rate()
            accelerator = trainer.accelerator
            if str(getattr(accelerator, "distributed_type", "")).upper().endswith("DEEPSPEED"):
                kwargs["scale_wrt_gas"] = False

            def closure() -> Any:
                with trainer.compute_loss_context_manager():
                    return self.trainwell_loss(model, inputs, num_items_in_batch)

            def backward(loss: Tensor) -> None:
                accelerator.backward(loss * factor if factor != 1.0 else loss, **kwargs)

            attach_ddp_model(self.trainwell_technique, model)
            loss = run_step(
                self.trainwell_technique,
                closure,
                backward,
                getattr(accelerator, "scaler", None),
                fn=f"{_FN}.training_step",
            )
            return (loss * factor).detach()

    def _clip_grad_norm(self, model: nn.Module) -> Any:
        """Hard clipping: Trainer's. Soft clipping: unscale (fp16), then ``g ← g·γ/(‖g‖ + γ)``."""
        trainer: Any = self
        if self.trainwell_clip_mode != "soft":
            return super()._clip_grad_norm(model)  # type: ignore[misc]
        from trainwell.optim import clip_grad_norm_

        trainer.accelerator.unscale_gradients()
        return clip_grad_norm_(model.parameters(), trainer.args.max_grad_norm, mode="soft")


class TrainwellTrainer(TrainwellTrainerMixin, transformers.Trainer):
    """``transformers.Trainer`` with :class:`TrainwellTrainerMixin`: takes ``technique=``, ``rdrop_alpha=``,
    ``flood_level=`` and ``clip_mode=`` on top of the Trainer's arguments (see the mixin)."""
