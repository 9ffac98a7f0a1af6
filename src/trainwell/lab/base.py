"""The experiment contract of ``trainwell lab``.

An experiment is a module in :mod:`trainwell.lab.experiments` that defines ``EXPERIMENT``, an
:class:`Experiment`. The runner calls ``experiment.run_seed(ctx)`` once per seed; each call trains
and evaluates every method for that seed and returns a :class:`SeedResult`. The runner caches each
(experiment, mode, seed) cell on disk, aggregates mean ± std over seeds, asks ``experiment.judge``
whether the post's claim holds, and writes ``results.json``, ``table.md`` and plots.

Modes: ``"tiny"`` (seconds; used by the test suite to prove the pipeline), ``"quick"`` (the default
``trainwell lab`` suite: about a minute per experiment on 2 CPU cores) and ``"full"`` (the documented
reproduction run).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = ["MODES", "Experiment", "MethodStats", "RunContext", "SeedResult", "seed_everything"]

MODES = ("tiny", "quick", "full")
T = TypeVar("T")


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a fresh ``torch.Generator`` seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - seeds the global state third-party code uses
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


@dataclass
class RunContext:
    """What an experiment's ``run_seed`` receives.

    Attributes:
        seed: this cell's seed (python, numpy and torch are already seeded with it).
        mode: ``"tiny"``, ``"quick"`` or ``"full"``.
        out_dir: the experiment's report folder (write extra artefacts here, rank 0 only).
        progress: the runner's progress-bar factory; prefer :meth:`iterate`.
        rank: this process's rank under ``torchrun`` (0 otherwise); only rank 0 should write files.
        world_size: processes training this cell together: the ``torchrun`` world size for experiments
            declared with ``Experiment(ddp=True)``, else 1 (the runner hands whole seeds to ranks).
        log: prints a line through the runner (silent in tests); ``ctx.log("chosen t=0.3")``.
    """

    seed: int
    mode: str
    out_dir: Path
    progress: Callable[..., Any] = field(default=lambda it, **kw: it, repr=False)
    rank: int = 0
    world_size: int = 1
    log: Callable[..., Any] = field(default=lambda *a, **kw: None, repr=False)

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0

    @property
    def tiny(self) -> bool:
        return self.mode == "tiny"

    @property
    def quick(self) -> bool:
        return self.mode == "quick"

    @property
    def full(self) -> bool:
        return self.mode == "full"

    def pick(self, tiny: T, quick: T, full: T) -> T:
        """Choose a setting by mode: ``ctx.pick(tiny=1, quick=5, full=30)``."""
        return {"tiny": tiny, "quick": quick, "full": full}[self.mode]

    def iterate(self, iterable: Iterable[T], desc: str = "", total: int | None = None) -> Iterator[T]:
        """Wrap an iterable in the runner's progress bar."""
        return iter(self.progress(iterable, desc=desc, total=total))


@dataclass
class SeedResult:
    """One seed's outcome.

    Attributes:
        values: method -> the experiment's primary metric.
        secondary: metric name -> method -> value (other metrics reported alongside).
        curves: series name -> list of floats (e.g. "CE/test_loss"), averaged over seeds and plotted.
        info: anything else JSON-serialisable worth keeping (data sizes, chosen thresholds, ...).
    """

    values: dict[str, float]
    secondary: dict[str, dict[str, float]] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"values": self.values, "secondary": self.secondary, "curves": self.curves, "info": self.info}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SeedResult:
        return cls(
            values={k: float(v) for k, v in d["values"].items()},
            secondary=d.get("secondary", {}),
            curves=d.get("curves", {}),
            info=d.get("info", {}),
        )


