"""Zeroth-order gradient estimation with seed-replayed perturbations, and the MGS sampling update.

Sources: kexue.fm/archives/7737 (policy gradient and zeroth-order optimisation coincide),
kexue.fm/archives/7521 (optimisation seen through sampling; MGS, Welleck & Cho, arXiv:2006.03158);
Nesterov & Spokoiny 2017 (Gaussian smoothing); MeZO, arXiv:2305.17333 (in-place seeded perturbations).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from trainwell._validation import (
    check_bool,
    check_callable,
    check_choice,
    check_int,
    check_number,
    check_tensor,
    fail,
)

__all__ = [
    "ZO_BASELINES",
    "ZO_DISTRIBUTIONS",
    "MGSResult",
    "ZerothOrder",
    "mgs_log_weights",
    "mgs_step",
    "sampling_view_step",
    "zo_grad",
]

ZO_DISTRIBUTIONS = ("gaussian", "rademacher", "sphere")
ZO_BASELINES = ("f(x)", "mean", "none")
_LOW = (torch.float16, torch.bfloat16)


def _as_param_list(params: Tensor | Iterable[Tensor], fn: str) -> list[Tensor]:
    plist = [params] if isinstance(params, Tensor) else list(params)
    if not plist:
        fail(fn, "params", "a non-empty iterable of tensors", plist)
    for p in plist:
        check_tensor("params", p, fn=fn, kind="float")
    return plist


def _draw_seed(generator: torch.Generator | None) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


class _Noise:
    """Regenerates the same direction u (one tensor per parameter) from an integer seed, any number of times.
    """

    def __init__(self, params: list[Tensor], distribution: str) -> None:
        self.params = params
        self.distribution = distribution
        self.dim = sum(p.numel() for p in params)

    def tensors(self, seed: int) -> Iterable[Tensor]:
        gens: dict[torch.device, torch.Generator] = {}
        for p in self.params:
            gen = gens.get(p.device)
            if gen is None:
                gen = torch.Generator(device=p.device)
                gen.manual_seed(seed)
                gens[p.device] = gen
            dtype = torch.float32 if p.dtype in _LOW else p.dtype
            if self.distribution == "rademacher":
                u = torch.randint(0, 2, p.shape, generator=gen, device=p.device).to(dtype).mul_(2).sub_(1)
            else:
                u = torch.randn(p.shape, generator=gen, device=p.device, dtype=dtype)
            yield u

    def scale(self, seed: int) -> float:
        """Factor turning the raw draw into u (sqrt(d)/‖z‖ for the sphere, so that E[uuᵀ] = I)."""
        if self.distribution != "sphere":
            return 1.0
        sq = sum(float(u.double().pow(2).sum()) for u in self.tensors(seed))
        return math.sqrt(self.dim / max(sq, 1e-300))

    def replay(self, seed: int, scale: float, param_alpha: float, grad_alpha: float) -> None:
        """``p += param_alpha·u`` and ``p.grad += grad_alpha·u`` with u regenerated from ``seed``."""
        for p, z in zip(self.params, self.tensors(seed)):
            if param_alpha != 0.0:
                if p.dtype in _LOW:
                    p.copy_(p.float().add_(z, alpha=param_alpha * scale))
                else:
                    p.add_(z, alpha=param_alpha * scale)
            if grad_alpha != 0.0:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                p.grad.add_(z.to(p.grad.dtype), alpha=grad_alpha * scale)


def _value(loss: Any, fn: str) -> float:
    if isinstance(loss, Tensor):
        if loss.numel() != 1:
            fail(fn, "loss_fn", "a callable returning a scalar", loss)
        return float(loss.detach().double().item())
    try:
        return float(loss)
    except (TypeError, ValueError):
        fail(fn, "loss_fn", "a callable returning a scalar (tensor or number)", loss, exc=TypeError)


@torch.no_grad()
def zo_grad(
    loss_fn: Callable[[], Any],
    params: Tensor | Iterable[Tensor],
    num_samples: int = 1,
    sigma: float = 1e-3,
    antithetic: bool = True,
    baseline: str = "f(x)",
    distribution: str = "gaussian",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Estimate ∇f by random finite differences and **add** it to ``p.grad`` (like ``backward`` does).

    Central/antithetic (default): ``ĝ = mean_j [f(x+σu_j) - f(x-σu_j)]/(2σ) · u_j``; forward:
    ``ĝ = mean_j [f(x+σu_j) - b_j]/σ · u_j`` with baseline ``b_j`` = f(x) (``"f(x)"``), the mean of the
    *other* sampled values (``"mean"``, leave-one-out: including f(x+σu_j) itself would shrink the estimate
    by (n-1)/n and zero it for n = 1; needs ``num_samples >= 2``) or 0 (``"none"``). For Gaussian u both are
    unbiased for the gradient of the
    smoothed function ``f_σ(x) = E_u f(x+σu)`` at every σ (Stein's identity); the central estimator is
    exactly ``(uᵀ∇f)u`` for quadratics (so unbiased for ∇f, second moment (d+2)‖∇f‖²) and cancels even
    orders. Rademacher and sphere (radius √d) directions also have ``E[uuᵀ] = I`` but the smoothing claim
    is Gaussian-only.

    Memory: no parameter copy and no stored noise. Parameters are perturbed in place
    (+σu, evaluate, -2σu, evaluate, +σu) and every u is regenerated from an integer seed, the MeZO trick.
    The restore is exact in exact arithmetic; in floating point it can be off by an ulp or so per sample,
    so keep fp32 (or fp64) master weights: fp16/bf16 parameters are perturbed through an fp32 round trip.
    The variance grows with the dimension d (∝ d/num_samples): apply it to a small non-differentiable part.

    DDP: make ``loss_fn`` return the all-reduced loss and seed ``generator`` identically on every rank; then
    every rank draws the same u and writes the same gradient, with no tensor communication.

    Args:
        loss_fn: no-argument callable returning the scalar objective at the current parameters (run under
            ``torch.no_grad``).
        params: tensors to perturb.
        num_samples: number of directions (variance ∝ d/num_samples).
        sigma: smoothing radius σ > 0 (≈1e-3 × parameter scale for smooth f, 1e-2..1e-1 for piecewise-
            constant metrics).
        antithetic: central differences (2 evaluations per sample, no baseline needed).
        baseline: forward-mode baseline, one of ``"f(x)"``, ``"mean"`` (leave-one-out), ``"none"``.
        distribution: ``"gaussian"``, ``"rademacher"`` or ``"sphere"``.
        generator: draws the per-sample seeds (global RNG if None).

    Returns:
        The mean of the objective values seen (a float64 0-dim tensor): f(x) for forward mode with
        ``"f(x)"``, else the average of the perturbed evaluations.

    Source: kexue.fm/archives/7737; arXiv:2305.17333.
    """
    fn = "zo_grad"
    check_callable("loss_fn", loss_fn, fn=fn)
    plist = _as_param_list(params, fn)
    n = check_int("num_samples", num_samples, fn=fn, min=1)
    s = check_number("sigma", sigma, fn=fn, min=0.0, min_inclusive=False)
    check_bool("antithetic", antithetic, fn=fn)
    check_choice("baseline", baseline, ZO_BASELINES, fn=fn)
    check_choice("distribution", distribution, ZO_DISTRIBUTIONS, fn=fn)
    if not antithetic and baseline == "mean" and n < 2:
        fail(fn, "baseline", "'f(x)' or 'none' when num_samples == 1 ('mean' is leave-one-out)", baseline)
    # like backward(), every parameter gets a .grad even when all finite differences happen to be 0
    for p in plist:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    noise = _Noise(plist, distribution)
    values: list[float] = []
    if antithetic:
        for _ in range(n):
            seed = _draw_seed(generator)
            scale = noise.scale(seed)
            noise.replay(seed, scale, s, 0.0)
            f_plus = _value(loss_fn(), fn)
            noise.replay(seed, scale, -2.0 * s, 0.0)
            f_minus = _value(loss_fn(), fn)
            noise.replay(seed, scale, s, (f_plus - f_minus) / (2.0 * s * n))
            values += [f_plus, f_minus]
        return torch.tensor(sum(values) / len(values), dtype=torch.float64)
    base = _value(loss_fn(), fn) if baseline == "f(x)" else 0.0
    pending: list[tuple[int, float, float]] = []
    for _ in range(n):
        seed = _draw_seed(generator)
        scale = noise.scale(seed)
        noise.replay(seed, scale, s, 0.0)
        f = _value(loss_fn(), fn)
        values.append(f)
        if baseline == "mean":
            noise.replay(seed, scale, -s, 0.0)
            pending.append((seed, scale, f))
        else:
            noise.replay(seed, scale, -s, (f - base) / (s * n))
    if baseline == "mean":
        total = sum(values)
        for seed, scale, f in pending:
            loo = (total - f) / (n - 1)  # mean of the other samples: independent of u_j, so unbiased
            noise.replay(seed, scale, 0.0, (f - loo) / (s * n))
    if baseline == "f(x)":
        return torch.tensor(base, dtype=torch.float64)
    return torch.tensor(sum(values) / n, dtype=torch.float64)


