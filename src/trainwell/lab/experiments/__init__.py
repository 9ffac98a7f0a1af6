"""Lab experiments: every module here that defines ``EXPERIMENT`` is registered automatically."""

from __future__ import annotations

import importlib
import pkgutil

from trainwell.lab.base import Experiment

__all__ = ["get", "registry"]


def registry() -> dict[str, Experiment]:
    """All experiments, by name, in module order."""
    found: dict[str, Experiment] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        exp = getattr(module, "EXPERIMENT", None)
        if isinstance(exp, Experiment):
            found[exp.name] = exp
    return found


def get(name: str) -> Experiment:
    reg = registry()
    if name not in reg:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(sorted(reg))}")
    return reg[name]
