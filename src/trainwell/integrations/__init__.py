"""Adapters for the frameworks people train with: Hugging Face ``Trainer`` and PyTorch Lightning.

Thin layers over the multi-pass step protocol every two-pass regularizer follows
(``loss = technique.step(closure, backward=..., scaler=...)``; detached loss, gradients in ``.grad``):

* :mod:`trainwell.integrations.hf` — :class:`~trainwell.integrations.hf.TrainwellTrainer` and
  :class:`~trainwell.integrations.hf.TrainwellTrainerMixin` (imports ``transformers``);
* :mod:`trainwell.integrations.lightning` — :class:`~trainwell.integrations.lightning.ManualStep` and
  :class:`~trainwell.integrations.lightning.TrainwellLightningMixin` (imports Lightning);
* :func:`rdrop_model_loss` — the R-Drop loss of a Hugging Face classifier on one batch.

Plain ``accelerate`` loops need no adapter: pass ``backward=accelerator.backward`` (see
docs/integrations.md). Importing this package imports neither ``transformers`` nor Lightning.
"""

from __future__ import annotations

from typing import Any

from trainwell.integrations._common import rdrop_model_loss

__all__ = [
    "ManualStep",
    "TrainwellLightningMixin",
    "TrainwellTrainer",
    "TrainwellTrainerMixin",
    "rdrop_model_loss",
]

_LAZY = {
    "TrainwellTrainer": "trainwell.integrations.hf",
    "TrainwellTrainerMixin": "trainwell.integrations.hf",
    "ManualStep": "trainwell.integrations.lightning",
    "TrainwellLightningMixin": "trainwell.integrations.lightning",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
