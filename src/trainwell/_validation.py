"""One home for argument checks.

Every public function in trainwell validates its inputs through these helpers, so every error reads
the same way: it names the argument, says what was expected and what came in::

    ValueError: focal_loss(): argument 'gamma' must be >= 0, got -1.0

Value checks that need to look at tensor *contents* (label ranges, probabilities in [0, 1]) force a
device-to-host sync and cannot be traced, so they are skipped while ``torch.compile`` traces the
function (:func:`tracing`) — the eager call has already validated the same code path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Integral, Real
from typing import Any, Literal, NoReturn, overload

import torch
from torch import Tensor, nn

__all__ = [
    "check_bool",
    "check_broadcastable",
    "check_callable",
    "check_choice",
    "check_dtype_kind",
    "check_finite_number",
    "check_int",
    "check_labels",
    "check_last_dim",
    "check_leading_dims",
    "check_module",
    "check_ndim",
    "check_number",
    "check_probabilities",
    "check_reduction",
    "check_same_shape",
    "check_scalar_tensor",
    "check_shape_prefix",
    "check_tensor",
    "fail",
    "tracing",
]

REDUCTIONS = ("none", "mean", "sum")


def tracing() -> bool:
    """True while torch.compile / torch.jit traces the caller (value checks are skipped then)."""
    try:
        if torch.compiler.is_compiling():
            return True
    except AttributeError:  # pragma: no cover - very old torch
        pass
    return bool(torch.jit.is_scripting() or torch.jit.is_tracing())


def _where(fn: str | None) -> str:
    return f"{fn}(): " if fn else ""


def fail(
    fn: str | None, name: str, expected: str, got: Any, *, exc: type[Exception] = ValueError
) -> NoReturn:
    """Raise ``exc`` with the library's message format."""
    raise exc(f"{_where(fn)}argument '{name}' must be {expected}, got {_describe(got)}")


def _describe(value: Any, depth: int = 0) -> str:
    """A short description of ``value``: type, keys, length, shape, dtype — never its contents."""
    if isinstance(value, Tensor):
        return f"Tensor(shape={tuple(value.shape)}, dtype={value.dtype}, device={value.device})"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)
    if isinstance(value, nn.Module):
        return f"{type(value).__name__} module"
    name = type(value).__name__
    if isinstance(value, Mapping):
        keys = list(value.keys())
        if depth > 0:
            return f"{name} with {len(keys)} keys"
        shown = ", ".join(f"{k!r}: {_describe(value[k], depth + 1)}" for k in keys[:6])
        more = f", ... ({len(keys)} keys)" if len(keys) > 6 else ""
        return f"{name}({shown}{more})"
    if isinstance(value, (list, tuple)):
        if depth > 0:
            return f"{name} of length {len(value)}"
        shown = ", ".join(_describe(v, depth + 1) for v in value[:4])
        more = ", ..." if len(value) > 4 else ""
        return f"{name} of length {len(value)} [{shown}{more}]"
    if isinstance(value, Real):
        return f"{name} {float(value)!r}"
    if callable(value):
        return f"{name} {getattr(value, '__qualname__', name)}"
    return name


# --------------------------------------------------------------------------------------------- scalars


@overload
def check_number(
    name: str,
    value: Any,
    *,
    fn: str | None = ...,
    min: float | None = ...,
    max: float | None = ...,
    min_inclusive: bool = ...,
    max_inclusive: bool = ...,
    allow_none: Literal[False] = ...,
) -> float: ...
@overload
def check_number(
    name: str,
    value: Any,
    *,
    fn: str | None = ...,
    min: float | None = ...,
    max: float | None = ...,
    min_inclusive: bool = ...,
    max_inclusive: bool = ...,
    allow_none: bool,
) -> float | None: ...
def check_number(
    name: str,
    value: Any,
    *,
    fn: str | None = None,
    min: float | None = None,
    max: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
    allow_none: bool = False,
) -> float | None:
    """A real (non-bool) number, optionally within [min, max]; returns it as float."""
    if value is None and allow_none:
        return None
    if isinstance(value, Tensor) and value.numel() == 1 and not value.requires_grad:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        fail(fn, name, "a real number" + (" or None" if allow_none else ""), value, exc=TypeError)
    v = float(value)
    if math.isnan(v):
        fail(fn, name, "a number (not NaN)", value)
    if min is not None and (v < min or (v == min and not min_inclusive)):
        fail(fn, name, f"{'>=' if min_inclusive else '>'} {min}", value)
    if max is not None and (v > max or (v == max and not max_inclusive)):
        fail(fn, name, f"{'<=' if max_inclusive else '<'} {max}", value)
    return v


