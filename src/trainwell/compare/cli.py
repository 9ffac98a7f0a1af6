"""``trainwell compare CONFIG.toml``: run a technique × seed grid from a TOML file and write the report.

The config (read with :mod:`tomllib`; nothing in it is evaluated)::

    [task]
    factory = "compare_tiny_task:make_task"   # module:function returning a trainwell.compare.Task
    args = { epochs = 2 }                     # keyword arguments for it (optional)
    path = "."                                # folder put on sys.path, relative to the config (default ".")

    [compare]
    techniques = ["fgm", "flooding:level=0.1,0.3", "rdrop"]
    seeds = 5
    metric = "accuracy"                       # optional: a key of evaluate()'s dict
    higher_is_better = true
    baseline = "baseline"
    backend = "local"                         # or "ray"
    workers = 2                               # optional (default: CPU count); 0 = in this process
    ray_address = "auto"                      # optional, backend = "ray" only
    cache_dir = "reports/compare/cache"       # optional (default: <out>/cache)
    out = "reports/compare"                   # report folder (index.html, results.json, table.md)

Relative ``out`` / ``cache_dir`` are relative to the current directory. Exit codes: 0 success, 1 some cells
failed (the report is written and lists them), 2 a bad config or arguments.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["load_config", "main"]

_TASK_KEYS = {"factory": str, "args": dict, "path": str}
_COMPARE_KEYS: dict[str, type | tuple[type, ...]] = {
    "techniques": list, "seeds": (int, list), "metric": str, "higher_is_better": bool, "baseline": str,
    "backend": str, "workers": int, "ray_address": str, "cache_dir": str, "out": str,
}


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the field."""


