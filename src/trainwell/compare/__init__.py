"""``trainwell compare``: which technique helps *this* model on *this* data, with paired CIs and cost.

Build a :class:`Task`, pick techniques from :mod:`trainwell.techniques`, and call :func:`compare`::

    result = compare(task, ["fgm", "flooding:level=0.1,0.2", "rdrop"], seeds=5)
    print(result.to_markdown())
    result.save_html("reports/compare/index.html")

See ``docs/compare.md``.
"""

from __future__ import annotations

from trainwell.compare.core import compare
from trainwell.compare.report import CompareResult
from trainwell.compare.stats import holm, paired_bootstrap_ci, paired_effect, sign_flip_p_value, verdict
from trainwell.compare.task import Task

__all__ = [
    "CompareResult",
    "Task",
    "compare",
    "holm",
    "paired_bootstrap_ci",
    "paired_effect",
    "sign_flip_p_value",
    "verdict",
]