def check_finite_number(name: str, value: Any, *, fn: str | None = None, **kw: Any) -> float:
    v = check_number(name, value, fn=fn, **kw)
    if v is None:  # allow_none=True passed through **kw
        return v  # type: ignore[return-value]
    if not math.isfinite(v):
        fail(fn, name, "a finite number", value)
    return v


@overload
def check_int(
    name: str,
    value: Any,
    *,
    fn: str | None = ...,
    min: int | None = ...,
    max: int | None = ...,
    allow_none: Literal[False] = ...,
) -> int: ...
@overload
def check_int(
    name: str,
    value: Any,
    *,
    fn: str | None = ...,
    min: int | None = ...,
    max: int | None = ...,
    allow_none: bool,
) -> int | None: ...
def check_int(
    name: str,
    value: Any,
    *,
    fn: str | None = None,
    min: int | None = None,
    max: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """An integer (not bool), optionally within [min, max]."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral):
        fail(fn, name, "an int" + (" or None" if allow_none else ""), value, exc=TypeError)
    v = int(value)
    if min is not None and v < min:
        fail(fn, name, f">= {min}", value)
    if max is not None and v > max:
        fail(fn, name, f"<= {max}", value)
    return v


def check_bool(name: str, value: Any, *, fn: str | None = None) -> bool:
    if not isinstance(value, bool):
        fail(fn, name, "a bool", value, exc=TypeError)
    return value


def check_choice(name: str, value: Any, choices: Sequence[Any], *, fn: str | None = None) -> Any:
    if value not in choices:
        fail(fn, name, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def check_reduction(reduction: Any, *, fn: str | None = None) -> str:
    if not isinstance(reduction, str):
        fail(fn, "reduction", "a str, one of 'none', 'mean', 'sum'", reduction, exc=TypeError)
    return str(check_choice("reduction", reduction, REDUCTIONS, fn=fn))


def check_callable(name: str, value: Any, *, fn: str | None = None, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if not callable(value):
        fail(fn, name, "callable", value, exc=TypeError)
    return value


def check_module(
    name: str, value: Any, *, fn: str | None = None, cls: type | tuple[type, ...] = nn.Module
) -> Any:
    if not isinstance(value, cls):
        names = cls.__name__ if isinstance(cls, type) else " or ".join(c.__name__ for c in cls)
        fail(fn, name, f"an instance of {names}", value, exc=TypeError)
    return value


# --------------------------------------------------------------------------------------------- tensors

_KINDS: dict[str, Callable[[torch.dtype], bool]] = {
    "float": lambda d: d.is_floating_point,
    "int": lambda d: (not d.is_floating_point) and (not d.is_complex) and d != torch.bool,
    "bool": lambda d: d == torch.bool,
    "real": lambda d: not d.is_complex,
}


def check_tensor(
    name: str,
    value: Any,
    *,
    fn: str | None = None,
    kind: str | Iterable[str] | None = None,
    ndim: int | None = None,
    min_ndim: int | None = None,
    allow_none: bool = False,
) -> Tensor:
    """A torch.Tensor, optionally of a dtype kind ('float', 'int', 'bool', 'real') and rank."""
    if value is None and allow_none:
        return value  # type: ignore[return-value]
    if not isinstance(value, Tensor):
        fail(fn, name, "a torch.Tensor" + (" or None" if allow_none else ""), value, exc=TypeError)
    if kind is not None:
        check_dtype_kind(name, value, kind, fn=fn)
    if ndim is not None or min_ndim is not None:
        check_ndim(name, value, ndim=ndim, min_ndim=min_ndim, fn=fn)
    return value


def check_dtype_kind(name: str, value: Tensor, kind: str | Iterable[str], *, fn: str | None = None) -> None:
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    if not any(_KINDS[k](value.dtype) for k in kinds):
        fail(fn, name, "a tensor of dtype kind " + " or ".join(kinds), value, exc=TypeError)


def check_ndim(
    name: str, value: Tensor, *, ndim: int | None = None, min_ndim: int | None = None, fn: str | None = None
) -> None:
    if ndim is not None and value.dim() != ndim:
        fail(fn, name, f"a {ndim}-D tensor", value)
    if min_ndim is not None and value.dim() < min_ndim:
        fail(fn, name, f"a tensor with at least {min_ndim} dims", value)


def check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor, *, fn: str | None = None) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{_where(fn)}argument '{name_b}' must have the same shape as '{name_a}' "
            f"{tuple(a.shape)}, got {tuple(b.shape)}"
        )


def check_shape_prefix(name_a: str, a: Tensor, name_b: str, b: Tensor, *, fn: str | None = None) -> None:
    """``b``'s shape must equal ``a``'s shape without its last dim (e.g. labels [...] for logits [..., C])."""
    if tuple(b.shape) != tuple(a.shape[:-1]):
        raise ValueError(
            f"{_where(fn)}argument '{name_b}' must have shape {tuple(a.shape[:-1])} "
            f"(the leading dims of '{name_a}' {tuple(a.shape)}), got {tuple(b.shape)}"
        )


def check_leading_dims(
    name_a: str, a: Tensor, name_b: str, b: Tensor, dims: int, *, fn: str | None = None
) -> None:
    """``b`` must share ``a``'s leading dims: ``b.shape[:-dims] == a.shape[:-dims]`` (``dims`` ≥ 1)."""
    if a.dim() < dims or b.dim() < dims or tuple(a.shape[:-dims]) != tuple(b.shape[:-dims]):
        raise ValueError(
            f"{_where(fn)}argument '{name_b}' must have the leading dims {tuple(a.shape[:-dims])} of "
            f"'{name_a}' {tuple(a.shape)} (all but the last {dims}), got {tuple(b.shape)}"
        )


def check_last_dim(name: str, value: Tensor, size: int, *, fn: str | None = None, what: str = "") -> None:
    if value.dim() < 1 or value.shape[-1] != size:
        extra = f" ({what})" if what else ""
        fail(fn, name, f"a tensor whose last dim is {size}{extra}", value)


def check_broadcastable(name_a: str, a: Tensor, name_b: str, b: Tensor, *, fn: str | None = None) -> None:
    try:
        torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(
            f"{_where(fn)}argument '{name_b}' {tuple(b.shape)} must broadcast against "
            f"'{name_a}' {tuple(a.shape)}"
        ) from None


def check_scalar_tensor(name: str, value: Any, *, fn: str | None = None) -> Tensor:
    """A tensor with exactly one element (a loss)."""
    check_tensor(name, value, fn=fn, kind="float")
    if value.numel() != 1:
        fail(fn, name, "a scalar tensor (one element)", value)
    return value


def check_labels(
    name: str,
    target: Tensor,
    num_classes: int,
    *,
    fn: str | None = None,
    ignore_index: int | None = None,
) -> None:
    """Class indices in [0, num_classes) (``ignore_index`` allowed); content check skipped when tracing."""
    check_tensor(name, target, fn=fn, kind="int")
    if tracing() or target.numel() == 0:
        return
    t = target if ignore_index is None else target[target != ignore_index]
    if t.numel() == 0:
        return
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"{_where(fn)}argument '{name}' must hold class indices in [0, {num_classes})"
            + (f" or {ignore_index}" if ignore_index is not None else "")
            + f", got {bad}"
        )


def check_probabilities(name: str, value: Tensor, *, fn: str | None = None) -> None:
    """Values in [0, 1] (soft labels). Content check skipped when tracing."""
    check_tensor(name, value, fn=fn, kind=("float", "int", "bool"))
    if tracing() or value.numel() == 0 or value.dtype == torch.bool:
        return
    lo, hi = float(value.min()), float(value.max())
    if not (lo >= 0.0 and hi <= 1.0):
        bad = lo if not lo >= 0.0 else hi
        raise ValueError(f"{_where(fn)}argument '{name}' must hold values in [0, 1], got {bad}")
