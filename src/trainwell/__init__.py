"""trainwell: deep-learning training techniques from Scientific Spaces (kexue.fm), done right.

Families live in subpackages (``trainwell.losses``, ``trainwell.regularizers``, ``trainwell.optim``,
``trainwell.numerics``, ``trainwell.nn``, ``trainwell.lab``). This top-level module stays light: it
imports nothing heavy, so ``import trainwell`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = ("losses", "regularizers", "optim", "numerics", "nn", "explain", "seq2seq", "lab")

__all__ = ["__version__", *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"trainwell.{name}")
    raise AttributeError(f"module 'trainwell' has no attribute {name!r}")
