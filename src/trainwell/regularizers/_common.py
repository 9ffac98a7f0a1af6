"""Machinery shared by the two-pass regularizers (FGM, PGD, fast gradient penalties, VAT).

Private module: the pieces here (closure checks, the embedding forward hook, RNG replay, BatchNorm
freezing, DDP ``no_sync`` handling, GradScaler-aware backward) are what makes every regularizer in
this package follow the same protocol::

    loss = reg.step(closure)          # closure() runs the forward pass and returns the scalar loss
    optimizer.step()
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from trainwell._validation import check_callable, check_module, fail

__all__ = [
    "BackwardFn",
    "EmbeddingPerturbation",
    "OutputHook",
    "RngReplay",
    "call_closure",
    "check_ddp_model",
    "check_embedding",
    "freeze_bn_stats",
    "grad_scale",
    "normalize",
    "perturbed_weight",
    "resolve_backward",
    "sync_context",
    "unit",
]

BackwardFn = Callable[[Tensor], Any]


def check_embedding(embedding: Any, *, fn: str, need_weight: bool) -> nn.Module:
    """The module to perturb: an ``nn.Module`` (never a parameter-name substring)."""
    if isinstance(embedding, str):
        fail(
            fn,
            "embedding",
            "the embedding nn.Module itself (e.g. model.get_input_embeddings()), not a parameter name",
            embedding,
            exc=TypeError,
        )
    check_module("embedding", embedding, fn=fn)
    if need_weight:
        weight = getattr(embedding, "weight", None)
        if not isinstance(weight, nn.Parameter) or weight.dim() != 2 or not weight.is_floating_point():
            fail(
                fn,
                "embedding",
                "a module with a 2-D floating 'weight' parameter in mode='matrix' "
                "(nn.Embedding or model.get_input_embeddings())",
                embedding,
            )
    return embedding


def check_ddp_model(ddp_model: Any, *, fn: str) -> Any:
    """``None`` or a ``DistributedDataParallel`` wrapper (its ``no_sync()`` silences the extra passes)."""
    if ddp_model is None:
        return None
    from torch.nn.parallel import DistributedDataParallel

    check_module("ddp_model", ddp_model, fn=fn, cls=DistributedDataParallel)
    return ddp_model


def sync_context(ddp_model: Any, sync: bool) -> contextlib.AbstractContextManager[Any]:
    """``ddp_model.no_sync()`` for the passes that must not all-reduce, a no-op otherwise."""
    if ddp_model is None or sync:
        return contextlib.nullcontext()
    return ddp_model.no_sync()  # type: ignore[no-any-return]


def resolve_backward(backward: Any, scaler: Any, *, fn: str) -> BackwardFn:
    """The callable used for every backward that must fill ``.grad``.

    ``backward`` wins when given; otherwise ``scaler.scale(loss).backward()`` when a GradScaler is given;
    otherwise ``loss.backward()``.
    """
    check_callable("backward", backward, fn=fn, allow_none=True)
    if scaler is not None and not (hasattr(scaler, "scale") and hasattr(scaler, "get_scale")):
        fail(fn, "scaler", "a torch.amp.GradScaler or None", scaler, exc=TypeError)
    if backward is not None:
        return backward  # type: ignore[no-any-return]
    if scaler is not None:
        return lambda loss: scaler.scale(loss).backward()
    return lambda loss: loss.backward()


def grad_scale(scaler: Any) -> float:
    """The factor the loss is multiplied by before ``autograd.grad`` (so fp16 gradients do not underflow)."""
    if scaler is None or not scaler.is_enabled():
        return 1.0
    return float(scaler.get_scale())


def call_closure(closure: Callable[[], Any], *, fn: str) -> Tensor:
    """Run ``closure`` and check that it returned a differentiable scalar loss."""
    out = closure()
    if not isinstance(out, Tensor):
        fail(fn, "closure", "a callable returning the scalar loss tensor", out, exc=TypeError)
    if out.numel() != 1:
        fail(fn, "closure", "a callable returning a scalar loss (reduce per-sample losses, e.g. .mean())", out)
    if not out.is_floating_point():
        fail(fn, "closure", "a callable returning a floating-point loss", out, exc=TypeError)
    if not out.requires_grad:
        fail(fn, "closure", "a callable returning a loss that requires grad (forward pass with grad enabled)", out)
    return out.reshape(())


def normalize(t: Tensor, *, per_sample: bool, eps: float) -> Tensor:
    """``t / (‖t‖ + eps)`` in float32 (float64 kept): one global norm, or one norm per leading-dim row."""
    t = t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
    if per_sample and t.dim() >= 1:
        n = t.reshape(t.shape[0], -1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))
    else:
        n = t.norm()
    return t / (n + eps)


def unit(t: Tensor, per_sample: bool) -> Tensor:
    """``t/‖t‖`` (per sample or global), scale-free: divide by the max-abs first (as the VAT code does).

    Gradients can be tiny (VAT's finite differences are O(ξ); per-sample gradients of a batch-mean loss
    shrink like 1/B), so an additive guard such as ``‖t‖ + 1e-8`` would bias the norm and make the
    direction depend on the batch size. After the max-abs division ``‖t‖ ≥ 1`` unless ``t`` is 0
    (zero rows stay zero). Half precision is upcast to float32.
    """
    t = t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
    if per_sample and t.dim() >= 1:
        flat = t.reshape(t.shape[0], -1)
        shape = (-1, *([1] * (t.dim() - 1)))
        t = t / flat.abs().amax(dim=1).clamp_min(1e-30).view(shape)
        return t / (t.reshape(t.shape[0], -1).norm(dim=1).view(shape) + 1e-12)
    t = t / t.abs().amax().clamp_min(1e-30)
    return t / (t.norm() + 1e-12)


def dense(g: Tensor) -> Tensor:
    return g.to_dense() if g.is_sparse else g


class RngReplay:
    """Snapshot of the CPU (and initialized CUDA) RNG so later passes can draw the same dropout masks."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._cpu: Tensor | None = None
        self._cuda: list[Tensor] | None = None
        if enabled:
            self._cpu = torch.get_rng_state()
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                self._cuda = torch.cuda.get_rng_state_all()

    def replay(self) -> None:
        if not self.enabled:
            return
        assert self._cpu is not None
        torch.set_rng_state(self._cpu)
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)

    def mark_resume(self) -> None:
        """Remember the current state: :meth:`resume` returns to it after the replayed passes.

        Needed when a step draws random numbers of its own (VAT's initial direction) between the
        snapshot and the replays; otherwise the next step would start from the same state again.
        """
        if self.enabled:
            self._resume = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if self._cuda is not None else None)

    def resume(self) -> None:
        resume = getattr(self, "_resume", None)
        if resume is None:
            return
        torch.set_rng_state(resume[0])
        if resume[1] is not None:
            torch.cuda.set_rng_state_all(resume[1])


