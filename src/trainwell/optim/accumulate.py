"""Gradient accumulation folded into the moments of SGD-momentum and AdamW (no gradient buffer).

Source: kexue.fm/archives/8634 (隐藏在动量中的梯度累积). The ``k`` micro-batch gradients of a cycle enter the
moment with weight ``(1-β)/k`` each, the decay ``β`` is applied once per cycle (on its first micro-step)
and the parameters move only on the last micro-step of each cycle:

    m_t = [(β-1)·χ_first + 1]·m_{t-1} + (1-β)/k·g_t,     θ_t = θ_{t-1} - χ_last·α_n·m_t

For SGD-momentum this reproduces buffer-based accumulation exactly; for Adam the second moment becomes the
mean of squares instead of the square of the mean (≥ by Jensen, slightly more conservative).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from trainwell._validation import check_bool, check_int, check_number, fail
from trainwell.optim._foreach import default_foreach

__all__ = [
    "AccumAdamW",
    "AccumSGDM",
    "UpdateStepScheduler",
    "accum_adamw",
    "accum_sgdm",
    "enable_update_in_backward",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_betas(betas: Any, fn: str) -> tuple[float, float]:
    ok = isinstance(betas, (tuple, list)) and len(betas) == 2
    if ok:
        try:
            b1, b2 = float(betas[0]), float(betas[1])
        except (TypeError, ValueError):
            ok = False
    if not ok or not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        fail(fn, "betas", "a pair (beta1, beta2) with 0 <= beta < 1", betas)
    return b1, b2


class _AccumOptimizer(Optimizer):
    """Shared machinery: one accumulation cycle for the whole optimizer, counters, hooks, DDP sync."""

    _fn = "_AccumOptimizer"

    def __init__(
        self,
        params: Any,
        defaults: dict[str, Any],
        accum_steps: int,
        skip_nonfinite: bool,
        sync_moments: bool,
        process_group: Any,
        update_in_backward: bool,
    ) -> None:
        k = check_int("accum_steps", accum_steps, fn=self._fn, min=1)
        check_bool("skip_nonfinite", skip_nonfinite, fn=self._fn)
        check_bool("sync_moments", sync_moments, fn=self._fn)
        check_bool("update_in_backward", update_in_backward, fn=self._fn)
        if skip_nonfinite and update_in_backward:
            # the hooks fold each gradient into the moments during backward, before step() could look
            raise ValueError(
                f"{self._fn}(): arguments 'skip_nonfinite' and 'update_in_backward' cannot both be True: "
                "in backward the gradients are applied before any finiteness check can see them"
            )
        super().__init__(params, defaults)
        self._accum_steps = k
        self._cycle_pos = 0  # successful micro-steps taken in the current cycle (0 .. k-1)
        self.skip_nonfinite = skip_nonfinite
        self.sync_moments = sync_moments
        self.process_group = process_group
        self.is_update_step = False
        self.num_updates = 0  # completed cycles (parameter updates); UpdateStepScheduler follows it
        self.skipped_steps = 0
        self._hooks: list[Any] = []
        self._done_in_backward: set[int] = set()
        if update_in_backward:
            self.enable_update_in_backward()

    # ------------------------------------------------------------------------------ cycle bookkeeping

    @property
    def accum_steps(self) -> int:
        """Micro-steps per update ``k``; change it only at a cycle boundary."""
        return self._accum_steps

    @accum_steps.setter
    def accum_steps(self, value: int) -> None:
        k = check_int("accum_steps", value, fn=self._fn, min=1)
        if self._cycle_pos != 0 and k != self._accum_steps:
            raise ValueError(
                f"{self._fn}(): argument 'accum_steps' may change only at a cycle boundary; "
                f"{self._cycle_pos} of {self._accum_steps} micro-steps of the current cycle are done"
            )
        self._accum_steps = k

    @property
    def cycle_position(self) -> int:
        """Micro-steps already taken in the current cycle (0 right after an update)."""
        return self._cycle_pos

    @property
    def next_is_update_step(self) -> bool:
        """Whether the next successful ``step()`` ends a cycle (useful to skip ``no_sync`` only there)."""
        return self._cycle_pos + 1 == self._accum_steps

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["accumulation"] = {
            "accum_steps": self._accum_steps,
            "cycle_pos": self._cycle_pos,
            "num_updates": self.num_updates,
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        acc = state_dict.pop("accumulation", None)
        saved = state_dict.get("state", {})
        owners: dict[Any, Tensor] = {}
        for g_saved, g in zip(state_dict.get("param_groups", []), self.param_groups):
            owners.update(zip(g_saved["params"], g["params"]))
        super().load_state_dict(state_dict)
        # torch casts every state tensor but "step" to the parameter's dtype; undo that for the counters
        # (kept fp32 on CPU) and for the fp32 moments of fp16/bf16 parameters, from the saved originals.
        for idx, p in owners.items():
            for key, val in saved.get(idx, {}).items():
                if key == "step" or not isinstance(val, Tensor):
                    continue
                if key == "update_step":
                    self.state[p][key] = val.to(device="cpu", dtype=torch.float32, copy=True)
                else:
                    dtype = torch.float32 if p.dtype in _LOW_PRECISION else p.dtype
                    self.state[p][key] = val.to(device=p.device, dtype=dtype, copy=True)
        if acc is not None:
            self._accum_steps = int(acc["accum_steps"])
            self._cycle_pos = int(acc["cycle_pos"])
            self.num_updates = int(acc.get("num_updates", 0))

    def _phase(self) -> tuple[bool, bool]:
        first = self._cycle_pos == 0
        last = self._cycle_pos + 1 == self._accum_steps
        return first, last

    # ------------------------------------------------------------------------------ state

    def _init_state(self, p: Tensor) -> dict[str, Any]:
        raise NotImplementedError

    def _state(self, p: Tensor) -> dict[str, Any]:
        st = self.state[p]
        if not st:
            st.update(self._init_state(p))
        return st

    def _moment_keys(self) -> tuple[str, ...]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------ update kernels

    def _update_single(
        self, p: Tensor, grad: Tensor | None, group: dict[str, Any], first: bool, last: bool
    ) -> None:
        raise NotImplementedError

    def _update_foreach(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        group: dict[str, Any],
        first: bool,
        last: bool,
    ) -> None:
        raise NotImplementedError

    def _apply_update(self, group: dict[str, Any], params: list[Tensor], last: bool) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------------------ step

    def _grads_finite(self) -> bool:
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return True
        flags = [torch.isfinite(g).all() for g in grads]
        return bool(torch.stack([f.to(flags[0].device) for f in flags]).all())

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Take one micro-step; parameters move only when it ends a cycle (see ``is_update_step``)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.skip_nonfinite and not self._grads_finite():
            # An inf/NaN micro-gradient is dropped whole: counters, moments and parameters are untouched,
            # so the cycle simply becomes one micro-step longer (same as GradScaler skipping a step).
            self._note_skipped()
            return loss
        first, last = self._phase()
        # Update each parameter right after its moments while they are still in cache (as torch's
        # for-loop AdamW does); only DDP moment sync needs every moment final before any update.
        fuse = last and not self.sync_moments
        for group in self.param_groups:
            if self._fused_step(group, first, last, fuse):
                continue
            foreach = group["foreach"]
            use_foreach = default_foreach(group["params"]) if foreach is None else bool(foreach)
            buckets: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[Tensor]]] = {}
            for p in group["params"]:
                # frozen parameters are left alone (as torch does): no state, no decay, no update
                if id(p) in self._done_in_backward or not p.requires_grad:
                    continue
                if (
                    use_foreach
                    and p.grad is not None
                    and p.dtype not in _LOW_PRECISION
                    and not p.grad.is_sparse
                ):
                    self._state(p)
                    bp, bg = buckets.setdefault((p.device, p.dtype), ([], []))
                    bp.append(p)
                    bg.append(p.grad)
                else:
                    self._update_single(p, p.grad, group, first, last)
                    if fuse:
                        self._apply_update(group, [p], last)
            for bp, bg in buckets.values():  # one foreach call per (device, dtype) bucket
                self._update_foreach(bp, bg, group, first, last)
                if fuse:
                    self._apply_update(group, bp, last)
        if last and not fuse:
            self._all_reduce_moments()
            for group in self.param_groups:
                pending = [
                    p for p in group["params"] if id(p) not in self._done_in_backward and p.requires_grad
                ]
                if pending:
                    self._apply_update(group, pending, last)
        self._finish_micro_step(last)
        return loss

    def _fused_step(self, group: dict[str, Any], first: bool, last: bool, fuse: bool) -> bool:
        """One fused kernel for the whole group (moments + update) where there is one; False if not."""
        return False

    @torch.compiler.disable
    def _note_skipped(self) -> None:
        self.skipped_steps += 1
        self.is_update_step = False

    @torch.compiler.disable
    def _finish_micro_step(self, last: bool) -> None:
        # Plain Python bookkeeping kept out of torch.compile graphs: dynamo's optimizer tracing does not
        # persist attribute writes on the optimizer object reliably.
        self._done_in_backward.clear()
        self._cycle_pos = 0 if last else self._cycle_pos + 1
        self.is_update_step = last
        if last:
            self.num_updates += 1

    # ------------------------------------------------------------------------------ DDP moment sync

    def _all_reduce_moments(self) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        world = dist.get_world_size(self.process_group)
        tensors = [
            self.state[p][key]
            for g in self.param_groups
            for p in g["params"]
            for key in self._moment_keys()
            if p in self.state
        ]
        by_kind: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for t in tensors:
            by_kind.setdefault((t.device, t.dtype), []).append(t)
        for ts in by_kind.values():
            flat = torch.cat([t.reshape(-1) for t in ts])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.process_group)
            flat.div_(world)
            offset = 0
            for t in ts:
                n = t.numel()
                t.copy_(flat[offset : offset + n].view_as(t))
                offset += n

    # ------------------------------------------------------------------------------ update in backward

    def enable_update_in_backward(self) -> list[Any]:
        """Fold each parameter's micro-step into backward (``register_post_accumulate_grad_hook``).

        As soon as a parameter's gradient is complete its moments (and, on the last micro-step of a
        cycle, the parameter) are updated and ``p.grad`` is freed, so the gradients of the whole model
        never coexist. Keep calling ``opt.step()`` after each backward: it finishes the micro-step for
        parameters that got no gradient, advances the cycle and sets ``is_update_step``; ``zero_grad``
        becomes a no-op. Accumulation works unchanged (the hooks use the cycle position). Global-norm
        clipping and GradScaler's unscale/inf-check are impossible here (grads never exist together);
        use bf16 autocast, and ``sync_moments`` is not supported in this mode.
        """
        if self.sync_moments:
            raise ValueError(f"{self._fn}(): 'sync_moments' cannot be combined with update in backward")
        if self.skip_nonfinite:
            raise ValueError(f"{self._fn}(): 'skip_nonfinite' cannot be combined with update in backward")
        if self._hooks:
            return self._hooks
        for group in self.param_groups:
            for p in group["params"]:
                if p.requires_grad:
                    self._hooks.append(p.register_post_accumulate_grad_hook(self._make_hook(group)))
        return self._hooks

    def disable_update_in_backward(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _make_hook(self, group: dict[str, Any]) -> Callable[[Tensor], None]:
        def hook(p: Tensor) -> None:
            first, last = self._phase()
            with torch.no_grad():
                self._update_single(p, p.grad, group, first, last)
                # free the gradient before the update allocates its temporary (Adam's denominator), so
                # at most one parameter-sized temporary is alive at any time
                p.grad = None
                if last:
                    self._apply_update(group, [p], last)
            self._done_in_backward.add(id(p))

        return hook


class AccumSGDM(_AccumOptimizer):
    """SGD with momentum whose momentum buffer doubles as the gradient-accumulation buffer.

    Call ``loss.backward(); opt.step(); opt.zero_grad()`` at **every** micro-batch and do **not** divide the
    loss by ``accum_steps``: the ``1/k`` lives inside the optimizer (dividing as well silently shrinks the
    learning rate by ``k``). Per micro-step ``t`` of a cycle of ``k``:

        m ← momentum·m (first micro-step only);   m ← m + (1 - dampening)/k · (g + wd·θ)
        θ ← θ - lr·m (last micro-step only)

    After each cycle this equals torch SGD(momentum, dampening, weight_decay) applied to the *mean*
    micro-gradient, i.e. buffer-based accumulation, exactly (the identity is algebraic). With
    ``accum_steps=1`` and ``dampening=0`` it is bit-identical to ``torch.optim.SGD(momentum=...)``.
    ``dampening=momentum`` gives the EMA form of post 8634 (``m ← βm + (1-β)ḡ`` from ``m_0 = 0``; torch
    instead starts its buffer at the first gradient, so the two differ only for ``dampening != 0``).
    Nesterov is not offered: it needs the mean gradient of the cycle, which built-in accumulation never
    materialises.

    Learning-rate schedules are indexed by update count: step the scheduler only when
    ``opt.is_update_step`` is True, or wrap it in :class:`UpdateStepScheduler`.

    A micro-step whose parameter has ``grad=None`` counts as a zero contribution (buffer semantics);
    parameters with ``requires_grad=False`` are skipped entirely (no state, no weight decay), as in torch.
    A step skipped by ``GradScaler`` (inf/NaN) is not counted, so the cycle gets one micro-step longer; with
    ``skip_nonfinite=True`` the optimizer does the same check itself (one host sync per micro-step).

    DDP: (a) default, exact: let DDP all-reduce every micro-step. (b) ``sync_moments=True``: run every
    micro-step under ``model.no_sync()``; the buffers are all-reduce-averaged just before each update,
    which is exact for SGD-momentum because the buffer is linear in the gradients.

    Shape:
        params: any shapes; ``state[p]["momentum_buffer"]`` is shaped like ``p`` (float32 for half
        parameters).

    Example::

        model = nn.Linear(8, 2)
        opt = AccumSGDM(model.parameters(), lr=0.1, momentum=0.9, accum_steps=4)
        for x in torch.randn(8, 16, 8):  # 8 micro-batches: the weights move twice
            model(x).square().mean().backward()  # the loss is not divided by accum_steps
            opt.step(); opt.zero_grad()

    Args:
        params: parameters or parameter groups.
        lr: learning rate α (per update, tuned for the effective batch k × micro-batch).
        momentum: β in [0, 1).
        accum_steps: micro-steps per update ``k`` (optimizer-wide; change only at a cycle boundary).
        dampening: gradient weight ``1 - dampening`` (0 = torch default; ``momentum`` = EMA form).
        weight_decay: L2 penalty added to every micro-gradient.
        maximize: ascend instead of descend.
        foreach: use ``torch._foreach_*`` kernels (None: as torch, only on CUDA/XPU; on CPU the plain
            loop is faster).
        skip_nonfinite: drop micro-steps with inf/NaN gradients (needs a host sync).
        sync_moments: DDP mode (b), see above.
        process_group: process group for ``sync_moments`` (default group if None).
        update_in_backward: apply the micro-step inside backward, see :meth:`enable_update_in_backward`.

    Source: kexue.fm/archives/8634.
    """

    _fn = "AccumSGDM"

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        momentum: float = 0.9,
        accum_steps: int = 1,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        skip_nonfinite: bool = False,
        sync_moments: bool = False,
        process_group: Any = None,
        update_in_backward: bool = False,
    ) -> None:
        fn = self._fn
        check_number("lr", lr, fn=fn, min=0.0)
        check_number("momentum", momentum, fn=fn, min=0.0, max=1.0, max_inclusive=False)
        check_number("dampening", dampening, fn=fn, min=0.0, max=1.0)
        check_number("weight_decay", weight_decay, fn=fn, min=0.0)
        check_bool("maximize", maximize, fn=fn)
        if foreach is not None:
            check_bool("foreach", foreach, fn=fn)
        defaults = dict(
            lr=float(lr),
            momentum=float(momentum),
            dampening=float(dampening),
            weight_decay=float(weight_decay),
            maximize=maximize,
            foreach=foreach,
        )
        super().__init__(
            params, defaults, accum_steps, skip_nonfinite, sync_moments, process_group, update_in_backward
        )

    def _moment_keys(self) -> tuple[str, ...]:
        return ("momentum_buffer",)

    def _init_state(self, p: Tensor) -> dict[str, Any]:
        mdtype = torch.float32 if p.dtype in _LOW_PRECISION else p.dtype
        return {
            "step": torch.tensor(0.0),
            "update_step": torch.tensor(0.0),
            "momentum_buffer": torch.zeros_like(p, dtype=mdtype, memory_format=torch.preserve_format),
        }

    def _update_single(
        self, p: Tensor, grad: Tensor | None, group: dict[str, Any], first: bool, last: bool
    ) -> None:
        st = self._state(p)
        st["step"] += 1
        _sgdm_fold_single(p, st["momentum_buffer"], grad, group, self._accum_steps, first)

    def _update_foreach(
        self, params: list[Tensor], grads: list[Tensor], group: dict[str, Any], first: bool, last: bool
    ) -> None:
        states = [self.state[p] for p in params]
        torch._foreach_add_([s["step"] for s in states], 1.0)
        bufs = [s["momentum_buffer"] for s in states]
        _sgdm_fold_foreach(params, bufs, grads, group, self._accum_steps, first)

    def _apply_update(self, group: dict[str, Any], params: list[Tensor], last: bool) -> None:
        for p in params:
            st = self._state(p)
            st["update_step"] += 1
            _sgdm_apply(p, st["momentum_buffer"], group["lr"])


# ------------------------------------------------------------------------------ SGD-momentum kernels


def _sgdm_fold_single(
    p: Tensor, buf: Tensor, grad: Tensor | None, group: dict[str, Any], k: int, first: bool
) -> None:
    if first:
        if group["momentum"] == 0.0:
            buf.zero_()
        else:
            buf.mul_(group["momentum"])
    if grad is not None:
        g = grad.to(buf.dtype) if grad.dtype != buf.dtype else grad
        if group["maximize"]:
            g = -g
        if group["weight_decay"] != 0.0:
            g = g.add(p.to(buf.dtype), alpha=group["weight_decay"])
        buf.add_(g, alpha=(1.0 - group["dampening"]) / k)
    elif group["weight_decay"] != 0.0:
        buf.add_(p.to(buf.dtype), alpha=group["weight_decay"] * (1.0 - group["dampening"]) / k)


def _sgdm_fold_foreach(
    params: list[Tensor], bufs: list[Tensor], grads: list[Tensor], group: dict[str, Any], k: int, first: bool
) -> None:
    if first:
        if group["momentum"] == 0.0:
            torch._foreach_zero_(bufs)
        else:
            torch._foreach_mul_(bufs, group["momentum"])
    if group["maximize"]:
        grads = list(torch._foreach_neg(grads))
    if group["weight_decay"] != 0.0:
        grads = list(torch._foreach_add(grads, params, alpha=group["weight_decay"]))
    torch._foreach_add_(bufs, grads, alpha=(1.0 - group["dampening"]) / k)


def _sgdm_apply(p: Tensor, buf: Tensor, lr: float) -> None:
    if p.dtype != buf.dtype:
        p.copy_(p.to(buf.dtype).add_(buf, alpha=-lr))
    else:
        p.add_(buf, alpha=-lr)


def accum_sgdm(
    params: list[Tensor],
    grads: list[Tensor | None],
    momentum_buffers: list[Tensor],
    *,
    lr: float,
    momentum: float = 0.9,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    accum_steps: int = 1,
    first: bool = True,
    last: bool = True,
    maximize: bool = False,
    foreach: bool | None = None,
) -> None:
    """Functional AccumSGDM micro-step on lists of tensors (what :class:`AccumSGDM` runs), in place.

    ``buf ← momentum·buf`` when ``first``; ``buf ← buf + (1-dampening)/k·(g + wd·θ)``; ``θ ← θ − lr·buf``
    when ``last``. A ``None`` gradient counts as zero. ``first = last = True`` with ``accum_steps=1`` and
    ``dampening=0`` is one ``torch.optim.SGD(momentum=...)`` step from a zero-initialised buffer.

    Shape: ``momentum_buffers[i]`` is shaped like ``params[i]`` (float32 for half parameters).

    Source: kexue.fm/archives/8634.
    """
    fn = "accum_sgdm"
    k = check_int("accum_steps", accum_steps, fn=fn, min=1)
    if not (len(params) == len(grads) == len(momentum_buffers)):
        fail(fn, "grads", f"lists as long as 'params' ({len(params)})", [len(grads), len(momentum_buffers)])
    group = dict(lr=float(lr), momentum=float(momentum), dampening=float(dampening),
                 weight_decay=float(weight_decay), maximize=maximize)
    use_foreach = default_foreach(params) if foreach is None else bool(foreach)
    if use_foreach and all(g is not None for g in grads):
        _sgdm_fold_foreach(params, momentum_buffers, [g for g in grads if g is not None], group, k, first)
    else:
        for p, g, buf in zip(params, grads, momentum_buffers):
            _sgdm_fold_single(p, buf, g, group, k, first)
    if last:
        for p, buf in zip(params, momentum_buffers):
            _sgdm_apply(p, buf, float(lr))


class AccumAdamW(_AccumOptimizer):
    """AdamW whose moments absorb gradient accumulation (no extra parameter-sized buffer).

    Call ``loss.backward(); opt.step(); opt.zero_grad()`` at **every** micro-batch; do **not** divide the
    loss by ``accum_steps`` (the ``1/k`` is inside). Per micro-step of a cycle of ``k``, in fp32 or fp64:

        m ← β1·m (first micro-step only) + (1-β1)/k · g
        v ← β2·v (first micro-step only) + (1-β2)/k · g²
        on the last micro-step (cycle n):  θ ← θ(1 - lr·λ);  θ ← θ - lr·m̂/(√v̂ + ε),
        m̂ = m/(1-β1ⁿ),  v̂ = v/(1-β2ⁿ)      (``eps_inside_sqrt=True``: θ ← θ - lr·m̂/√(v̂ + ε), as the post)

    ``m`` equals buffer-based accumulation exactly; ``v`` averages squares instead of squaring the mean,
    so ``v ≥ v_buffer`` (Jensen, equality iff a cycle's micro-gradients agree): for i.i.d. noise of
    variance s² it is larger by ``(1-β2)(k-1)/k·s²`` per cycle, a noise-aware larger ε. Bias correction
    counts updates, decoupled decay (λ = ``weight_decay``) is applied on updates only. With
    ``accum_steps=1`` the result is bit-identical to ``torch.optim.AdamW`` (same operation order).

    Scheduling, ``grad=None``, AMP skipping, DDP modes and update-in-backward: as :class:`AccumSGDM`. In DDP
    mode (b) (``sync_moments=True``) m is exact while v averages per-rank means of squares (biased a bit
    further upward). Moments are kept in fp32 for fp16/bf16 parameters.

    Shape:
        params: any shapes; ``state[p]["exp_avg"]`` and ``state[p]["exp_avg_sq"]`` are shaped like ``p``
        (float32 for half parameters).

    Example::

        model = nn.Linear(8, 2)
        opt = AccumAdamW(model.parameters(), lr=1e-3, weight_decay=0.01, accum_steps=4)
        for x in torch.randn(8, 16, 8):  # 8 micro-batches: the weights move twice
            model(x).square().mean().backward()  # the loss is not divided by accum_steps
            opt.step(); opt.zero_grad()

    Args:
        params: parameters or parameter groups.
        lr: learning rate (per update).
        betas: (β1, β2), each in [0, 1).
        eps: ε ≥ 0.
        weight_decay: decoupled decay λ ≥ 0.
        accum_steps: micro-steps per update ``k``.
        eps_inside_sqrt: put ε inside the square root (post 8634's form).
        maximize, foreach, skip_nonfinite, sync_moments, process_group, update_in_backward: as AccumSGDM.
        fused: at ``accum_steps=1`` run torch's fused AdamW kernel (one pass over the memory; about 3×
            faster on CPU) — bit-identical to ``torch.optim.AdamW(fused=True)``, which itself differs
            from the for-loop/foreach AdamW by float rounding (≈1e-7). Default False: the for-loop /
            foreach kernels, bit-identical to ``torch.optim.AdamW``'s. Ignored (the usual kernels run)
            for ``accum_steps > 1``, ``eps_inside_sqrt``, ``sync_moments`` and sparse gradients.

    Source: kexue.fm/archives/8634.
    """

    _fn = "AccumAdamW"

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        accum_steps: int = 1,
        eps_inside_sqrt: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
        sync_moments: bool = False,
        process_group: Any = None,
        update_in_backward: bool = False,
    ) -> None:
        fn = self._fn
        check_number("lr", lr, fn=fn, min=0.0)
        b1, b2 = _check_betas(betas, fn)
        if fused is not None:
            check_bool("fused", fused, fn=fn)
            if fused and foreach:
                fail(fn, "fused", "False or None when foreach=True (choose one kernel)", fused)
        check_number("eps", eps, fn=fn, min=0.0)
        check_number("weight_decay", weight_decay, fn=fn, min=0.0)
        check_bool("eps_inside_sqrt", eps_inside_sqrt, fn=fn)
        check_bool("maximize", maximize, fn=fn)
        if foreach is not None:
            check_bool("foreach", foreach, fn=fn)
        defaults = dict(
            lr=float(lr),
            betas=(b1, b2),
            eps=float(eps),
            weight_decay=float(weight_decay),
            eps_inside_sqrt=eps_inside_sqrt,
            maximize=maximize,
            foreach=foreach,
            fused=bool(fused),
        )
        super().__init__(
            params, defaults, accum_steps, skip_nonfinite, sync_moments, process_group, update_in_backward
        )

    def _moment_keys(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def _init_state(self, p: Tensor) -> dict[str, Any]:
        mdtype = torch.float32 if p.dtype in _LOW_PRECISION else p.dtype
        return {
            "step": torch.tensor(0.0),
            "update_step": torch.tensor(0.0),
            "exp_avg": torch.zeros_like(p, dtype=mdtype, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(p, dtype=mdtype, memory_format=torch.preserve_format),
        }

    def _update_single(
        self, p: Tensor, grad: Tensor | None, group: dict[str, Any], first: bool, last: bool
    ) -> None:
        st = self._state(p)
        st["step"] += 1
        b1, b2 = group["betas"]
        _adamw_moments_single(
            st["exp_avg"], st["exp_avg_sq"], grad, b1, b2, self._accum_steps, first, group["maximize"]
        )

    def _update_foreach(
        self, params: list[Tensor], grads: list[Tensor], group: dict[str, Any], first: bool, last: bool
    ) -> None:
        states = [self.state[p] for p in params]
        torch._foreach_add_([s["step"] for s in states], 1.0)
        b1, b2 = group["betas"]
        _adamw_moments_foreach(
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            grads,
            b1,
            b2,
            self._accum_steps,
            first,
            group["maximize"],
        )

    def _apply_update(self, group: dict[str, Any], params: list[Tensor], last: bool) -> None:
        use_foreach = default_foreach(params) if group["foreach"] is None else bool(group["foreach"])
        fast: dict[tuple[torch.device, torch.dtype, float], list[Tensor]] = {}
        for p in params:
            st = self._state(p)
            st["update_step"] += 1
            n = float(st["update_step"].item())
            if use_foreach and p.dtype not in _LOW_PRECISION:
                fast.setdefault((p.device, p.dtype, n), []).append(p)
                continue
            _adamw_apply_single(p, st["exp_avg"], st["exp_avg_sq"], n, group)
        for (_, _, n), ps in fast.items():
            _adamw_apply_foreach(
                ps,
                [self.state[p]["exp_avg"] for p in ps],
                [self.state[p]["exp_avg_sq"] for p in ps],
                n,
                group,
            )

    def _fused_step(self, group: dict[str, Any], first: bool, last: bool, fuse: bool) -> bool:
        # torch's fused AdamW kernel is exactly one micro-step of a k = 1 cycle (decay, moments, update)
        if not (group["fused"] and self._accum_steps == 1 and fuse) or group["eps_inside_sqrt"]:
            return False
        params = [p for p in group["params"] if id(p) not in self._done_in_backward and p.requires_grad]
        if any(p.grad is not None and p.grad.is_sparse for p in params):
            return False
        with_grad = [p for p in params if p.grad is not None]
        states = [self._state(p) for p in with_grad]
        for key in ("step", "update_step"):
            torch._foreach_add_([s[key] for s in states], 1.0)
        for bucket in _fused_buckets(with_grad, states):
            ps, sts = bucket
            b1, b2 = group["betas"]
            grads = [p.grad for p in ps if p.grad is not None]
            torch._fused_adamw_(
                ps,
                grads,
                [s["exp_avg"] for s in sts],
                [s["exp_avg_sq"] for s in sts],
                [],
                [s["update_step"] for s in sts],
                lr=group["lr"],
                beta1=b1,
                beta2=b2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                amsgrad=False,
                maximize=group["maximize"],
            )
        for p in params:  # no gradient this micro-step: the moments still decay (as the other kernels)
            if p.grad is None:
                self._update_single(p, None, group, first, last)
                self._apply_update(group, [p], last)
        return True


def _fused_buckets(
    params: list[Tensor], states: list[dict[str, Any]]
) -> list[tuple[list[Tensor], list[Any]]]:
    """Group (param, state) by (device, dtype); the fused kernel wants its step counters on the device."""
    out: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[Any]]] = {}
    for p, st in zip(params, states):
        if st["update_step"].device != p.device:
            st["update_step"] = st["update_step"].to(p.device)
        bp, bs = out.setdefault((p.device, p.dtype), ([], []))
        bp.append(p)
        bs.append(st)
    return list(out.values())


# ------------------------------------------------------------------------------ AdamW kernels
# Module-level, as torch's optimizers: the class calls them per parameter (cache-friendly on CPU) or per
# foreach bucket; :func:`accum_adamw` runs them on lists.


def _adamw_moments_single(
    m: Tensor, v: Tensor, grad: Tensor | None, b1: float, b2: float, k: int, first: bool, maximize: bool
) -> None:
    if grad is None:
        if first:
            m.mul_(b1)
            v.mul_(b2)
        return
    g = grad.to(m.dtype) if grad.dtype != m.dtype else grad
    if maximize:
        g = -g
    if first:
        if k == 1:
            m.lerp_(g, 1 - b1)  # torch AdamW's exact operation, for bit-identity at k=1
        else:
            m.mul_(b1).add_(g, alpha=(1 - b1) / k)
        v.mul_(b2).addcmul_(g, g, value=(1 - b2) / k)
    else:
        m.add_(g, alpha=(1 - b1) / k)
        v.addcmul_(g, g, value=(1 - b2) / k)


def _adamw_moments_foreach(
    ms: list[Tensor],
    vs: list[Tensor],
    grads: list[Tensor],
    b1: float,
    b2: float,
    k: int,
    first: bool,
    maximize: bool,
) -> None:
    if maximize:
        grads = list(torch._foreach_neg(grads))
    if first:
        if k == 1:
            torch._foreach_lerp_(ms, grads, 1 - b1)
        else:
            torch._foreach_mul_(ms, b1)
            torch._foreach_add_(ms, grads, alpha=(1 - b1) / k)
        torch._foreach_mul_(vs, b2)
    else:
        torch._foreach_add_(ms, grads, alpha=(1 - b1) / k)
    torch._foreach_addcmul_(vs, grads, grads, (1 - b2) / k)


def _adamw_apply_single(p: Tensor, m: Tensor, v: Tensor, n: float, group: dict[str, Any]) -> None:
    lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
    b1, b2 = group["betas"]
    q = p.to(m.dtype) if p.dtype != m.dtype else p
    if wd != 0.0:
        q.mul_(1 - lr * wd)
    bc1 = 1 - b1**n
    bc2 = 1 - b2**n
    if group["eps_inside_sqrt"]:
        denom = (v / bc2).add_(eps).sqrt_()
    else:
        denom = v.sqrt().div_(bc2**0.5).add_(eps)  # one temporary, same values as torch's
    q.addcdiv_(m, denom, value=-(lr / bc1))
    del denom
    if q is not p:
        p.copy_(q)


def _adamw_apply_foreach(
    ps: list[Tensor], ms: list[Tensor], vs: list[Tensor], n: float, group: dict[str, Any]
) -> None:
    lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
    b1, b2 = group["betas"]
    if wd != 0.0:
        torch._foreach_mul_(ps, 1 - lr * wd)
    bc1 = 1 - b1**n
    bc2 = 1 - b2**n
    if group["eps_inside_sqrt"]:
        denom = list(torch._foreach_div(vs, bc2))
        torch._foreach_add_(denom, eps)
        torch._foreach_sqrt_(denom)
    else:
        denom = list(torch._foreach_sqrt(vs))
        torch._foreach_div_(denom, bc2**0.5)
        torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(ps, ms, denom, -(lr / bc1))


def accum_adamw(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    update_step: int,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    accum_steps: int = 1,
    first: bool = True,
    last: bool = True,
    eps_inside_sqrt: bool = False,
    maximize: bool = False,
    foreach: bool | None = None,
) -> None:
    """Functional AccumAdamW micro-step on lists of tensors (what :class:`AccumAdamW` runs), in place.

    Folds ``grads`` into the moments with weight ``(1-β)/k`` (decaying them first when ``first``); when
    ``last``, applies decoupled decay and the bias-corrected update for update number ``update_step``
    (≥ 1, counting updates). ``first = last = True`` with ``accum_steps=1`` is one torch AdamW step
    (bit-identical). ``foreach=None`` uses the foreach kernels on CUDA/XPU and the loop on CPU.

    Shape: every list holds matching tensors (``exp_avgs[i]`` and ``exp_avg_sqs[i]`` shaped like
    ``params[i]``, in its dtype or float32 for half parameters).

    Source: kexue.fm/archives/8634.
    """
    fn = "accum_adamw"
    k = check_int("accum_steps", accum_steps, fn=fn, min=1)
    n = check_int("update_step", update_step, fn=fn, min=1)
    if not (len(params) == len(grads) == len(exp_avgs) == len(exp_avg_sqs)):
        fail(
            fn,
            "grads",
            f"lists as long as 'params' ({len(params)})",
            [len(grads), len(exp_avgs), len(exp_avg_sqs)],
        )
    group = dict(
        lr=float(lr),
        betas=(float(beta1), float(beta2)),
        eps=float(eps),
        weight_decay=float(weight_decay),
        eps_inside_sqrt=eps_inside_sqrt,
    )
    use_foreach = default_foreach(params) if foreach is None else bool(foreach)
    if use_foreach:
        _adamw_moments_foreach(exp_avgs, exp_avg_sqs, list(grads), beta1, beta2, k, first, maximize)
        if last:
            _adamw_apply_foreach(params, exp_avgs, exp_avg_sqs, float(n), group)
        return
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        _adamw_moments_single(m, v, g, beta1, beta2, k, first, maximize)
        if last:
            _adamw_apply_single(p, m, v, float(n), group)


def enable_update_in_backward(optimizer: AccumSGDM | AccumAdamW) -> list[Any]:
    """Make ``optimizer`` update each parameter inside backward (see ``enable_update_in_backward``).

    Returns the hook handles. Keep calling ``optimizer.step()`` after every backward.
    """
    if not isinstance(optimizer, _AccumOptimizer):
        fail("enable_update_in_backward", "optimizer", "an AccumSGDM or AccumAdamW", optimizer, exc=TypeError)
    return optimizer.enable_update_in_backward()


class UpdateStepScheduler:
    """Step an LR scheduler once per *update* of an accumulating optimizer (every ``k`` micro-steps).

    ``sched = UpdateStepScheduler(torch.optim.lr_scheduler.StepLR(opt, 10), opt)`` and call
    ``sched.step()`` after every micro-step: the inner scheduler advances once for each parameter update
    the optimizer completed since the last call (it follows ``opt.num_updates``), so over ``n·k``
    micro-steps it steps exactly ``n`` times and the LR is constant within a cycle. Unlike a bare
    ``if opt.is_update_step: scheduler.step()``, it stays exact when GradScaler skips a micro-step (then
    ``opt.step()`` is not called and ``is_update_step`` still describes the previous call).

    Example::

        model = nn.Linear(8, 2)
        opt = AccumAdamW(model.parameters(), lr=1e-3, accum_steps=4)
        sched = UpdateStepScheduler(torch.optim.lr_scheduler.StepLR(opt, step_size=10), opt)
        for x in torch.randn(8, 16, 8):  # two updates, so the inner scheduler steps twice
            model(x).square().mean().backward(); opt.step(); opt.zero_grad(); sched.step()
    """

    def __init__(self, scheduler: Any, optimizer: AccumSGDM | AccumAdamW) -> None:
        if not isinstance(optimizer, _AccumOptimizer):
            fail("UpdateStepScheduler", "optimizer", "an AccumSGDM or AccumAdamW", optimizer, exc=TypeError)
        if not hasattr(scheduler, "step"):
            fail(
                "UpdateStepScheduler", "scheduler", "an LR scheduler (with .step())", scheduler, exc=TypeError
            )
        self.scheduler = scheduler
        self.optimizer = optimizer
        self.num_updates = 0  # inner scheduler steps taken
        self._seen_updates = optimizer.num_updates

    def step(self) -> bool:
        """Advance the inner scheduler once per optimizer update since the last call; True if it did."""
        stepped = False
        while self._seen_updates < self.optimizer.num_updates:
            self.scheduler.step()
            self.num_updates += 1
            self._seen_updates += 1
            stepped = True
        return stepped

    def get_last_lr(self) -> list[float]:
        return list(self.scheduler.get_last_lr())

    def state_dict(self) -> dict[str, Any]:
        return {
            "scheduler": self.scheduler.state_dict(),
            "num_updates": self.num_updates,
            "seen_updates": self._seen_updates,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state_dict["scheduler"])
        self.num_updates = int(state_dict["num_updates"])
        self._seen_updates = int(state_dict.get("seen_updates", self.optimizer.num_updates))