class ZerothOrder(Optimizer):
    """SGD (optionally with momentum and weight decay) on the zeroth-order gradient of :func:`zo_grad`.

    ``opt.step(closure)`` needs a closure that returns the objective (no ``backward``; it is run under
    ``torch.no_grad``). The gradients of the optimizer's parameters are replaced by the ZO estimate, then
    ``m ← μ m + ĝ + λθ``, ``θ ← θ - lr·m``. Use it for a small non-differentiable part of a model (or a
    non-differentiable metric); autograd-trained parameters belong in a separate optimizer.

    Shape:
        params: any shapes; ``closure()`` returns the objective as a float or a one-element tensor;
        ``state[p]["momentum_buffer"]`` (with ``momentum > 0``) is shaped like ``p``.

    Example::

        w, target = nn.Parameter(torch.zeros(3)), torch.tensor([1.0, -2.0, 0.5])
        opt = ZerothOrder([w], lr=0.05, sigma=0.01, num_samples=4, seed=0)
        for _ in range(200):
            opt.step(lambda: (w - target).abs().sum())  # no backward: a non-differentiable objective is fine

    Args:
        params: parameters to optimise (all perturbed jointly).
        lr: learning rate.
        sigma, num_samples, antithetic, baseline, distribution: passed to :func:`zo_grad`.
        momentum: heavy-ball momentum μ in [0, 1).
        weight_decay: L2 penalty λ.
        seed: seed of the optimizer's own generator for the perturbation seeds (saved in ``state_dict``;
            use the same on every DDP rank).

    Source: kexue.fm/archives/7737.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        sigma: float = 1e-3,
        num_samples: int = 1,
        antithetic: bool = True,
        baseline: str = "f(x)",
        distribution: str = "gaussian",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        seed: int | None = None,
    ) -> None:
        fn = "ZerothOrder"
        check_number("lr", lr, fn=fn, min=0.0)
        check_number("sigma", sigma, fn=fn, min=0.0, min_inclusive=False)
        check_int("num_samples", num_samples, fn=fn, min=1)
        check_bool("antithetic", antithetic, fn=fn)
        check_choice("baseline", baseline, ZO_BASELINES, fn=fn)
        if not antithetic and baseline == "mean" and num_samples < 2:
            fail(fn, "baseline", "'f(x)' or 'none' when num_samples == 1 ('mean' is leave-one-out)", baseline)
        check_choice("distribution", distribution, ZO_DISTRIBUTIONS, fn=fn)
        check_number("momentum", momentum, fn=fn, min=0.0, max=1.0, max_inclusive=False)
        check_number("weight_decay", weight_decay, fn=fn, min=0.0)
        check_int("seed", seed, fn=fn, allow_none=True)
        defaults = dict(lr=float(lr), momentum=float(momentum), weight_decay=float(weight_decay))
        super().__init__(params, defaults)
        self.sigma, self.num_samples, self.antithetic = float(sigma), int(num_samples), antithetic
        self.baseline, self.distribution = baseline, distribution
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Estimate the gradient with ``closure`` and take one (momentum) SGD step; return the loss."""
        if closure is None:
            fail("ZerothOrder.step", "closure", "a callable returning the loss", None, exc=TypeError)
        params = [p for g in self.param_groups for p in g["params"]]
        for p in params:
            p.grad = None
        loss = zo_grad(
            closure,
            params,
            self.num_samples,
            self.sigma,
            self.antithetic,
            self.baseline,
            self.distribution,
            self.generator,
        )
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if group["weight_decay"] != 0.0:
                    d = d.add(p, alpha=group["weight_decay"])
                if group["momentum"] != 0.0:
                    st = self.state[p]
                    buf = st.get("momentum_buffer")
                    if buf is None:
                        buf = st["momentum_buffer"] = d.clone()
                    else:
                        buf.mul_(group["momentum"]).add_(d)
                    d = buf
                p.add_(d, alpha=-group["lr"])
        return loss

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["generator_state"] = self.generator.get_state()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        gen_state = state_dict.pop("generator_state", None)
        super().load_state_dict(state_dict)
        if gen_state is not None:
            self.generator.set_state(gen_state)


