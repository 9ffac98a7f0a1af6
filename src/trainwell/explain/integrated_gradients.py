"""Integrated gradients: path-integral attribution along the straight line from a baseline to the input.

For an input ``x``, a baseline ``x̄`` and a scalar model output ``F`` (one class score per example)::

    IG_i(x) = (x_i − x̄_i) · ∫_0^1 ∂F/∂x_i (x̄ + α (x − x̄)) dα,        Σ_i IG_i = F(x) − F(x̄)

(completeness). The integral is replaced by a quadrature rule ``Σ_k w_k g(α_k)``; the interpolated
points of all examples and all steps are stacked into one batch, evaluated in chunks of at most
``internal_batch_size`` rows, and each chunk gets **one** forward and **one** backward (no Python loop
over steps). The gradients of a chunk are weighted and scattered into a float32 (float64 for float64
inputs) accumulator, so memory is bounded by the chunk and precision does not depend on autocast.

Source: kexue.fm/archives/7533 (积分梯度); Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep
Networks", arXiv:1703.01365.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

import numpy as np
import torch
from torch import Tensor, nn

from trainwell._validation import check_callable, check_choice, check_int, fail

__all__ = ["METHODS", "IntegratedGradients", "integrated_gradients", "quadrature"]

#: Quadrature rules. ``trapezoid`` is the composite trapezoid rule on ``n`` equally spaced points including
#: both ends (weights sum to 1: exact for linear F). ``riemann_trapezoid`` is captum's rule of that name
#: (the same points with weights ``1/n``, halved at the ends: they sum to ``(n−1)/n``); it is offered only
#: so a captum call can be switched over with identical numbers. ``midpoint`` = ``riemann_middle``.
METHODS = (
    "trapezoid",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "midpoint",
    "gausslegendre",
    "riemann_trapezoid",
)


def quadrature(method: str, n_steps: int) -> tuple[list[float], list[float]]:
    """Weights and nodes ``(w_k, α_k)`` of a rule on [0, 1] with ``n_steps`` points.

    Args:
        method: one of :data:`METHODS`.
        n_steps: number of points (``>= 1``; ``>= 2`` for the two trapezoid rules).

    Returns:
        ``(weights, alphas)``, two lists of ``n_steps`` floats (float64 values).
    """
    return _rule(method, n_steps, fn="quadrature")


def _rule(method: str, n_steps: int, *, fn: str) -> tuple[list[float], list[float]]:
    check_choice("method", method, METHODS, fn=fn)
    n = check_int("n_steps", n_steps, fn=fn, min=1)
    assert n is not None
    if method in ("trapezoid", "riemann_trapezoid") and n < 2:
        fail(fn, "n_steps", f">= 2 for method={method!r} (it needs both end points)", n_steps)
    if method == "gausslegendre":
        nodes, gw = np.polynomial.legendre.leggauss(n)
        return [float(v) for v in 0.5 * gw], [float(v) for v in 0.5 * (1.0 + nodes)]
    if method == "trapezoid":
        h = 1.0 / (n - 1)
        w = [h] * n
        w[0] = w[-1] = h / 2
        return w, [k / (n - 1) for k in range(n)]
    if method == "riemann_trapezoid":  # captum's weights: 1/n, halved at both ends
        w = [1.0 / n] * n
        w[0] /= 2
        w[-1] /= 2
        return w, torch.linspace(0, 1, n).tolist()
    w = [1.0 / n] * n
    if method == "riemann_left":
        return w, torch.linspace(0, 1 - 1 / n, n).tolist()
    if method == "riemann_right":
        return w, torch.linspace(1 / n, 1, n).tolist()
    return w, torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n).tolist()  # riemann_middle / midpoint


# --------------------------------------------------------------------------------------------- checks


def _as_tuple(inputs: Any, *, fn: str) -> tuple[tuple[Tensor, ...], bool]:
    if isinstance(inputs, Tensor):
        items: tuple[Any, ...] = (inputs,)
        single = True
    elif isinstance(inputs, (tuple, list)) and len(inputs) > 0:
        items = tuple(inputs)
        single = False
    else:
        fail(fn, "inputs", "a floating tensor or a non-empty tuple of them", inputs, exc=TypeError)
    for i, t in enumerate(items):
        name = "inputs" if single else f"inputs[{i}]"
        if not isinstance(t, Tensor) or not t.is_floating_point():
            fail(fn, name, "a floating-point tensor (integer ids: attribute the embedding output instead)", t,
                 exc=TypeError)
        if t.dim() < 1 or t.shape[0] < 1:
            fail(fn, name, "a tensor with a leading batch dim of size >= 1", t)
        if t.shape[0] != items[0].shape[0]:
            fail(fn, name, f"a tensor with batch size {items[0].shape[0]} like inputs[0]", t)
    return items, single


def _baselines(baselines: Any, inputs: tuple[Tensor, ...], single: bool, *, fn: str) -> tuple[Tensor, ...]:
    """Baselines expanded to the inputs' shapes (None → zeros, numbers, [1, ...] or per-example shapes)."""
    if baselines is None:
        return tuple(torch.zeros_like(x) for x in inputs)
    if isinstance(baselines, (Tensor, int, float)) and not isinstance(baselines, bool):
        items: tuple[Any, ...] = (
            (baselines,) * len(inputs) if not isinstance(baselines, Tensor) else (baselines,)
        )
    elif isinstance(baselines, (tuple, list)):
        items = tuple(baselines)
    else:
        fail(
            fn,
            "baselines",
            "None, a number, a tensor or a tuple of them (one per input)",
            baselines,
            exc=TypeError,
        )
    if len(items) != len(inputs):
        fail(fn, "baselines", f"one baseline per input ({len(inputs)})", baselines)
    out = []
    for i, (b, x) in enumerate(zip(items, inputs)):
        name = "baselines" if single else f"baselines[{i}]"
        if isinstance(b, bool) or not isinstance(b, (Tensor, int, float)):
            fail(fn, name, "a number or a tensor", b, exc=TypeError)
        if not isinstance(b, Tensor):
            out.append(torch.full_like(x, float(b)))
            continue
        if (
            b.shape != x.shape
            and b.shape not in (torch.Size([1, *x.shape[1:]]), x.shape[1:])
            and b.dim() != 0
        ):
            raise ValueError(
                f"{fn}(): argument '{name}' must have the input's shape {tuple(x.shape)}, "
                f"[1, {', '.join(str(s) for s in x.shape[1:])}] or {tuple(x.shape[1:])}, got {tuple(b.shape)}"
            )
        out.append(b.detach().to(device=x.device, dtype=x.dtype).expand_as(x))
    return tuple(out)