@dataclass
class MethodStats:
    """Mean, sample standard deviation and the per-seed values of one method's metric."""

    values: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "values": [float(v) for v in self.values]}

    def paired_ci(self, other: MethodStats, confidence: float = 0.95) -> tuple[float, float, float]:
        """``(mean, low, high)`` of the paired per-seed difference ``self − other`` with its bootstrap CI.

        The values are paired by position (the runner keeps them in seed order, and within a seed every
        method shares initial weights and data order). The CI is
        :func:`trainwell.compare.stats.paired_bootstrap_ci` (10,000 resamples, fixed seed), the statistic
        ``trainwell compare`` reports. Fewer than 2 pairs give NaN bounds.
        """
        from trainwell.compare.stats import paired_bootstrap_ci

        k = min(len(self.values), len(other.values))
        diffs = [float(a) - float(b) for a, b in zip(self.values[:k], other.values[:k])]
        if k < 2 or not all(math.isfinite(d) for d in diffs):
            return (float(np.mean(diffs)) if diffs else math.nan), math.nan, math.nan
        lo, hi = paired_bootstrap_ci(diffs, confidence=confidence)
        return float(np.mean(diffs)), lo, hi

    def clearly_above(self, other: MethodStats, higher_is_better: bool = True) -> bool:
        """Whether this method beats ``other``: the 95% CI of the paired per-seed difference excludes 0.

        ``higher_is_better=True``: the CI of ``self − other`` lies above 0; ``False``: below 0. The same
        rule as the "helps" verdict of ``trainwell compare`` (:func:`trainwell.compare.stats.verdict`).
        With fewer than 2 paired seeds nothing is established and it returns False. With 3 seeds the
        percentile bootstrap's 2.5% quantile is the smallest difference, so the rule reads "better on
        every seed"; with more seeds it tolerates an occasional loss.
        """
        _, lo, hi = self.paired_ci(other)
        if math.isnan(lo):
            return False
        return lo > 0 if higher_is_better else hi < 0

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.std:.4f}"


@dataclass
class Experiment:
    """A registered lab experiment.

    Attributes:
        name: CLI name (``trainwell lab NAME``).
        title: one-line human title.
        metric: name of the primary metric (higher is better unless ``higher_is_better=False``).
        claim: the post's / paper's claim being checked, in one sentence.
        methods: method names in display order.
        run_seed: trains and evaluates all methods for one seed.
        judge: given method -> stats, returns whether the claim holds on this run.
        source: post / paper reference, e.g. "kexue.fm/archives/7615; arXiv:2007.07314".
        reported: what the source reports, for the comparison line.
        seeds: default number of seeds per mode.
        default: part of the default ``trainwell lab`` suite.
        full_runtime: documented wall time of ``--full`` on 2 CPU cores.
        plot: optional custom plot ``plot(results_json, cells, out_dir) -> list[Path]``.
        version: bump it when the experiment's protocol changes; cached cells written under another
            version are recomputed instead of being mixed with new ones.
        ddp: ``True`` if ``run_seed`` trains with ``torch.distributed`` itself (every rank then runs
            every seed together and rank 0's result is kept); ``False`` (default): under ``torchrun``
            the runner hands whole seeds to ranks, which is the right split for small CPU models.
        threads: torch intra-op threads while this experiment runs (``None``: leave torch's setting).
            Small models gain little from intra-op parallelism and stall badly when a shared machine is
            oversubscribed, so they may pin 1; ``trainwell lab --threads N`` overrides it.
    """

    name: str
    title: str
    metric: str
    claim: str
    methods: list[str]
    run_seed: Callable[[RunContext], SeedResult]
    judge: Callable[[dict[str, MethodStats]], bool]
    source: str = ""
    reported: str = ""
    seeds: dict[str, int] = field(default_factory=lambda: {"tiny": 1, "quick": 3, "full": 5})
    default: bool = True
    higher_is_better: bool = True
    full_runtime: str = ""
    plot: Callable[[dict[str, Any], list[SeedResult], Path], list[Path]] | None = None
    version: str = "1"
    ddp: bool = False
    threads: int | None = None
