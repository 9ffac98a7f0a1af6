"""Where the grid's cells run: in this process, a local process pool, or Ray tasks on a cluster.

Every backend takes the same list of cells ``(task, technique, seed)`` and calls ``on_result(cell_dict)``
as each cell finishes (in completion order), so results stream back and are cached one by one.

* ``local`` — ``workers >= 1``: a ``concurrent.futures.ProcessPoolExecutor`` with the ``spawn`` start
  method (safe with torch's thread pools and CUDA); the task is pickled once per cell, so its functions
  must be importable (module level). ``workers = 0`` runs the cells one after another in this process
  (any task, no pickling). Each worker runs torch with ``cpu_count // workers`` threads.
* ``ray`` — one Ray task per cell (``num_cpus=1``, one torch thread) on the cluster at ``ray_address``
  (``None``: a running local instance, else a new local one); ``ray.put`` ships the task once;
  ``ray.wait`` streams results back. Ray pickles with cloudpickle, so lambdas work there.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from trainwell._validation import fail
from trainwell.compare.task import Task, run_cell

__all__ = ["BACKENDS", "WorkerDied", "run_local", "run_ray"]

BACKENDS = ("local", "ray")
Cell = tuple[Any, int]  # (technique, seed)
OnResult = Callable[[dict[str, Any]], None]


class WorkerDied(RuntimeError):
    """A worker process died mid-cell (killed, out of memory, ``os._exit``); finished cells are kept."""


def cpu_count() -> int:
    """CPUs this process may use: its affinity set, capped by a cgroup v2 CPU quota when one is set.

    Containers often show every host core in ``os.cpu_count()`` while a quota allows two; one thread per
    visible core then oversubscribes the quota many times over.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        n = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return n


def _init_worker() -> None:
    # Ctrl-C goes to the parent, which shuts the pool down; workers must not die half-way through a write.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_local(task: Task, cells: Sequence[Cell], workers: int, on_result: OnResult,
              threads: int | None = None) -> None:
    """Run ``cells`` on ``workers`` processes (0: in this process); ``on_result`` gets each cell's dict."""
    if threads is None:
        threads = max(1, cpu_count() // max(1, workers))
    if workers == 0:
        for tech, seed in cells:
            on_result(run_cell(task, tech, seed, threads=threads))
        return
    try:
        pickle.dumps((task, [t for t, _ in cells]))
    except Exception as e:
        fail(
            "compare",
            "task",
            "picklable for backend='local' with workers >= 1 (define make_model, evaluate and loss_fn at "
            "module level), or run with workers=0 or backend='ray'",
            f"{type(e).__name__}: {e}",
            exc=TypeError,
        )
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker)
    pending: set[Future[dict[str, Any]]] = set()
    try:
        pending = {pool.submit(run_cell, task, tech, seed, threads) for tech, seed in cells}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                try:
                    on_result(f.result())
                except BrokenProcessPool:
                    raise WorkerDied("compare(): a worker process died (killed or out of memory); the cells "
                                     "finished so far are cached, re-run to resume the rest") from None
    except BaseException:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _ray_cell(
    paths: list[str], task_blob: bytes, tech_blob: bytes, seed: int, threads: int
) -> dict[str, Any]:
    """A Ray task: extend ``sys.path`` like the driver's (folders that exist here), then run the cell."""
    for p in paths:
        if p not in sys.path and os.path.isdir(p):
            sys.path.append(p)
    from ray import cloudpickle

    return run_cell(cloudpickle.loads(task_blob), cloudpickle.loads(tech_blob), seed, threads)


def run_ray(task: Task, cells: Sequence[Cell], address: str | None, on_result: OnResult,
            threads: int = 1) -> None:
    """Run each cell as a Ray task (``num_cpus=1``) and stream the results back with ``ray.wait``."""
    try:
        import ray
    except ImportError:
        fail("compare", "backend", "'local' unless Ray is installed (pip install 'trainwell[ray]')", "ray",
             exc=ImportError)
    if not ray.is_initialized():
        kw: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
        if address:
            kw["address"] = address
        ray.init(**kw)
    from ray import cloudpickle

    remote = ray.remote(num_cpus=1, max_retries=0)(_ray_cell)
    # the task travels as bytes and is unpickled inside the worker after the driver's sys.path entries are
    # added there, so modules found through a path added at run time (the CLI's config folder) import
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    task_ref = ray.put(cloudpickle.dumps(task))
    refs = {remote.remote(paths, task_ref, cloudpickle.dumps(tech), seed, threads): (tech, seed)
            for tech, seed in cells}
    try:
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for r in done:
                tech, seed = refs.pop(r)
                try:
                    res = ray.get(r)
                except Exception as e:  # the Ray worker itself died: record, go on
                    res = {
                        "technique": tech.label,
                        "name": tech.name,
                        "seed": int(seed),
                        "status": "error",
                        "error": f"{type(e).__name__}: {e}",
                        "error_summary": f"Ray task failed: {e}"[:500],
                        "params": {k: repr(v) for k, v in sorted(dict(tech.params or {}).items())},
                    }
                on_result(res)
    except BaseException:
        for r in refs:
            ray.cancel(r, force=True)
        raise
