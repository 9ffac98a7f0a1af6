"""Spec optimization.md §5.6 (4-7): EG-adapted learning-rate multipliers (post 8968)."""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from trainwell.optim import StepSizeAdaptation

D = torch.float64


def _g(p: torch.Tensor) -> torch.Tensor:
    """``p.grad``, asserted present (keeps the tests type-checked)."""
    assert p.grad is not None
    return p.grad


def _sgd_wrapper(params: Sequence[torch.Tensor], lr: float, **kw: Any) -> StepSizeAdaptation:
    return StepSizeAdaptation(torch.optim.SGD(params, lr=lr), **kw)


@pytest.mark.parametrize("granularity", ["element", "tensor", "global"])
def test_closed_form_after_100_steps(granularity: str) -> None:
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 2), (4,)]
    ps = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=D)) for s in shapes]
    gamma = 0.01
    opt = _sgd_wrapper(ps, 0.01, meta_lr=gamma, granularity=granularity)
    grads = [[torch.randn(s, generator=g, dtype=D) for s in shapes] for _ in range(101)]
    for gs in grads:
        for p, gr in zip(ps, gs):
            p.grad = gr.clone()
        opt.step()
    for j, p in enumerate(ps):
        prods = [grads[t - 1][j] * grads[t][j] for t in range(1, 101)]  # ν_101 uses g_0..g_100
        if granularity == "element":
            expo = sum(prods)
        elif granularity == "tensor":
            expo = sum(x.sum() for x in prods)
        else:
            expo = sum(grads[t - 1][i].mul(grads[t][i]).sum() for t in range(1, 101) for i in range(2))
        torch.testing.assert_close(
            opt.multipliers(p).to(D), torch.exp(gamma * torch.as_tensor(expo)).to(D), rtol=1e-12, atol=1e-12
        )


def test_log_nu_step_is_minus_gamma_times_autograd_hypergradient() -> None:
    g = torch.Generator().manual_seed(1)
    A = torch.randn(5, 5, generator=g, dtype=D)
    H = A @ A.T + torch.eye(5, dtype=D)
    c = torch.randn(5, generator=g, dtype=D)

    def loss(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x @ H @ x - c @ x

    eta, gamma = 0.05, 0.3
    theta0 = torch.randn(5, generator=g, dtype=D)
    p = torch.nn.Parameter(theta0.clone())
    opt = _sgd_wrapper([p], eta, meta_lr=gamma, signal="update")
    for _ in range(2):
        opt.zero_grad()
        loss(p).backward()
        opt.step()
    # autograd: θ1(ν1) = θ0 - ν1 ⊙ (η g0); ∂L(θ1)/∂ν1 should be -η g0 ⊙ g1
    nu1 = torch.ones(5, dtype=D, requires_grad=True)
    th0 = theta0.clone().requires_grad_()
    g0 = torch.autograd.grad(loss(th0), th0)[0]
    hyper = torch.autograd.grad(loss(theta0 - nu1 * eta * g0), nu1)[0]
    th1 = (theta0 - eta * g0).requires_grad_()
    g1 = torch.autograd.grad(loss(th1), th1)[0]
    torch.testing.assert_close(hyper, -eta * g0 * g1, rtol=0, atol=1e-10)
    torch.testing.assert_close(opt.adapter_state[p]["log_nu"], -gamma * hyper, rtol=0, atol=1e-10)


def _quadratic_run(
    eta: float, gamma: float, steps: int = 200, nu_max: float = 1e2
) -> tuple[list[float], float]:
    x = torch.nn.Parameter(torch.tensor([1.0], dtype=D))
    opt = _sgd_wrapper([x], eta, meta_lr=gamma, nu_max=nu_max)
    rates = []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * x.pow(2).sum()).backward()  # h = 1
        opt.step()
        rates.append(eta * float(opt.multipliers(x)))
        if not math.isfinite(float(x.detach())):
            break
    return rates, float(x.detach())


