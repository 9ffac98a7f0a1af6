"""Runs lab experiments: seeds, on-disk cell cache (resume), aggregation, results.json, table, plots."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from trainwell.lab.base import MODES, Experiment, MethodStats, RunContext, SeedResult, seed_everything
from trainwell.lab.io import atomic_write_json, atomic_write_text, read_json

__all__ = ["aggregate", "run_experiment", "run_suite"]

SEED_BASE = 1234


def _progress_factory(enabled: bool) -> Any:
    if not enabled:
        return lambda it, **kw: it
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the lab extra
        return lambda it, **kw: it

    def wrap(it: Iterable[Any], desc: str = "", total: int | None = None, **kw: Any) -> Any:
        return tqdm(it, desc=desc, total=total, leave=False, dynamic_ncols=True, file=sys.stderr, **kw)

    return wrap


def aggregate(exp: Experiment, cells: Sequence[SeedResult], mode: str, runtime_s: float) -> dict[str, Any]:
    """Build the results.json object (schema: experiment, metric, results, claim, claim_holds, ...)."""
    methods = list(exp.methods) + [m for c in cells for m in c.values if m not in exp.methods]
    methods = list(dict.fromkeys(methods))
    stats = {m: MethodStats([c.values[m] for c in cells if m in c.values]) for m in methods}
    stats = {m: s for m, s in stats.items() if s.values}
    secondary: dict[str, dict[str, Any]] = {}
    for c in cells:
        for metric, per_method in c.secondary.items():
            for m, v in per_method.items():
                secondary.setdefault(metric, {}).setdefault(m, []).append(float(v))
    holds = bool(exp.judge(stats))
    return {
        "experiment": exp.name,
        "title": exp.title,
        "metric": exp.metric,
        "higher_is_better": exp.higher_is_better,
        "results": {m: s.to_json() for m, s in stats.items()},
        "secondary": {k: {m: MethodStats(v).to_json() for m, v in d.items()} for k, d in secondary.items()},
        "claim": exp.claim,
        "claim_holds": holds,
        "reported": exp.reported,
        "source": exp.source,
        "mode": mode,
        "seeds": len(cells),
        "runtime_s": round(runtime_s, 2),
        "info": [c.info for c in cells],
    }


def _table_md(res: dict[str, Any]) -> str:
    lines = [f"# {res['title']} (`{res['experiment']}`, {res['mode']} mode, {res['seeds']} seeds)", ""]
    lines += [f"Metric: **{res['metric']}** (mean ± std over seeds).", ""]
    sec_names = list(res.get("secondary", {}))
    header = "| method | " + res["metric"] + " | " + " | ".join(sec_names) + (" |" if sec_names else "") + " per-seed |"
    lines += [header.replace("|  |", "|"), "|" + "---|" * (3 + len(sec_names))]
    for m, s in res["results"].items():
        sec = [
            f"{res['secondary'][k][m]['mean']:.4f} ± {res['secondary'][k][m]['std']:.4f}"
            if m in res["secondary"][k] else "—"
            for k in sec_names
        ]
        vals = ", ".join(f"{v:.4f}" for v in s["values"])
        lines.append(f"| {m} | {s['mean']:.4f} ± {s['std']:.4f} | " + "".join(x + " | " for x in sec) + f"{vals} |")
    lines += ["", f"Claim: {res['claim']}", "", f"**Claim holds on this run: {'yes' if res['claim_holds'] else 'no'}**"]
    if res.get("reported"):
        lines += ["", f"Reported by the source: {res['reported']}"]
    if res.get("source"):
        lines += ["", f"Source: {res['source']}"]
    return "\n".join(lines) + "\n"


def _default_plots(res: dict[str, Any], cells: Sequence[SeedResult], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    paths: list[Path] = []
    names = list(res["results"])
    means = [res["results"][m]["mean"] for m in names]
    stds = [res["results"][m]["std"] for m in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 1.5), 3.6))
    ax.bar(range(len(names)), means, yerr=stds, capsize=4, color="#4c78a8")
    for i, m in enumerate(names):
        vals = res["results"][m]["values"]
        ax.scatter([i] * len(vals), vals, color="black", s=8, zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel(res["metric"])
    lo = min(min(res["results"][m]["values"]) for m in names)
    hi = max(max(res["results"][m]["values"]) for m in names)
    pad = max(1e-3, 0.15 * (hi - lo))
    ax.set_ylim(lo - pad - max(stds, default=0), hi + pad + max(stds, default=0))
    ax.set_title(res["title"], fontsize=10)
    fig.tight_layout()
    p = out_dir / "metric.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    series = sorted({k for c in cells for k in c.curves})
    if series:
        groups: dict[str, list[str]] = {}
        for s in series:
            panel = s.split("/", 1)[1] if "/" in s else "curve"
            groups.setdefault(panel, []).append(s)
        fig, axes = plt.subplots(1, len(groups), figsize=(5.0 * len(groups), 3.6), squeeze=False)
        for ax, (panel, keys) in zip(axes[0], groups.items()):
            for k in keys:
                arrs = [np.asarray(c.curves[k], dtype=float) for c in cells if k in c.curves]
                n = min(len(a) for a in arrs)
                arr = np.stack([a[:n] for a in arrs])
                mu = arr.mean(0)
                ax.plot(mu, label=k.split("/", 1)[0])
                if arr.shape[0] > 1:
                    sd = arr.std(0)
                    ax.fill_between(np.arange(n), mu - sd, mu + sd, alpha=0.2)
            ax.set_title(panel, fontsize=10)
            ax.legend(fontsize=7)
        fig.tight_layout()
        p = out_dir / "curves.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def run_experiment(
    exp: Experiment,
    *,
    out: Path,
    mode: str = "quick",
    seeds: int | None = None,
    force: bool = False,
    progress: bool = True,
    log: Any = print,
) -> dict[str, Any]:
    """Run (or resume) one experiment and write its report folder; returns the results.json object."""
    if mode not in MODES:
        raise ValueError(f"run_experiment(): argument 'mode' must be one of {MODES}, got {mode!r}")
    n = seeds if seeds is not None else exp.seeds.get(mode, 3)
    if n < 1:
        raise ValueError(f"run_experiment(): argument 'seeds' must be >= 1, got {n}")
    exp_dir = Path(out) / exp.name
    cell_dir = exp_dir / "cells"
    prog = _progress_factory(progress)
    cells: list[SeedResult] = []
    t0 = time.perf_counter()
    for k in range(n):
        seed = SEED_BASE + k
        cell_path = cell_dir / f"{mode}-seed{seed}.json"
        if cell_path.exists() and not force:
            try:
                cells.append(SeedResult.from_json(read_json(cell_path)))
                log(f"  [{exp.name}] seed {seed}: cached")
                continue
            except (ValueError, KeyError):
                pass  # a corrupt cell is recomputed
        seed_everything(seed)
        ctx = RunContext(seed=seed, mode=mode, out_dir=exp_dir, progress=prog)
        ts = time.perf_counter()
        cell = exp.run_seed(ctx)
        atomic_write_json(cell_path, cell.to_json())
        cells.append(cell)
        summary = ", ".join(f"{m}={v:.4f}" for m, v in cell.values.items())
        log(f"  [{exp.name}] seed {seed} ({time.perf_counter() - ts:.1f}s): {summary}")
    res = aggregate(exp, cells, mode, time.perf_counter() - t0)
    atomic_write_json(exp_dir / "results.json", res)
    atomic_write_text(exp_dir / "table.md", _table_md(res))
    plots = (exp.plot or _default_plots)(res, cells, exp_dir)
    if exp.plot is not None:
        plots = list(plots) + _default_plots(res, cells, exp_dir)[:1]
    res["plots"] = sorted({p.name for p in plots})
    atomic_write_json(exp_dir / "results.json", res)
    return res


def run_suite(
    experiments: Sequence[Experiment],
    *,
    out: Path,
    mode: str = "quick",
    seeds: int | None = None,
    force: bool = False,
    progress: bool = True,
    log: Any = print,
) -> list[dict[str, Any]]:
    from trainwell.lab.report import write_index

    results = []
    for exp in experiments:
        log(f"== {exp.name}: {exp.title} ({mode})")
        results.append(run_experiment(exp, out=out, mode=mode, seeds=seeds, force=force, progress=progress, log=log))
    # The index lists every experiment with results in the folder, not only this run's.
    write_index(Path(out))
    return results
