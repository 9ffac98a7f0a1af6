"""Shared timing / memory / table helpers for the scripts in ``benchmarks/``.

What each helper measures (and why this way):

* :func:`time_many` — the same for several callables, run round-robin (one run of each per round), which
  keeps the ratios between rows meaningful on a shared, noisy machine; the scripts use it for every table.
* :func:`time_fn` — wall time of a callable with ``time.perf_counter``: ``warmup`` untimed calls, then
  ``repeats`` timed calls; reports the median and the inter-quartile range (IQR = q75 − q25) in
  milliseconds. CUDA work is synchronised before and after every call so the time covers the kernels.
  ``torch.set_num_threads(2)`` is applied by :func:`setup` (default ``--threads 2``) so numbers from
  different scripts and machines are taken under the same intra-op parallelism.
* :func:`peak_memory` — peak *tensor* memory allocated while the callable runs, above what was already
  live when it started (inputs, parameters, optimizer state are therefore not counted unless the
  callable re-creates them). On CPU ``tracemalloc`` does not see torch's allocator and process RSS
  includes the allocator's caching and unrelated Python objects, so instead the torch profiler is run
  with ``profile_memory=True``: every allocation and free made by the c10 allocator is recorded as a
  ``[memory]`` event with its signed byte count; sorting them by time and taking the running sum's
  maximum gives the exact high-water mark of live tensor bytes. The profiler slows the call down, so
  memory is always measured in a separate call from timing. On CUDA the caching allocator's own
  counter ``torch.cuda.max_memory_allocated`` is used (reset before the call, minus the bytes allocated
  at the start).
* :func:`saved_tensor_bytes` — bytes of the tensors autograd saves for backward during a forward (the
  "activation memory"), via ``torch.autograd.graph.saved_tensors_hooks``; storages are de-duplicated.
* :func:`max_abs_diff` — largest absolute element difference between two tensors / nested sequences of
  tensors (compared in float64).
* :func:`markdown_table` / :func:`results_table` — Markdown tables; ``results_table`` adds a ratio
  column (median time divided by the baseline row's median time).

Command-line: every script calls :func:`parse_args`, which understands ``--quick`` (fewer repeats,
smaller sweeps), ``--device {cpu,cuda}``, ``--threads N`` and ``--repeats N``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.machinery
import os
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "Result",
    "Timing",
    "format_bytes",
    "import_bert4torch",
    "import_public",
    "markdown_table",
    "max_abs_diff",
    "parse_args",
    "peak_memory",
    "print_target",
    "quiet_stderr",
    "results_table",
    "saved_tensor_bytes",
    "setup",
    "sync",
    "tensor_bytes",
    "time_fn",
    "time_many",
]

MiB = 2**20


# --------------------------------------------------------------------------------------------------- setup


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the common benchmark options and apply them (threads, seed); returns the namespace.

    ``args.repeats`` is resolved to a number: ``--repeats`` if given, else 5 with ``--quick`` and 20 without.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller sweeps (smoke run)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where tensors live")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per row (default 20, quick 5)")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 5 if args.quick else 20
    args.warmup = 1 if args.quick else 3
    setup(args.threads, args.device)
    return args


def setup(threads: int = 2, device: str = "cpu", seed: int = 0) -> None:
    """Fix the intra-op thread count and the seeds; fail clearly if CUDA is asked for but missing."""
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was given but torch.cuda.is_available() is False")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)


def environment_line(args: argparse.Namespace) -> str:
    """One line describing where the numbers come from (printed at the top of every script)."""
    dev = args.device
    if dev == "cuda":
        dev = f"cuda ({torch.cuda.get_device_name()})"
    mode = "quick" if args.quick else "full"
    return (
        f"torch {torch.__version__}, device {dev}, {torch.get_num_threads()} threads, "
        f"{args.repeats} timed runs after {args.warmup} warm-up ({mode} mode); times are medians in ms"
    )


def import_bert4torch() -> types.ModuleType:
    """Import ``bert4torch`` with empty stand-in ``torchvision`` modules.

    bert4torch 0.6.2 imports torchvision at package import (for its vision models); the PyPI torchvision
    wheel cannot load with the CPU torch used here and is never installed. Nothing the benchmarks compare
    (losses, adversarial-training callbacks) uses it, so empty modules are enough. Each stand-in gets a
    ``__spec__`` so ``importlib.util.find_spec('torchvision')`` works; torch4keras then asks
    ``importlib.metadata`` for a version, gets none and reports torchvision as unavailable.
    """
    for name in (
        "torchvision",
        "torchvision.transforms",
        "torchvision.transforms.v2",
        "torchvision.transforms.v2.functional",
        "torchvision.io",
    ):
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = []
            stub.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
            sys.modules[name] = stub
    import bert4torch

    return bert4torch


def import_public(package: str, name: str, *modules: str) -> Any:
    """``package.name``, falling back to ``package.<module>.name`` for each of ``modules``.

    The library is written concurrently with these scripts; a family's ``__init__`` may not re-export a
    name yet. Raises ImportError naming everything tried.
    """
    import importlib

    tried = []
    for mod_name in (package, *(f"{package}.{m}" for m in modules)):
        tried.append(mod_name)
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        if hasattr(mod, name):
            return getattr(mod, name)
    raise ImportError(f"{name} not found in {', '.join(tried)}")


# --------------------------------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Median and inter-quartile range of ``n`` timed runs, in milliseconds."""

    median_ms: float
    iqr_ms: float
    n: int
    runs_ms: list[float] = field(default_factory=list, repr=False)


