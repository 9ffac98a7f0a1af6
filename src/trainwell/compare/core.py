"""``compare(task, techniques, ...)``: run the technique × seed grid and compute the paired effects."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from trainwell._validation import check_bool, check_int, fail
from trainwell.compare.backends import BACKENDS, cpu_count, run_local, run_ray
from trainwell.compare.report import CompareResult, compute_effects
from trainwell.compare.task import Task, cell_key, task_identity
from trainwell.techniques import Technique, expand_techniques, get_technique

__all__ = ["compare"]

Progress = bool | Callable[[dict[str, Any], int, int], None]


def _seeds(seeds: Any) -> list[int]:
    fn = "compare"
    if isinstance(seeds, bool):
        fail(fn, "seeds", "an int >= 2 or a list of >= 2 distinct ints", seeds, exc=TypeError)
    if isinstance(seeds, int):
        if seeds < 2:
            fail(fn, "seeds", "an int >= 2 (paired statistics need at least 2 seeds)", seeds)
        return list(range(seeds))
    if isinstance(seeds, Iterable) and not isinstance(seeds, (str, bytes)):
        out = list(seeds)
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in out):
            fail(fn, "seeds", "a list of ints >= 0", out, exc=TypeError)
        if len(out) < 2 or len(set(out)) != len(out):
            fail(fn, "seeds", "at least 2 distinct seeds", out)
        return out
    fail(fn, "seeds", "an int >= 2 or a list of >= 2 distinct ints", seeds, exc=TypeError)


def _progress_bar(total: int) -> Callable[[dict[str, Any], int, int], None] | None:
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the lab extra
        return None
    bar = tqdm(total=total, desc="compare", unit="cell")

    def update(cell: dict[str, Any], done: int, total: int) -> None:
        bar.set_postfix_str(f"{cell['technique']} s{cell['seed']} {cell['status']}")
        bar.update(1)
        if done == total:
            bar.close()

    return update


def compare(
    task: Task,
    techniques: str | Technique | Sequence[str | Technique],
    seeds: int | Sequence[int] = 5,
    metric: str | None = None,
    baseline: str | Technique = "baseline",
    backend: str = "local",
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    ray_address: str | None = None,
    progress: Progress = True,
    *,
    higher_is_better: bool = True,
    config: dict[str, Any] | None = None,
) -> CompareResult:
    """Train every technique on every seed and report each one's paired effect against the baseline.

    Seed ``s`` gives every technique the same initial weights (``task.make_model(s)``) and the same data
    order (paired design). For each technique the per-seed differences ``d_s = metric − baseline metric``
    give ``diff = mean(d)``, a 95% percentile-bootstrap CI (10,000 seeded resamples), the exact sign-flip
    permutation p-value, Holm's adjustment over the techniques, and a verdict from the CI.

    Args:
        task: the :class:`~trainwell.compare.Task`.
        techniques: registry names, ``"name:key=v1,v2"`` grids and :class:`~trainwell.techniques.Technique`
            objects; the baseline is added in front when missing.
        seeds: number of seeds (``0 .. seeds-1``) or the seeds themselves; at least 2.
        metric: the key of ``evaluate``'s dict to compare (default: its first key; a float is ``"metric"``).
        baseline: the reference technique (a label in ``techniques``, a registry spec or a ``Technique``).
        backend: ``"local"`` (process pool) or ``"ray"``.
        workers: local processes (default: the CPU count; ``0`` runs in this process).
        cache_dir: folder of finished cells (one JSON file each, written atomically); re-runs skip them.
        ray_address: the Ray cluster (``"auto"``, ``"ray://host:10001"``; ``None``: local Ray).
        progress: ``True`` for a tqdm bar, ``False`` for none, or ``callable(cell, done, total)``.
        higher_is_better: the metric's direction (keyword only; default True).
        config: the configuration that reproduces the run, kept in the report (keyword only).

    Returns:
        :class:`~trainwell.compare.CompareResult` with ``effects``, ``runs``, ``errors``.

    Raises:
        ValueError / TypeError: bad arguments (naming the argument), or every cell failed (the first
        cell's error, e.g. ``evaluate`` returning a non-number).
    """
    fn = "compare"
    if not isinstance(task, Task):
        fail(fn, "task", "a trainwell.compare.Task", task, exc=TypeError)
    seed_list = _seeds(seeds)
    techs = expand_techniques(techniques)
    if isinstance(baseline, Technique):
        base = baseline
    elif isinstance(baseline, str):
        found = [t for t in techs if t.label == baseline or (t.name == baseline and t.label == t.name)]
        base = found[0] if found else get_technique(baseline)
    else:
        fail(fn, "baseline", "a technique name or a Technique", baseline, exc=TypeError)
    techs = [base] + [t for t in techs if t.label != base.label]
    if len(techs) < 2:
        fail(fn, "techniques", "at least one technique besides the baseline", [t.label for t in techs])
    if backend not in BACKENDS:
        fail(fn, "backend", "one of " + ", ".join(repr(b) for b in BACKENDS), backend)
    n_workers = check_int("workers", workers, fn=fn, min=0, allow_none=True)
    if n_workers is None:
        n_workers = cpu_count()
    check_bool("higher_is_better", higher_is_better, fn=fn)
    if metric is not None and not isinstance(metric, str):
        fail(fn, "metric", "a str or None", metric, exc=TypeError)
    if ray_address is not None and not isinstance(ray_address, str):
        fail(fn, "ray_address", "a str or None", ray_address, exc=TypeError)
    if not (isinstance(progress, bool) or callable(progress)):
        fail(fn, "progress", "a bool or a callable(cell, done, total)", progress, exc=TypeError)

    identity = task_identity(task)
    cache = Path(cache_dir) if cache_dir is not None else None
    cells = [(t, s) for s in seed_list for t in techs]
    keys = {(t.label, s): cell_key(identity, t.name, dict(t.params or {}), s) for t, s in cells}
    results: dict[tuple[str, int], dict[str, Any]] = {}
    todo = []
    for t, s in cells:
        p = cache / f"{keys[(t.label, s)]}.json" if cache is not None else None
        if p is not None and p.is_file():
            try:
                r = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                r = None
            if isinstance(r, dict) and r.get("status") == "ok":
                r["cached"] = True
                results[(t.label, s)] = r
                continue
        todo.append((t, s))

    total = len(cells)
    report: Callable[[dict[str, Any], int, int], None] | None
    if callable(progress) and not isinstance(progress, bool):
        report = progress
    else:
        report = _progress_bar(total) if progress and todo else None
    done_count = [len(results)]

    def on_result(cell: dict[str, Any]) -> None:
        k = (cell["technique"], int(cell["seed"]))
        cell["key"] = keys.get(k)
        results[k] = cell
        if cache is not None and cell.get("status") == "ok" and cell["key"]:
            from trainwell.lab.io import atomic_write_json

            atomic_write_json(cache / f"{cell['key']}.json", cell)
        done_count[0] += 1
        if report is not None:
            report(cell, done_count[0], total)

    if todo:
        if backend == "local":
            run_local(task, todo, n_workers, on_result)
        else:
            run_ray(task, todo, ray_address, on_result)

    runs = [results[(t.label, s)] for t, s in cells if (t.label, s) in results]
    ok = [r for r in runs if r.get("status") == "ok"]
    if not ok:
        first = next((r for r in runs if r.get("status") == "error"), None)
        msg = first.get("error_summary", "unknown error") if first else "no cell ran"
        exc: type[Exception] = RuntimeError
        for cls in (TypeError, ValueError):
            if msg.startswith(cls.__name__ + ":"):
                exc = cls
        raise exc(f"compare(): every cell failed; first error: {msg}")
    names = list(ok[0]["metrics"])
    if metric is None:
        metric = "metric" if "metric" in names else names[0]
    elif metric not in names:
        fail(fn, "metric", "a key of evaluate()'s result (" + ", ".join(map(repr, names)) + ")", metric)
    effects = compute_effects(runs, [t.label for t in techs], base.label, metric, higher_is_better, seed_list)
    cfg = dict(config or {})
    cfg.setdefault("techniques", [t.label for t in techs[1:]])
    cfg.setdefault("baseline", base.label)
    cfg.setdefault("seeds", seed_list)
    cfg.setdefault("metric", metric)
    cfg.setdefault("backend", backend)
    return CompareResult(effects=effects, runs=runs, metric=metric, baseline=base.label, seeds=seed_list,
                         techniques=[t.label for t in techs], higher_is_better=higher_is_better, config=cfg,
                         task=identity)