def test_one_dimensional_quadratic_behaviour() -> None:
    rates, _ = _quadratic_run(0.1, 1.0)
    assert all(b >= a for a, b in itertools.pairwise(rates)) and rates[-1] > 0.5  # ην rises
    rates, _ = _quadratic_run(1.5, 1.0)
    assert rates[-1] < 1.0  # falls below 1 from 1.5
    _, x = _quadratic_run(2.5, 1.0)
    assert abs(x) < 1e-100  # plain GD diverges at η = 2.5 (|1 - 2.5| > 1), the adapted run converges
    _, x_unclamped = _quadratic_run(0.1, 10.0, nu_max=math.inf)
    _, x_clamped = _quadratic_run(0.1, 10.0)
    assert not math.isfinite(x_unclamped) and math.isfinite(x_clamped)


def test_clamp_under_adversarial_gradients() -> None:
    p = torch.nn.Parameter(torch.zeros(4, dtype=D))
    opt = _sgd_wrapper([p], 0.1, meta_lr=5.0, nu_min=1e-3, nu_max=10.0)
    for t in range(50):
        p.grad = torch.tensor([1e6, -1e6, 1e3 * (-1) ** t, 0.0], dtype=D)
        opt.step()
        nu = opt.multipliers(p)
        assert bool(torch.isfinite(nu).all()) and bool(((nu >= 1e-3 - 1e-15) & (nu <= 10 + 1e-12)).all())
    nu = opt.multipliers(p)
    assert float(nu[0]) == pytest.approx(10.0) and float(nu[2]) == pytest.approx(1e-3)


def test_state_dict_round_trip_and_proxies() -> None:
    g = torch.Generator().manual_seed(2)
    grads = [torch.randn(6, generator=g, dtype=D) for _ in range(10)]
    p = torch.nn.Parameter(torch.zeros(6, dtype=D))
    full = _sgd_wrapper([p], 0.1, meta_lr=0.5)
    for gr in grads:
        p.grad = gr.clone()
        full.step()
    q = torch.nn.Parameter(torch.zeros(6, dtype=D))
    half = _sgd_wrapper([q], 0.1, meta_lr=0.5)
    for gr in grads[:5]:
        q.grad = gr.clone()
        half.step()
    sd = copy.deepcopy(half.state_dict())
    r = torch.nn.Parameter(q.detach().clone())
    resumed = _sgd_wrapper([r], 0.1, meta_lr=0.5)
    resumed.load_state_dict(sd)
    for gr in grads[5:]:
        r.grad = gr.clone()
        resumed.step()
    assert torch.equal(p, r)
    # proxies: param_groups and state are the base's; zero_grad; a scheduler accepts the wrapper
    assert resumed.param_groups is resumed.optimizer.param_groups and resumed.state is resumed.optimizer.state
    sched = torch.optim.lr_scheduler.StepLR(resumed, step_size=1, gamma=0.5)
    resumed.step()
    sched.step()
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    resumed.zero_grad()
    assert r.grad is None


def test_scaler_skipped_step_changes_nothing() -> None:
    model = torch.nn.Linear(3, 1)
    opt = StepSizeAdaptation(torch.optim.SGD(model.parameters(), lr=0.1), meta_lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    for inject in (False, False, True):
        opt.zero_grad()
        scaler.scale(model(torch.randn(4, 3)).pow(2).mean()).backward()
        if inject:
            snap = copy.deepcopy(opt.state_dict())
            _g(model.bias).fill_(float("inf"))
        scaler.step(opt)
        scaler.update()
    after = opt.state_dict()
    assert after["num_steps"] == 2
    for i, st in snap["adapter"].items():
        assert torch.equal(after["adapter"][i]["log_nu"], st["log_nu"])
        assert torch.equal(after["adapter"][i]["prev"], st["prev"])


def test_warns_for_momentum_base_and_bad_inputs() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.warns(UserWarning, match="momentum or adaptive"):
        StepSizeAdaptation(torch.optim.Adam([p], lr=1e-3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        StepSizeAdaptation(torch.optim.SGD([p], lr=1e-3))
    with pytest.raises(ValueError, match="'granularity'"):
        StepSizeAdaptation(torch.optim.SGD([p], lr=1e-3), granularity="layer")
    with pytest.raises(ValueError, match="'meta_lr'"):
        StepSizeAdaptation(torch.optim.SGD([p], lr=1e-3), meta_lr=-1.0)
    with pytest.raises(ValueError, match="'cosine'"):
        StepSizeAdaptation(torch.optim.SGD([p], lr=1e-3), cosine=True)
    with pytest.raises(TypeError, match="'optimizer'"):
        StepSizeAdaptation([p])  # type: ignore[arg-type]