def sync(device: str | torch.device = "cpu") -> None:
    """Wait for queued CUDA work (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], Any], repeats: int = 20, warmup: int = 3, device: str = "cpu") -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` calls timed with ``time.perf_counter``."""
    for _ in range(warmup):
        fn()
    sync(device)
    runs = []
    for _ in range(max(1, repeats)):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        runs.append((time.perf_counter() - t0) * 1e3)
    return _timing(runs)


def time_many(
    fns: Mapping[str, Callable[[], Any]], repeats: int = 20, warmup: int = 3, device: str = "cpu"
) -> dict[str, Timing | Exception]:
    """Time several callables round-robin (run 1 of each, run 2 of each, ...) so that load changes on a
    shared machine hit every row alike; ratios between rows are then far steadier than with back-to-back
    :func:`time_fn` calls. A callable that raises is reported as its exception and dropped from later rounds.
    """
    out: dict[str, Timing | Exception] = {}
    runs: dict[str, list[float]] = {}
    for name, fn in fns.items():
        try:
            for _ in range(warmup):
                fn()
            runs[name] = []
        except Exception as err:
            out[name] = err
    sync(device)
    for _ in range(max(1, repeats)):
        for name in list(runs):
            try:
                sync(device)
                t0 = time.perf_counter()
                fns[name]()
                sync(device)
                runs[name].append((time.perf_counter() - t0) * 1e3)
            except Exception as err:
                out[name] = err
                del runs[name]
    for name, r in runs.items():
        out[name] = _timing(r)
    return {name: out[name] for name in fns if name in out}


def _timing(runs: list[float]) -> Timing:
    if len(runs) >= 4:
        q = statistics.quantiles(runs, n=4)
        iqr = q[2] - q[0]
    else:
        iqr = max(runs) - min(runs)
    return Timing(statistics.median(runs), iqr, len(runs), runs)


# --------------------------------------------------------------------------------------------------- memory


