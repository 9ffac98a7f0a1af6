"""In-batch contrastive loss (InfoNCE) and its exact large-batch gradient accumulation.

Source: kexue.fm/archives/8471 ("exact gradient accumulation for contrastive losses"); the same
two-pass scheme is GradCache, L. Gao et al., arXiv:2101.06983.

Plain gradient accumulation is exact only for losses that are sums of per-sample terms. InfoNCE
couples every row of the batch through the softmax denominator, so summing the losses of small
chunks is *not* the large-batch loss. :class:`ContrastiveGradCache` reproduces the large-batch
gradient with chunk-sized activation memory:

1. pass 1 (no grad) embeds the whole batch chunk by chunk, evaluates the loss on detached leaf
   embeddings ``h`` and backpropagates it to get ``g = ∂L/∂h`` (the post's label vectors ``h̃``);
2. pass 2 re-embeds each chunk with grad and backpropagates the surrogate ``Σ_i ⟨h_i, sg(g_i)⟩``,
   whose parameter gradient is exactly ``∇_θ L`` by the chain rule.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainwell._ops import RngReplay, apply_reduction, autocast_off, float32, masked_fill_neg_inf
from trainwell._step import BackwardFn, resolve_backward
from trainwell._validation import (
    check_bool,
    check_callable,
    check_choice,
    check_finite_number,
    check_int,
    check_labels,
    check_reduction,
    check_scalar_tensor,
    check_tensor,
    fail,
    tracing,
)
from trainwell.losses._base import Loss

__all__ = ["ContrastiveGradCache", "InfoNCELoss", "info_nce_loss"]

_FN = "info_nce_loss"


# ------------------------------------------------------------------------------------------- InfoNCE


def _check_scale(scale: Any, fn: str) -> float | Tensor | None:
    if scale is None:
        return None
    if isinstance(scale, Tensor):
        check_scalar_tensor("scale", scale, fn=fn)
        if not scale.requires_grad and not tracing() and not bool(scale.detach() > 0):
            fail(fn, "scale", "> 0", scale.detach().item())
        return scale
    return check_finite_number("scale", scale, fn=fn, min=0.0, min_inclusive=False)


# one autocast-off helper for the library (trainwell._ops); the old private name stays importable
_autocast_off = autocast_off


def info_nce_loss(
    query: Tensor,
    key: Tensor | None,
    target: Tensor | None = None,
    temperature: float = 0.05,
    scale: float | Tensor | None = None,
    mask_diagonal: bool = False,
    symmetric: bool = False,
    reduction: str = "mean",
    *,
    normalize: bool = False,
) -> Tensor:
    r"""In-batch contrastive cross-entropy (InfoNCE / multiple-negatives ranking loss).

    Row ``i`` of ``query`` is scored against every row of ``key``; its positive is row ``target[i]``
    and all other rows are negatives::

        s_ij = ⟨q_i, k_j⟩ / τ          (or  λ·⟨q_i, k_j⟩  when ``scale=λ`` is given)
        ℓ_i  = logsumexp_j s_ij − s_{i, target_i}

    Args:
        query: Query embeddings ``[..., N, D]``.
        key: Key embeddings ``[..., M, D]`` with the same leading dims, or ``None`` for a single
            tower (``key = query``, SimCSE-style; combine with ``mask_diagonal=True``). Extra key
            rows (``M > N``, e.g. appended hard negatives) are allowed.
        target: Integer index of each query's positive key, ``[..., N]`` in ``[0, M)``. Default
            ``arange(N)``: positives on the diagonal. For SimCSE with the two views of sentence
            ``i`` at rows ``2i, 2i+1``, use ``arange(N) ^ 1``.
        temperature: τ > 0; the similarities are divided by it. Default 0.05 (SimCSE). Ignored when
            ``scale`` is given.
        scale: Logit scale λ = 1/τ replacing ``temperature``: a positive number or a scalar tensor,
            which may require grad (a learnable temperature, CLIP-style ``log_scale.exp()``).
        mask_diagonal: Set ``s_ii = -inf`` (for ``i < min(N, M)``) so an item is never its own
            negative — needed when ``key`` is ``query`` (self-similarity is trivially maximal).
            A target pointing at a masked entry is an error.
        symmetric: Average the query→key loss with the key→query loss (CLIP / bidirectional
            MNRL). Needs ``N == M`` and ``target`` a permutation; with ``reduction='none'`` item
            ``i`` holds ``(ℓ_i^{q→k} + ℓ_{target_i}^{k→q}) / 2``.
        reduction: ``'none'`` (``[..., N]``), ``'mean'`` (default) or ``'sum'``.
        normalize: L2-normalise both sides first, making the similarities cosines. Default
            ``False``: callers decide (many encoders already normalise).

    Returns:
        The loss, float32 for half/bfloat16 or autocast inputs (float64 inputs stay float64). The
        similarities are computed with autocast disabled in float32 or better; masking uses -inf.

    Shape:
        query: ``[..., N, D]``; key: ``[..., M, D]``; target: ``[..., N]``.
        output: ``[..., N]`` for ``"none"``, a scalar otherwise.

    Source: kexue.fm/archives/8471; InfoNCE arXiv:1807.03748; SimCSE arXiv:2104.08821.
    """
    fn = _FN
    check_tensor("query", query, fn=fn, kind="float", min_ndim=2)
    if key is None:
        key = query
    else:
        check_tensor("key", key, fn=fn, kind="float", min_ndim=2)
        if key.shape[:-2] != query.shape[:-2] or key.shape[-1] != query.shape[-1]:
            raise ValueError(
                f"{fn}(): argument 'key' must have shape [..., M, {query.shape[-1]}] with leading dims "
                f"{tuple(query.shape[:-2])} (from 'query' {tuple(query.shape)}), got {tuple(key.shape)}"
            )
    temperature_f = check_finite_number("temperature", temperature, fn=fn, min=0.0, min_inclusive=False)
    scale = _check_scale(scale, fn)
    check_bool("mask_diagonal", mask_diagonal, fn=fn)
    check_bool("symmetric", symmetric, fn=fn)
    check_bool("normalize", normalize, fn=fn)
    check_reduction(reduction, fn=fn)

    n, m = query.shape[-2], key.shape[-2]
    lead = query.shape[:-2]
    if target is None:
        if n > m:
            fail(fn, "target", f"given when 'query' has more rows ({n}) than 'key' ({m})", None)
        target = torch.arange(n, device=query.device).expand(*lead, n)
    else:
        check_labels("target", target, m, fn=fn)
        if tuple(target.shape) != (*lead, n):
            fail(fn, "target", f"of shape {(*lead, n)} (one key index per query row)", target)
        target = target.to(device=query.device, dtype=torch.long)
    if symmetric:
        if n != m:
            fail(fn, "symmetric", f"False when 'query' ({n} rows) and 'key' ({m} rows) differ", symmetric)
        inverse = torch.argsort(target, dim=-1)
        if not tracing() and not torch.equal(
            torch.gather(target, -1, inverse), torch.arange(n, device=target.device).expand_as(target)
        ):
            raise ValueError(
                f"{fn}(): argument 'target' must be a permutation of range({n}) when symmetric=True"
            )
    diag = None
    if mask_diagonal:
        k_min = min(n, m)
        rows = torch.arange(n, device=query.device)
        diag = (rows.unsqueeze(-1) == torch.arange(m, device=query.device)) & (rows < k_min).unsqueeze(-1)
        if not tracing() and target.numel() > 0 and bool((target == rows).any()):
            raise ValueError(
                f"{fn}(): argument 'target' must not point at a masked diagonal entry "
                "(mask_diagonal=True), got target[i] == i"
            )

    q, k = float32(query), float32(key)
    # a float32 matmul under autocast would silently run in bf16/fp16; the similarities feed a softmax
    # over the whole batch, so they are computed in the inputs' (upcast) precision
    with autocast_off(q.device.type):
        if normalize:
            q = F.normalize(q, dim=-1)
            k = F.normalize(k, dim=-1)
        sim = q @ k.transpose(-1, -2)
        if scale is None:
            logits = sim / temperature_f
        elif isinstance(scale, Tensor):
            logits = sim * scale.to(device=sim.device, dtype=sim.dtype)
        else:
            logits = sim * scale
        if diag is not None:
            logits = masked_fill_neg_inf(logits, ~diag)
        pos = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        per_row = torch.logsumexp(logits, dim=-1) - pos
        if symmetric:
            cols = logits.transpose(-1, -2)
            # pair (i, target_i): the key side is column target_i, whose positive row is i
            col_loss = torch.logsumexp(cols, dim=-1) - pos.gather(-1, inverse)
            per_row = 0.5 * (per_row + col_loss.gather(-1, target))
    return apply_reduction(per_row, reduction)


class InfoNCELoss(Loss):
    """Module form of :func:`info_nce_loss`, optionally with a learnable temperature.

    Hyperparameters are plain attributes read at call time. With ``learnable_temperature=True``
    the logit scale is a parameter ``log_scale`` initialised to ``log(1/temperature)`` and used as
    ``scale = log_scale.exp()`` (CLIP's parametrisation: positive, well conditioned). Its gradient
    is handled exactly by :class:`ContrastiveGradCache` (accumulated from pass 1).

    Shape:
        query: ``[..., N, D]``; key: ``[..., M, D]`` (``None``: the query itself); target: ``[..., N]``.
        output: ``[..., N]`` for ``"none"``, a scalar otherwise.

    Example::

        q, k = torch.randn(8, 32), torch.randn(8, 32)
        loss = InfoNCELoss(temperature=0.05, normalize=True)(q, k)  # positives on the diagonal
        h, target = torch.randn(8, 32), torch.tensor([1, 0, 3, 2, 5, 4, 7, 6])
        loss = InfoNCELoss(mask_diagonal=True, normalize=True)(h, None, target)  # single tower

    Source: kexue.fm/archives/8471; arXiv:1807.03748.
    """

    _repr_fields = ("temperature", "mask_diagonal", "symmetric", "normalize", "learnable_temperature")

    log_scale: nn.Parameter | None

    def __init__(
        self,
        temperature: float = 0.05,
        *,
        mask_diagonal: bool = False,
        symmetric: bool = False,
        normalize: bool = False,
        reduction: str = "mean",
        learnable_temperature: bool = False,
    ) -> None:
        super().__init__(reduction)
        fn = "InfoNCELoss"
        self.temperature = check_finite_number(
            "temperature", temperature, fn=fn, min=0.0, min_inclusive=False
        )
        self.mask_diagonal = check_bool("mask_diagonal", mask_diagonal, fn=fn)
        self.symmetric = check_bool("symmetric", symmetric, fn=fn)
        self.normalize = check_bool("normalize", normalize, fn=fn)
        check_bool("learnable_temperature", learnable_temperature, fn=fn)
        if learnable_temperature:
            self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / self.temperature)))
        else:
            self.log_scale = None

    def forward(self, query: Tensor, key: Tensor | None = None, target: Tensor | None = None) -> Tensor:
        scale = self.log_scale.exp() if self.log_scale is not None else None
        return info_nce_loss(
            query,
            key,
            target,
            temperature=self.temperature,
            scale=scale,
            mask_diagonal=self.mask_diagonal,
            symmetric=self.symmetric,
            reduction=self.reduction,
            normalize=self.normalize,
        )

    @property
    def learnable_temperature(self) -> bool:
        """Whether the logit scale is the parameter ``log_scale``."""
        return self.log_scale is not None


# ------------------------------------------------------------------------------------- GradCache

_GC = "ContrastiveGradCache"

_Input = Any  # Tensor | Mapping[str, Any] | Sequence[Any]


def _batch_size(inp: _Input, where: str) -> int:
    """Leading dim shared by every tensor of one tower input (a tensor, dict or tuple/list)."""
    if isinstance(inp, Tensor):
        tensors = [inp]
    elif isinstance(inp, Mapping):
        tensors = [v for v in inp.values() if isinstance(v, Tensor)]
    elif isinstance(inp, (tuple, list)):
        tensors = [v for v in inp if isinstance(v, Tensor)]
    else:
        fail(_GC, where, "a Tensor, a dict of tensors or a tuple/list of tensors", inp, exc=TypeError)
    if not tensors or any(t.dim() == 0 for t in tensors):
        fail(_GC, where, "at least one tensor, all with a leading batch dim", inp)
    sizes = {t.shape[0] for t in tensors}
    if len(sizes) != 1:
        fail(_GC, where, "tensors sharing one batch size (dim 0)", f"batch sizes {sorted(sizes)}")
    return tensors[0].shape[0]


def _slice(inp: _Input, start: int, stop: int) -> _Input:
    if isinstance(inp, Tensor):
        return inp[start:stop]
    if isinstance(inp, Mapping):
        return {k: v[start:stop] if isinstance(v, Tensor) else v for k, v in inp.items()}
    return type(inp)(v[start:stop] if isinstance(v, Tensor) else v for v in inp)


_POOLINGS = ("mean", "cls")


def _hidden(out: Any) -> Tensor | None:
    """The token states of an encoder output: a tensor, ``.last_hidden_state`` or its first entry."""
    if isinstance(out, Tensor):
        return out
    hidden = getattr(out, "last_hidden_state", None)
    if isinstance(hidden, Tensor):
        return hidden
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    return None


def _pool(out: Any, inp: _Input, pooling: str | Callable[..., Tensor] | None) -> Any:
    """Sentence embeddings from an encoder output (a Hugging Face ``ModelOutput`` included)."""
    if pooling is None:
        return out
    if callable(pooling):
        return pooling(out, inp)
    hidden = _hidden(out)
    if hidden is None or hidden.dim() != 3:
        fail(
            _GC,
            "pooling",
            f"used with an encoder returning token states [chunk, L, H] (pooling={pooling!r})",
            hidden if hidden is not None else out,
        )
    if pooling == "cls":
        return hidden[:, 0]
    mask = inp.get("attention_mask") if isinstance(inp, Mapping) else None
    if mask is None:
        return hidden.mean(dim=1)
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def _call(
    encoder: Callable[..., Any], inp: _Input, pooling: str | Callable[..., Tensor] | None = None
) -> Tensor:
    if isinstance(inp, Mapping):
        out = encoder(**inp)
    elif isinstance(inp, (tuple, list)):
        out = encoder(*inp)
    else:
        out = encoder(inp)
    out = _pool(out, inp, pooling)
    if not isinstance(out, Tensor) or not out.is_floating_point() or out.dim() < 1:
        hint = (
            " (for a Hugging Face encoder output pass pooling='mean', 'cls' or a callable)"
            if pooling is None and _hidden(out) is not None
            else ""
        )
        fail(
            _GC,
            "encoder",
            "a callable returning a floating tensor [chunk, ...] of embeddings" + hint,
            out,
            exc=TypeError,
        )
    return out


class _RngState(RngReplay):
    """The old private snapshot class, kept importable: ``with state.replay():`` is ``replayed()``."""

    def __init__(self) -> None:
        super().__init__(True)

    def replay(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return self.replayed()


class ContrastiveGradCache:
    r"""Exact large-batch gradient of an in-batch contrastive loss with chunk-sized memory.

    Two passes per batch (kexue.fm/archives/8471; GradCache, arXiv:2101.06983):

    1. **Pass 1**, no grad: every input is embedded chunk by chunk (``chunk_size`` rows at a
       time; the last chunk may be smaller). The generator state is recorded before each chunk.
       ``loss_fn`` is evaluated on the full embedding matrices turned into detached leaves, and
       backpropagated through ``backward`` (default ``Tensor.backward``): this yields the cached
       embedding gradients ``g = ∂L/∂h`` — for InfoNCE ``g = (1/τ)(P − T)K/Z`` etc., the post's
       label vectors — and accumulates the gradient of any parameter *inside* ``loss_fn`` (a
       learnable temperature) into its ``.grad``, exactly once.
    2. **Pass 2**: each chunk is re-embedded with grad, replaying its recorded RNG state so
       dropout draws the same masks, and ``Σ_rows ⟨h.float(), g⟩`` is backpropagated with plain
       ``.backward()``. Its parameter gradient is the full-batch ``∇_θ L``; its value is
       meaningless (report the returned pass-1 loss instead).

    Any linear factor that ``backward`` applies in pass 1 (``GradScaler`` loss scale, a
    1/accumulation-steps factor) is carried by ``g`` into pass 2, so every gradient — encoder and
    loss parameters alike — carries it exactly once: with AMP pass
    ``backward=lambda t: scaler.scale(t).backward()`` and call ``scaler.step(opt)`` after
    :meth:`step` as usual. Under autocast the leaves and ``g`` are float32.

    Inputs and towers: each positional argument of :meth:`step` is one *view* of the batch — a
    tensor, a dict of tensors (passed as ``**kwargs``, e.g. a tokenizer output) or a tuple/list
    (passed as ``*args``), all tensors sharing the batch size on dim 0. ``encoder`` is either one
    callable shared by every view (single tower, e.g. SimCSE or a shared bi-encoder) or a sequence
    with one callable per view (two towers). ``loss_fn`` receives the embedding matrices in the
    same order, plus any keyword arguments given to :meth:`step` (e.g. ``target=...``), and
    returns a scalar. It may be any differentiable function of the full matrices.

    DDP: when ``torch.distributed`` is initialised (or ``gather=True``), pass 1 ``all_gather``\ s
    each view's embeddings without grad, so every rank evaluates the same *global* loss on the
    ``W·n`` rows (``W`` = world size, ``n`` = per-rank batch, equal on every rank), keeps the
    gradient rows of its own samples, and in pass 2 backpropagates only its local chunks — inside
    ``encoder.no_sync()`` for all but the last backward through each DDP module. DDP *averages*
    gradients over ranks, so the local surrogate is multiplied by ``W``: the synchronised gradient
    is then exactly the gradient a single process would get on the concatenated global batch.
    Parameters of ``loss_fn`` (learnable temperature) should live outside the DDP module: every
    rank computes the same global loss, so their gradient is already identical everywhere.

    Batch sizes: views may differ in size (e.g. keys with appended hard negatives, ``M > N``); with
    the default diagonal pairing a query's positive is the key of the same row. Under a multi-rank
    gather, views of different sizes need an explicit ``target=`` (a ``ValueError`` says so), since
    the gathered rows are rank-major per view.

    Caveats: train-mode BatchNorm uses per-chunk statistics and is not exact (use LayerNorm or
    eval-mode BN). RNG replay covers the CPU and CUDA default generators (enough for dropout);
    with ``replay_rng=False`` dropout masks differ between the passes and the gradient is only
    approximate (the post's caveat).

    Args:
        encoder: Callable (usually ``nn.Module``, possibly DDP-wrapped) mapping a chunk of a view to
            embeddings ``[chunk, ...]``, or a sequence of such callables, one per view.
        loss_fn: ``loss_fn(*embeddings, **kwargs) -> scalar`` on the full (global) embedding
            matrices, e.g. ``InfoNCELoss(...)`` or ``functools.partial(info_nce_loss, ...)``.
        chunk_size: Rows per forward/backward chunk (≥ 1); need not divide the batch.
        replay_rng: Record and replay the generator state per chunk (default ``True``).
        backward: Called as ``backward(loss)`` on the pass-1 loss; default ``loss.backward()``.
        gather: All-gather across ranks; ``None`` (default) = when ``torch.distributed`` is
            initialised with world size > 1.
        process_group: Process group for the gather (default: the world).
        pooling: Turns an encoder output into sentence embeddings ``[chunk, H]``: ``None`` (default;
            the encoder already returns them), ``'mean'`` (mean of ``last_hidden_state`` over the
            tokens where the view's ``attention_mask`` is 1, all tokens without a mask), ``'cls'``
            (the first token) or a callable ``pooling(output, chunk_inputs) -> Tensor``. Made for
            Hugging Face encoders, which return a ``ModelOutput``.

    Shape:
        each view: ``[B, ...]`` (or a dict/tuple of such tensors); the encoder's output per chunk:
        ``[chunk, D]`` (after ``pooling``); :meth:`step` returns the pass-1 loss (a detached scalar).

    Example::

        model = nn.Linear(16, 8)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        cache = ContrastiveGradCache(model, InfoNCELoss(0.05), chunk_size=16)
        loss = cache.step(torch.randn(64, 16), torch.randn(64, 16))  # the 64-row batch's gradient
        opt.step()
    """

    def __init__(
        self,
        encoder: Callable[..., Any] | Sequence[Callable[..., Any]],
        loss_fn: Callable[..., Tensor],
        chunk_size: int,
        replay_rng: bool = True,
        *,
        backward: Callable[[Tensor], Any] | None = None,
        gather: bool | None = None,
        process_group: Any = None,
        pooling: str | Callable[..., Tensor] | None = None,
    ) -> None:
        if isinstance(encoder, (Sequence, nn.ModuleList)) and not isinstance(encoder, (str, bytes)):
            encoders: list[Callable[..., Any]] = list(encoder)
            if not encoders:
                fail(_GC, "encoder", "a callable or a non-empty sequence of callables", encoder)
            for e in encoders:
                check_callable("encoder", e, fn=_GC)
            self.encoder: Callable[..., Any] | list[Callable[..., Any]] = encoders
        else:
            check_callable("encoder", encoder, fn=_GC)
            self.encoder = encoder
        self.loss_fn = check_callable("loss_fn", loss_fn, fn=_GC)
        check_int("chunk_size", chunk_size, fn=_GC, min=1)
        self.chunk_size = int(chunk_size)
        self.replay_rng = check_bool("replay_rng", replay_rng, fn=_GC)
        self.backward_fn = check_callable("backward", backward, fn=_GC, allow_none=True)
        if gather is not None:
            check_bool("gather", gather, fn=_GC)
            if gather and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
                fail(_GC, "gather", "False or None when torch.distributed is not initialised", gather)
        self.gather = gather
        self.process_group = process_group
        if pooling is not None and not callable(pooling):
            if not isinstance(pooling, str):
                fail(
                    _GC,
                    "pooling",
                    "None, 'mean', 'cls' or a callable(output, inputs)",
                    pooling,
                    exc=TypeError,
                )
            check_choice("pooling", pooling, _POOLINGS, fn=_GC)
        self.pooling = pooling

    # ------------------------------------------------------------------ helpers

    def _encoders_for(self, n_views: int) -> list[Callable[..., Any]]:
        if isinstance(self.encoder, list):
            if len(self.encoder) != n_views:
                raise ValueError(
                    f"{_GC}.step(): got {n_views} input view(s) but {len(self.encoder)} encoders; "
                    "argument 'inputs' must hold one view per encoder"
                )
            return self.encoder
        return [self.encoder] * n_views

    def _distributed(self) -> tuple[int, int]:
        """(rank, world size) of the gather, (0, 1) when not gathering."""
        gather = self.gather
        dist = torch.distributed
        if gather is None:
            gather = (
                dist.is_available() and dist.is_initialized() and dist.get_world_size(self.process_group) > 1
            )
        if not gather:
            return 0, 1
        return dist.get_rank(self.process_group), dist.get_world_size(self.process_group)

    def _all_gather(self, local: Tensor, world: int) -> Tensor:
        dist = torch.distributed
        sizes = [torch.zeros(1, dtype=torch.long, device=local.device) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([local.shape[0]], device=local.device), group=self.process_group)
        if len({int(s) for s in sizes}) != 1:
            raise ValueError(
                f"{_GC}.step(): argument 'inputs' must have the same batch size on every rank, "
                f"got {[int(s) for s in sizes]}"
            )
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local.contiguous(), group=self.process_group)
        return torch.cat(parts, dim=0)

    # ------------------------------------------------------------------ public

    def backward(self, *inputs: _Input, **loss_kwargs: Any) -> Tensor:
        """Run both passes, accumulating the exact gradient into ``.grad``; return the detached loss.

        The same as :meth:`step` with the constructor's ``backward`` (kept for ``cache(...)`` calls).
        """
        return self._run(inputs, loss_kwargs, self.backward_fn, None, f"{_GC}.backward")

    def step(
        self,
        *inputs: _Input,
        backward: BackwardFn | None = None,
        scaler: Any = None,
        **loss_kwargs: Any,
    ) -> Tensor:
        """Run both passes (the multi-pass step protocol); fill ``.grad``; return the detached loss.

        Args:
            *inputs: One entry per view (see the class docstring); chunked along dim 0.
            backward: How the pass-1 loss is backpropagated (default: the constructor's ``backward``,
                else ``scaler.scale(loss).backward()`` with a ``scaler``, else ``loss.backward()``).
            scaler: A ``torch.amp.GradScaler``; its scale reaches every gradient exactly once (call
                ``scaler.step(optimizer)`` afterwards as usual).
            **loss_kwargs: Forwarded unchunked to ``loss_fn`` (e.g. ``target=...``); the names
                ``backward`` and ``scaler`` are taken by this method.

        Returns:
            The pass-1 loss as a detached 0-dim tensor (the true large-batch loss; identical on every
            rank under DDP). ``float(cache.step(...))`` gives the number for logging.
        """
        fn = f"{_GC}.step"
        do_backward = resolve_backward(backward if backward is not None else self.backward_fn, scaler, fn=fn)
        return self._run(inputs, loss_kwargs, do_backward, scaler, fn)

    def _run(
        self,
        inputs: tuple[_Input, ...],
        loss_kwargs: dict[str, Any],
        do_backward: BackwardFn | None,
        scaler: Any,
        fn: str,
    ) -> Tensor:
        if not inputs:
            fail(fn, "inputs", "at least one view of the batch", inputs)
        encoders = self._encoders_for(len(inputs))
        sizes = [_batch_size(inp, "inputs") for inp in inputs]
        rank, world = self._distributed()
        if world > 1 and len(set(sizes)) > 1 and "target" not in loss_kwargs:
            # gathered rows are rank-major per view, so the default diagonal target (query i ↔ key i)
            # points at another rank's keys once the views differ in size
            raise ValueError(
                f"{fn}(): views of different batch sizes {sizes} under a {world}-rank gather need an "
                "explicit 'target=' (global key index of each query row); the default diagonal pairing "
                "is only right when every view has the same batch size"
            )
        cs = self.chunk_size
        pooling = self.pooling

        # pass 1: embeddings without activations, RNG state recorded per chunk
        states: list[list[RngReplay]] = []
        leaves: list[Tensor] = []
        with torch.no_grad():
            for enc, inp, n in zip(encoders, inputs, sizes):
                outs: list[Tensor] = []
                view_states: list[RngReplay] = []
                for start in range(0, n, cs):
                    view_states.append(RngReplay(self.replay_rng))
                    out = _call(enc, _slice(inp, start, start + cs), pooling)
                    if out.shape[0] != min(cs, n - start):
                        fail(
                            _GC,
                            "encoder",
                            f"to return one embedding row per input row ({min(cs, n - start)})",
                            out,
                        )
                    outs.append(out)
                local = torch.cat(outs, dim=0)
                full = self._all_gather(local, world) if world > 1 else local
                acc_dtype = torch.float32 if full.dtype in (torch.float16, torch.bfloat16) else full.dtype
                leaves.append(full.detach().to(acc_dtype).requires_grad_(True))
                states.append(view_states)

        with torch.enable_grad():
            loss = self.loss_fn(*leaves, **loss_kwargs)
        if not isinstance(loss, Tensor) or loss.numel() != 1 or not loss.requires_grad:
            fail(
                _GC,
                "loss_fn",
                "a function returning a differentiable scalar tensor of the embeddings",
                loss,
                exc=TypeError,
            )
        if do_backward is None:
            loss.backward()
        else:
            do_backward(loss)

        grads: list[Tensor] = []
        for leaf, n in zip(leaves, sizes):
            g = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
            grads.append(g[rank * n : (rank + 1) * n])
        del leaves

        # pass 2: per-chunk surrogate ⟨h, g⟩; DDP syncs on the last backward through each module
        plan = [(v, start) for v, n in enumerate(sizes) for start in range(0, n, cs)]
        last_use: dict[int, int] = {}
        for idx, (v, _) in enumerate(plan):
            last_use[id(encoders[v])] = idx
        for idx, (v, start) in enumerate(plan):
            enc = encoders[v]
            no_sync = getattr(enc, "no_sync", None)
            sync_ctx = (
                no_sync() if callable(no_sync) and idx != last_use[id(enc)] else contextlib.nullcontext()
            )
            with sync_ctx, torch.enable_grad():
                with states[v][start // cs].replayed():
                    out = _call(enc, _slice(inputs[v], start, start + cs), pooling)
                g = grads[v][start : start + cs]
                surrogate = (out.to(g.dtype) * g).sum()
                if world > 1:
                    surrogate = surrogate * world
                if surrogate.requires_grad:
                    surrogate.backward()
        return loss.detach().reshape(())

    __call__ = backward

    def __repr__(self) -> str:
        n = len(self.encoder) if isinstance(self.encoder, list) else 1
        return (
            f"{_GC}(encoders={n}, loss_fn={self.loss_fn!r}, chunk_size={self.chunk_size}, "
            f"replay_rng={self.replay_rng})"
        )