@contextlib.contextmanager
def freeze_bn_stats(model: nn.Module | None = None, enabled: bool = True) -> Iterator[None]:
    """Stop BatchNorm layers from updating running statistics inside the block.

    Train-mode BatchNorm still normalizes with batch statistics; only ``running_mean``/``running_var``/
    ``num_batches_tracked`` are left untouched (``track_running_stats`` is switched off and restored).
    With ``model=None`` every BatchNorm that runs inside the block is caught by a global forward
    pre-hook, so callers need not know the model.
    """
    if not enabled:
        yield
        return
    switched: list[_BatchNorm] = []

    def switch(m: nn.Module) -> None:
        if isinstance(m, _BatchNorm) and m.track_running_stats and m.training:
            m.track_running_stats = False
            switched.append(m)

    handle = None
    if model is not None:
        for m in model.modules():
            switch(m)
    else:

        def pre_hook(m: nn.Module, args: Any) -> None:
            switch(m)

        handle = nn.modules.module.register_module_forward_pre_hook(pre_hook)
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()
        for m in switched:
            m.track_running_stats = True


@contextlib.contextmanager
def perturbed_weight(weight: Tensor, delta: Tensor | None) -> Iterator[None]:
    """Add ``delta`` to ``weight`` in place; on exit copy the saved original back (bit-exact restore).

    Copying (not subtracting) matters: ``(w + d) - d != w`` in floating point, especially in bf16/fp16.
    The backward of the perturbed pass must run inside the block.
    """
    if delta is None:
        yield
        return
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.add_(delta.to(weight.dtype))
        yield
    finally:
        with torch.no_grad():
            weight.copy_(saved)