def _check_table(d: Any, name: str, keys: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: [{name}] must be a table, got {type(d).__name__}")
    for k, v in d.items():
        if k not in keys:
            raise ConfigError(f"{where}: unknown field {name}.{k} (known: {', '.join(sorted(keys))})")
        t = keys[k]
        if (isinstance(v, bool) and t is int) or not isinstance(v, t):
            want = t.__name__ if isinstance(t, type) else " or ".join(x.__name__ for x in t)
            raise ConfigError(f"{where}: field {name}.{k} must be {want}, got {type(v).__name__} {v!r}")
    return d


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a compare config; returns ``{"task": {...}, "compare": {...}, "_dir": folder}``."""
    import tomllib

    p = Path(path)
    where = str(p)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML: {e}") from None
    for k in raw:
        if k not in ("task", "compare"):
            raise ConfigError(f"{where}: unknown table or field {k!r} (expected [task] and [compare])")
    task = _check_table(raw.get("task"), "task", _TASK_KEYS, where)
    cmp_ = _check_table(raw.get("compare", {}), "compare", _COMPARE_KEYS, where)
    factory = task.get("factory", "")
    mod, _, fn = factory.partition(":")
    if not mod or not fn or not all(part.isidentifier() for part in [*mod.split("."), *fn.split(".")]):
        raise ConfigError(f"{where}: field task.factory must be 'module:function', got {factory!r}")
    techs = cmp_.get("techniques")
    if not techs or not all(isinstance(t, str) for t in techs):
        raise ConfigError(
            f"{where}: field compare.techniques must be a non-empty list of strings, got {techs!r}"
        )
    seeds = cmp_.get("seeds", 5)
    if isinstance(seeds, int) and seeds < 2:
        raise ConfigError(f"{where}: field compare.seeds must be >= 2, got {seeds}")
    return {"task": task, "compare": cmp_, "_dir": p.resolve().parent, "_raw": raw}


def _build_task(cfg: dict[str, Any]) -> Any:
    from trainwell.compare import Task

    t = cfg["task"]
    folder = (cfg["_dir"] / t.get("path", ".")).resolve()
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    mod_name, _, fn_name = t["factory"].partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"field task.factory: cannot import module {mod_name!r} (searched {folder} and "
                          f"sys.path): {e}") from None
    for part in fn_name.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"field task.factory: module {mod_name!r} has no {fn_name!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"field task.factory: {t['factory']!r} is not callable")
    task = obj(**t.get("args", {}))
    if not isinstance(task, Task):
        raise ConfigError(f"field task.factory: {t['factory']!r} must return a trainwell.compare.Task, "
                          f"got {type(task).__name__}")
    if task.name is None:  # a stable cache identity: the factory and its arguments
        task.name = f"{t['factory']}({json.dumps(t.get('args', {}), sort_keys=True)})"
    return task


def _print_table(result: Any, console: Any) -> None:
    if console is None:
        print(result.to_markdown())
        return
    from rich.table import Table

    def f(x: float, spec: str) -> str:
        return "—" if x != x else format(x, spec)

    m, sd, n = result.baseline_stats()
    table = Table(title=f"{result.metric}: baseline {result.baseline} {m:.4f} ± {sd:.4f} ({n} seeds)")
    for col in ("technique", "mean", "Δ", "95% CI", "p", "p (Holm)", "verdict", "time ×", "memory ×"):
        table.add_column(col)
    colors = {"helps": "green", "hurts": "red"}
    for e in result.effects:
        c = colors.get(e["verdict"], "")
        table.add_row(e["technique"], f(e["mean"], ".4f"), f(e["diff"], "+.4f"),
                      f"[{f(e['ci_low'], '+.4f')}, {f(e['ci_high'], '+.4f')}]", f(e["p_value"], ".3f"),
                      f(e["p_adjusted"], ".3f"), f"[{c}]{e['verdict']}[/{c}]" if c else e["verdict"],
                      f(e["time_ratio"], ".2f"), f(e["peak_memory_ratio"], ".2f"))
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``trainwell compare`` console command.

    Usage: ``trainwell compare CONFIG.toml [--out DIR] [--seeds N] [--workers N] [--backend B]
    [--no-progress]``.
    """
    p = argparse.ArgumentParser(prog="trainwell compare",
                                description="Compare training techniques on your task: a technique × seed "
                                "grid with paired bootstrap CIs, cost ratios and an HTML report.")
    p.add_argument("config", type=Path, help="the TOML config (see docs/compare.md)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: compare.out or "
                   "reports/compare)")
    p.add_argument("--seeds", type=int, default=None, help="override compare.seeds")
    p.add_argument("--workers", type=int, default=None, help="override compare.workers (0: this process)")
    p.add_argument("--backend", choices=("local", "ray"), default=None, help="override compare.backend")
    p.add_argument("--no-cache", action="store_true", help="recompute every cell (no cache folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    try:
        cfg = load_config(args.config)
        c = dict(cfg["compare"])
        for k in ("seeds", "workers", "backend"):
            if getattr(args, k) is not None:
                c[k] = getattr(args, k)
        out = args.out or Path(c.get("out", "reports/compare"))
        cache = None if args.no_cache else Path(c.get("cache_dir", str(out / "cache")))
        task = _build_task(cfg)
    except ConfigError as e:
        print(f"trainwell compare: {e}", file=sys.stderr)
        return 2

    from trainwell.compare import compare
    from trainwell.lab.io import atomic_write_json, atomic_write_text

    console: Any = None
    try:
        from rich.console import Console

        console = Console() if sys.stdout.isatty() else Console(width=150)
    except ImportError:  # pragma: no cover - rich is optional
        console = None
    show = not args.no_progress
    t0 = time.perf_counter()
    bar: Any = None

    def progress(cell: dict[str, Any], done: int, total: int) -> None:
        nonlocal bar
        if not show:
            return
        status = cell["status"] + ("" if cell["status"] == "ok" else f" ({cell.get('error_summary', '')})")
        line = f"[{done}/{total}] {cell['technique']} seed {cell['seed']}: {status}"
        if console is not None and console.is_terminal:
            from rich.progress import Progress

            if bar is None:
                bar = Progress(console=console, transient=True)
                bar.start()
                bar.add_task("compare", total=total)
            bar.update(0, completed=done, description=line[:60])
            if done == total:
                bar.stop()
        else:
            print(line, file=sys.stderr, flush=True)

    reproduce = {k: v for k, v in cfg["_raw"].items()}
    try:
        result = compare(task, c["techniques"], seeds=c.get("seeds", 5), metric=c.get("metric"),
                         baseline=c.get("baseline", "baseline"), backend=c.get("backend", "local"),
                         workers=c.get("workers"), cache_dir=cache, ray_address=c.get("ray_address") or None,
                         progress=progress, higher_is_better=c.get("higher_is_better", True),
                         config=reproduce)
    except (ValueError, TypeError, ImportError) as e:
        if bar is not None:
            bar.stop()
        print(f"trainwell compare: {e}", file=sys.stderr)
        return 2
    if bar is not None:
        bar.stop()
    out.mkdir(parents=True, exist_ok=True)
    result.save_html(out / "index.html")
    atomic_write_json(out / "results.json", result.to_json())
    atomic_write_text(out / "table.md", result.to_markdown())
    _print_table(result, console)
    print(f"\n{len(result.runs)} cells in {time.perf_counter() - t0:.1f} s; report: {out / 'index.html'}")
    if result.errors:
        print(f"trainwell compare: {len(result.errors)} cell(s) failed (see the report)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