# --------------------------------------------------------------------------------------------- MGS


def mgs_log_weights(
    loss_deltas: Tensor,
    delta_sq: Tensor,
    delta_minus_guide_sq: Tensor,
    sigma: float,
    mix_lambda: float = 0.5,
    alpha: float | str = "auto",
) -> Tensor:
    """Self-normalised importance log-weights of MGS candidates (float64, they sum to 1 in prob space).

    ``log w_i = log_softmax_i( -(l(θ+Δ_i) - l(θ))/α - log q(Δ_i) )`` with the mixture proposal
    ``q = λ·N(0, σ²I) + (1-λ)·N(μ, σ²I)``, whose log density up to the dropped (common) Gaussian constant is
    ``logaddexp(log λ - ‖Δ‖²/2σ², log(1-λ) - ‖Δ-μ‖²/2σ²)``. ``alpha="auto"`` uses the standard deviation of
    the loss differences (floored at 1e-8). Invariant to a constant added to the loss.

    Args:
        loss_deltas: ``l(θ+Δ_i) - l(θ)``, shape [n].
        delta_sq: ``‖Δ_i‖²``, shape [n].
        delta_minus_guide_sq: ``‖Δ_i - μ‖²``, shape [n].
        sigma: proposal standard deviation σ > 0.
        mix_lambda: weight λ in [0, 1] of the unguided component.
        alpha: temperature α > 0 or ``"auto"``.

    Source: kexue.fm/archives/7521; arXiv:2006.03158.
    """
    fn = "mgs_log_weights"
    check_tensor("loss_deltas", loss_deltas, fn=fn, kind="float", ndim=1)
    s = check_number("sigma", sigma, fn=fn, min=0.0, min_inclusive=False)
    lam = check_number("mix_lambda", mix_lambda, fn=fn, min=0.0, max=1.0)
    dl = loss_deltas.double()
    if isinstance(alpha, str):
        check_choice("alpha", alpha, ("auto",), fn=fn)
        a = float(dl.std(unbiased=False)) if dl.numel() > 1 else 1.0
        a = max(a, 1e-8)
    else:
        a_checked = check_number("alpha", alpha, fn=fn, min=0.0, min_inclusive=False)
        a = a_checked
    log_lam = math.log(lam) if lam > 0 else -math.inf
    log_1m = math.log1p(-lam) if lam < 1 else -math.inf
    log_q = torch.logaddexp(
        log_lam - delta_sq.double() / (2 * s * s), log_1m - delta_minus_guide_sq.double() / (2 * s * s)
    )
    return torch.log_softmax(-dl / a - log_q, dim=0)