def _targets(target: Any, batch: int, device: torch.device, *, fn: str) -> Tensor | None:
    """``None`` or a LongTensor [B] of class indices (range checked against the output later)."""
    if target is None:
        return None
    if isinstance(target, bool):
        fail(fn, "target", "None, an int, a sequence of ints or an integer tensor", target, exc=TypeError)
    if isinstance(target, int):
        return torch.full((batch,), int(target), dtype=torch.long, device=device)
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            fail(fn, "target", "an integer tensor of class indices", target, exc=TypeError)
        if target.dim() == 0:
            return target.to(device=device, dtype=torch.long).expand(batch).clone()
        if target.dim() != 1 or target.shape[0] != batch:
            fail(fn, "target", f"a scalar or a 1-D tensor of {batch} class indices", target)
        return target.to(device=device, dtype=torch.long)
    if isinstance(target, Sequence) and not isinstance(target, str):
        if len(target) != batch or not all(isinstance(t, int) and not isinstance(t, bool) for t in target):
            fail(fn, "target", f"a sequence of {batch} ints (one class index per example)", target)
        return torch.tensor(list(target), dtype=torch.long, device=device)
    fail(fn, "target", "None, an int, a sequence of ints or an integer tensor", target, exc=TypeError)


def _select(out: Any, target: Tensor | None, rows: int, *, fn: str) -> Tensor:
    """The scalar score per row: ``out[r, target[r]]`` ([B, C] outputs) or ``out[r]`` ([B] / [B, 1])."""
    if hasattr(out, "logits") and not isinstance(out, Tensor):
        out = out.logits
    elif isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        out = out[0]
    if not isinstance(out, Tensor) or not out.is_floating_point():
        fail(fn, "forward_fn", "a callable returning a floating tensor [B] or [B, C]", out, exc=TypeError)
    if out.dim() == 0 or out.shape[0] != rows:
        fail(fn, "forward_fn", f"a callable returning one row per input example ({rows} rows here)", out)
    flat = out.reshape(rows, -1)
    if target is None:
        if flat.shape[1] != 1:
            fail(
                fn,
                "target",
                f"a class index in [0, {flat.shape[1]}) (the output has {flat.shape[1]} scores per example)",
                None,
            )
        return flat[:, 0].float() if flat.dtype in (torch.float16, torch.bfloat16) else flat[:, 0]
    sel = flat.gather(1, target.view(-1, 1)).squeeze(1)
    return sel.float() if sel.dtype in (torch.float16, torch.bfloat16) else sel


