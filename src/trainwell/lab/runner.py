"""Runs lab experiments: seeds, on-disk cell cache (resume), aggregation, results.json, table, plots.

Layout of one experiment's folder ``<out>/<name>/``::

    cells/<mode>-seed<seed>.json   one finished (experiment, mode, seed) cell; a re-run skips it
    results.json                   aggregate: experiment, metric, results{method: mean/std/values},
                                   claim, claim_holds (+ title, secondary, mode, seeds, runtime_s, ...)
    table.md                       the same as a Markdown table
    metric.png, curves.png, ...    plots (matplotlib, Agg backend)

Every file is written atomically (temp file + rename), so an interrupted run leaves either the old
file or the new one, never half of one, and the next run resumes from the cells already on disk.

Under ``torchrun --nproc_per_node=N`` (``RANK``/``WORLD_SIZE`` set) the runner joins a gloo process
group. For ordinary experiments the pending seeds are dealt out to the ranks (seed-level data
parallelism: every seed's numbers are identical to a single-process run); experiments declared with
``Experiment(ddp=True)`` instead run every seed on all ranks together. Only rank 0 writes files or logs.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainwell.lab.base import MODES, Experiment, MethodStats, RunContext, SeedResult, seed_everything
from trainwell.lab.io import atomic_write_json, atomic_write_text, read_json
from trainwell.lab.report import fmt_stats as _fmt
from trainwell.lab.report import fmt_time, seeds_phrase, verdict_word

__all__ = ["DistInfo", "aggregate", "dist_info", "finish_distributed", "run_experiment", "run_suite",
           "setup_distributed"]

SEED_BASE = 1234
_CELL_FORMAT = 1


# --------------------------------------------------------------------------------------------------
# torchrun support


@dataclass(frozen=True)
class DistInfo:
    """Rank and world size of this process (``world_size == 1`` when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """Rank/world size from an initialised ``torch.distributed`` group, else a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size())
    return DistInfo()


def setup_distributed() -> tuple[DistInfo, bool]:
    """Join the gloo group that ``torchrun`` describes in the environment, if any.

    Returns ``(info, created)``; ``created`` tells the caller to tear the group down with
    :func:`finish_distributed`. Without ``WORLD_SIZE > 1`` in the environment nothing happens.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist_info(), False
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistInfo(), False
    if not dist.is_available():  # pragma: no cover - every CPU build has gloo
        raise RuntimeError(
            "trainwell lab: WORLD_SIZE > 1 but torch.distributed is not available in this build"
        )
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"trainwell lab: WORLD_SIZE={world} but {', '.join(missing)} not set; launch with "
            "`torchrun --nproc_per_node=N -m trainwell.lab.cli lab ...` or unset WORLD_SIZE"
        )
    dist.init_process_group(backend="gloo")
    return dist_info(), True


def finish_distributed(created: bool) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if not created:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _broadcast(obj: Any, info: DistInfo) -> Any:
    if not info.active:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _all_gather(obj: Any, info: DistInfo) -> list[Any]:
    if not info.active:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


# --------------------------------------------------------------------------------------------------
# progress and aggregation


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
    """Build the results.json object.

    Schema (keys read by outside checks): ``experiment`` (str), ``metric`` (str), ``results``
    (method -> ``{"mean", "std", "values"}``; std is the sample std, 0 for one seed), ``claim`` (str),
    ``claim_holds`` (bool). Extra keys: title, higher_is_better, secondary (metric -> method -> stats),
    reported, source, mode, seeds, seed_list, runtime_s, full_runtime, info (one dict per seed), plots,
    and judge_error (only when ``exp.judge`` raised; ``claim_holds`` is then False).
    """
    methods = list(exp.methods) + [m for c in cells for m in c.values if m not in exp.methods]
    methods = list(dict.fromkeys(methods))
    stats = {m: MethodStats([float(c.values[m]) for c in cells if m in c.values]) for m in methods}
    stats = {m: s for m, s in stats.items() if s.values}
    secondary: dict[str, dict[str, list[float]]] = {}
    for c in cells:
        for metric, per_method in c.secondary.items():
            for m, v in per_method.items():
                secondary.setdefault(metric, {}).setdefault(m, []).append(float(v))
    judge_error = None
    try:
        holds = bool(exp.judge(stats))
    except Exception as e:  # a judge that cannot decide (e.g. a method missing) must not lose the numbers
        holds, judge_error = False, f"{type(e).__name__}: {e}"
    res = {
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
        "full_runtime": exp.full_runtime,
        "info": [c.info for c in cells],
    }
    # Tiny mode proves the pipeline only: the judge runs (schema), but reports say "not judged".
    res["judged"] = mode != "tiny"
    if judge_error is not None:
        res["judge_error"] = judge_error
    return res