@dataclass
class MGSResult:
    """What :func:`mgs_step` did: candidate weights and losses, the base loss, ESS and temperature."""

    weights: Tensor
    losses: Tensor
    base_loss: float
    ess: float
    alpha: float


@torch.no_grad()
def mgs_step(
    loss_fn: Callable[[], Any],
    params: Tensor | Iterable[Tensor],
    guide: Sequence[Tensor],
    num_candidates: int = 4,
    sigma: float = 1e-2,
    mix_lambda: float = 0.5,
    alpha: float | str = "auto",
    generator: torch.Generator | None = None,
    min_ess: float = 1.5,
) -> MGSResult:
    """One MGS update ``θ ← θ + Σ_i w_i Δ_i`` toward the Gibbs mean of a non-differentiable loss.

    Post 7521 defines the update as the mean of ``p(Δ|θ) ∝ exp(-[l(θ+Δ) - l(θ)]/α)``. For a task loss
    ``l`` (BLEU, accuracy, ...) without gradients it is estimated by self-normalised importance sampling
    with candidates ``Δ_i ~ q = λ·N(0, σ²I) + (1-λ)·N(μ, σ²I)``, where the guide ``μ`` comes from a
    differentiable surrogate (e.g. ``μ = -lr·∇l̃``); weights as :func:`mgs_log_weights`. For a quadratic
    loss the exact Gibbs mean is the Newton step ``-H⁻¹g``.

    Candidates are evaluated in place one at a time and regenerated from integer seeds (no noise tensors
    stored, no parameter copies); restoring is exact up to floating-point rounding. Same generator state →
    same update (for DDP: same seed on every rank and an all-reduced ``loss_fn``). Warns when the effective
    sample size ``1/Σw²`` is below ``min_ess``.

    Args:
        loss_fn: no-argument callable returning the pooled task loss at the current parameters.
        params: tensors to update.
        guide: μ, one tensor per parameter (same shapes).
        num_candidates: n (4 in the paper's text-generation runs).
        sigma: σ > 0 of both proposal components.
        mix_lambda: λ, the weight of the unguided component.
        alpha: temperature α > 0, or ``"auto"`` (std of the candidates' loss differences).
        generator: draws the candidate seeds and component choices.
        min_ess: warning threshold for the effective sample size.

    Returns:
        :class:`MGSResult`.

    Source: kexue.fm/archives/7521; arXiv:2006.03158.
    """
    fn = "mgs_step"
    check_callable("loss_fn", loss_fn, fn=fn)
    plist = _as_param_list(params, fn)
    glist = list(guide)
    if len(glist) != len(plist):
        fail(fn, "guide", f"a sequence of {len(plist)} tensors (one per parameter)", glist)
    for p, mu in zip(plist, glist):
        check_tensor("guide", mu, fn=fn, kind="float")
        if mu.shape != p.shape:
            fail(fn, "guide", f"tensors shaped like params ({tuple(p.shape)})", mu)
    n = check_int("num_candidates", num_candidates, fn=fn, min=1)
    s = check_number("sigma", sigma, fn=fn, min=0.0, min_inclusive=False)
    lam = check_number("mix_lambda", mix_lambda, fn=fn, min=0.0, max=1.0)
    if isinstance(alpha, str):
        check_choice("alpha", alpha, ("auto",), fn=fn)
    else:
        check_number("alpha", alpha, fn=fn, min=0.0, min_inclusive=False)

    noise = _Noise(plist, "gaussian")
    base = _value(loss_fn(), fn)
    seeds: list[int] = []
    guided: list[bool] = []
    losses: list[float] = []
    d_sq: list[float] = []
    dm_sq: list[float] = []

    def apply(seed: int, use_guide: bool, alpha_: float) -> tuple[float, float]:
        """θ += alpha_·Δ (Δ regenerated); returns (‖Δ‖², ‖Δ-μ‖²)."""
        sq = sqm = 0.0
        for p, mu, z in zip(plist, glist, noise.tensors(seed)):
            delta = z.mul_(s)
            mu_d = mu.to(delta.dtype)
            if use_guide:
                sqm += float(delta.double().pow(2).sum())
                delta.add_(mu_d)
                sq += float(delta.double().pow(2).sum())
            else:
                sq += float(delta.double().pow(2).sum())
                sqm += float((delta - mu_d).double().pow(2).sum())
            if alpha_ != 0.0:
                if p.dtype in _LOW:
                    p.copy_(p.float().add_(delta, alpha=alpha_))
                else:
                    p.add_(delta, alpha=alpha_)
        return sq, sqm

    for _ in range(n):
        seed = _draw_seed(generator)
        use_guide = bool(torch.rand((), generator=generator).item() >= lam)
        sq, sqm = apply(seed, use_guide, 1.0)
        losses.append(_value(loss_fn(), fn))
        apply(seed, use_guide, -1.0)
        seeds.append(seed)
        guided.append(use_guide)
        d_sq.append(sq)
        dm_sq.append(sqm)
    deltas = torch.tensor(losses, dtype=torch.float64) - base
    if isinstance(alpha, str):
        a = max(float(deltas.std(unbiased=False)) if n > 1 else 1.0, 1e-8)
    else:
        a = float(alpha)
    log_w = mgs_log_weights(
        deltas, torch.tensor(d_sq, dtype=torch.float64), torch.tensor(dm_sq, dtype=torch.float64), s, lam, a
    )
    w = log_w.exp()
    for seed, use_guide, wi in zip(seeds, guided, w.tolist()):
        if wi != 0.0:
            apply(seed, use_guide, wi)
    ess = float(1.0 / w.pow(2).sum())
    if ess < min_ess:
        warnings.warn(
            f"mgs_step: effective sample size {ess:.2f} < {min_ess}; the update rests on one "
            "candidate (raise num_candidates or alpha, or lower sigma)",
            stacklevel=2,
        )
    return MGSResult(
        weights=w, losses=torch.tensor(losses, dtype=torch.float64), base_loss=base, ess=ess, alpha=a
    )


