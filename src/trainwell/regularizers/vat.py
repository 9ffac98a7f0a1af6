"""Virtual adversarial training (VAT): the label-free consistency term along the most sensitive direction.

``D(r) = KL(sg p(·|x) ‖ p(·|x + r))`` has ``D(0) = 0`` and ``∇D(0) = 0``, so ``D(r) ≈ ½ rᵀHr`` and the
worst direction is the top eigenvector of ``H``. Power iteration with finite-difference
Hessian-vector products ``Hu ≈ ∇_r D(ξu)/ξ`` (``K`` times, from ``d ~ N(0, I)``) gives
``r_adv = ε·d/‖d‖`` and the local distributional smoothness ``LDS = D(r_adv)``.

Source: kexue.fm/archives/7466 (§ "虚拟对抗"); Miyato et al. arXiv 1704.03976 (defaults ξ = 1e-6,
K = 1; the official code uses ε = 8 for images).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainwell._ops import apply_reduction, compute_dtype, to_compute_dtype
from trainwell._validation import (
    check_bool,
    check_callable,
    check_choice,
    check_finite_number,
    check_int,
    check_reduction,
    check_tensor,
    fail,
)
from trainwell.regularizers._common import (
    BackwardFn,
    EmbeddingPerturbation,
    RngReplay,
    autocast_enabled,
    autocast_off,
    check_ddp_model,
    check_embedding,
    freeze_bn_stats,
    resolve_backward,
    sync_context,
    unit,
)

__all__ = ["VAT", "freeze_bn_stats", "vat_loss", "vat_perturbation"]

_NORMS = ("per_sample", "global")


def _kl_rows(target_logits: Tensor, logits: Tensor) -> Tensor:
    """``KL(softmax(target) ‖ softmax(logits))`` per row of the last dim, in float32 (float64 kept)."""
    lp = F.log_softmax(to_compute_dtype(target_logits), dim=-1)
    lq = F.log_softmax(to_compute_dtype(logits), dim=-1)
    return (lp.exp() * (lp - lq)).sum(-1)


def _warn_vanished(xi: float) -> None:
    warnings.warn(
        f"VAT: x + xi*d == x everywhere; xi={xi} is below the floating-point resolution of the "
        "perturbed tensor, so the power iteration sees no perturbation. Increase xi (the post uses 10 "
        "with global normalization of the embedding matrix) or run the power iteration in float64.",
        RuntimeWarning,
        stacklevel=3,
    )


# one autocast-off helper for the library (trainwell._ops); the old private name stays importable
_no_autocast = autocast_off


def _warn_unused_calls(calls: int, unused: Sequence[int]) -> None:
    warnings.warn(
        f"VAT.step: closure() called the embedding {calls} times, but the logits it returns do not depend "
        f"on call(s) {list(unused)}; those calls get no perturbation (VAT perturbs what the logits see). "
        "Return the loss and the logits of the same forward, e.g. out = model(x); return loss_fn(out, y), "
        "out — a second forward only for the loss doubles the work.",
        RuntimeWarning,
        stacklevel=3,
    )


def _vanished(base: Tensor, delta: Tensor) -> bool:
    base = base.detach()
    return not bool((base + delta.detach().to(base.dtype) != base).any())


def vat_perturbation(
    model: Callable[[Tensor], Tensor],
    inputs: Tensor,
    logits: Tensor | None = None,
    *,
    epsilon: float = 1.0,
    xi: float = 1e-6,
    power_iterations: int = 1,
    norm: str = "per_sample",
    freeze_bn: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The virtual adversarial perturbation ``r_adv`` (detached, ``‖r_adv‖ = ε``) for ``inputs``.

    Steps (Miyato et al.): ``d ~ N(0, I)``; ``K`` times ``d ← ∇_d KL(p ‖ p(·|x + ξ·d/‖d‖))``;
    ``r_adv = ε·d/‖d‖``. Norms are per sample (``norm='per_sample'``, the paper) or over the whole
    tensor (``'global'``). The power iteration runs with autocast disabled, because ``x + ξd == x``
    in bf16/fp16 for ξ = 1e-6. ``K = 0`` gives an isotropic random direction.

    Args:
        model: callable mapping ``inputs`` to logits ``[..., C]`` (an ``nn.Module`` has its BatchNorm
            running statistics frozen during the extra passes when ``freeze_bn``).
        inputs: float tensor ``[B, ...]`` (e.g. the embedding output).
        logits: the clean logits ``model(inputs)``; computed (without gradient) when None.
        epsilon: ``‖r_adv‖`` (default 1.0). xi: finite-difference step (default 1e-6).
        power_iterations: K ≥ 0 (default 1). norm: ``'per_sample'`` or ``'global'``.
        freeze_bn: keep BatchNorm running statistics unchanged (default True).
        generator: optional RNG for the initial direction.

    Shape:
        inputs: ``[B, ...]``; logits: ``[..., C]``; output: the shape of ``inputs``.
    """
    fn = "vat_perturbation"
    check_callable("model", model, fn=fn)
    check_tensor("inputs", inputs, fn=fn, kind="float", min_ndim=1)
    check_tensor("logits", logits, fn=fn, kind="float", min_ndim=1, allow_none=True)
    eps = check_finite_number("epsilon", epsilon, fn=fn, min=0.0)
    xi_v = check_finite_number("xi", xi, fn=fn, min=0.0, min_inclusive=False)
    k = check_int("power_iterations", power_iterations, fn=fn, min=0)
    per_sample = check_choice("norm", norm, _NORMS, fn=fn) == "per_sample"
    check_bool("freeze_bn", freeze_bn, fn=fn)
    module = model if isinstance(model, nn.Module) else None
    x = inputs.detach()
    with freeze_bn_stats(module, enabled=freeze_bn):
        if logits is None:
            with torch.no_grad():
                logits = model(x)
        target = logits.detach()
        d = torch.randn(
            x.shape,
            dtype=compute_dtype(x),
            device=x.device,
            generator=generator,
        )
        with autocast_off(x.device.type), torch.enable_grad():
            for _ in range(k):
                d = (xi_v * unit(d, per_sample)).requires_grad_(True)
                if _vanished(x, d):
                    _warn_vanished(xi_v)
                div = _kl_rows(target, model(x + d.to(x.dtype))).mean()
                (g,) = torch.autograd.grad(div, d, allow_unused=True)
                # g/ξ is the finite-difference Hessian-vector product Hu
                d = torch.zeros_like(d) if g is None else g.detach() / xi_v
    return (eps * unit(d, per_sample)).to(x.dtype).detach()