def _table_md(res: dict[str, Any]) -> str:
    lines = [f"# {res['title']} (`{res['experiment']}`, {res['mode']} mode, {seeds_phrase(res['seeds'])})",
             ""]
    arrow = "higher is better" if res.get("higher_is_better", True) else "lower is better"
    spread = "mean ± std over seeds" if res["seeds"] > 1 else "one seed: no spread"
    lines += [f"Metric: **{res['metric']}** ({arrow}; {spread}).", ""]
    sec_names = list(res.get("secondary", {}))
    from trainwell.lab.report import paired_ci_cell, paired_ci_header

    cols = ["method", res["metric"], paired_ci_header(res), *sec_names, "per seed"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for m, s in res["results"].items():
        sec = [_fmt(res["secondary"][k][m]) if m in res["secondary"][k] else "—" for k in sec_names]
        vals = ", ".join(f"{v:.4f}" for v in s["values"])
        lines.append("| " + " | ".join([m, _fmt(s), paired_ci_cell(res, m), *sec, vals]) + " |")
    lines += ["", f"Claim: {res['claim']}", "",
              f"**Claim holds on this run: {verdict_word(res)}**"]
    if res.get("reported"):
        lines += ["", f"Reported by the source: {res['reported']}"]
    if res.get("source"):
        lines += ["", f"Source: {res['source']}"]
    computed = res.get("cells_computed")
    done = (
        f" ({computed} of {res['seeds']} cells computed, the rest read from the cache)"
        if computed is not None
        else ""
    )
    if res.get("compute_s") is not None:
        lines += ["", f"Compute time of the {seeds_phrase(res['seeds'])}: {fmt_time(res['compute_s'])}."]
    lines += ["", f"Wall time of this run: {fmt_time(res.get('runtime_s', 0))}{done}."]
    if res.get("full_runtime"):
        lines += ["", f"Full mode (`--full`) runtime: {res['full_runtime']}."]
    return "\n".join(lines) + "\n"


def _default_plots(res: dict[str, Any], cells: Sequence[SeedResult], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    paths: list[Path] = []
    names = list(res["results"])
    if not names:
        return paths
    means = [res["results"][m]["mean"] for m in names]
    stds = [res["results"][m]["std"] for m in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 1.5), 3.8))
    # Mean ± std as a point range on an axis zoomed to the data (bars would imply a zero baseline that a
    # zoomed axis cuts off); the first method's mean is the reference line.
    ax.axhline(means[0], color="grey", lw=0.8, ls="--", zorder=1)
    ax.errorbar(range(len(names)), means, yerr=stds, fmt="o", color="#4c78a8", capsize=4, zorder=2)
    for i, m in enumerate(names):
        vals = res["results"][m]["values"]
        ax.scatter([i + 0.12] * len(vals), vals, color="black", s=8, zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_xlabel("method (dot: one seed; marker: mean ± std; dashed: first method's mean)", fontsize=8)
    ax.set_ylabel(res["metric"])
    finite = [v for m in names for v in res["results"][m]["values"] if math.isfinite(v)]
    if finite:
        lo, hi = min(finite), max(finite)
        spread = max((s for s in stds if math.isfinite(s)), default=0.0)
        pad = max(1e-3, 0.15 * (hi - lo)) + spread
        ax.set_ylim(lo - pad, hi + pad)
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(res["title"], 60)), fontsize=9)  # long titles wrap, not clip
    fig.tight_layout()
    p = out_dir / "metric.png"
    _save_fig(fig, p)
    plt.close(fig)
    paths.append(p)

    series = sorted({k for c in cells for k in c.curves})
    if series:
        groups: dict[str, list[str]] = {}
        for s in series:
            panel = s.split("/", 1)[1] if "/" in s else "curve"
            groups.setdefault(panel, []).append(s)
        # An experiment names its x axis with info["curve_xlabel"]: one label, or a dict panel -> label.
        given = next((c.info["curve_xlabel"] for c in cells if c.info.get("curve_xlabel")), None)
        fallback = "recorded point (epoch or step, as the experiment logs it)"
        fig, axes = plt.subplots(1, len(groups), figsize=(5.0 * len(groups), 3.6), squeeze=False)
        for ax, (panel, keys) in zip(axes[0], groups.items()):
            for k in keys:
                arrs = [np.asarray(c.curves[k], dtype=float) for c in cells if k in c.curves]
                n = min(len(a) for a in arrs)
                if n == 0:
                    continue
                arr = np.stack([a[:n] for a in arrs])
                mu = arr.mean(0)
                ax.plot(mu, label=k.split("/", 1)[0])
                if arr.shape[0] > 1:
                    sd = arr.std(0)
                    ax.fill_between(np.arange(n), mu - sd, mu + sd, alpha=0.2)
            ax.set_title(panel, fontsize=10)
            label = given.get(panel, fallback) if isinstance(given, dict) else (given or fallback)
            ax.set_xlabel(str(label), fontsize=8)
            ax.set_ylabel(panel, fontsize=8)
            ax.legend(fontsize=7)
        fig.tight_layout()
        p = out_dir / "curves.png"
        _save_fig(fig, p)
        plt.close(fig)
        paths.append(p)
    return paths