# --------------------------------------------------------------------------------------------- sampling view


def _bessel_ratio(nu: float, kappa: float, terms: int = 400) -> float:
    """``I_{ν+1}(κ) / I_ν(κ)`` by backward recurrence ``r_ν = κ / (2(ν+1) + κ r_{ν+1})``.

    Started ``terms`` orders higher from Amos' (1974) estimate ``κ/(m+½+√((m+3/2)²+κ²))``; every backward
    step contracts the starting error by ``r²``, so 400 steps reach double precision except where κ ≫ ν,
    where the starting estimate itself is already accurate to O(1/κ²).
    """
    if kappa <= 0.0:
        return 0.0
    m = nu + terms
    r = kappa / (m + 0.5 + math.sqrt((m + 1.5) ** 2 + kappa * kappa))
    for j in range(terms, 0, -1):
        r = kappa / (2.0 * (nu + j) + kappa * r)
    return r


@torch.no_grad()
def sampling_view_step(grads: Tensor | Sequence[Tensor], radius: float, temperature: float) -> list[Tensor]:
    """Mean increment of the first-order Gibbs distribution on a ball: a soft-clipped gradient step.

    Post 7521 sets ``Δθ* = E[Δ]`` for ``p(Δ) ∝ exp(-Δᵀg/α)`` on ``‖Δ‖ ≤ ε``. By isotropy
    ``E[Δ] = -α ∇_g log Z = -ε · I_{d/2+1}(κ)/I_{d/2}(κ) · g/‖g‖`` with ``κ = ε‖g‖/α`` and d the total
    number of coordinates (the Bessel-ratio form is a [spec-level derivation], not in the post). It is
    gradient descent with lr ``ε²/((d+2)α)`` for small ``ε‖g‖/α`` and saturates at length ε for large
    gradients, i.e. a clipping-like step (§1 of the spec).

    Args:
        grads: the gradient (one tensor or one per parameter).
        radius: ε > 0.
        temperature: α > 0.

    Returns:
        The increments Δθ*, shaped like ``grads`` (a list).

    Source: kexue.fm/archives/7521.
    """
    fn = "sampling_view_step"
    glist = [grads] if isinstance(grads, Tensor) else list(grads)
    if not glist:
        fail(fn, "grads", "a tensor or a non-empty sequence of tensors", glist)
    for g in glist:
        check_tensor("grads", g, fn=fn, kind="float")
    eps = check_number("radius", radius, fn=fn, min=0.0, min_inclusive=False)
    alpha = check_number("temperature", temperature, fn=fn, min=0.0, min_inclusive=False)
    d = sum(g.numel() for g in glist)
    norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in glist))
    if norm == 0.0 or not math.isfinite(norm):
        return [torch.zeros_like(g) for g in glist]
    length = eps * _bessel_ratio(d / 2.0, eps * norm / alpha)
    return [g * (-length / norm) for g in glist]