def peak_memory(fn: Callable[[], Any], device: str = "cpu") -> int:
    """Peak bytes of tensor memory allocated by ``fn()`` above the memory live when it starts.

    CPU: replay of the torch profiler's allocator events (``profile_memory=True``); CUDA:
    ``torch.cuda.max_memory_allocated``. Whatever ``fn`` returns is dropped before returning, but memory that
    stays alive at the end (e.g. ``.grad`` buffers created by a backward) is counted in the peak.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - start
        del out
        return int(peak)
    from torch.profiler import ProfilerActivity, profile

    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    cpu = torch._C._autograd.DeviceType.CPU
    events = [
        (ev.start_ns(), ev.nbytes())
        for ev in prof.profiler.kineto_results.events()  # type: ignore[union-attr]
        if ev.name() == "[memory]" and ev.device_type() == cpu
    ]
    events.sort()
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return int(peak)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 inside the block (C-level writes included)."""
    # kineto writes two "USDT ... profiler_start/stop" lines to file descriptor 2 per session; silence them.
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes held by the given tensors (distinct storages counted once)."""
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if t is None:
            continue
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in seen or storage.nbytes() == 0:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total


def saved_tensor_bytes(fn: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn()`` runs (distinct storages once).

    Tensors sharing storage with ``exclude`` (typically ``model.parameters()``, which layers save for their
    backward but which are not activations) are not counted.
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen.setdefault(storage.data_ptr(), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def format_bytes(n: float | None) -> str:
    """Bytes as MiB with 1 decimal (or '—' for None)."""
    if n is None:
        return "—"
    return f"{n / MiB:.1f}"


# --------------------------------------------------------------------------------------------------- diffs


def max_abs_diff(a: Any, b: Any) -> float:
    """Largest absolute difference between tensors (or equally nested lists/tuples of tensors), in float64."""
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            raise ValueError("max_abs_diff(): structures differ")
        return max((max_abs_diff(x, y) for x, y in zip(a, b)), default=0.0)
    ta = torch.as_tensor(a).detach().to("cpu", torch.float64)
    tb = torch.as_tensor(b).detach().to("cpu", torch.float64)
    if ta.shape != tb.shape:
        raise ValueError(f"max_abs_diff(): shapes differ {tuple(ta.shape)} vs {tuple(tb.shape)}")
    if ta.numel() == 0:
        return 0.0
    return float((ta - tb).abs().max())


# --------------------------------------------------------------------------------------------------- tables


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value == 0.0:
            return "0"
        if abs(value) >= 1e4 or abs(value) < 1e-3:
            return f"{value:.2e}"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (floats shortened; None printed as an em dash)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


@dataclass
class Result:
    """One benchmark row: a timing, a peak-memory figure and a max-abs-diff, any of which may be absent."""

    name: str
    timing: Timing | None = None
    peak_bytes: int | None = None
    diff: float | None = None
    note: str = ""


def results_table(results: Sequence[Result], baseline: str | None = None, title: str | None = None) -> str:
    """Markdown table of ``results`` with a ratio column relative to the row named ``baseline``.

    Columns: name | median ms | IQR ms | ×baseline | peak MiB | max abs diff | note.
    """
    base = None
    if baseline is not None:
        for r in results:
            if r.name == baseline and r.timing is not None:
                base = r.timing.median_ms
        if base is None:
            raise ValueError(f"results_table(): no timed row named {baseline!r}")
    rows = []
    for r in results:
        t = r.timing
        ratio = None if (t is None or base is None) else t.median_ms / base
        rows.append(
            [
                r.name,
                None if t is None else t.median_ms,
                None if t is None else t.iqr_ms,
                None if ratio is None else f"{ratio:.2f}×",
                format_bytes(r.peak_bytes) if r.peak_bytes is not None else None,
                r.diff,
                r.note or "",
            ]
        )
    header = ["method", "median ms", "IQR ms", f"× {baseline}" if baseline else "ratio", "peak MiB",
              "max abs diff", "note"]
    text = markdown_table(header, rows)
    return f"### {title}\n\n{text}\n" if title else text + "\n"


def print_target(description: str, value: float, limit: float, unit: str = "×") -> bool:
    """Print ``Target: description: value ≤ limit — MET/MISSED`` and return whether it was met."""
    met = value <= limit
    print(
        f"- Target: {description}: {value:.3g}{unit} ≤ {limit:.3g}{unit} — **{'MET' if met else 'MISSED'}**"
    )
    return met