def _save_fig(fig: Any, path: Path) -> None:
    """Save a figure atomically (render to memory, then temp file + rename)."""
    import io

    from trainwell.lab.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())


def _plots(exp: Experiment, res: dict[str, Any], cells: Sequence[SeedResult], exp_dir: Path,
           log: Callable[..., Any]) -> list[str]:
    paths: list[Path] = []
    try:
        paths += _default_plots(res, cells, exp_dir)
    except Exception as e:  # a broken plot must not lose the numbers already computed
        log(f"  [{exp.name}] warning: default plots failed: {type(e).__name__}: {e}")
    if exp.plot is not None:
        try:
            paths += list(exp.plot(res, list(cells), exp_dir))
        except Exception as e:
            log(f"  [{exp.name}] warning: custom plot failed: {type(e).__name__}: {e}")
    return sorted({Path(p).name for p in paths})


# --------------------------------------------------------------------------------------------------
# cells


def _cell_path(exp_dir: Path, mode: str, seed: int) -> Path:
    return exp_dir / "cells" / f"{mode}-seed{seed}.json"


def _load_cell(path: Path, exp: Experiment, mode: str, seed: int) -> SeedResult | None:
    """A cached cell, or None if missing, corrupt or written by another version of the experiment."""
    found = _load_cell_timed(path, exp, mode, seed)
    return None if found is None else found[0]


def _load_cell_timed(path: Path, exp: Experiment, mode: str, seed: int) -> tuple[SeedResult, float] | None:
    """A cached cell and the seconds it took when it was computed (NaN if not recorded)."""
    if not path.exists():
        return None
    try:
        d = read_json(path)
        meta = d.get("meta")
        if meta is not None and (meta.get("version") != exp.version or meta.get("mode") != mode
                                 or meta.get("seed") != seed or meta.get("experiment") != exp.name):
            return None
        cell = SeedResult.from_json(d)
        secs = float(meta.get("seconds", math.nan)) if isinstance(meta, dict) else math.nan
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return cell, secs


