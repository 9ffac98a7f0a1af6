"""Gradient penalties: input-gradient (exact and finite-difference) and parameter-gradient.

* :func:`gradient_penalty` — ``ε/2·‖∇_x L‖²`` by double backprop (the post's GP, kexue.fm/archives/7234).
* :class:`FastGradientPenalty` — the same objective without double backprop: an un-normalized FGM step
  ``Δx = ε∇_x L`` gives ``∇_θ L(x + Δx) = ∇_θ(L + ε/2‖∇_x L‖²) + O(ε²)`` (kexue.fm/archives/7466).
* :func:`parameter_gradient_penalty` — ``β/2·‖∇_θ L‖²`` by double backprop, and
  :class:`ParameterGradientPenalty`, its finite-difference (Hessian-vector product) form
  (kexue.fm/archives/7643, kexue.fm/archives/8796).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from trainwell._validation import (
    check_bool,
    check_callable,
    check_finite_number,
    check_module,
    check_scalar_tensor,
    check_tensor,
    fail,
)
from trainwell.regularizers._common import (
    BackwardFn,
    EmbeddingAttack,
    OutputHook,
    RngReplay,
    call_closure,
    check_ddp_model,
    grad_scale,
    resolve_backward,
    sync_context,
)

__all__ = [
    "FastGradientPenalty",
    "ParameterGradientPenalty",
    "capture_embedding_output",
    "gradient_penalty",
    "parameter_gradient_penalty",
]


@contextlib.contextmanager
def capture_embedding_output(embedding: nn.Module) -> Iterator[list[Tensor]]:
    """Record the outputs of ``embedding`` produced inside the block (to take gradients w.r.t. them).

    Yields a list that receives one tensor per call of the module. Outputs of a frozen embedding are
    made grad-requiring leaves, so ``∇_x L`` exists even when the embedding itself is not trained::

        with capture_embedding_output(model.get_input_embeddings()) as outs:
            loss = model(**batch).loss
        (loss + gradient_penalty(loss, outs[0], epsilon=1.0)).backward()
    """
    check_module("embedding", embedding, fn="capture_embedding_output")
    hook = OutputHook(embedding, fn="capture_embedding_output")
    handle = embedding.register_forward_hook(hook._hook)
    try:
        yield hook.outputs
    finally:
        handle.remove()


def _as_tensor_list(name: str, value: Any, fn: str) -> list[Tensor]:
    items = (
        [value] if isinstance(value, Tensor) else list(value) if isinstance(value, (list, tuple)) else None
    )
    if not items:
        fail(fn, name, "a tensor or a non-empty list/tuple of tensors", value, exc=TypeError)
    for t in items:
        check_tensor(name, t, fn=fn, kind="float")
        if not t.requires_grad:
            fail(fn, name, "tensor(s) that require grad and were used to compute 'loss'", t)
    return items


def _sq_norm(grads: Sequence[Tensor | None]) -> Tensor:
    total: Tensor | None = None
    for g in grads:
        if g is None:
            continue
        g = g.float() if g.dtype in (torch.float16, torch.bfloat16) else g
        s = g.pow(2).sum()
        total = s if total is None else total + s
    assert total is not None
    return total


_VIEW_NODES = ("Reshape", "Transpose", "View", "Permute", "Expand", "Unsqueeze", "Squeeze", "Clone")


def _check_twice_differentiable(grads: Sequence[Tensor | None], fn: str) -> None:
    """Raise a clear error now if the graph of ``grads`` cannot be differentiated again.

    Ops without a second derivative leave ``NotImplemented`` nodes in a ``create_graph=True`` graph;
    the failure would otherwise surface later, in the user's ``backward``, as a raw autograd error
    (fused SDPA attention is the usual culprit: Hugging Face models use it by default).
    """
    stack: list[Any] = [g.grad_fn for g in grads if g is not None and g.grad_fn is not None]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if type(node).__name__ == "NotImplemented":
            # its inputs are the first-order backward node of the culprit (plus view/transpose nodes)
            names = [type(n).__name__ for n, _ in node.next_functions if n is not None]
            culprit = next((n for n in names if not n.startswith(_VIEW_NODES)), names[-1] if names else "?")
            raise RuntimeError(
                f"{fn}(): the gradient passes through '{culprit}', which has no second derivative, so the "
                "penalty cannot be backpropagated (double backprop). Fused scaled-dot-product attention "
                "(the Hugging Face default) is the usual cause: build the model with "
                'attn_implementation="eager", or use FastGradientPenalty (first derivatives only).'
            )
        stack.extend(nxt for nxt, _ in node.next_functions)


def gradient_penalty(
    loss: Tensor,
    inputs: Tensor | Sequence[Tensor],
    epsilon: float = 1.0,
    per_sample: bool = False,
    *,
    scaler: Any = None,
) -> Tensor:
    """Input-gradient penalty ``ε/2·‖∇_x L‖²``, differentiable (double backprop).

    ``inputs`` is ``x`` itself or the embedding output (see :func:`capture_embedding_output`); the
    post (kexue.fm/archives/7234) takes the gradient w.r.t. the token-embedding output of BERT and
    trains ``L + ε/2·‖∇_e L‖²`` with ε = 1.

    ``per_sample=False`` (the post): ``ε/2·Σ_{b}‖∂L/∂x_b‖²`` with ``L`` the scalar batch loss. Because
    ``L`` is a batch mean this is ``ε/(2B²)·Σ_b‖∇_{x_b} l_b‖²``, so the effective per-sample weight
    depends on the batch size ``B``.
    ``per_sample=True``: ``ε/2·mean_b ‖∇_{x_b} l_b‖²``, independent of ``B``. ``loss`` may be the
    per-sample losses ``[B]`` or their mean (then ``B = inputs.shape[0]`` and the value is exactly
    ``B`` times the post-style penalty). Reproduce the post with ``ε_per_sample = ε_post / B``.
    Per-sample gradients from one backward are only valid when samples do not interact (no
    train-mode BatchNorm).

    Double backprop needs every op to be twice differentiable: the fused SDPA attention of Hugging Face
    models is not. The penalty checks its graph and raises a ``RuntimeError`` saying so right away
    (instead of a raw autograd error at ``backward``); build the model with
    ``attn_implementation="eager"`` or use :class:`FastGradientPenalty`, which needs first derivatives
    only.

    Args:
        loss: scalar loss (or ``[B]`` per-sample losses with ``per_sample=True``) built from ``inputs``.
        inputs: tensor or list of tensors requiring grad.
        epsilon: weight ε ≥ 0 (default 1.0). ε = 0 returns 0.
        per_sample: see above (default False).
        scaler: optional ``GradScaler`` (fp16): the gradient is taken of ``scaler.scale(loss)`` and
            unscaled, as in PyTorch's AMP gradient-penalty recipe.

    Returns:
        The penalty (float32 for half inputs), differentiable w.r.t. the parameters.

    Shape:
        loss: a scalar (or ``[B]`` with ``per_sample=True``); inputs: ``[B, ...]`` tensor(s).
        output: a scalar.

    Source: kexue.fm/archives/7234, kexue.fm/archives/7466; Ross & Doshi-Velez arXiv 1711.09404.
    """
    fn = "gradient_penalty"
    check_tensor("loss", loss, fn=fn, kind="float")
    xs = _as_tensor_list("inputs", inputs, fn)
    eps = check_finite_number("epsilon", epsilon, fn=fn, min=0.0)
    check_bool("per_sample", per_sample, fn=fn)
    batch = xs[0].shape[0] if xs[0].dim() >= 1 else 1
    if loss.numel() != 1:
        if not per_sample:
            fail(fn, "loss", "a scalar loss (pass per_sample=True for per-sample losses [B])", loss)
        if loss.dim() != 1 or loss.shape[0] != batch:
            fail(fn, "loss", f"a scalar or per-sample losses of shape [{batch}] (B = inputs.shape[0])", loss)
    if not loss.requires_grad:
        fail(fn, "loss", "a loss that requires grad (computed from 'inputs')", loss)
    if eps == 0.0:
        return loss.new_zeros(
            (), dtype=torch.float32 if loss.dtype in (torch.float16, torch.bfloat16) else loss.dtype
        )
    scale = grad_scale(scaler)
    total = loss.sum() if loss.numel() != 1 else loss.reshape(())
    grads = torch.autograd.grad(
        total * scale if scale != 1.0 else total, xs, create_graph=True, allow_unused=True
    )
    if all(g is None for g in grads):
        fail(fn, "inputs", "tensor(s) that 'loss' depends on", xs[0])
    _check_twice_differentiable(grads, fn)
    if scale != 1.0:
        grads = tuple(None if g is None else g * (1.0 / scale) for g in grads)
    sq = _sq_norm(grads)
    if per_sample:
        # loss vector: Σ_b‖∇l_b‖²/B; batch mean: ∇_{x_b}L = ∇l_b/B, so Σ_b‖∇l_b‖²/B = B·Σ_b‖∇_{x_b}L‖².
        sq = sq / batch if loss.numel() != 1 else sq * batch
    return 0.5 * eps * sq


class FastGradientPenalty(EmbeddingAttack):
    """Input-gradient penalty ``L + ε/2·‖∇_x L‖²`` trained by finite differences (no double backprop).

    Two passes: the clean pass gives ``g = ∇_x L`` (``autograd.grad``, no ``.grad`` touched), the
    attack pass backpropagates ``L(x + ε·g)`` with ``g`` detached, ``x`` the embedding output. By
    Taylor expansion ``∇_θ L(x + εg) = ∇_θ(L + ε/2‖∇_x L‖²) + O(ε²)`` (kexue.fm/archives/7466, eq. 2.1):
    it is FGM with an un-normalized step. ``per_sample=True`` uses ``g_b = ∇_{x_b} l_b = B·∂L/∂x_b``
    (``B`` = batch dim of the embedding output), matching :func:`gradient_penalty` with
    ``per_sample=True``; this also makes the step independent of how a batch is split across DDP
    ranks or accumulation micro-batches.

    By default both passes draw the same dropout masks (``replay_rng=True``), so the second pass is a
    finite difference of the same function.

    Shape:
        ``closure()`` returns a scalar loss; ``g`` and the step ``ε·g`` have the shape of the embedding
        output (``[B, ..., D]``); :meth:`step` returns the clean loss (a detached scalar).

    Example::

        model = nn.Sequential(nn.Embedding(100, 16), nn.Flatten(), nn.Linear(6 * 16, 2))
        opt, gp = torch.optim.SGD(model.parameters(), lr=0.1), FastGradientPenalty(model[0], epsilon=1.0)
        ids, y = torch.randint(100, (4, 6)), torch.randint(2, (4,))
        loss = gp.step(lambda: F.cross_entropy(model(ids), y))  # .grad ≈ ∇(L + ε/2·‖∇_x L‖²)
        opt.step()

    Args:
        embedding: the module whose output is ``x`` (``model.get_input_embeddings()``).
        epsilon: ε ≥ 0 (default 1.0); ε = 0 is the plain step.
        per_sample: see above (default False, the post's batch-mean convention).
        ddp_model, replay_rng, freeze_bn: as in :class:`~trainwell.regularizers.FGM`.

    Source: kexue.fm/archives/7466, kexue.fm/archives/7234.
    """

    _name = "FastGradientPenalty"

    def __init__(
        self,
        embedding: Any,
        epsilon: float = 1.0,
        *,
        per_sample: bool = False,
        ddp_model: Any = None,
        replay_rng: bool = True,
        freeze_bn: bool = True,
    ) -> None:
        super().__init__(
            embedding,
            epsilon=epsilon,
            mode="output",
            ddp_model=ddp_model,
            replay_rng=replay_rng,
            freeze_bn=freeze_bn,
        )
        self.per_sample: bool = check_bool("per_sample", per_sample, fn=self._name)

    def step(
        self,
        closure: Callable[[], Tensor],
        *,
        backward: BackwardFn | None = None,
        scaler: Any = None,
    ) -> Tensor:
        """Clean pass + perturbed pass; ``.grad`` ≈ ``∇_θ(L + ε/2‖∇_x L‖²)``; returns the clean loss.

        Arguments as in :meth:`FGM.step`. The direction is un-normalized, so with a ``GradScaler`` pass
        it as ``scaler=`` (its scale is divided out); a custom ``backward`` alone is fine without one.
        """
        fn, do_backward, scale, rng = self._start(closure, backward, scaler)
        if self.epsilon == 0.0:
            return self._plain(closure, fn, do_backward)
        loss, grads = self._clean(closure, fn, do_backward, scale)
        deltas = None
        if self._finite(grads):
            deltas = [
                self.epsilon * (g * g.shape[0] if self.per_sample and g.dim() >= 1 else g) for g in grads
            ]
        self._final(closure, fn, do_backward, deltas, rng)
        return loss.detach()


# ------------------------------------------------------------------------------------ parameters


def _param_list(name: str, value: Any, fn: str) -> list[Tensor]:
    if isinstance(value, nn.Module):
        params: list[Tensor] = [p for p in value.parameters() if p.requires_grad]
    elif isinstance(value, Tensor):
        params = [value]
    elif isinstance(value, Iterable):
        params = list(value)
    else:
        fail(fn, name, "an nn.Module or an iterable of parameters", value, exc=TypeError)
    if not params:
        fail(fn, name, "a non-empty set of parameters that require grad", value)
    for p in params:
        check_tensor(name, p, fn=fn, kind="float")
        if not p.requires_grad:
            fail(fn, name, "parameters that require grad", p)
    return params


def parameter_gradient_penalty(
    loss: Tensor,
    params: nn.Module | Iterable[Tensor],
    beta: float = 1.0,
    *,
    scaler: Any = None,
) -> Tensor:
    """Parameter-gradient penalty ``β/2·‖∇_θ L‖²`` (differentiable, double backprop).

    Training ``L + β/2‖∇_θ L‖²`` is what flooding's descent/ascent alternation does implicitly
    (kexue.fm/archives/7643) and what SGD's implicit regularization approximates (Barrett & Dherin
    arXiv 2009.11162); by the inequality of kexue.fm/archives/8796 it also controls ‖∇_x f‖ of an MLP.

    Args:
        loss: scalar loss.
        params: an ``nn.Module`` (its parameters that require grad) or an iterable of tensors.
        beta: weight β ≥ 0 (default 1.0).
        scaler: optional ``GradScaler``: the gradient of ``scaler.scale(loss)`` is taken and unscaled.

    Returns:
        The penalty (float32 for half parameters), differentiable.

    Shape:
        loss: a scalar; output: a scalar.
    """
    fn = "parameter_gradient_penalty"
    check_scalar_tensor("loss", loss, fn=fn)
    ps = _param_list("params", params, fn)
    b = check_finite_number("beta", beta, fn=fn, min=0.0)
    if not loss.requires_grad:
        fail(fn, "loss", "a loss that requires grad", loss)
    scale = grad_scale(scaler)
    total = loss.reshape(())
    grads = torch.autograd.grad(
        total * scale if scale != 1.0 else total, ps, create_graph=True, allow_unused=True
    )
    _check_twice_differentiable(grads, fn)
    if scale != 1.0:
        grads = tuple(None if g is None else g * (1.0 / scale) for g in grads)
    if all(g is None for g in grads):
        return total.new_zeros(())
    return 0.5 * b * _sq_norm(grads)


class ParameterGradientPenalty:
    """Trains ``L + β/2·‖∇_θ L‖²`` with a finite-difference Hessian-vector product (no double backprop).

    ``∇_θ(β/2‖g‖²) = β·H g`` with ``g = ∇_θ L``. With ``ĝ = g/‖g‖`` and ``θ± = θ ± ξĝ`` (central
    differences, error ``O(ξ²)``; the spec's one-sided form has ``O(ξ)`` at the same cost):

        ``H g ≈ ‖g‖·(∇L(θ+) − ∇L(θ−))/(2ξ)``,  ``g ≈ (∇L(θ+) + ∇L(θ−))/2``,

    so the total gradient is ``(½ + c)∇L(θ+) + (½ − c)∇L(θ−)``, ``c = β‖g‖/(2ξ)``. ``step`` runs a
    clean pass for ``g`` (``autograd.grad``, under ``no_sync``), then two backward passes through the
    user's ``backward`` on ``(½ + c)·L(θ+)`` and ``(½ − c)·L(θ−)`` (the last one all-reduces under DDP).
    Parameters are restored bit-exactly by copying saved clones. All three passes replay the same
    RNG state (dropout masks), otherwise mask noise divided by ξ would swamp the difference.

    Shape:
        ``closure()`` returns a scalar loss; the parameters may have any shapes (the direction ``ĝ`` has
        each parameter's shape); :meth:`step` returns the clean loss (a detached scalar).

    Example::

        model = nn.Linear(8, 1)
        opt, pen = torch.optim.SGD(model.parameters(), lr=0.1), ParameterGradientPenalty(model, beta=0.1)
        x, y = torch.randn(16, 8), torch.randn(16, 1)
        loss = pen.step(lambda: F.mse_loss(model(x), y))  # .grad ≈ ∇(L + β/2·‖∇_θ L‖²)
        opt.step()

    Args:
        params: the parameters θ (an ``nn.Module`` or an iterable of tensors).
        beta: β ≥ 0 (default 1.0). β = 0 is the plain step.
        xi: finite-difference step ξ > 0 along the unit direction ĝ in parameter space (default 1e-3;
            keep it well above the parameters' rounding error, e.g. ≥ 1e-4 in float32).
        ddp_model: the ``DistributedDataParallel`` wrapper, if any.

    Source: kexue.fm/archives/7643 (§ "flooding as a gradient penalty"), kexue.fm/archives/8796.
    """

    _name = "ParameterGradientPenalty"

    def __init__(
        self,
        params: nn.Module | Iterable[Tensor],
        beta: float = 1.0,
        *,
        xi: float = 1e-3,
        ddp_model: Any = None,
    ) -> None:
        fn = self._name
        self.params = _param_list("params", params, fn)
        self.beta: float = check_finite_number("beta", beta, fn=fn, min=0.0)
        self.xi: float = check_finite_number("xi", xi, fn=fn, min=0.0, min_inclusive=False)
        self.ddp_model = check_ddp_model(ddp_model, fn=fn)
        self.last_grad_norm: float | None = None

    def step(
        self,
        closure: Callable[[], Tensor],
        *,
        backward: BackwardFn | None = None,
        scaler: Any = None,
    ) -> Tensor:
        """Three passes; ``.grad`` ≈ ``∇_θ(L + β/2‖∇_θ L‖²)``; returns the clean loss (detached)."""
        fn = f"{self._name}.step"
        check_callable("closure", closure, fn=fn)
        do_backward = resolve_backward(backward, scaler, fn=fn)
        scale = grad_scale(scaler)
        rng = RngReplay(True)
        if self.beta == 0.0:
            loss = call_closure(closure, fn=fn)
            do_backward(loss)
            return loss.detach()
        with sync_context(self.ddp_model, sync=False):
            loss = call_closure(closure, fn=fn)
            gs = torch.autograd.grad(loss * scale if scale != 1.0 else loss, self.params, allow_unused=True)
        grads = [
            torch.zeros_like(p)
            if g is None
            else (g.float() if g.dtype in (torch.float16, torch.bfloat16) else g) / scale
            for g, p in zip(gs, self.params)
        ]
        gnorm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
        self.last_grad_norm = gnorm
        if not math.isfinite(gnorm) or gnorm == 0.0:
            # No direction (stationary point or overflow): the penalty's gradient β·Hg is 0 / unknown.
            rng.replay()
            plain = call_closure(closure, fn=fn)
            do_backward(plain)
            return loss.detach()
        c = self.beta * gnorm / (2.0 * self.xi)
        saved = [p.detach().clone() for p in self.params]
        steps = [(self.xi / gnorm) * g for g in grads]
        try:
            for sign, weight, sync in ((1.0, 0.5 + c, False), (-1.0, 0.5 - c, True)):
                with torch.no_grad():
                    for p, s0, st in zip(self.params, saved, steps):
                        p.copy_((s0.to(st.dtype) + sign * st).to(p.dtype))
                rng.replay()
                with sync_context(self.ddp_model, sync=sync):
                    shifted = call_closure(closure, fn=fn)
                    do_backward(weight * shifted)
        finally:
            with torch.no_grad():
                for p, s0 in zip(self.params, saved):
                    p.copy_(s0)
        return loss.detach()
