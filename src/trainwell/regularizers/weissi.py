"""Weight-scale-shift invariant (WEISSI) regularization, L2 penalty and weight-scale shifting utilities.

For positively homogeneous activations (ReLU, LeakyReLU), rescaling ``W_l → γ_l W_l`` with
``∏_l γ_l = 1`` — and biases by the *cumulative* product ``b_l → (∏_{k≤l} γ_k) b_l`` — leaves the
network function unchanged, but changes ``Σ_l‖W_l‖²``: an optimizer can lower an L2 penalty by
rebalancing layers without any gain in smoothness (minimum ``L·(∏_l‖W_l‖)^{2/L}``, AM–GM). WEISSI
penalizes only scale-shift invariant quantities:

    ``R = λ₁·Σ_l log‖W_l‖ + λ₂·Σ_l ‖W_l/‖W_l‖‖₁``.

Correction to the post (kexue.fm/archives/7681): the post scales ``b_l`` by ``γ_l`` alone, which is
exact only for bias-free networks; :func:`weight_scale_shift` applies the cumulative product.

Source: kexue.fm/archives/7681; Liu, Cui, Chan arXiv 2008.02965; AdamW: arXiv 1711.05101.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from trainwell._validation import check_finite_number, check_module, check_tensor, fail

__all__ = ["balance_weight_scales", "l2_penalty", "weight_scale_shift", "weissi_penalty"]

_LAYERS = (nn.Linear, _ConvNd, nn.Bilinear)


def _weights(value: Any, fn: str) -> list[Tensor]:
    if isinstance(value, nn.Module):
        ws = [m.weight for m in value.modules() if isinstance(m, _LAYERS) and isinstance(m.weight, Tensor)]
        if not ws:
            fail(fn, "model_or_parameters", "a module containing Linear/Conv layers", value)
        return ws
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, Iterable):
        ws = list(value)
        if not ws:
            fail(fn, "model_or_parameters", "a non-empty iterable of weight tensors", value)
        for w in ws:
            check_tensor("model_or_parameters", w, fn=fn, kind="float")
        return ws
    fail(fn, "model_or_parameters", "an nn.Module or an iterable of weight tensors", value, exc=TypeError)


def weissi_penalty(
    model_or_parameters: nn.Module | Iterable[Tensor],
    lam1: float = 1.0,
    lam2: float = 1.0,
    *,
    eps: float = 1e-12,
) -> Tensor:
    """WEISSI regularizer ``λ₁·Σ_l log‖W_l‖ + λ₂·Σ_l ‖W_l/‖W_l‖‖₁`` (float32, float64 kept).

    Both terms are unchanged by any weight-scale shift with ``∏γ_l = 1`` (the first because
    ``Σ log γ_l = 0``, the second is invariant to each layer's scale). Euler identities:
    ``⟨∇_W log‖W‖, W⟩ = 1`` and ``⟨∇_W ‖W/‖W‖‖₁, W⟩ = 0``.

    Args:
        model_or_parameters: a module (the weights of its Linear/Conv/Bilinear layers — never biases,
            norm gains or embeddings) or an iterable of weight tensors (used as given, flattened).
        lam1: weight λ₁ ≥ 0 of the log-norm term (default 1.0; the post gives no default).
        lam2: weight λ₂ ≥ 0 of the L1-of-direction term (default 1.0).
        eps: lower clamp of ``‖W‖`` (default 1e-12).

    Do not apply the log term to layers followed by BatchNorm/LayerNorm: they are scale-invariant,
    nothing opposes the shrinkage and ``log‖W‖ → −∞``.

    Source: kexue.fm/archives/7681; arXiv 2008.02965 (check the paper's parameterization: (5.1) is
    Su's reading of it).
    """
    fn = "weissi_penalty"
    ws = _weights(model_or_parameters, fn)
    l1 = check_finite_number("lam1", lam1, fn=fn, min=0.0)
    l2 = check_finite_number("lam2", lam2, fn=fn, min=0.0)
    e = check_finite_number("eps", eps, fn=fn, min=0.0, min_inclusive=False)
    total: Tensor | None = None
    for w in ws:
        w = w.float() if w.dtype in (torch.float16, torch.bfloat16) else w
        n = w.reshape(-1).norm().clamp_min(e)
        term = l1 * torch.log(n) + l2 * (w / n).abs().sum()
        total = term if total is None else total + term
    assert total is not None
    return total


def l2_penalty(params: nn.Module | Iterable[Tensor], lam: float) -> Tensor:
    """``λ/2·Σ‖θ‖²``. With SGD this is exactly weight decay ``θ(1−ηλ) − ηg``; with Adam it is not AdamW.

    Source: kexue.fm/archives/7681.
    """
    fn = "l2_penalty"
    lam_v = check_finite_number("lam", lam, fn=fn, min=0.0)
    ps = list(params.parameters()) if isinstance(params, nn.Module) else list(params)
    if not ps:
        fail(fn, "params", "a non-empty set of tensors", params)
    total: Tensor | None = None
    for p in ps:
        check_tensor("params", p, fn=fn, kind="float")
        q = p.float() if p.dtype in (torch.float16, torch.bfloat16) else p
        s = q.pow(2).sum()
        total = s if total is None else total + s
    assert total is not None
    return 0.5 * lam_v * total


def _layers(layers: Any, fn: str) -> list[nn.Module]:
    if isinstance(layers, nn.Module):
        ls: list[nn.Module] = [m for m in layers.modules() if isinstance(m, _LAYERS)]
    else:
        ls = list(layers)
        for m in ls:
            check_module("layers", m, fn=fn, cls=_LAYERS)
    if not ls:
        fail(fn, "layers", "a module or sequence with at least one Linear/Conv layer", layers)
    return ls


@torch.no_grad()
def weight_scale_shift(layers: nn.Module | Sequence[nn.Module], gammas: Sequence[float]) -> None:
    """Rescale layers in place: ``W_l ← γ_l·W_l`` and ``b_l ← (∏_{k≤l} γ_k)·b_l`` (γ_l > 0).

    The network output is multiplied by ``∏_l γ_l`` for positively homogeneous activations, so it is
    unchanged when ``∏_l γ_l = 1``. Biases must carry the cumulative product (the post's per-layer
    ``γ_l`` is exact only without biases). ``layers`` are the Linear/Conv layers in forward order (or
    a module whose Linear/Conv submodules, in registration order, are the layers).
    """
    fn = "weight_scale_shift"
    ls = _layers(layers, fn)
    gs = list(gammas)
    if len(gs) != len(ls):
        fail(fn, "gammas", f"{len(ls)} factors (one per layer)", gammas)
    cum = 1.0
    for m, g in zip(ls, gs):
        gv = check_finite_number("gammas", g, fn=fn, min=0.0, min_inclusive=False)
        cum *= gv
        weight: Tensor = m.weight  # type: ignore[assignment]
        weight.mul_(gv)
        bias = getattr(m, "bias", None)
        if isinstance(bias, Tensor):
            bias.mul_(cum)


def balance_weight_scales(layers: nn.Module | Sequence[nn.Module]) -> list[float]:
    """Apply the scale shift (``∏γ_l = 1``) that equalizes all layer norms; returns the factors used.

    ``γ_l = (∏_k‖W_k‖)^{1/L} / ‖W_l‖``: afterwards ``Σ_l‖W_l‖² = L·(∏_k‖W_k‖)^{2/L}``, the minimum of the
    L2 penalty over all function-preserving shifts (AM–GM), while the function and the WEISSI penalty
    are unchanged.
    """
    fn = "balance_weight_scales"
    ls = _layers(layers, fn)
    norms = [float(m.weight.detach().double().norm()) for m in ls]  # type: ignore[operator]
    if any(n == 0.0 for n in norms):
        fail(fn, "layers", "layers with non-zero weights", layers)
    log_mean = sum(math.log(n) for n in norms) / len(norms)
    gammas = [math.exp(log_mean - math.log(n)) for n in norms]
    weight_scale_shift(ls, gammas)
    return gammas
