"""``trainwell compare`` overhead and throughput: one cell vs a plain training loop, cells/s with 1 and 2
local workers, local Ray vs the local pool, and a measured 500-cell run that feeds a scaling simulation.

    python benchmarks/compare.py [--quick] [--threads 1]

1. Overhead per cell: ``run_cell`` (seeding, the technique's step, the saved-tensor memory probe on the
   first step, per-step loss bookkeeping, evaluation) vs a hand-written loop doing the same training
   (same model, optimizer, batches, evaluation), timed round-robin. Target ≤ 5%.
2. Throughput: ``compare()`` on a 3-technique × 4-seed grid with ``workers=1`` and ``workers=2`` (spawned
   pool, its start-up included) and on a local Ray instance (``ray.init(num_cpus=2)``, start-up reported
   apart).
3. Scale: 500 cells of a tiny task through local Ray; each cell's own compute time and the driver's
   wall time give the per-cell dispatch overhead. A list-scheduling simulation over the measured cell
   times then predicts the wall time and efficiency on W = 1 … 256 workers
   (``wall ≈ max_worker Σ cell + dispatch·cells/concurrency + start-up``).
"""

from __future__ import annotations

import heapq
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from _harness import environment_line, markdown_table, parse_args, print_target, time_many
from trainwell.compare import Task, compare
from trainwell.compare.task import run_cell
from trainwell.techniques import get_technique


def tiny_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


_G = torch.Generator().manual_seed(0)
TX = torch.randn(128, 16, generator=_G)
TY = (TX[:, :4].argmax(-1)).long()


def tiny_eval(model: nn.Module) -> float:
    return float((model(TX).argmax(-1) == TY).float().mean())


def tiny_task() -> Task:
    """About 10 ms of training per cell: what the 500-cell run stresses is the machinery, not the math."""
    return Task(tiny_model, (TX, TY), tiny_eval, epochs=1, batch_size=32, name="bench-tiny")


