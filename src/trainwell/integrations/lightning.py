"""PyTorch Lightning adapter: trainwell techniques under manual optimization.

Lightning's automatic optimization runs exactly one backward per ``training_step``; multi-pass techniques
(FGM, PGD, VAT, gradient penalties) need several, so they run under manual optimization
(``self.automatic_optimization = False``), where Lightning refuses its own ``accumulate_grad_batches`` and
``gradient_clip_val``. :class:`ManualStep` supplies both::

    class Classifier(LightningModule):
        def __init__(self, model):
            super().__init__()
            self.automatic_optimization = False
            self.model = model
            self.step = ManualStep(FGM(model.get_input_embeddings(), 0.5), accumulate_grad_batches=2)

        def training_step(self, batch, batch_idx):
            return self.step(self, lambda: self.model(**batch).loss, batch_idx)

or, with :class:`TrainwellLightningMixin`, only ``trainwell_loss(batch)`` is written. Neither imports
Lightning: they use the ``LightningModule`` methods ``optimizers()``, ``manual_backward()`` and ``trainer``
(Lightning 2.x, ``lightning.pytorch`` or ``pytorch_lightning``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from torch import Tensor

from trainwell._validation import check_choice, check_finite_number, check_int, fail
from trainwell.integrations._common import (
    CLIP_MODES,
    attach_ddp_model,
    check_technique,
    needs_logits,
    run_step,
)

__all__ = ["ManualStep", "TrainwellLightningMixin"]

_FN = "ManualStep"


class ManualStep:
    """One manual-optimization step of a ``LightningModule``: a trainwell technique, accumulation, clipping.

    Per call (one micro-batch, inside ``training_step``):

    1. ``optimizer.zero_grad()`` on the first micro-batch of an accumulation group;
    2. ``technique.step(closure, backward=..., scaler=...)`` (or one plain pass without a technique) where
       every backward is ``module.manual_backward(loss / k)`` (``k = accumulate_grad_batches``; precision
       plugin scaling and DDP preparation are Lightning's) and the direction passes use the fp16 GradScaler's
       scale; flooding ``|L − b| + b`` (``flood_level``) is applied to the closure's loss first;
    3. on the non-final micro-batches of a group, the step runs under ``strategy.block_backward_sync()``
       (DDP ``no_sync``); under DDP a technique built with ``ddp_model=None`` is given the strategy's
       ``DistributedDataParallel`` wrapper, so its direction passes never all-reduce;
    4. on the last micro-batch of a group (or the epoch's last batch): clipping of the global gradient norm
       (``gradient_clip_val`` γ; ``clip_mode='hard'`` = torch's ``clip_grad_norm_``, ``'soft'`` = the factor
       ``γ/(‖g‖ + γ)`` of kexue.fm/archives/7469; under fp16 the scaled gradients are clipped at ``γ·S``,
       which is the same as clipping the unscaled ones at ``γ``), ``optimizer.step()``, then
       ``lr_scheduler.step()`` when one is passed.

    Returns the detached micro-batch loss the technique reports (not divided by ``k``); ``stepped`` says
    whether the optimizer stepped, ``last_grad_norm`` holds the pre-clip norm of the last step.

    Args:
        technique: ``None`` or a multi-pass object with ``step(closure, *, backward, scaler)`` (FGM, PGD,
            VAT, FastGradientPenalty, ParameterGradientPenalty). For VAT the closure returns
            ``(loss, logits)`` or the model output. R-Drop is a loss: return
            :func:`trainwell.integrations.rdrop_model_loss` (or ``rdrop_loss``) from the closure.
        accumulate_grad_batches: micro-batches per optimizer step ``k ≥ 1`` (default 1).
        gradient_clip_val: γ > 0, or None for no clipping (default).
        clip_mode: ``'hard'`` (default) or ``'soft'``.
        flood_level: flood level ``b`` of :func:`trainwell.losses.flooding`, or None.
    """

    def __init__(
        self,
        technique: Any = None,
        *,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        clip_mode: str = "hard",
        flood_level: float | None = None,
    ) -> None:
        self.technique = check_technique(technique, fn=_FN)
        k = check_int("accumulate_grad_batches", accumulate_grad_batches, fn=_FN, min=1)
        assert k is not None
        self.accumulate_grad_batches: int = k
        self.gradient_clip_val: float | None = (
            None
            if gradient_clip_val is None
            else check_finite_number(
                "gradient_clip_val", gradient_clip_val, fn=_FN, min=0.0, min_inclusive=False
            )
        )
        if not isinstance(clip_mode, str):
            fail(_FN, "clip_mode", "one of 'hard', 'soft'", clip_mode, exc=TypeError)
        self.clip_mode: str = check_choice("clip_mode", clip_mode, CLIP_MODES, fn=_FN)
        self.flood_level: float | None = (
            None if flood_level is None else check_finite_number("flood_level", flood_level, fn=_FN)
        )
        self.stepped: bool = False
        self.last_grad_norm: Tensor | None = None

    def _flooded(self, closure: Callable[[], Any]) -> Callable[[], Any]:
        level = self.flood_level
        if level is None:
            return closure
        from trainwell.losses import flooding

        logits_out = needs_logits(self.technique)

        def flooded() -> Any:
            out = closure()
            if logits_out:
                if isinstance(out, tuple) and len(out) == 2:
                    return flooding(out[0], level), out[1]
                loss = getattr(out, "loss", None)
                if loss is None:
                    return out
                return flooding(loss, level), out.logits
            return flooding(out, level)

        return flooded

    def __call__(
        self,
        module: Any,
        closure: Callable[[], Any],
        batch_idx: int,
        *,
        optimizer: Any = None,
        lr_scheduler: Any = None,
    ) -> Tensor:
        """Run the step for micro-batch ``batch_idx`` of ``module`` (see the class docstring)."""
        fn = f"{_FN}.__call__"
        if not callable(getattr(module, "manual_backward", None)):
            fail(fn, "module", "a LightningModule (with manual_backward)", module, exc=TypeError)
        if getattr(module, "automatic_optimization", False):
            fail(fn, "module", "a LightningModule with self.automatic_optimization = False", module)
        if not callable(closure):
            fail(
                fn,
                "closure",
                "a callable running the forward pass and returning the loss",
                closure,
                exc=TypeError,
            )
        idx = check_int("batch_idx", batch_idx, fn=fn, min=0)
        assert idx is not None
        opt = optimizer if optimizer is not None else module.optimizers()
        if isinstance(opt, (list, tuple)):
            fail(
                fn,
                "optimizer",
                "the optimizer to step (configure_optimizers returned several)",
                f"{len(opt)} optimizers",
                exc=TypeError,
            )
        trainer = module.trainer
        strategy = getattr(trainer, "strategy", None)
        k = self.accumulate_grad_batches
        first = idx % k == 0
        last = (idx + 1) % k == 0 or bool(getattr(trainer, "is_last_batch", False))
        if first:
            opt.zero_grad()
        attach_ddp_model(self.technique, getattr(strategy, "model", None))
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)

        def backward(loss: Tensor) -> None:
            module.manual_backward(loss / k if k != 1 else loss)

        block = getattr(strategy, "block_backward_sync", None)
        sync: Any = block() if (not last and callable(block)) else contextlib.nullcontext()
        with sync:
            loss = run_step(self.technique, self._flooded(closure), backward, scaler, fn=fn)
        self.stepped = last
        if last:
            if self.gradient_clip_val is not None:
                self.last_grad_norm = self._clip(opt, scaler)
            opt.step()
            if lr_scheduler is not None:
                lr_scheduler.step()
        return loss

    def _clip(self, opt: Any, scaler: Any) -> Tensor:
        from trainwell.optim import clip_grad_norm_

        assert self.gradient_clip_val is not None
        scale = float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0
        params = [p for g in opt.param_groups for p in g["params"]]
        # Lightning unscales inside optimizer.step(); clipping the scaled grads at γ·S is the same operation
        norm = clip_grad_norm_(params, self.gradient_clip_val * scale, mode=self.clip_mode)
        return norm / scale if scale != 1.0 else norm


class TrainwellLightningMixin:
    """``LightningModule`` mixin: manual optimization through :class:`ManualStep`; you write the loss.

    Put it first in the bases and assign ``self.trainwell = ManualStep(...)`` in ``__init__``::

        class Classifier(TrainwellLightningMixin, LightningModule):
            def __init__(self, model):
                super().__init__()
                self.model = model
                self.trainwell = ManualStep(accumulate_grad_batches=2, gradient_clip_val=1.0,
                                            clip_mode="soft")

            def trainwell_loss(self, batch):
                return rdrop_model_loss(self.model, batch, alpha=4.0)

            def configure_optimizers(self):
                return torch.optim.AdamW(self.parameters(), lr=2e-5)

    ``automatic_optimization`` is always False for such a module; ``training_step`` runs the step, steps the
    scheduler of ``configure_optimizers`` (when there is exactly one) after each optimizer step, and logs
    ``train_loss``.
    """

    trainwell: ManualStep

    @property
    def automatic_optimization(self) -> bool:
        return False

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        if value:
            fail(
                "TrainwellLightningMixin",
                "automatic_optimization",
                "False (the mixin optimizes manually)",
                value,
            )

    def trainwell_loss(self, batch: Any) -> Any:
        """One forward pass on ``batch``: the scalar loss (``(loss, logits)`` or the model output for VAT)."""
        raise NotImplementedError(f"{type(self).__name__} must define trainwell_loss(batch)")

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        step = getattr(self, "trainwell", None)
        if not isinstance(step, ManualStep):
            fail(
                "TrainwellLightningMixin",
                "trainwell",
                "a ManualStep assigned in __init__",
                step,
                exc=TypeError,
            )
        module: Any = self
        sched = module.lr_schedulers()
        sched = sched if sched is not None and not isinstance(sched, list) else None
        loss = step(self, lambda: self.trainwell_loss(batch), batch_idx, lr_scheduler=sched)
        module.log("train_loss", loss, prog_bar=False)
        return loss
