"""Gradient normalization (GN) and piecewise gradient normalization (GraN) of a WGAN critic.

For a piecewise-linear critic ``D`` (ReLU/LeakyReLU, no BatchNorm) with ``G = ‖∇_x D(x)‖``:

* GN (Wu et al., ICCV 2021):  ``D̂ = D / (G + |D|) ∈ (−1, 1)``, ``‖∇_x D̂‖ = G²/(G + |D|)² ≤ 1``;
  invariant to positive rescaling ``D → cD``.
* GraN (Bhaskara et al., WACV 2022): ``D̂ = D·G / (G² + ε)``, ``‖∇_x D̂‖ = G²/(G² + ε) < 1``.

Both need ``∇_x D`` inside the forward pass (double backprop when training). Use the normalized critic
for both the discriminator and the generator losses.

Source: kexue.fm/archives/8757; arXiv 2109.02235 (GN), arXiv 2111.03162 (GraN).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from trainwell._validation import (
    check_callable,
    check_choice,
    check_finite_number,
    check_module,
    check_tensor,
    fail,
)

__all__ = ["GradientNormalized", "grad_normalize"]

_KINDS = ("gn", "gran")


def grad_normalize(
    critic: Any,
    x: Tensor,
    kind: str = "gn",
    eps: float = 1e-4,
) -> Tensor:
    """Gradient-normalized critic value ``D̂(x)`` (GN or GraN), differentiable w.r.t. ``x`` and θ.

    ``G`` is the per-sample norm of ``∇_x D`` taken from one backward of ``D.sum()``, valid only when
    samples do not interact inside the critic (no train-mode BatchNorm, no minibatch-std layer).
    ``G`` and the division are computed in float32.

    Args:
        critic: callable ``x → D(x)`` with one value per sample (shape ``[B]`` or ``[B, 1]``).
        x: input ``[B, ...]``. A tensor that does not require grad (real data) is detached and made a
            leaf; a generated ``x = G(z)`` keeps its graph so the generator gets gradients.
        kind: ``'gn'`` (default) or ``'gran'``.
        eps: GraN's ε > 0 (default 1e-4; the paper's exact default was not retrieved). GN uses only a
            1e-12 guard against ``0/0`` at ``D = 0, G = 0``.

    Returns:
        ``D̂`` with the shape of ``D(x)`` (float32 for half precision critics).

    Source: kexue.fm/archives/8757; arXiv 2109.02235, arXiv 2111.03162.
    """
    fn = "grad_normalize"
    check_callable("critic", critic, fn=fn)
    check_tensor("x", x, fn=fn, kind="float", min_ndim=1)
    kind = check_choice("kind", kind, _KINDS, fn=fn)
    e = check_finite_number("eps", eps, fn=fn, min=0.0, min_inclusive=False)
    grad_mode = torch.is_grad_enabled()
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        d = critic(x)
        if not isinstance(d, Tensor) or d.numel() != x.shape[0]:
            fail(fn, "critic", f"a callable returning one value per sample ({x.shape[0]})", d)
        (g,) = torch.autograd.grad(d.sum(), x, create_graph=grad_mode)
    g32 = g.float() if g.dtype in (torch.float16, torch.bfloat16) else g
    gn = g32.reshape(g32.shape[0], -1).norm(dim=1).reshape(d.shape)
    d32 = d.float() if d.dtype in (torch.float16, torch.bfloat16) else d
    if kind == "gn":
        out = d32 / (gn + d32.abs() + 1e-12)
    else:
        out = d32 * gn / (gn.pow(2) + e)
    return out if grad_mode else out.detach()


class GradientNormalized(nn.Module):
    """Wraps a critic so that ``forward(x)`` returns its gradient-normalized value (GN or GraN).

    ``GradientNormalized(critic)`` is GN: ``D/(‖∇_x D‖ + |D|)``; ``GradientNormalized(critic,
    kind="gran", eps=...)`` is GraN: ``D·‖∇_x D‖/(‖∇_x D‖² + ε)``. See :func:`grad_normalize`.

    Shape:
        x: ``[B, ...]``; the critic's output ``D(x)``: ``[B]`` or ``[B, 1]``; output: the shape of ``D(x)``
        (float32 for half-precision critics).

    Example::

        critic = GradientNormalized(nn.Sequential(nn.Linear(2, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1)))
        real, fake = torch.randn(8, 2), torch.randn(8, 2)
        loss = critic(fake).mean() - critic(real).mean()  # [8, 1] values in (−1, 1)
        loss.backward()

    Args:
        module: the critic ``D`` (one output per sample).
        kind: ``'gn'`` (default) or ``'gran'``; a plain attribute, read at call time.
        eps: GraN's ε (default 1e-4).

    Source: kexue.fm/archives/8757; arXiv 2109.02235, arXiv 2111.03162.
    """

    def __init__(self, module: nn.Module, kind: str = "gn", eps: float = 1e-4) -> None:
        super().__init__()
        fn = "GradientNormalized"
        self.module = check_module("module", module, fn=fn)
        self.kind: str = check_choice("kind", kind, _KINDS, fn=fn)
        self.eps: float = check_finite_number("eps", eps, fn=fn, min=0.0, min_inclusive=False)

    def forward(self, x: Tensor) -> Tensor:
        return grad_normalize(self.module, x, kind=self.kind, eps=self.eps)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, eps={self.eps}"