class EmbeddingPerturbation:
    """What every perturbing two-pass object (FGM, PGD, fast GP, VAT) shares: its embedding module, its
    ``mode`` (``'matrix'`` perturbs the weight, ``'output'`` the module's output through
    :class:`OutputHook`) and the block that applies a matrix-mode perturbation."""

    embedding: nn.Module
    mode: str

    @property
    def _weight(self) -> Tensor:
        weight: Tensor = self.embedding.weight  # type: ignore[assignment]
        return weight

    @contextlib.contextmanager
    def _applied(self, deltas: Sequence[Tensor] | None) -> Iterator[None]:
        """Matrix mode: weight += delta in place for the block (restored by copy). Output mode: the hook adds it."""
        if self.mode == "matrix" and deltas is not None:
            with perturbed_weight(self._weight, deltas[0]):
                yield
        else:
            yield


class OutputHook:
    """Forward hook on the embedding module: records each call's output and adds a per-call perturbation.

    The i-th call of the module inside one pass gets ``deltas[i]`` added to its output. Outputs that do
    not require grad (frozen embedding) are turned into grad-requiring leaves so that gradients with
    respect to them can be taken.
    """

    def __init__(self, module: nn.Module, *, fn: str, deltas: Sequence[Tensor] | None = None) -> None:
        self.module = module
        self.fn = fn
        self.deltas = list(deltas) if deltas is not None else None
        self.outputs: list[Tensor] = []
        self._handle: Any = None

    def __enter__(self) -> OutputHook:
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()
        if exc[0] is None:
            if not self.outputs:
                fail(
                    self.fn,
                    "embedding",
                    "a module that closure() calls (its output is what gets perturbed)",
                    self.module,
                )
            if self.deltas is not None and len(self.outputs) != len(self.deltas):
                raise RuntimeError(
                    f"{self.fn}(): the embedding module was called {len(self.outputs)} times in this pass "
                    f"but {len(self.deltas)} times in the clean pass; closure() must run the same forward"
                )

    def _hook(self, module: nn.Module, args: Any, output: Any) -> Tensor:
        if not isinstance(output, Tensor) or not output.is_floating_point():
            fail(
                self.fn,
                "embedding",
                "a module whose forward returns a floating tensor in mode='output'",
                module,
                exc=TypeError,
            )
        i = len(self.outputs)
        if self.deltas is not None:
            if i >= len(self.deltas):
                raise RuntimeError(
                    f"{self.fn}(): the embedding module was called more often than in the clean pass; "
                    "closure() must run the same forward every time"
                )
            delta = self.deltas[i]
            if delta.shape != output.shape:
                raise RuntimeError(
                    f"{self.fn}(): embedding output shape changed between passes: "
                    f"{tuple(delta.shape)} in the clean pass, {tuple(output.shape)} now"
                )
            output = output + delta.to(output.dtype)
        if torch.is_grad_enabled() and not output.requires_grad:
            output = output.detach().requires_grad_(True)
        self.outputs.append(output)
        return output


def autocast_enabled(device_type: str) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:  # pragma: no cover - torch < 2.4
        return bool(torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled())
