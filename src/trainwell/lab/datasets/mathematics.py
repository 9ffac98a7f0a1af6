"""DeepMind's ``mathematics-dataset`` (pip), offline: generated question/answer pairs, with a sympy shim.

The package generates problems on the fly (``generate.sample_from_module``). On modern sympy its import fails
(``cannot import name 'base_solution_linear' from 'sympy.solvers.diophantine'``): the function moved to the
``diophantine`` submodule, and ``import sympy.solvers.diophantine as m`` returns the function of the same
name,
so :func:`_shim` fetches the *module* with ``importlib.import_module`` and restores the attribute before the
first import. Sampling is seeded through python's and numpy's global generators (the package uses both).

- :func:`sample_problems` — ``n`` ``(question, answer)`` pairs of one module from a split
  (``"train-easy"``, ``"interpolate"``, ...).
- :func:`arithmetic_expression` — the arithmetic expression written inside a question, when there is one
  (``"What is (3 + -1 - 1) + 2?"`` → ``"(3+-1-1)+2"``), used to build executable targets.
"""

from __future__ import annotations

import functools
import importlib
import random
import re
from typing import Any

import numpy as np

__all__ = ["MathematicsUnavailable", "arithmetic_expression", "sample_problems"]

_HINT = "install it with `pip install mathematics-dataset` (the lab extra)"


class MathematicsUnavailable(RuntimeError):
    """The ``mathematics-dataset`` package is missing or cannot be imported."""


def _shim() -> None:
    try:
        mod = importlib.import_module("sympy.solvers.diophantine")
    except ImportError as err:  # pragma: no cover - sympy is a dependency of the package
        raise MathematicsUnavailable(f"mathematics-dataset needs sympy: {err}") from None
    if not hasattr(mod, "base_solution_linear"):
        sub = importlib.import_module("sympy.solvers.diophantine.diophantine")
        mod.base_solution_linear = sub.base_solution_linear  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=1)
def _generate() -> Any:
    _shim()
    try:
        from absl import flags
        from mathematics_dataset import generate
    except ImportError as err:
        raise MathematicsUnavailable(f"mathematics-dataset cannot be imported ({err}); {_HINT}") from None
    if not flags.FLAGS.is_parsed():
        flags.FLAGS(["trainwell"])
    generate.init_modules(train_split=True)
    return generate


def sample_problems(module: str, n: int, split: str = "train-easy", seed: int = 0) -> list[tuple[str, str]]:
    """``n`` ``(question, answer)`` string pairs of ``module`` (e.g. ``"arithmetic__mixed"``) from ``split``.

    The global python and numpy generators are seeded with ``seed`` and restored afterwards.
    """
    gen = _generate()
    if split not in gen.filtered_modules:
        raise ValueError(
            f"sample_problems(): split must be one of {sorted(gen.filtered_modules)}, got {split!r}"
        )
    mods = gen.filtered_modules[split]
    if module not in mods:
        raise ValueError(f"sample_problems(): unknown module {module!r} in split {split!r}")
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002
    try:
        out = []
        for _ in range(n):
            problem = gen.sample_from_module(mods[module])[0]
            out.append((str(problem.question), str(problem.answer)))
        return out
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002


_EXPR = re.compile(r"[-+*/().\d ]*\d[-+*/().\d ]*")


def arithmetic_expression(question: str) -> str | None:
    """The longest run of digits, operators, brackets and spaces in ``question`` holding an operator."""
    best = None
    for m in _EXPR.finditer(question):
        s = m.group(0).strip().rstrip(".").strip()
        if not any(op in s[1:] for op in "+-*/") or s.count("(") != s.count(")"):
            continue
        s = s.replace(" ", "")
        if best is None or len(s) > len(best):
            best = s
    return best