def _check_target_range(target: Tensor | None, n_out: int, *, fn: str) -> None:
    if target is None:
        return
    lo, hi = int(target.min()), int(target.max())
    if lo < 0 or hi >= n_out:
        raise ValueError(
            f"{fn}(): argument 'target' must hold class indices in [0, {n_out}), got {lo if lo < 0 else hi}"
        )


@contextlib.contextmanager
def frozen_parameters(module: Any) -> Iterator[None]:
    """Parameters of ``module`` (if it is an ``nn.Module``) stop requiring grad inside the block.

    Attribution needs gradients with respect to the inputs only; with the weights frozen autograd records
    no paths to them (nothing can reach ``.grad``). ``requires_grad`` is restored on exit.
    """
    if not isinstance(module, nn.Module):
        yield
        return
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------- core


def integrated_gradients(
    forward_fn: Callable[..., Any],
    inputs: Tensor | tuple[Tensor, ...],
    baselines: Any = None,
    target: Any = None,
    n_steps: int = 50,
    method: str = "trapezoid",
    internal_batch_size: int | None = None,
    additional_forward_args: Any = None,
) -> tuple[Tensor | tuple[Tensor, ...], Tensor]:
    r"""Integrated gradients of ``forward_fn`` at ``inputs`` relative to ``baselines``.

    .. math::
        \mathrm{IG}_i(x) = (x_i-\bar x_i)\sum_k w_k\,\frac{\partial F}{\partial x_i}\big(\bar
        x+\alpha_k(x-\bar x)\big),
        \qquad \delta = \textstyle\sum_i \mathrm{IG}_i - \big(F(x)-F(\bar x)\big)

    ``F`` is ``forward_fn(*inputs, *additional_forward_args)`` at ``target`` (one score per example).

    Args:
        forward_fn: callable (or ``nn.Module``) returning ``[B]``, ``[B, 1]`` or ``[B, C]`` scores (a Hugging
            Face output's ``.logits`` and the first element of a tuple are used).
        inputs: a floating tensor ``[B, ...]`` or a tuple of them (same ``B``).
        baselines: ``None`` (zeros, default), a number, or a tensor of the input's shape, ``[1, ...]`` or the
            per-example shape; a tuple of them for tuple inputs.
        target: class index per example: ``None`` (outputs with one score per example), an int, a sequence
            of ``B`` ints or an integer tensor ``[B]``.
        n_steps: quadrature points (default 50; ``>= 2`` for the trapezoid rules).
        method: ``"trapezoid"`` (default), ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``
            (alias ``"midpoint"``), ``"gausslegendre"`` or captum's ``"riemann_trapezoid"``
            (see :data:`METHODS`).
        internal_batch_size: at most this many interpolated rows per forward/backward (default: all
            ``n_steps·B`` rows at once). Unlike captum, a value below ``B`` is honoured, so it caps memory.
        additional_forward_args: extra positional arguments after the inputs (a tuple, or one object);
            tensors whose leading dim is ``B`` are repeated along the path, others are passed unchanged.

    Returns:
        ``(attributions, delta)``: attributions shaped like ``inputs`` (a tuple for tuple inputs), in the
        inputs' dtype (float32 for half inputs), and the completeness gap ``delta`` ``[B]`` (float32, or
        float64 for float64 inputs).

    Shape:
        inputs ``[B, ...]`` → attributions ``[B, ...]``, delta ``[B]``.

    Differences from captum's ``IntegratedGradients.attribute``: the default rule is the (correctly
    weighted) trapezoid, captum's default is Gauss–Legendre; ``delta`` is always returned and is computed
    from the path's own end points when the rule contains them (no extra forward); ``internal_batch_size``
    counts rows, not whole steps; bf16/fp16 outputs are accumulated in float32.

    Source: kexue.fm/archives/7533; arXiv:1703.01365.
    """
    fn = "integrated_gradients"
    check_callable("forward_fn", forward_fn, fn=fn)
    xs, single = _as_tuple(inputs, fn=fn)
    bs = _baselines(baselines, xs, single, fn=fn)
    check_choice("method", method, METHODS, fn=fn)
    check_int("n_steps", n_steps, fn=fn, min=1)
    check_int("internal_batch_size", internal_batch_size, fn=fn, min=1, allow_none=True)
    weights, alphas = _rule(method, n_steps, fn=fn)
    batch = xs[0].shape[0]
    device = xs[0].device
    tgt = _targets(target, batch, device, fn=fn)
    if additional_forward_args is None:
        extra: tuple[Any, ...] = ()
    elif isinstance(additional_forward_args, tuple):
        extra = additional_forward_args
    else:
        extra = (additional_forward_args,)

    n_rows = n_steps * batch
    chunk = n_rows if internal_batch_size is None else min(int(internal_batch_size), n_rows)
    acc_dt = _acc_dtype(xs[0])
    w = torch.tensor(weights, dtype=torch.float64, device=device).to(acc_dt)
    a64 = torch.tensor(alphas, dtype=torch.float64, device=device)
    sums = [torch.zeros(x.shape, dtype=_acc_dtype(x), device=device) for x in xs]
    # F(x̄) and F(x): taken from the path rows at α = 0 / α = 1 when the rule has them.
    k0 = next((k for k, a in enumerate(alphas) if a == 0.0), None)
    k1 = next((k for k, a in enumerate(alphas) if a == 1.0), None)
    f_base = torch.empty(batch, dtype=acc_dt, device=device)
    f_input = torch.empty(batch, dtype=acc_dt, device=device)

    def rows_of(t: Any, idx: Tensor) -> Any:
        if isinstance(t, Tensor) and t.dim() >= 1 and t.shape[0] == batch:
            return t.index_select(0, idx)
        return t

    checked = False
    with frozen_parameters(forward_fn):
        for start in range(0, n_rows, chunk):
            r = torch.arange(start, min(start + chunk, n_rows), device=device)
            step, ex = r // batch, r % batch
            # A chunk of whole steps is built by broadcasting (no per-row copies of x and x̄).
            aligned = start % batch == 0 and len(r) % batch == 0
            n_s = len(r) // batch
            scaled = []
            for x, b in zip(xs, bs):
                tail = [1] * (x.dim() - 1)
                if aligned:
                    a = a64[start // batch : start // batch + n_s].to(x.dtype).view(n_s, 1, *tail)
                    path = torch.lerp(b.unsqueeze(0), x.detach().unsqueeze(0), a).reshape(
                        len(r), *x.shape[1:]
                    )
                else:
                    a = a64[step].to(x.dtype).view(-1, *tail)
                    path = torch.lerp(b.index_select(0, ex), x.detach().index_select(0, ex), a)
                scaled.append(path.requires_grad_(True))
            tr = None if tgt is None else tgt.index_select(0, ex)
            with torch.enable_grad():
                out = forward_fn(*scaled, *(rows_of(e, ex) for e in extra))
                if not checked:
                    _check_output(out, tgt, len(r), fn=fn)
                    checked = True
                score = _select(out, tr, len(r), fn=fn)
                # The quadrature weights seed the backward, so the gradients come out already weighted.
                grads = torch.autograd.grad(
                    score, scaled, grad_outputs=w[step].to(score.dtype), allow_unused=True
                )
            for acc, g, x in zip(sums, grads, xs):
                if g is None:  # the output does not depend on this input: zero attribution
                    continue
                if aligned:
                    acc.add_(g.view(n_s, batch, *x.shape[1:]).sum(0, dtype=acc.dtype))
                else:
                    acc.index_add_(0, ex, g.to(acc.dtype))
            sd = score.detach().to(acc_dt)
            for k, dest in ((k0, f_base), (k1, f_input)):
                if k is not None:
                    m = step == k
                    if bool(m.any()):
                        dest[ex[m]] = sd[m]
        ends = [(k0, f_base, bs), (k1, f_input, tuple(x.detach() for x in xs))]
        for k, dest, pts in ends:
            if k is None:
                dest.copy_(_forward_scores(forward_fn, pts, extra, tgt, chunk, batch, fn=fn).to(acc_dt))
    attributions = tuple(
        (s * (x.detach().to(s.dtype) - b.to(s.dtype))).to(
            x.dtype if x.dtype != torch.float16 and x.dtype != torch.bfloat16 else torch.float32
        )
        for s, x, b in zip(sums, xs, bs)
    )
    total = sum(
        (s * (x.detach().to(s.dtype) - b.to(s.dtype))).reshape(batch, -1).sum(1)
        for s, x, b in zip(sums, xs, bs)
    )
    delta = total - (f_input - f_base)
    assert isinstance(delta, Tensor)
    return (attributions[0] if single else attributions), delta


def _check_output(out: Any, tgt: Tensor | None, rows: int, *, fn: str) -> None:
    o = out.logits if hasattr(out, "logits") and not isinstance(out, Tensor) else out
    if isinstance(o, (tuple, list)) and o and isinstance(o[0], Tensor):
        o = o[0]
    if isinstance(o, Tensor) and o.dim() >= 1 and o.shape[0] == rows:
        _check_target_range(tgt, int(math.prod(o.shape[1:])), fn=fn)


@torch.no_grad()
def _forward_scores(
    forward_fn: Callable[..., Any],
    points: tuple[Tensor, ...],
    extra: tuple[Any, ...],
    tgt: Tensor | None,
    chunk: int,
    batch: int,
    *,
    fn: str,
) -> Tensor:
    """F at ``points`` (one row per example), in chunks of ``chunk`` rows."""
    outs = []
    for start in range(0, batch, chunk):
        idx = torch.arange(start, min(start + chunk, batch), device=points[0].device)
        args = [p.index_select(0, idx) for p in points]
        more = [
            e.index_select(0, idx) if isinstance(e, Tensor) and e.dim() >= 1 and e.shape[0] == batch else e
            for e in extra
        ]
        tr = None if tgt is None else tgt.index_select(0, idx)
        outs.append(_select(forward_fn(*args, *more), tr, len(idx), fn=fn))
    return torch.cat(outs)


class IntegratedGradients:
    """Class form of :func:`integrated_gradients`, shaped like captum's ``IntegratedGradients``.

    ``IntegratedGradients(model).attribute(inputs, baselines, target=..., n_steps=..., method=...,
    internal_batch_size=..., return_convergence_delta=True)`` takes captum's argument names and returns
    ``attributions`` or ``(attributions, delta)``, so switching from captum is a change of import (note
    the default rule: ``"trapezoid"`` here, ``"gausslegendre"`` in captum).

    Args:
        forward_fn: the model or callable to explain (see :func:`integrated_gradients`).

    Source: kexue.fm/archives/7533; arXiv:1703.01365.
    """

    def __init__(self, forward_fn: Callable[..., Any]) -> None:
        check_callable("forward_fn", forward_fn, fn="IntegratedGradients")
        self.forward_func = forward_fn

    @property
    def multiplies_by_inputs(self) -> bool:
        """Attributions are multiplied by ``(x − x̄)`` (global attribution), as in captum."""
        return True

    def has_convergence_delta(self) -> bool:
        """The completeness gap is available (``return_convergence_delta=True``)."""
        return True

    @overload
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        baselines: Any = ...,
        target: Any = ...,
        additional_forward_args: Any = ...,
        n_steps: int = ...,
        method: str = ...,
        internal_batch_size: int | None = ...,
        *,
        return_convergence_delta: bool,
    ) -> Any: ...

    @overload
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        baselines: Any = ...,
        target: Any = ...,
        additional_forward_args: Any = ...,
        n_steps: int = ...,
        method: str = ...,
        internal_batch_size: int | None = ...,
    ) -> Tensor | tuple[Tensor, ...]: ...

    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "trapezoid",
        internal_batch_size: int | None = None,
        return_convergence_delta: bool = False,
    ) -> Any:
        """Attributions (and the convergence delta if ``return_convergence_delta``), captum's order of
        args."""
        if not isinstance(return_convergence_delta, bool):
            fail(
                "IntegratedGradients.attribute",
                "return_convergence_delta",
                "a bool",
                return_convergence_delta,
                exc=TypeError,
            )
        attr, delta = integrated_gradients(
            self.forward_func,
            inputs,
            baselines=baselines,
            target=target,
            n_steps=n_steps,
            method=method,
            internal_batch_size=internal_batch_size,
            additional_forward_args=additional_forward_args,
        )
        return (attr, delta) if return_convergence_delta else attr
