"""Learning-rate multipliers meta-learned with exponentiated gradient, around any optimizer.

Source: kexue.fm/archives/8968 (指数梯度下降 + 元学习 = 自适应学习率); Amid, Anil, Fifty, Warmuth 2022,
arXiv:2202.00145; additive analogue: Baydin et al. 2018, arXiv:1703.04782.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from trainwell._validation import check_bool, check_choice, check_number, fail

__all__ = ["GRANULARITIES", "SIGNALS", "StepSizeAdaptation"]

GRANULARITIES = ("element", "tensor", "global")
SIGNALS = ("grad", "update")


class StepSizeAdaptation(Optimizer):
    """Wrap ``optimizer`` with non-negative LR multipliers ν updated by exponentiated gradient.

    Each step scales the base optimizer's update ``u_t`` by ν (``θ_{t+1} = θ_t - ν_{t+1} ⊙ u_t``), where
    ν is first moved by an EG step on the hypergradient ``∂L(θ_t)/∂ν_t = -u_{t-1} ⊙ g_t``:

        log ν_{t+1} = clamp(log ν_t + γ · s_{t-1} ⊙ g_t, log ν_min, log ν_max)

    ``signal="grad"`` uses ``s = g_{t-1}`` (post 8968's form: with plain SGD ``u = η g`` and ``η`` merged
    into γ, so ``ν_{t+1} = exp(γ Σ_s g_{s-1} ⊙ g_s)``); ``signal="update"`` uses the base update ``u_{t-1}``
    itself (the exact hypergradient for any base). Consecutive gradients that agree raise a coordinate's
    step, oscillating ones lower it. ``granularity``: ``"element"`` (one ν per coordinate, the post),
    ``"tensor"`` (one per parameter tensor, inner product) or ``"global"`` (one for all parameters).
    ``cosine=True`` (tensor/global only) replaces the inner product by the cosine, a scale-free signal.
    At the first step there is no previous signal and ν stays at ``nu_init``.

    The wrapper proxies ``param_groups``, ``state`` (the base's), ``zero_grad``, ``state_dict`` and
    ``load_state_dict`` (which also carry ``log_nu``, the previous signal and the step count), so LR
    schedulers and ``GradScaler.step`` work on it directly; a step skipped by the scaler changes nothing.
    The base update is obtained by snapshotting parameters around ``optimizer.step()`` (one transient
    parameter copy). The post's author meant this for plain SGD without momentum: with Adam-like or
    momentum bases consecutive products are often negative and ν can collapse, so a warning is issued.

    Shape:
        params (of the base optimizer): any shapes; ν (:meth:`multipliers`) is shaped like each parameter
        (``"element"``), a scalar per parameter (``"tensor"``) or one scalar for all (``"global"``).

    Example::

        model, x, y = nn.Linear(8, 1), torch.randn(32, 8), torch.randn(32, 1)
        opt = StepSizeAdaptation(torch.optim.SGD(model.parameters(), lr=0.1), meta_lr=0.01)
        for _ in range(3):
            opt.zero_grad(); F.mse_loss(model(x), y).backward(); opt.step()

    Args:
        optimizer: the base optimizer (any ``torch.optim.Optimizer``).
        meta_lr: γ > 0; for the raw product choose it so that γ·E|s_{t-1} g_t| is about 1e-3..1e-2.
        granularity: ``"element"`` (default, post-faithful), ``"tensor"`` or ``"global"``.
        signal: ``"grad"`` (default) or ``"update"``.
        cosine: use cos(s_{t-1}, g_t) instead of the inner product (not with ``"element"``).
        nu_init, nu_min, nu_max: initial value and clamp range of ν (1, 1e-4, 1e2).

    Source: kexue.fm/archives/8968; arXiv:2202.00145.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        meta_lr: float = 1e-2,
        granularity: str = "element",
        signal: str = "grad",
        *,
        cosine: bool = False,
        nu_init: float = 1.0,
        nu_min: float = 1e-4,
        nu_max: float = 1e2,
    ) -> None:
        fn = "StepSizeAdaptation"
        if not isinstance(optimizer, Optimizer):
            fail(fn, "optimizer", "a torch.optim.Optimizer", optimizer, exc=TypeError)
        check_number("meta_lr", meta_lr, fn=fn, min=0.0)
        check_choice("granularity", granularity, GRANULARITIES, fn=fn)
        check_choice("signal", signal, SIGNALS, fn=fn)
        check_bool("cosine", cosine, fn=fn)
        if cosine and granularity == "element":
            fail(fn, "cosine", "False when granularity='element' (a cosine needs a vector)", cosine)
        check_number("nu_min", nu_min, fn=fn, min=0.0, min_inclusive=False)
        check_number("nu_max", nu_max, fn=fn, min=float(nu_min))
        check_number("nu_init", nu_init, fn=fn, min=float(nu_min), max=float(nu_max))
        self.optimizer = optimizer
        # Optimizer.__init__ would build groups of its own; the wrapper instead forwards param_groups,
        # state and defaults to the base (properties below), so schedulers, GradScaler and the base's
        # load_state_dict (which replaces its lists) always agree. Only the hook registries are needed.
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()
        self.meta_lr = float(meta_lr)
        self.granularity = granularity
        self.signal = signal
        self.cosine = cosine
        self.nu_init, self.nu_min, self.nu_max = float(nu_init), float(nu_min), float(nu_max)
        self.adapter_state: dict[Tensor, dict[str, Any]] = {}
        self.global_log_nu = torch.tensor(math.log(self.nu_init), dtype=torch.float64)
        self.num_steps = 0
        adaptive_keys = ("betas", "centered", "initial_accumulator_value", "rho")
        momentum = any(
            any(key in g for key in adaptive_keys) or float(g.get("momentum", 0.0) or 0.0) > 0
            for g in self.param_groups
        )
        if momentum:
            warnings.warn(
                f"{fn}: the base optimizer {type(optimizer).__name__} uses momentum or adaptive scaling; "
                "post 8968's rule is meant for plain SGD, and products of consecutive gradients can then "
                "be mostly negative, driving the multipliers to nu_min",
                stacklevel=2,
            )

    # ------------------------------------------------------------------------------ forwarding

    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property  # type: ignore[override]
    def state(self) -> Any:  # type: ignore[override]
        return self.optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self.optimizer.state = value

    @property  # type: ignore[override]
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.optimizer.defaults = value

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    # ------------------------------------------------------------------------------ helpers

    def _params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def _astate(self, p: Tensor) -> dict[str, Any]:
        st = self.adapter_state.get(p)
        if st is None:
            shape = p.shape if self.granularity == "element" else ()
            st = {
                "log_nu": torch.full(shape, math.log(self.nu_init), dtype=torch.float32
                                     if p.dtype in (torch.float16, torch.bfloat16) else p.dtype,
                                     device=p.device),
                "prev": None,
            }
            self.adapter_state[p] = st
        return st

    def multipliers(self, p: Tensor) -> Tensor:
        """The current ν for parameter ``p`` (shape of ``p`` for element granularity, else a scalar)."""
        if self.granularity == "global":
            return self.global_log_nu.exp()
        return self._astate(p)["log_nu"].exp()

    # ------------------------------------------------------------------------------ step

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """EG-update ν from (previous signal) ⊙ (current gradient), then take the ν-scaled base step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        lo, hi = math.log(self.nu_min), math.log(self.nu_max)
        params = [p for p in self._params() if p.grad is not None]
        gamma = self.meta_lr

        # 1. meta step on log ν
        dots: list[Tensor] = []
        sq_prev: list[Tensor] = []
        sq_grad: list[Tensor] = []
        for p in params:
            st = self._astate(p)
            prev = st["prev"]
            if prev is None:
                continue
            assert p.grad is not None
            g = p.grad.to(prev.dtype)
            if self.granularity == "element":
                st["log_nu"].add_(prev * g, alpha=gamma).clamp_(lo, hi)
                continue
            dot = torch.sum(prev * g)
            if self.granularity == "tensor":
                signal = dot
                if self.cosine:
                    signal = dot / (prev.norm() * g.norm()).clamp_min(1e-30)
                st["log_nu"].add_(signal, alpha=gamma).clamp_(lo, hi)
            else:
                dots.append(dot.double().cpu())
                sq_prev.append(prev.double().pow(2).sum().cpu())
                sq_grad.append(g.double().pow(2).sum().cpu())
        if self.granularity == "global" and dots:
            signal = torch.stack(dots).sum()
            if self.cosine:
                norms = (torch.stack(sq_prev).sum() * torch.stack(sq_grad).sum()).sqrt()
                signal = signal / norms.clamp_min(1e-30)
            self.global_log_nu.add_(signal, alpha=gamma).clamp_(lo, hi)

        # 2. base step, then rescale its update by ν
        before = [p.detach().clone() for p in params]
        grads = (
            [p.grad.detach().clone() for p in params if p.grad is not None] if self.signal == "grad" else None
        )
        self.optimizer.step()
        for i, (p, b) in enumerate(zip(params, before)):
            st = self._astate(p)
            u = b - p  # the base update u_t = θ_before - θ_after_base
            nu = self.multipliers(p).to(device=p.device)
            p.copy_(b.sub_(u * nu))  # θ = θ_before - ν ⊙ u
            if self.signal == "update":
                st["prev"] = u.to(st["log_nu"].dtype)
            else:
                assert grads is not None
                st["prev"] = grads[i].to(st["log_nu"].dtype)
        self.num_steps += 1
        return loss

    # ------------------------------------------------------------------------------ proxies

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        index = {p: i for i, p in enumerate(self._params())}
        return {
            "base": self.optimizer.state_dict(),
            "adapter": {
                index[p]: {
                    "log_nu": st["log_nu"].clone(),
                    "prev": None if st["prev"] is None else st["prev"].clone(),
                }
                for p, st in self.adapter_state.items()
                if p in index
            },
            "global_log_nu": self.global_log_nu.clone(),
            "num_steps": self.num_steps,
            "config": {
                "meta_lr": self.meta_lr,
                "granularity": self.granularity,
                "signal": self.signal,
                "cosine": self.cosine,
                "nu_init": self.nu_init,
                "nu_min": self.nu_min,
                "nu_max": self.nu_max,
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        cfg = state_dict["config"]
        if cfg["granularity"] != self.granularity:
            fail(
                "StepSizeAdaptation.load_state_dict",
                "state_dict",
                f"a state saved with granularity={self.granularity!r}",
                cfg["granularity"],
            )
        self.optimizer.load_state_dict(state_dict["base"])
        params = self._params()
        self.adapter_state = {}
        for i, st in state_dict["adapter"].items():
            p = params[int(i)]
            dtype = torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype
            self.adapter_state[p] = {
                "log_nu": st["log_nu"].to(device=p.device, dtype=dtype, copy=True),
                "prev": None
                if st["prev"] is None
                else st["prev"].to(device=p.device, dtype=dtype, copy=True),
            }
        self.global_log_nu = state_dict["global_log_nu"].to(torch.float64, copy=True)
        self.num_steps = int(state_dict["num_steps"])
        self.meta_lr = float(cfg["meta_lr"])
        self.signal = cfg["signal"]
        self.cosine = bool(cfg["cosine"])
        self.nu_init, self.nu_min, self.nu_max = (
            float(cfg["nu_init"]),
            float(cfg["nu_min"]),
            float(cfg["nu_max"]),
        )
