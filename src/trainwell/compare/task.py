"""What ``compare`` trains: a :class:`Task`, and one grid cell (technique × seed) run from it.

A cell builds the model with ``make_model(seed)`` (global RNGs seeded with ``seed`` first), the optimizer,
the technique's step, then trains ``epochs`` passes over ``train_data`` in mini-batches of
``batch_size``. The batch order comes from a generator seeded with ``seed``, and the global RNG is
re-seeded with ``seed + 1`` just before training (dropout, noise), so within a seed every technique
starts from the same weights and sees the same batches: the paired design.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from trainwell._validation import check_callable, check_int, fail

__all__ = ["Task", "cell_key", "run_cell", "task_identity"]

CACHE_FORMAT = "1"


@dataclass
class Task:
    """A model-training problem to compare techniques on.

    Args:
        make_model: ``make_model(seed) -> nn.Module``; must give the same weights for the same seed.
        train_data: a ``torch.utils.data.Dataset`` (items are batched with the default collate) or a
            tuple of tensors with the same first dimension (batches are index slices).
        evaluate: ``evaluate(model) -> float | dict[str, float]`` (called once after training, in
            ``eval()`` mode, under ``torch.no_grad()``).
        loss_fn: ``loss_fn(model, batch) -> Tensor`` (default: cross-entropy of ``model(*inputs)``
            against the batch's last element).
        make_optimizer: ``make_optimizer(model) -> Optimizer`` (default ``Adam(lr=1e-3)``).
        epochs: passes over the training data (default 1).
        batch_size: mini-batch size (default 32).
        embedding: the module adversarial techniques perturb: a callable ``embedding(model) -> module``
            (default: ``model.get_input_embeddings()``, as on Hugging Face models).
        name: the task's identity in the cache (keyword only). Default: a fingerprint of the functions'
            qualified names, the settings and the training tensors' bytes.
    """

    make_model: Callable[[int], nn.Module]
    train_data: Any
    evaluate: Callable[[nn.Module], Any]
    loss_fn: Callable[[nn.Module, Any], Tensor] | None = None
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None
    epochs: int = 1
    batch_size: int = 32
    embedding: Any = None
    name: str | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        fn = "Task"
        check_callable("make_model", self.make_model, fn=fn)
        check_callable("evaluate", self.evaluate, fn=fn)
        check_callable("loss_fn", self.loss_fn, fn=fn, allow_none=True)
        check_callable("make_optimizer", self.make_optimizer, fn=fn, allow_none=True)
        check_int("epochs", self.epochs, fn=fn, min=1)
        check_int("batch_size", self.batch_size, fn=fn, min=1)
        if (
            self.embedding is not None
            and not callable(self.embedding)
            and not isinstance(self.embedding, nn.Module)
        ):
            fail(fn, "embedding", "a callable(model) -> module or None", self.embedding, exc=TypeError)
        if self.name is not None and not isinstance(self.name, str):
            fail(fn, "name", "a str or None", self.name, exc=TypeError)
        if isinstance(self.train_data, (tuple, list)):
            if not self.train_data or not all(isinstance(t, Tensor) for t in self.train_data):
                fail(
                    fn,
                    "train_data",
                    "a Dataset or a non-empty tuple of tensors",
                    self.train_data,
                    exc=TypeError,
                )
            n = {int(t.shape[0]) if t.dim() else -1 for t in self.train_data}
            if len(n) != 1 or -1 in n or 0 in n:
                fail(fn, "train_data", "tensors with the same, non-zero first dimension",
                     [tuple(t.shape) for t in self.train_data])
            self.train_data = tuple(self.train_data)
        elif not isinstance(self.train_data, Dataset) or not hasattr(self.train_data, "__len__"):
            fail(
                fn,
                "train_data",
                "a sized torch Dataset or a tuple of tensors",
                self.train_data,
                exc=TypeError,
            )

    @property
    def n_train(self) -> int:
        if isinstance(self.train_data, tuple):
            return int(self.train_data[0].shape[0])
        return len(self.train_data)

    def batches(self, generator: torch.Generator) -> Any:
        """The mini-batches of one epoch, in the order drawn from ``generator``."""
        perm = torch.randperm(self.n_train, generator=generator)
        if isinstance(self.train_data, tuple):
            for i in range(0, len(perm), self.batch_size):
                idx = perm[i: i + self.batch_size]
                yield tuple([t[idx] for t in self.train_data])
        else:
            from torch.utils.data import default_collate

            for i in range(0, len(perm), self.batch_size):
                yield default_collate([self.train_data[int(j)] for j in perm[i: i + self.batch_size]])


def _qualname(f: Any) -> str:
    if f is None:
        return "None"
    mod = getattr(f, "__module__", type(f).__module__)
    name = getattr(f, "__qualname__", type(f).__qualname__)
    return f"{mod}.{name}"


def task_identity(task: Task) -> str:
    """A stable text identity of ``task`` (its ``name`` if set, else a fingerprint)."""
    if task.name is not None:
        return task.name
    h = hashlib.sha256()
    for f in (task.make_model, task.evaluate, task.loss_fn, task.make_optimizer, task.embedding):
        h.update(_qualname(f).encode())
    h.update(f"{task.epochs}|{task.batch_size}".encode())
    if isinstance(task.train_data, tuple):
        for t in task.train_data:
            c = t.detach().cpu().contiguous()
            h.update(f"{tuple(c.shape)}{c.dtype}".encode())
            h.update(c.view(torch.uint8).numpy().tobytes() if c.numel() else b"")
    else:
        h.update(f"{_qualname(type(task.train_data))}|{len(task.train_data)}".encode())
    return "task-" + h.hexdigest()[:20]


def cell_key(identity: str, technique_name: str, params: Mapping[str, Any], seed: int) -> str:
    """Cache key of one cell: hash of (task identity, technique and params, seed, trainwell version)."""
    from trainwell import __version__

    blob = json.dumps({"task": identity, "technique": technique_name,
                       "params": {k: repr(v) for k, v in sorted(params.items())}, "seed": seed,
                       "version": __version__, "format": CACHE_FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - third-party code reads the global state
    # torch.manual_seed also queues lazy seeding calls for CUDA/XPU/MTIA, each capturing a Python stack
    # (milliseconds per call): seed the CPU generator directly and CUDA only where it exists.
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _metrics(value: Any) -> dict[str, float]:
    fn = "Task.evaluate"
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, Real) and not isinstance(value, bool):
        return {"metric": float(value)}
    if isinstance(value, Mapping) and value:
        out: dict[str, float] = {}
        for k, v in value.items():
            if isinstance(v, Tensor) and v.numel() == 1:
                v = v.item()
            if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, Real):
                fail(fn, "evaluate", "a callable returning a float or a dict[str, float]",
                     f"{type(value).__name__} with {k!r}: {v!r}", exc=TypeError)
            out[k] = float(v)
        return out
    fail(fn, "evaluate", "a callable returning a float or a dict[str, float]", value, exc=TypeError)


class _SavedBytes:
    """Bytes of the tensors autograd saves for backward during one step (activation memory)."""

    def __init__(self) -> None:
        self.total = 0
        self.seen: set[int] = set()

    def pack(self, t: Tensor) -> Tensor:
        try:
            s = t.untyped_storage()
            ptr = s.data_ptr()
            if ptr not in self.seen:
                self.seen.add(ptr)
                self.total += s.nbytes()
        except (RuntimeError, NotImplementedError):  # pragma: no cover - exotic tensor subclasses
            pass
        return t


def _state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    n = 0
    for p in model.parameters():
        n += p.numel() * p.element_size()
        if p.grad is not None:
            n += p.grad.numel() * p.grad.element_size()
    for st in optimizer.state.values():
        for v in st.values():
            if isinstance(v, Tensor):
                n += v.numel() * v.element_size()
    return n


# steps measured with saved-tensor hooks (the rest run without them): one suffices, since the activations a
# step saves do not change from step to step, and the optimizer state is counted after that step's update
MEMORY_STEPS = 1


def run_cell(task: Task, technique: Any, seed: int, threads: int | None = None) -> dict[str, Any]:
    """Train and evaluate one (technique, seed) cell; never raises for errors of the cell itself.

    Returns a JSON-serialisable dict: ``technique`` (label), ``name``, ``params``, ``seed``, ``status``
    (``"ok"`` / ``"error"``), ``metrics``, ``train_seconds`` (the training loop's wall time),
    ``peak_memory_bytes`` (on CUDA the allocator's peak; on CPU the largest bytes saved for backward in
    the first step plus parameters, gradients and optimizer state), ``losses`` (mean training
    loss per epoch), ``error`` (the traceback, on error).
    """
    out: dict[str, Any] = {"technique": technique.label, "name": technique.name,
                           "params": {k: repr(v) for k, v in sorted(dict(technique.params or {}).items())},
                           "seed": int(seed), "status": "ok", "pid": os.getpid()}
    old_threads = torch.get_num_threads()
    try:
        if threads is not None and int(threads) != old_threads:
            torch.set_num_threads(max(1, int(threads)))
        _seed_all(seed)
        model = task.make_model(seed)
        if not isinstance(model, nn.Module):
            fail("Task.make_model", "make_model", "a callable returning an nn.Module", model, exc=TypeError)
        optimizer = (task.make_optimizer(model) if task.make_optimizer is not None
                     else torch.optim.Adam(model.parameters(), lr=1e-3))
        optimizer = technique.build_optimizer(model, optimizer)
        step = technique.build(model, task.loss_fn, optimizer, embedding=task.embedding)
        order = torch.Generator().manual_seed(int(seed))
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
        cuda = dev.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        peak = 0
        steps = 0
        losses: list[float] = []
        _seed_all(seed + 1)
        t0 = time.perf_counter()
        for _ in range(task.epochs):
            model.train()
            epoch_losses: list[Tensor] = []  # read once per epoch: no per-step host sync
            for batch in task.batches(order):
                if dev.type != "cpu":
                    batch = _to(batch, dev)
                optimizer.zero_grad(set_to_none=True)
                if not cuda and steps < MEMORY_STEPS:
                    saved = _SavedBytes()
                    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
                        loss = step(batch)
                    optimizer.step()  # counted after the update: its state exists from the first step on
                    peak = max(peak, saved.total + _state_bytes(model, optimizer))
                else:
                    loss = step(batch)
                    optimizer.step()
                steps += 1
                epoch_losses.append(loss)
            # one float per step, read at the epoch's end (on CUDA the first read syncs, the rest are ready)
            losses.append(math.fsum(float(v) for v in epoch_losses) / len(epoch_losses)
                          if epoch_losses else math.nan)
        if cuda:
            torch.cuda.synchronize(dev)
        out["train_seconds"] = time.perf_counter() - t0
        if cuda:
            peak = int(torch.cuda.max_memory_allocated(dev))
        out["peak_memory_bytes"] = int(peak)
        out["losses"] = losses
        model.eval()
        with torch.no_grad():
            value = task.evaluate(model)
        out["metrics"] = _metrics(value)
    except Exception as e:  # a failing cell is recorded, the grid goes on
        out["status"] = "error"
        out["error"] = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        out["error_summary"] = f"{type(e).__name__}: {e}"
    finally:
        if torch.get_num_threads() != old_threads:
            torch.set_num_threads(old_threads)
    return out


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, Mapping):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch
