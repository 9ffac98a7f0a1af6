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
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from trainwell._hooks import OutputHook
from trainwell._ops import RngReplay, autocast_enabled, autocast_off
from trainwell._step import BackwardFn, MultiPassStep, grad_scale, resolve_backward
from trainwell._validation import (
    check_bool,
    check_callable,
    check_choice,
    check_finite_number,
    check_module,
    fail,
)

# OutputHook (trainwell._hooks), RngReplay / autocast_enabled / autocast_off (trainwell._ops) and
# BackwardFn / MultiPassStep (trainwell._step) live in their shared homes; re-exported here so that
# ``from trainwell.regularizers._common import OutputHook`` keeps working.
__all__ = [
    "BackwardFn",
    "EmbeddingAttack",
    "EmbeddingPerturbation",
    "MultiPassStep",
    "OutputHook",
    "RngReplay",
    "autocast_enabled",
    "autocast_off",
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


def call_closure(closure: Callable[[], Any], *, fn: str) -> Tensor:
    """Run ``closure`` and check that it returned a differentiable scalar loss."""
    out = closure()
    if not isinstance(out, Tensor):
        fail(fn, "closure", "a callable returning the scalar loss tensor", out, exc=TypeError)
    if out.numel() != 1:
        fail(
            fn, "closure", "a callable returning a scalar loss (reduce per-sample losses, e.g. .mean())", out
        )
    if not out.is_floating_point():
        fail(fn, "closure", "a callable returning a floating-point loss", out, exc=TypeError)
    if not out.requires_grad:
        fail(
            fn,
            "closure",
            "a callable returning a loss that requires grad (forward pass with grad enabled)",
            out,
        )
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


_T = TypeVar("_T")


def _directions(grads: Sequence[Tensor | None], targets: Sequence[Tensor], scale: float) -> list[Tensor]:
    """Dense, float32-or-better, unscaled gradients; an unused target gets zeros."""
    out = []
    for g, t in zip(grads, targets):
        g = torch.zeros_like(t) if g is None else dense(g)
        g = g.float() if g.dtype in (torch.float16, torch.bfloat16) else g
        out.append(g / scale if scale != 1.0 else g)
    return out


class _CallCheck:
    """Counts the calls of a module inside a block; raises the output-mode error when there is none."""

    def __init__(self, module: nn.Module, fn: str) -> None:
        self.module, self.fn, self.calls = module, fn, 0

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        self.calls += 1

    def __enter__(self) -> _CallCheck:
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()
        if exc[0] is None and self.calls == 0:
            fail(
                self.fn,
                "embedding",
                "a module that closure() calls (its weight is what gets perturbed)",
                self.module,
            )


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

    def _run(
        self, forward: Callable[[], _T], fn: str, deltas: Sequence[Tensor] | None
    ) -> tuple[_T, list[Tensor]]:
        """Run one pass; return its result and the tensors a direction is taken against.

        Output mode: the embedding outputs (perturbed by ``deltas`` through :class:`OutputHook`).
        Matrix mode: the weight. Either way an embedding that the pass never calls is an error (it
        cannot be perturbed, and the "adversarial" loss would silently equal the clean one).
        """
        if self.mode == "output":
            with OutputHook(self.embedding, fn=fn, deltas=deltas) as hook:
                result = forward()
            return result, hook.outputs
        weight = self._weight
        if not weight.requires_grad:
            fail(
                fn,
                "embedding",
                "a module whose weight requires grad in mode='matrix' (use mode='output' "
                "for a frozen embedding)",
                self.embedding,
            )
        with _CallCheck(self.embedding, fn):
            result = forward()
        return result, [weight]

    @contextlib.contextmanager
    def _applied(self, deltas: Sequence[Tensor] | None) -> Iterator[None]:
        """Matrix mode: weight += delta in place for the block (restored by copy); output mode: the hook."""
        if self.mode == "matrix" and deltas is not None:
            with perturbed_weight(self._weight, deltas[0]):
                yield
        else:
            yield


_MODES = ("matrix", "output")


class EmbeddingAttack(EmbeddingPerturbation):
    """Shared two-pass protocol: clean pass for a direction, perturbed pass(es), backward, restore.

    Invariants every subclass keeps:

    * the direction comes from *this* micro-batch only (``torch.autograd.grad`` or a tensor hook), so
      ``.grad`` left by earlier micro-batches (gradient accumulation) never leaks into it;
    * passes whose gradients are only used as a direction run under ``ddp_model.no_sync()``; only the
      final backward all-reduces;
    * in ``mode='matrix'`` the embedding weight is restored by copying a saved clone (bit-exact);
    * BatchNorm running statistics are updated by the clean pass only (``freeze_bn=True``).
    """

    _name = "FGM"

    def __init__(
        self,
        embedding: Any,
        *,
        epsilon: float,
        mode: str,
        ddp_model: Any,
        replay_rng: bool,
        freeze_bn: bool,
    ) -> None:
        fn = self._name
        if not isinstance(mode, str):
            fail(fn, "mode", "one of 'matrix', 'output'", mode, exc=TypeError)
        self.mode: str = check_choice("mode", mode, _MODES, fn=fn)
        self.embedding = check_embedding(embedding, fn=fn, need_weight=self.mode == "matrix")
        self.epsilon: float = check_finite_number("epsilon", epsilon, fn=fn, min=0.0)
        self.ddp_model = check_ddp_model(ddp_model, fn=fn)
        self.replay_rng: bool = check_bool("replay_rng", replay_rng, fn=fn)
        self.freeze_bn: bool = check_bool("freeze_bn", freeze_bn, fn=fn)
        self.last_perturbation: list[Tensor] | None = None
        self.last_adversarial_loss: Tensor | None = None
        self.perturbed: bool = False

    # ------------------------------------------------------------------------------------- helpers
    def _pass(
        self, closure: Callable[[], Any], fn: str, deltas: Sequence[Tensor] | None
    ) -> tuple[Tensor, list[Tensor]]:
        """Run ``closure`` once; return the loss and the tensors the direction is taken against."""
        return self._run(lambda: call_closure(closure, fn=fn), fn, deltas)

    def _clean(
        self, closure: Callable[[], Any], fn: str, do_backward: BackwardFn, scale: float
    ) -> tuple[Tensor, list[Tensor]]:
        """Clean pass under ``no_sync``: the loss and this micro-batch's gradient at the perturbed tensors.

        With ``include_clean_loss`` the clean loss is also backpropagated into ``.grad`` (its gradient is
        captured on the way); otherwise ``autograd.grad`` leaves ``.grad`` untouched.
        """
        with sync_context(self.ddp_model, sync=False):
            loss, targets = self._pass(closure, fn, None)
            if getattr(self, "include_clean_loss", False):
                grads = self._backward_capture(do_backward, loss, targets, scale)
            else:
                grads = self._grads(loss, targets, scale)
        return loss, grads

    @staticmethod
    def _grads(loss: Tensor, targets: Sequence[Tensor], scale: float) -> list[Tensor]:
        """Gradient of ``loss`` w.r.t. ``targets`` without touching ``.grad`` (no DDP hook fires)."""
        scaled = loss * scale if scale != 1.0 else loss
        gs = torch.autograd.grad(scaled, list(targets), allow_unused=True)
        return _directions(gs, targets, scale)

    @staticmethod
    def _backward_capture(
        do_backward: BackwardFn, loss: Tensor, targets: Sequence[Tensor], scale: float
    ) -> list[Tensor]:
        """Run the user's backward (fills ``.grad``) and capture this pass's gradient at ``targets``.

        Tensor hooks see the gradient of this backward only, before it is accumulated into ``.grad``.
        With a custom ``backward`` the captured gradient carries an unknown loss scale; the callers
        normalize it, which removes any positive scale.
        """
        captured: list[Tensor | None] = [None] * len(targets)

        def make(i: int) -> Callable[[Tensor], None]:
            def hook(g: Tensor) -> None:
                captured[i] = g.detach()

            return hook

        handles = [t.register_hook(make(i)) for i, t in enumerate(targets)]
        try:
            do_backward(loss)
        finally:
            for h in handles:
                h.remove()
        return _directions(captured, targets, scale)

    @staticmethod
    def _finite(grads: Sequence[Tensor]) -> bool:
        return all(bool(torch.isfinite(g).all()) for g in grads)

    def _normalized(self, g: Tensor) -> Tensor:
        # matrix: the post's ε·g/(‖g‖_F + 1e-8); output: exact per-sample unit vectors (scale-free, so
        # the direction does not depend on the batch size, the DDP split or a loss scale)
        if self.mode == "output":
            return unit(g, per_sample=True)
        return normalize(g, per_sample=False, eps=1e-8)

    def _start(self, closure: Any, backward: Any, scaler: Any) -> tuple[str, BackwardFn, float, RngReplay]:
        fn = f"{self._name}.step"
        check_callable("closure", closure, fn=fn)
        do_backward = resolve_backward(backward, scaler, fn=fn)
        return fn, do_backward, grad_scale(scaler), RngReplay(self.replay_rng)

    def _plain(self, closure: Callable[[], Any], fn: str, do_backward: BackwardFn) -> Tensor:
        """Plain training step (used when the perturbation is zero by construction)."""
        loss = call_closure(closure, fn=fn)
        do_backward(loss)
        self.last_perturbation = None
        self.last_adversarial_loss = loss.detach()
        self.perturbed = False
        return loss.detach()

    def _final(
        self,
        closure: Callable[[], Any],
        fn: str,
        do_backward: BackwardFn,
        deltas: Sequence[Tensor] | None,
        rng: RngReplay,
    ) -> Tensor:
        """Perturbed pass whose backward fills ``.grad`` (and all-reduces under DDP)."""
        rng.replay()
        with self._applied(deltas), freeze_bn_stats(enabled=self.freeze_bn):
            adv, _ = self._pass(closure, fn, deltas)
            do_backward(adv)
        self.last_adversarial_loss = adv.detach()
        self.last_perturbation = None if deltas is None else [d.detach() for d in deltas]
        self.perturbed = deltas is not None
        return adv
