"""Lab experiments: every module here that defines ``EXPERIMENT`` is registered automatically.

Modules whose name starts with ``_`` are helpers and are not scanned. A module that fails to import
does not take the others down: it is left out of :func:`registry` and its error is kept in
:func:`import_errors` (the CLI shows it when that experiment is asked for by name).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

from trainwell.lab.base import Experiment

__all__ = ["get", "import_errors", "registry"]

_ERRORS: dict[str, str] = {}
_WARNED: set[str] = set()


def registry(strict: bool = False) -> dict[str, Experiment]:
    """All experiments, by name, in module order.

    Args:
        strict: re-raise the first import error instead of skipping the broken module.
    """
    found: dict[str, Experiment] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{__name__}.{info.name}")
        except Exception as e:
            if strict:
                raise
            _ERRORS[info.name] = f"{type(e).__name__}: {e}"
            if info.name not in _WARNED:
                _WARNED.add(info.name)
                print(f"trainwell lab: warning: experiment module {info.name!r} failed to import "
                      f"({type(e).__name__}: {e}); skipped", file=sys.stderr)
            continue
        _ERRORS.pop(info.name, None)
        exp = getattr(module, "EXPERIMENT", None)
        if isinstance(exp, Experiment):
            found[exp.name] = exp
    return found


def import_errors() -> dict[str, str]:
    """Module name -> import error of the experiment modules skipped by the last :func:`registry` call."""
    return dict(_ERRORS)


def get(name: str) -> Experiment:
    """The experiment called ``name`` (ValueError listing the available ones otherwise)."""
    reg = registry()
    if name not in reg:
        hint = f" (module failed to import: {_ERRORS[name]})" if name in _ERRORS else ""
        raise ValueError(f"unknown experiment {name!r}{hint}; available: {', '.join(sorted(reg))}")
    return reg[name]
