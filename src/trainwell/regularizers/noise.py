"""Noise injection and the gradient penalties it expands into (kexue.fm/archives/7466, §1).

* :class:`GaussianNoise` — additive ``N(0, σ²)`` noise, active in train mode only.
* :func:`weight_noise` — context manager perturbing parameters, restored bit-exactly on exit.
* :func:`noisy_loss` — Monte-Carlo ``E_ε l(f(x + ε), y)`` with ``K`` samples in one batched forward.
  Expansion A: ``E_ε l(f(x+ε), y) = l + σ²/2·Δ_x l + O(σ⁴)``.
* :func:`noise_consistency_loss` — Expansion B, ``l(f(x+ε), sg f(x))``: a label-free, zeroth-order
  (finite-difference) estimate of ``σ²/2·Σ_i λ_i‖∇_x f_i‖²`` (KL: ``λ_i = 1/f_i``; MSE: ``λ_i = 2``).
* :func:`random_sign_gradient_penalty` — fast approximation C:
  ``Σ_i λ_i‖∇_x f_i‖² = E_η‖∇_x Σ_i η_i√λ_i f_i‖²`` with Rademacher ``η``, one backward per projection
  instead of one per output.
* :func:`jacobian_penalty` — the exact ``Σ_i λ_i‖∇_x f_i‖²`` (one backward per output; small ``k``).

Source: kexue.fm/archives/7466; Bishop (1995) "Training with noise is equivalent to Tikhonov
regularization".
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
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

__all__ = [
    "GaussianNoise",
    "jacobian_penalty",
    "noise_consistency_loss",
    "noisy_loss",
    "random_sign_gradient_penalty",
    "weight_noise",
]


class GaussianNoise(nn.Module):
    """Adds ``N(0, σ²)`` noise to its input in train mode; identity in eval mode or when ``σ = 0``.

    Shape:
        x: any shape; output: the same shape and dtype.

    Example::

        noise = GaussianNoise(sigma=0.1)
        h = noise(torch.randn(8, 16))  # train mode: h + N(0, 0.1²) per element
        noise.eval()  # from here on the identity

    Args:
        sigma: noise standard deviation σ ≥ 0 (no default in the post; a plain attribute, read at call
            time, so it can be scheduled).

    Source: kexue.fm/archives/7466.
    """

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = check_finite_number("sigma", sigma, fn="GaussianNoise", min=0.0)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.sigma == 0.0:
            return x
        return x + self.sigma * torch.randn_like(x)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


def _params(value: Any, fn: str) -> list[Tensor]:
    if isinstance(value, nn.Module):
        params: list[Tensor] = list(value.parameters())
    elif isinstance(value, Tensor):
        params = [value]
    elif isinstance(value, Iterable):
        params = list(value)
    else:
        fail(fn, "module_or_params", "an nn.Module or an iterable of tensors", value, exc=TypeError)
    for p in params:
        check_tensor("module_or_params", p, fn=fn)
    return [p for p in params if p.is_floating_point()]


@contextlib.contextmanager
def weight_noise(
    module_or_params: nn.Module | Iterable[Tensor],
    sigma: float,
    *,
    generator: torch.Generator | None = None,
) -> Iterator[list[Tensor]]:
    """Add ``N(0, σ²)`` noise to every floating parameter inside the block; restore them bit-exactly.

    Run the forward *and* backward inside the block (the graph saved the noisy values)::

        with weight_noise(model, 0.01):
            loss_fn(model(x), y).backward()
        optimizer.step()      # gradient taken at θ + ε, applied to θ

    The original values are copied back on exit (also on exceptions), never subtracted, so the
    restore is exact in every dtype. Yields the list of noise tensors that were added.

    Source: kexue.fm/archives/7466 (noise on weights ≈ parameter-gradient penalty ``σ²/2·Σλ_i‖∇_θ f_i‖²``).
    """
    fn = "weight_noise"
    params = _params(module_or_params, fn)
    s = check_finite_number("sigma", sigma, fn=fn, min=0.0)
    saved = [p.detach().clone() for p in params]
    noises: list[Tensor] = []
    try:
        with torch.no_grad():
            for p in params:
                eps = torch.randn(p.shape, dtype=p.dtype, device=p.device, generator=generator) * s
                p.add_(eps)
                noises.append(eps)
        yield noises
    finally:
        with torch.no_grad():
            for p, s0 in zip(params, saved):
                p.copy_(s0)


def noisy_loss(
    model: Callable[[Tensor], Tensor],
    inputs: Tensor,
    target: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    sigma: float,
    n_samples: int = 1,
    *,
    antithetic: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Monte-Carlo noisy objective ``(1/K)·Σ_j l(f(x + ε_j), y)``, ``ε_j ~ N(0, σ²I)``, one batched forward.

    The batch is repeated ``K`` times with ``repeat_interleave`` (memory × K). ``antithetic=True`` pairs
    ``ε`` with ``−ε`` (K must be even), which cancels the odd Taylor terms exactly. ``loss_fn`` must
    average over the batch (``reduction='mean'``), so the result is the average over samples and noise.

    Args:
        model: callable ``inputs → outputs``. inputs: ``[B, ...]``. target: ``[B, ...]``.
        loss_fn: ``loss_fn(outputs, target)`` → scalar mean loss.
        sigma: σ ≥ 0 (σ = 0 gives the clean loss). n_samples: K ≥ 1 (post: 1).

    Source: kexue.fm/archives/7466 (Expansion A: ``E l = l + σ²/2·Δ_x l + O(σ⁴)``).
    """
    fn = "noisy_loss"
    check_callable("model", model, fn=fn)
    check_callable("loss_fn", loss_fn, fn=fn)
    check_tensor("inputs", inputs, fn=fn, kind="float", min_ndim=1)
    check_tensor("target", target, fn=fn, min_ndim=1)
    s = check_finite_number("sigma", sigma, fn=fn, min=0.0)
    k = check_int("n_samples", n_samples, fn=fn, min=1)
    check_bool("antithetic", antithetic, fn=fn)
    if antithetic and k % 2:
        fail(fn, "n_samples", "an even number when antithetic=True", n_samples)
    if target.shape[0] != inputs.shape[0]:
        fail(fn, "target", f"a tensor with batch size {inputs.shape[0]} (inputs.shape[0])", target)
    x = inputs.repeat_interleave(k, dim=0)
    y = target.repeat_interleave(k, dim=0)
    if antithetic:
        half = torch.randn(
            (inputs.shape[0], k // 2, *inputs.shape[1:]),
            dtype=inputs.dtype,
            device=inputs.device,
            generator=generator,
        )
        eps = torch.cat([half, -half], dim=1).reshape(x.shape)
    else:
        eps = torch.randn(x.shape, dtype=inputs.dtype, device=inputs.device, generator=generator)
    return loss_fn(model(x + s * eps), y)


def _per_sample_sq(g: Tensor) -> Tensor:
    g = g.float() if g.dtype in (torch.float16, torch.bfloat16) else g
    return g.reshape(g.shape[0], -1).pow(2).sum(1) if g.dim() >= 1 else g.pow(2)


def _check_weights(weights: Tensor | None, outputs: Tensor, fn: str) -> Tensor | None:
    if weights is None:
        return None
    check_tensor("weights", weights, fn=fn, kind="float")
    try:
        torch.broadcast_shapes(weights.shape, outputs.shape)
    except RuntimeError:
        fail(fn, "weights", f"a tensor broadcastable to outputs {tuple(outputs.shape)}", weights)
    if bool((weights < 0).any()):
        fail(fn, "weights", "non-negative λ_i", weights)
    return weights.detach()


def _check_outputs_inputs(outputs: Tensor, inputs: Tensor, fn: str) -> None:
    """Shared checks of the Jacobian penalties: float outputs and inputs, inputs part of the graph."""
    check_tensor("outputs", outputs, fn=fn, kind="float", min_ndim=1)
    check_tensor("inputs", inputs, fn=fn, kind="float", min_ndim=1)
    if not inputs.requires_grad:
        fail(fn, "inputs", "a tensor with requires_grad=True that 'outputs' was computed from", inputs)


def random_sign_gradient_penalty(
    outputs: Tensor,
    inputs: Tensor,
    weights: Tensor | None = None,
    n_projections: int = 1,
    *,
    signs: Tensor | None = None,
    reduction: str = "mean",
    create_graph: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Unbiased estimate of ``Σ_i λ_i‖∇_x f_i‖²`` per sample from random-sign projections of the outputs.

    ``Σ_i λ_i‖∇_x f_i‖² = E_η ‖∇_x Σ_i η_i √λ_i f_i(x)‖²`` for ``η_i`` i.i.d. with mean 0 and variance 1
    (Rademacher ±1 here). Each projection costs one backward instead of ``k``; averaging over all
    ``2^k`` sign patterns (pass them as ``signs``) is exact. ``√λ_i`` is detached (stop-gradient).

    Args:
        outputs: ``f(x)``, shape ``[B, ...]`` (e.g. probabilities or logits ``[B, k]``).
        inputs: ``x`` ``[B, ...]`` with ``requires_grad``.
        weights: ``λ_i ≥ 0`` broadcastable to ``outputs`` (default 1).
        n_projections: number of random projections averaged (default 1).
        signs: explicit ``η`` of shape ``[P, *outputs.shape]`` (overrides ``n_projections``).
        reduction: over the batch, ``'none' | 'mean' | 'sum'`` (default 'mean').
        create_graph: keep the graph so the penalty can be trained (default True).

    Per-sample values from one backward assume samples do not interact (no train-mode BatchNorm).
    Source: kexue.fm/archives/7466 (fast approximation of the noise-consistency penalty).
    """
    fn = "random_sign_gradient_penalty"
    red = check_reduction(reduction, fn=fn)
    _check_outputs_inputs(outputs, inputs, fn)
    w = _check_weights(weights, outputs, fn)
    if signs is None:
        p = check_int("n_projections", n_projections, fn=fn, min=1)
        assert p is not None
        signs = torch.randint(0, 2, (p, *outputs.shape), device=outputs.device, generator=generator)
        signs = signs.to(outputs.dtype) * 2 - 1
    else:
        check_tensor("signs", signs, fn=fn, kind="float")
        if tuple(signs.shape[1:]) != tuple(outputs.shape):
            fail(fn, "signs", f"a tensor of shape [P, {', '.join(map(str, outputs.shape))}]", signs)
    f = outputs if w is None else outputs * w.sqrt()
    total: Tensor | None = None
    n = signs.shape[0]
    for j in range(n):
        (g,) = torch.autograd.grad((signs[j] * f).sum(), inputs, create_graph=create_graph, retain_graph=True)
        sq = _per_sample_sq(g)
        total = sq if total is None else total + sq
    assert total is not None
    return apply_reduction(total / n, red)


def jacobian_penalty(
    outputs: Tensor,
    inputs: Tensor,
    weights: Tensor | None = None,
    *,
    reduction: str = "mean",
    create_graph: bool = True,
) -> Tensor:
    """Exact ``Σ_i λ_i‖∇_x f_i‖²`` per sample (one backward per output component; for small ``k``).

    Arguments as in :func:`random_sign_gradient_penalty`. With ``λ_i ≡ 1`` this is ``‖J‖_F²``
    (``σ²‖J‖_F²`` is the MSE consistency penalty of kexue.fm/archives/7466).
    """
    fn = "jacobian_penalty"
    red = check_reduction(reduction, fn=fn)
    _check_outputs_inputs(outputs, inputs, fn)
    w = _check_weights(weights, outputs, fn)
    f = outputs if w is None else outputs * w.sqrt()
    flat = f.reshape(f.shape[0], -1)
    total = inputs.new_zeros(
        inputs.shape[0], dtype=compute_dtype(inputs)
    )
    for i in range(flat.shape[1]):
        (g,) = torch.autograd.grad(
            flat[:, i].sum(), inputs, create_graph=create_graph, retain_graph=True, allow_unused=True
        )
        if g is not None:
            total = total + _per_sample_sq(g)
    return apply_reduction(total, red)


def noise_consistency_loss(
    model: Callable[[Tensor], Tensor],
    inputs: Tensor,
    sigma: float,
    *,
    kind: str = "kl",
    outputs: Tensor | None = None,
    n_samples: int = 1,
    reduction: str = "mean",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Label-free consistency ``l(f(x + ε), sg f(x))`` (Expansion B), ``ε ~ N(0, σ²I)``.

    For small σ its expectation is ``σ²/2·Σ_i λ_i‖∇_x f_i‖²``: ``kind='kl'`` (``f`` = logits,
    ``l = KL(softmax f(x) ‖ softmax f(x+ε))``, ``λ_i = 1/p_i``, i.e. ``σ²/2·Σ_i p_i‖∇_x log p_i‖²``) or
    ``kind='mse'`` (``l = ‖f(x+ε) − f(x)‖²`` summed over outputs, ``λ_i = 2``, i.e. ``σ²‖J‖_F²``). It is
    the finite-difference (no double backprop) form of that gradient penalty, and the random-noise
    ancestor of VAT (:func:`~trainwell.regularizers.vat_loss`). Exactly 0 with zero gradient at ε = 0.

    Args:
        model: callable ``inputs → outputs``. inputs: ``[B, ...]``.
        sigma: σ ≥ 0. kind: ``'kl'`` or ``'mse'``.
        outputs: the clean ``f(x)`` (computed without gradient if None); always detached.
        n_samples: noise draws averaged (default 1). reduction: over the batch (default 'mean').

    Source: kexue.fm/archives/7466 (eq. 1.1, 1.2).
    """
    fn = "noise_consistency_loss"
    check_callable("model", model, fn=fn)
    check_tensor("inputs", inputs, fn=fn, kind="float", min_ndim=1)
    s = check_finite_number("sigma", sigma, fn=fn, min=0.0)
    kind = check_choice("kind", kind, ("kl", "mse"), fn=fn)
    k = check_int("n_samples", n_samples, fn=fn, min=1)
    red = check_reduction(reduction, fn=fn)
    check_tensor("outputs", outputs, fn=fn, kind="float", allow_none=True)
    if outputs is None:
        with torch.no_grad():
            outputs = model(inputs)
    clean = outputs.detach()
    b = inputs.shape[0]
    x = inputs.repeat_interleave(k, dim=0)
    eps = torch.randn(x.shape, dtype=inputs.dtype, device=inputs.device, generator=generator)
    noisy = model(x + s * eps)
    ref = clean.repeat_interleave(k, dim=0)
    if kind == "kl":
        lp = F.log_softmax(to_compute_dtype(ref), dim=-1)
        lq = F.log_softmax(to_compute_dtype(noisy), dim=-1)
        per = (lp.exp() * (lp - lq)).sum(-1)
    else:
        diff = noisy.float() - ref.float() if noisy.dtype != torch.float64 else noisy - ref
        per = diff.pow(2)
    per = per.reshape(b, k, -1).sum(-1).mean(1)
    return apply_reduction(per, red)