def _write_cell(path: Path, cell: SeedResult, exp: Experiment, mode: str, seed: int, seconds: float) -> None:
    meta = {"experiment": exp.name, "mode": mode, "seed": seed, "version": exp.version,
            "format": _CELL_FORMAT, "seconds": round(seconds, 3)}
    atomic_write_json(path, {"meta": meta, **cell.to_json()})


def _run_cell(exp: Experiment, seed: int, mode: str, exp_dir: Path, prog: Any, info: DistInfo,
              log: Callable[..., Any], threads: int | None = None) -> tuple[SeedResult, float]:
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_cell_inner(exp, seed, mode, exp_dir, prog, info, log)
    finally:
        torch.set_num_threads(before)


def _run_cell_inner(exp: Experiment, seed: int, mode: str, exp_dir: Path, prog: Any, info: DistInfo,
                    log: Callable[..., Any]) -> tuple[SeedResult, float]:
    seed_everything(seed)
    # A seed-parallel cell trains alone (world_size 1), but keeps its real rank so that only rank 0
    # writes artefacts (ctx.is_main).
    ws = info.world_size if exp.ddp else 1
    ctx = RunContext(
        seed=seed, mode=mode, out_dir=exp_dir, progress=prog, rank=info.rank, world_size=ws, log=log
    )
    ts, cs = time.perf_counter(), time.process_time()
    cell = exp.run_seed(ctx)
    if not isinstance(cell, SeedResult):
        raise TypeError(
            f"experiment {exp.name!r}: run_seed() must return a SeedResult, got {type(cell).__name__}"
        )
    # CPU seconds are kept next to wall seconds: on a shared machine they are the steadier measure.
    cell.info.setdefault("cpu_seconds", round(time.process_time() - cs, 2))
    return cell, time.perf_counter() - ts


# --------------------------------------------------------------------------------------------------
# public entry points