def vat_loss(
    model: Callable[[Tensor], Tensor],
    inputs: Tensor,
    logits: Tensor | None = None,
    *,
    epsilon: float = 1.0,
    xi: float = 1e-6,
    power_iterations: int = 1,
    norm: str = "per_sample",
    grad_through_target: bool = False,
    freeze_bn: bool = True,
    reduction: str = "mean",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Local distributional smoothness ``LDS = KL(p(·|x) ‖ p(·|x + r_adv))`` (functional VAT).

    Needs no labels: add ``alpha * vat_loss(...)`` to the supervised loss of a labeled batch, or use it
    alone on an unlabeled batch. ``r_adv`` comes from :func:`vat_perturbation`. The clean target
    ``p(·|x)`` is detached (official code) unless ``grad_through_target=True`` (Su's remark: keep the
    θ-gradient of ``f(x)``; the difference is second-order small); then ``logits`` must be given.
    With dropout, pass ``logits`` from the same model state or use ``eval()`` for exact behaviour: the
    clean and perturbed passes draw different masks.

    Args:
        model, inputs, logits, epsilon, xi, power_iterations, norm, freeze_bn, generator: as in
            :func:`vat_perturbation`.
        grad_through_target: keep the gradient through the clean logits (default False).
        reduction: over the leading dims of the logits, ``'none' | 'mean' | 'sum'`` (default 'mean').

    Returns:
        LDS in float32, ≥ 0, differentiable w.r.t. the model parameters.

    Shape:
        inputs: ``[B, ...]``; logits: ``[..., C]``.
        output: ``[...]`` (the logits' leading dims) for ``"none"``, a scalar otherwise.

    Source: kexue.fm/archives/7466; arXiv 1704.03976.
    """
    fn = "vat_loss"
    red = check_reduction(reduction, fn=fn)
    check_bool("grad_through_target", grad_through_target, fn=fn)
    if grad_through_target and logits is None:
        fail(fn, "logits", "the clean logits (with grad) when grad_through_target=True", logits)
    r_adv = vat_perturbation(
        model,
        inputs,
        logits,
        epsilon=epsilon,
        xi=xi,
        power_iterations=power_iterations,
        norm=norm,
        freeze_bn=freeze_bn,
        generator=generator,
    )
    module = model if isinstance(model, nn.Module) else None
    if logits is None:
        with torch.no_grad(), freeze_bn_stats(module, enabled=freeze_bn):
            logits = model(inputs)
    with freeze_bn_stats(module, enabled=freeze_bn):
        adv_logits = model(inputs + r_adv)
    target = logits if grad_through_target else logits.detach()
    return apply_reduction(_kl_rows(target, adv_logits), red)


def _split_output(out: Any, fn: str) -> tuple[Tensor | None, Tensor]:
    """closure() → (supervised loss or None, logits)."""
    loss: Any = None
    if isinstance(out, tuple) and len(out) == 2:
        loss, logits = out
    elif isinstance(out, Tensor):
        logits = out
    elif hasattr(out, "logits"):
        loss, logits = getattr(out, "loss", None), out.logits
    else:
        fail(
            fn,
            "closure",
            "a callable returning logits, (loss, logits) or an output with .logits",
            out,
            exc=TypeError,
        )
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        fail(fn, "closure", "a callable whose logits are a floating tensor [..., C]", logits, exc=TypeError)
    if logits.dim() == 0:
        fail(
            fn,
            "closure",
            "a callable returning logits [..., C] (a scalar is not logits; return (loss, logits))",
            logits,
        )
    if loss is not None:
        if not isinstance(loss, Tensor) or loss.numel() != 1 or not loss.is_floating_point():
            fail(fn, "closure", "a callable whose supervised loss is a scalar tensor", loss)
        loss = loss.reshape(())
    return loss, logits


class VAT(EmbeddingPerturbation):
    """Virtual adversarial training on an embedding, as a two-pass object (semi-supervised friendly).

    ``closure()`` runs the forward pass and returns the logits (unlabeled batch), a pair
    ``(supervised_loss, logits)`` (labeled batch) or a Hugging Face output with ``.logits`` (and
    ``.loss``). ``step`` then

    1. runs the clean pass (BatchNorm statistics update normally) and, if there is a supervised loss,
       backpropagates it right away;
    2. runs ``power_iterations`` finite-difference power steps ``d ← ∇_d KL(p ‖ p(·|x + ξd/‖d‖))`` with
       ``autograd.grad`` (no ``.grad`` touched, no DDP sync), in float32 (autocast disabled; under
       autocast a float32 reference forward replaces the half-precision clean prediction), replaying
       the clean pass's dropout masks so that only ``ξd`` differs;
    3. runs the adversarial pass at ``r_adv = ε·d/‖d‖`` and backpropagates ``alpha·LDS``
       (``LDS = KL(p ‖ p(·|x + r_adv))``, mean over the rows of the logits).

    Enter ``torch.autocast`` around ``step`` rather than inside ``closure``: an autocast opened inside
    the closure cannot be switched off for the power iteration, and ``x + ξd`` then rounds back to
    ``x`` in bf16/fp16 (a ``RuntimeWarning`` is raised when the perturbation vanishes entirely).

    Perturbed passes never update BatchNorm running statistics. In ``mode='matrix'`` the perturbation
    lives on the embedding matrix with one global norm (the post: ε = 1, ξ = 10 — a tiny ξ spread over
    the whole matrix vanishes below float32 resolution); in ``mode='output'`` (default, the paper) on
    the embedding output, normalized per sample (``norm`` overrides).

    Shape:
        ``closure()`` returns logits ``[B, ..., C]``, a pair ``(scalar loss, logits)`` or a Hugging Face
        output. ``r_adv`` has the shape of the embedding output (``mode='output'``) or of
        ``embedding.weight`` (``mode='matrix'``); :meth:`step` returns ``sup_loss + alpha·LDS`` (a detached
        scalar).

    Example::

        model = nn.Sequential(nn.Embedding(100, 16), nn.Flatten(), nn.Linear(6 * 16, 2))
        opt, vat = torch.optim.SGD(model.parameters(), lr=0.1), VAT(model[0], epsilon=1.0)
        unlabeled = torch.randint(100, (4, 6))
        lds = vat.step(lambda: model(unlabeled))  # no labels needed
        opt.step()

    Args:
        embedding: the module to perturb (``model.get_input_embeddings()``).
        epsilon: ``‖r_adv‖`` (default 1.0). xi: finite-difference step (default 1e-6, the paper's).
        power_iterations: K ≥ 0 (default 1); K = 0 is isotropic random noise of norm ε.
        alpha: weight of LDS (default 1.0).
        mode: ``'output'`` or ``'matrix'``. norm: ``'per_sample'`` / ``'global'`` (default by mode).
        grad_through_target: keep the θ-gradient of the clean prediction (default False; output mode).
        ddp_model: the ``DistributedDataParallel`` wrapper, if any.
        replay_rng: the adversarial pass reuses the clean pass's dropout masks (default True, so LDS
            measures the perturbation only and is exactly 0 at ε = 0).

    Source: kexue.fm/archives/7466; arXiv 1704.03976.
    """

    _name = "VAT"

    def __init__(
        self,
        embedding: Any,
        epsilon: float = 1.0,
        xi: float = 1e-6,
        power_iterations: int = 1,
        *,
        alpha: float = 1.0,
        mode: str = "output",
        norm: str | None = None,
        grad_through_target: bool = False,
        ddp_model: Any = None,
        replay_rng: bool = True,
    ) -> None:
        fn = self._name
        self.mode: str = check_choice("mode", mode, ("output", "matrix"), fn=fn)
        self.embedding = check_embedding(embedding, fn=fn, need_weight=self.mode == "matrix")
        self.epsilon: float = check_finite_number("epsilon", epsilon, fn=fn, min=0.0)
        self.xi: float = check_finite_number("xi", xi, fn=fn, min=0.0, min_inclusive=False)
        k = check_int("power_iterations", power_iterations, fn=fn, min=0)
        self.power_iterations: int = k
        self.alpha: float = check_finite_number("alpha", alpha, fn=fn, min=0.0)
        if norm is None:
            norm = "per_sample" if self.mode == "output" else "global"
        self.norm: str = check_choice("norm", norm, _NORMS, fn=fn)
        self.grad_through_target: bool = check_bool("grad_through_target", grad_through_target, fn=fn)
        if self.grad_through_target and self.mode == "matrix":
            fail(
                fn,
                "grad_through_target",
                "False in mode='matrix' (the in-place weight perturbation would invalidate the clean graph)",
                grad_through_target,
            )
        self.ddp_model = check_ddp_model(ddp_model, fn=fn)
        self.replay_rng: bool = check_bool("replay_rng", replay_rng, fn=fn)
        self.last_perturbation: list[Tensor] | None = None
        self.last_lds: Tensor | None = None
        self.last_supervised_loss: Tensor | None = None

    # ------------------------------------------------------------------------------------------ passes
    def _forward(
        self, closure: Callable[[], Any], fn: str, deltas: Sequence[Tensor] | None
    ) -> tuple[Tensor | None, Tensor, list[Tensor]]:
        (loss, logits), targets = self._run(lambda: _split_output(closure(), fn), fn, deltas)
        return loss, logits, targets

    def step(
        self,
        closure: Callable[[], Any],
        *,
        backward: BackwardFn | None = None,
        scaler: Any = None,
    ) -> Tensor:
        """One VAT step; leaves ``∇(sup_loss + alpha·LDS)`` in ``.grad``; returns that total (detached).

        ``self.last_lds`` and ``self.last_supervised_loss`` hold the parts, ``self.last_perturbation``
        the ``r_adv`` used.
        """
        fn = f"{self._name}.step"
        check_callable("closure", closure, fn=fn)
        do_backward = resolve_backward(backward, scaler, fn=fn)
        rng = RngReplay(True)
        with sync_context(self.ddp_model, sync=False):
            sup, logits, targets = self._forward(closure, fn, None)
            if sup is not None and not self.grad_through_target:
                do_backward(sup)
        if not self.grad_through_target:
            logits = logits.detach()  # frees the clean graph early
        device_type = logits.device.type
        half = autocast_enabled(device_type)
        ref = logits.detach()
        per_sample = self.norm == "per_sample"
        with sync_context(self.ddp_model, sync=False), freeze_bn_stats(), autocast_off(device_type):
            if half and self.power_iterations > 0:
                # the clean logits are half precision: compare like with like inside the iteration
                rng.replay()
                with torch.no_grad():
                    _, ref, _ = self._forward(closure, fn, None)
            ds = [
                torch.randn(
                    t.shape, dtype=compute_dtype(t), device=t.device
                )
                for t in targets
            ]
            rng.mark_resume()
            unused: list[int] | None = None
            for _ in range(self.power_iterations):
                ds = [self.xi * unit(d, per_sample) for d in ds]
                # calls whose output never reaches the logits keep d = 0 (already reported)
                if any(
                    _vanished(t, d) for i, (t, d) in enumerate(zip(targets, ds)) if i not in (unused or ())
                ):
                    _warn_vanished(self.xi)
                if self.mode == "output":
                    ds = [d.requires_grad_(True) for d in ds]
                rng.replay()
                with self._applied(ds):
                    _, lg, tg = self._forward(closure, fn, ds)
                    div = _kl_rows(ref, lg).mean()
                    gs = torch.autograd.grad(div, ds if self.mode == "output" else tg, allow_unused=True)
                if self.mode == "output" and unused is None:
                    unused = [i for i, g in enumerate(gs) if g is None]
                    if unused:
                        _warn_unused_calls(len(gs), unused)
                ds = [
                    torch.zeros_like(d) if g is None else g.detach().to(d.dtype) / self.xi
                    for g, d in zip(gs, ds)
                ]
        r_adv = [self.epsilon * unit(d.detach(), per_sample) for d in ds]
        if self.replay_rng:
            rng.replay()
        with self._applied(r_adv), freeze_bn_stats():
            _, adv_logits, _ = self._forward(closure, fn, r_adv)
            target = logits if self.grad_through_target else logits.detach()
            lds = _kl_rows(target, adv_logits).mean()
            total = self.alpha * lds
            if sup is not None and self.grad_through_target:
                total = total + sup
            do_backward(total)
        rng.resume()
        self.last_perturbation = r_adv
        self.last_lds = lds.detach()
        self.last_supervised_loss = None if sup is None else sup.detach()
        out = self.alpha * lds.detach()
        return out + sup.detach() if sup is not None else out
