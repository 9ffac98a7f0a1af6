"""Both sides of the input-gradient vs parameter-gradient inequality for an MLP (kexue.fm/archives/8796).

For ``h¹ = x``, ``z^{t+1} = W^t h^t + b^t``, ``h^{t+1} = g^t(z^{t+1})`` and any scalar ``f`` of the output,
with ``J_t = ∂h^t/∂x``:

    ``‖∇_x f‖² · Σ_t (1 + ‖h^t‖²) / (‖W^t‖₂² ‖J_t‖₂²)  ≤  ‖∇_θ f‖²``

(spectral norms; Frobenius norms give a weaker, still valid bound; bias-free layers drop the ``1 +``).
It follows from the exact identities ``h^t ∇_x f = (∇_{W^t} f)ᵀ W^t J_t`` and
``∇_x f = (∇_{b^t} f)ᵀ W^t J_t``. A parameter-gradient penalty (what SGD does implicitly) therefore
controls the input gradient when ``‖h‖, ‖W‖, ‖J‖`` stay stable.

Source: kexue.fm/archives/8796; Dherin et al. arXiv 2111.15090.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from trainwell._validation import check_callable, check_choice, check_module, check_tensor, fail

__all__ = ["GradientBound", "input_parameter_gradient_bound"]


class GradientBound(NamedTuple):
    """Per-sample sides of the inequality: ``lhs ≤ rhs``."""

    lhs: Tensor
    rhs: Tensor


def _flatten(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        out: list[nn.Module] = []
        for m in module:
            out.extend(_flatten(m))
        return out
    return [module]


def _run(mods: list[nn.Module], v: Tensor) -> Tensor:
    for m in mods:
        v = m(v)
    return v


def input_parameter_gradient_bound(
    mlp: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    loss_fn: Callable[..., Tensor] | None = None,
    *,
    norm: str = "spectral",
) -> GradientBound:
    """Evaluate both sides of ``‖∇_x f‖²·Σ_t (1+‖h^t‖²)/(‖W^t‖²‖J_t‖²) ≤ ‖∇_θ f‖²`` per sample.

    Args:
        mlp: an ``nn.Sequential`` of ``nn.Linear`` layers and parameter-free elementwise activations
            (nested Sequentials are flattened).
        x: inputs ``[B, d]``.
        y: targets ``[B, ...]`` for ``loss_fn`` (optional).
        loss_fn: ``f`` for one sample: ``loss_fn(output[1, ...], y[1, ...])`` (or ``loss_fn(output)``
            when ``y`` is None); default ``output.sum()``. The inequality is stated per sample.
        norm: ``'spectral'`` (default, the post's statement) or ``'frobenius'`` for ``‖W‖`` and ``‖J_t‖``.

    Returns:
        :class:`GradientBound` ``(lhs, rhs)``, each ``[B]``. A layer whose ``J_t = 0`` (dead ReLUs)
        contributes 0 (then ``∇_x f = 0`` as well). ``J_t`` comes from ``torch.func.jacrev`` of the
        prefix network: cost O(d·depth) per sample, meant for monitoring and tests.

    Source: kexue.fm/archives/8796; arXiv 2111.15090.
    """
    fn = "input_parameter_gradient_bound"
    check_module("mlp", mlp, fn=fn)
    check_tensor("x", x, fn=fn, kind="float", ndim=2)
    check_tensor("y", y, fn=fn, allow_none=True)
    check_callable("loss_fn", loss_fn, fn=fn, allow_none=True)
    kind = check_choice("norm", norm, ("spectral", "frobenius"), fn=fn)
    mods = _flatten(mlp)
    lin_idx = [i for i, m in enumerate(mods) if isinstance(m, nn.Linear)]
    if not lin_idx:
        fail(fn, "mlp", "a Sequential containing nn.Linear layers", mlp)
    for m in mods:
        if not isinstance(m, nn.Linear) and any(True for _ in m.parameters()):
            fail(fn, "mlp", "Linear layers and parameter-free elementwise activations only", m)
    if y is not None and y.shape[0] != x.shape[0]:
        fail(fn, "y", f"a tensor with batch size {x.shape[0]}", y)

    def mnorm(a: Tensor) -> Tensor:
        return torch.linalg.matrix_norm(a, ord=2 if kind == "spectral" else "fro")

    lins: list[nn.Linear] = [mods[i] for i in lin_idx]  # type: ignore[misc]
    params = [p for lin in lins for p in lin.parameters()]
    w_norms = [mnorm(lin.weight.detach()) for lin in lins]
    lhs_all, rhs_all = [], []
    for b in range(x.shape[0]):
        xb = x[b : b + 1].detach().requires_grad_(True)
        hs: list[Tensor] = []
        v = xb
        for i, m in enumerate(mods):
            if i in lin_idx:
                hs.append(v)
            v = m(v)
        if loss_fn is None:
            f = v.sum()
        else:
            f = loss_fn(v) if y is None else loss_fn(v, y[b : b + 1])
        if f.numel() != 1:
            fail(fn, "loss_fn", "a callable returning a scalar for one sample", f)
        grads = torch.autograd.grad(f.reshape(()), [xb, *params], allow_unused=True)
        gx = grads[0]
        gx_sq = gx.pow(2).sum() if gx is not None else xb.new_zeros(())
        rhs = sum((g.pow(2).sum() for g in grads[1:] if g is not None), xb.new_zeros(()))
        total = xb.new_zeros(())
        for t, (i, lin) in enumerate(zip(lin_idx, lins)):
            h = hs[t].detach()[0]
            if t == 0:
                j_norm = mnorm(torch.eye(x.shape[1], dtype=x.dtype, device=x.device))
            else:
                prefix = mods[:i]
                jac = torch.func.jacrev(lambda u, prefix=prefix: _run(prefix, u.unsqueeze(0)).squeeze(0))(
                    x[b].detach()
                )
                j_norm = mnorm(jac.detach().reshape(jac.shape[0], -1))
            numer = h.pow(2).sum() + (1.0 if lin.bias is not None else 0.0)
            denom = w_norms[t].pow(2) * j_norm.pow(2)
            if float(denom) > 0.0:
                total = total + numer / denom
        lhs_all.append((gx_sq * total).detach())
        rhs_all.append(rhs.detach())
    return GradientBound(torch.stack(lhs_all), torch.stack(rhs_all))