def run_experiment(
    exp: Experiment,
    *,
    out: Path,
    mode: str = "quick",
    seeds: int | None = None,
    force: bool = False,
    progress: bool = True,
    log: Any = print,
    plots: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run (or resume) one experiment and write its report folder; returns the results.json object.

    Seeds are ``SEED_BASE + k`` for ``k < seeds``; each finished seed is cached under ``cells/`` and
    skipped next time unless ``force``. ``threads`` (torch intra-op threads during the cells) overrides
    ``exp.threads``. Under an initialised process group (torchrun), every rank
    must call this with the same arguments; only rank 0 writes, and every rank returns the result.
    """
    if mode not in MODES:
        raise ValueError(f"run_experiment(): argument 'mode' must be one of {MODES}, got {mode!r}")
    n = seeds if seeds is not None else exp.seeds.get(mode, 3)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"run_experiment(): argument 'seeds' must be an int >= 1, got {n!r}")
    info = dist_info()
    say: Callable[..., Any] = log if info.is_main else (lambda *a, **kw: None)
    exp_dir = Path(out) / exp.name
    prog = _progress_factory(progress and info.is_main)
    seed_list = [SEED_BASE + k for k in range(n)]
    t0 = time.perf_counter()

    # Rank 0 reads the cache and tells everyone which seeds still need work.
    cached: dict[int, tuple[dict[str, Any], float]] = {}
    if info.is_main and not force:
        for seed in seed_list:
            found = _load_cell_timed(_cell_path(exp_dir, mode, seed), exp, mode, seed)
            if found is not None:
                cached[seed] = (found[0].to_json(), found[1])
    cached = _broadcast(cached, info)
    cells: dict[int, SeedResult] = {s: SeedResult.from_json(d) for s, (d, _) in cached.items()}
    cell_seconds: dict[int, float] = {s: secs for s, (_, secs) in cached.items()}
    for seed in cells:
        say(f"  [{exp.name}] seed {seed}: cached")
    pending = [s for s in seed_list if s not in cells]

    if exp.ddp or not info.active:
        rounds = [[s] * info.world_size for s in pending]  # every rank runs the same seed
    else:
        w = info.world_size
        rounds = [pending[i:i + w] + [-1] * (w - len(pending[i:i + w])) for i in range(0, len(pending), w)]
    for assignment in rounds:
        my_seed = assignment[info.rank] if info.active else assignment[0]
        outcome: tuple[str, Any, float]
        if my_seed < 0:
            outcome = ("idle", None, 0.0)
        else:
            try:
                n_threads = threads if threads is not None else exp.threads
                cell, secs = _run_cell(exp, my_seed, mode, exp_dir, prog, info, say, n_threads)
                outcome = ("ok", cell.to_json(), secs)
            except Exception as e:
                if not info.active:
                    raise
                outcome = ("error", f"rank {info.rank}, seed {my_seed}: {type(e).__name__}: {e}\n"
                           + traceback.format_exc(), 0.0)
        gathered = _all_gather(outcome, info)
        errors = [str(o[1]) for o in gathered if o[0] == "error"]
        if errors:
            raise RuntimeError(f"experiment {exp.name!r} failed:\n" + "\n".join(errors))
        # With ddp=True all ranks ran the same seed; rank 0's copy is the one kept.
        done = gathered[:1] if (exp.ddp or not info.active) else gathered
        for seed, (status, payload, secs) in zip(assignment, done):
            if status != "ok":
                continue
            cell = SeedResult.from_json(payload)
            cells[seed] = cell
            cell_seconds[seed] = secs
            if info.is_main:
                _write_cell(_cell_path(exp_dir, mode, seed), cell, exp, mode, seed, secs)
            summary = ", ".join(f"{m}={v:.4f}" for m, v in cell.values.items())
            say(f"  [{exp.name}] seed {seed} ({secs:.1f}s): {summary}")

    ordered = [cells[s] for s in seed_list]
    res: dict[str, Any] | None = None
    if info.is_main:
        res = aggregate(exp, ordered, mode, time.perf_counter() - t0)
        res["seed_list"] = seed_list
        res["cells_computed"] = len(pending)
        # The compute time of every cell, cached ones included (what the numbers cost, not this run).
        known = [cell_seconds[s] for s in seed_list if math.isfinite(cell_seconds.get(s, math.nan))]
        res["compute_s"] = round(sum(known), 2) if len(known) == len(seed_list) else None
        res["plots"] = _plots(exp, res, ordered, exp_dir, say) if plots else []
        atomic_write_json(exp_dir / "results.json", res)
        atomic_write_text(exp_dir / "table.md", _table_md(res))
    res = _broadcast(res, info)
    assert res is not None
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
    plots: bool = True,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Run several experiments, then (re)write ``<out>/index.html`` and ``<out>/results.md``.

    An experiment whose data or pretrained model is not installed (it raises
    :class:`~trainwell.lab.datasets.corpora.CorpusUnavailable`) is skipped with the message saying how
    to get it; the others still run.
    """
    from trainwell.lab.report import write_index

    info = dist_info()
    say: Callable[..., Any] = log if info.is_main else (lambda *a, **kw: None)
    results = []
    from trainwell.lab.datasets.corpora import CorpusUnavailable

    for exp in experiments:
        say(f"== {exp.name}: {exp.title} ({mode} mode)")
        try:
            res = run_experiment(
                exp,
                out=out,
                mode=mode,
                seeds=seeds,
                force=force,
                progress=progress,
                log=log,
                plots=plots,
                threads=threads,
            )
            results.append(res)
        except CorpusUnavailable as err:  # data or model package not installed: skip, say how to get it
            say(f"== {exp.name}: SKIPPED ({mode} mode) — {err}")
    # The index lists every experiment with results in the folder, not only this run's.
    if info.is_main:
        write_index(Path(out))
    return results