def overhead(args: object, repeats: int, warmup: int) -> float:
    from compare_tiny_task import make_model, make_task

    task = make_task(epochs=2)
    base = get_technique("baseline")
    x, y = task.train_data

    def plain() -> float:
        # seeded like run_cell (the CPU generator directly: torch.manual_seed's lazy device seeding costs ms)
        torch.default_generator.manual_seed(0)
        model = make_model(0)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        g = torch.Generator().manual_seed(0)
        torch.default_generator.manual_seed(1)
        for _ in range(task.epochs):
            model.train()
            perm = torch.randperm(len(x), generator=g)
            for i in range(0, len(x), task.batch_size):
                idx = perm[i: i + task.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            return float(task.evaluate(model)["accuracy"])

    def cell() -> float:
        return float(run_cell(task, base, 0)["metrics"]["accuracy"])

    assert plain() == cell(), "the plain loop and the cell must train the same model"
    t = time_many({"plain loop": plain, "run_cell (baseline)": cell}, repeats=repeats, warmup=warmup)
    p, c = t["plain loop"], t["run_cell (baseline)"]
    assert not isinstance(p, Exception) and not isinstance(c, Exception)
    steps = task.epochs * -(-task.n_train // task.batch_size)
    print(markdown_table(["loop", "median ms", "IQR ms", "× plain", "steps"], [
        ["plain loop", p.median_ms, p.iqr_ms, "1.00×", steps],
        ["run_cell (baseline)", c.median_ms, c.iqr_ms, f"{c.median_ms / p.median_ms:.3f}×", steps]]))
    return c.median_ms / p.median_ms - 1.0


def throughput(quick: bool) -> None:
    from compare_tiny_task import make_task

    task = make_task(epochs=1)
    techs = ["flooding:level=0.3", "soft_clip", "focal"]
    seeds = 2 if quick else 4
    n = (len(techs) + 1) * seeds
    rows = []
    walls = {}
    pooled = {}
    for w in (1, 2):
        t0 = time.perf_counter()
        r = compare(task, techs, seeds=seeds, workers=w, progress=False)
        walls[w] = time.perf_counter() - t0
        pooled[w] = r
        rows.append([f"local pool, {w} worker{'s' if w > 1 else ''}", n, walls[w], n / walls[w],
                     sum(c["train_seconds"] for c in r.runs)])
    t0 = time.perf_counter()
    r0 = compare(task, techs, seeds=seeds, workers=0, progress=False)
    wall0 = time.perf_counter() - t0
    rows.insert(0, ["in process (workers=0)", n, wall0, n / wall0, sum(c["train_seconds"] for c in r0.runs)])
    try:
        import ray
    except ImportError:
        print("ray not installed: Ray rows skipped")
        ray = None
    if ray is not None:
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        start = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            rr = compare(task, techs, seeds=seeds, backend="ray", progress=False)
            wr = time.perf_counter() - t0
        finally:
            ray.shutdown()
        rows.append([f"local Ray, 2 CPUs (ray.init {start:.1f} s not included)", n, wr, n / wr,
                     sum(c["train_seconds"] for c in rr.runs)])
        # equal torch threads per cell (1) on Ray and the 2-worker pool on 2 cores: the tables must agree
        same = sorted((c["technique"], c["seed"], c["metrics"]) for c in rr.runs) == sorted(
            (c["technique"], c["seed"], c["metrics"]) for c in pooled[2].runs)
        print(f"Ray and 2-worker pool tables identical: {same}")
    print(markdown_table(["backend", "cells", "wall s", "cells/s", "Σ train s"], rows))


def _noop() -> int:
    return 0


def simulate(durations: list[float], workers: int, dispatch: float) -> float:
    """Greedy list scheduling (each free worker takes the next cell) plus a serial dispatch cost per cell."""
    heap = [0.0] * workers
    for d in durations:
        t = heapq.heappop(heap)
        heapq.heappush(heap, t + d + dispatch)
    return max(heap)


def scale(quick: bool) -> None:
    try:
        import ray
    except ImportError:
        print("ray not installed: the scaling run is skipped")
        return
    task = tiny_task()
    seeds = 50 if quick else 100
    techs = ["flooding:level=0.3", "soft_clip", "hard_clip", "focal"]  # + baseline = 5 techniques
    n = 5 * seeds
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        compare(task, ["flooding"], seeds=4, backend="ray", progress=False)  # start the worker processes
        noop = ray.remote(num_cpus=1)(_noop)
        t0 = time.perf_counter()
        ray.get([noop.remote() for _ in range(n)])
        floor = (
            time.perf_counter() - t0
        ) / n  # Ray's own cost per task on this machine, all of it counted serial
        t0 = time.perf_counter()
        r = compare(task, techs, seeds=seeds, backend="ray", progress=False)
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    # a cell's own time: training (measured inside the cell) plus a fixed share for model build + evaluate
    inside = [c["train_seconds"] for c in r.runs]
    t0 = time.perf_counter()
    for s in range(20):
        run_cell(task, get_technique("baseline"), s)
    cell_total = (time.perf_counter() - t0) / 20
    setup = max(0.0, cell_total - statistics.fmean(inside[:20]))
    durations = [d + setup for d in inside]
    compute = sum(durations)
    overhead = max(0.0, (wall - compute / 2) / n * 2)  # per-cell cost beyond compute on 2 workers
    print(f"{n} cells measured on local Ray (2 CPUs, workers warm): wall {wall:.1f} s, Σ cell compute "
          f"{compute:.1f} s, median cell {1e3 * statistics.median(durations):.1f} ms; per-cell overhead "
          f"{1e3 * overhead:.1f} ms (no-op Ray task: {1e3 * floor:.1f} ms), driver-side statistics included")
    print(
        "\nPrediction: greedy list scheduling of the measured cell times + the per-cell overhead on W "
        "workers, never below the no-op floor × cells (driver-bound).\n"
    )
    rows = []
    for w in (1, 2, 8, 32, 128, 256):
        pred = max(simulate(durations, w, overhead), floor * n)
        rows.append([w, pred, n / pred, compute / (w * pred)])
    print(markdown_table(["workers", "predicted wall s", "cells/s", "efficiency"], rows))
    big = [d * 100 for d in durations]  # the same grid with cells 100× longer (≈ 1 s of training each)
    rows = []
    for w in (1, 8, 32, 128, 256):
        pred = max(simulate(big, w, overhead), floor * n)
        rows.append([w, pred, n / pred, sum(big) / (w * pred)])
    print("\nSame grid, cells 100× longer (a small real model):\n")
    print(markdown_table(["workers", "predicted wall s", "cells/s", "efficiency"], rows))


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    print(environment_line(args))
    print("\n## Overhead per cell (digits MLP, 2 epochs, baseline)\n")
    ov = overhead(args, args.repeats, args.warmup)
    print()
    print_target("run_cell overhead over a plain loop", 100 * ov, 5.0, unit="%")
    print("\n## Throughput (digits MLP, 1 epoch; 4 techniques incl. baseline)\n")
    throughput(args.quick)
    print("\n## Scale: measured tiny-task run and simulation\n")
    scale(args.quick)


if __name__ == "__main__":
    main()
