"""Spec optimization.md §4.6 (3-5) and §3.6: zeroth-order estimator, ZerothOrder, MGS (posts 7737, 7521)."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

from trainwell.optim import ZerothOrder, mgs_log_weights, mgs_step, sampling_view_step, zo_grad

D = torch.float64


def _g(p: torch.Tensor) -> torch.Tensor:
    """``p.grad``, asserted present (keeps the tests type-checked)."""
    assert p.grad is not None
    return p.grad


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    """Thousands of tiny evaluations: intra-op threads only add contention on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _record_quadratic(d: int = 5, seed: int = 0):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=D)
    H = A @ A.T / d + torch.eye(d, dtype=D)
    c = torch.randn(d, generator=g, dtype=D)
    x0 = torch.randn(d, generator=g, dtype=D)
    return H, c, x0


def _zo_samples(f, x0: torch.Tensor, n: int, sigma: float, antithetic: bool, seed: int = 0):  # type: ignore[no-untyped-def]
    """Run zo_grad once with n samples, recording every evaluation point; return (ĝ, per-sample estimates)."""
    p = torch.nn.Parameter(x0.clone())
    seen: list[tuple[torch.Tensor, float]] = []

    def loss_fn() -> torch.Tensor:
        val = f(p.detach())
        seen.append((p.detach().clone(), float(val)))
        return val

    zo_grad(loss_fn, [p], num_samples=n, sigma=sigma, antithetic=antithetic,
            generator=torch.Generator().manual_seed(seed))
    assert p.grad is not None
    if antithetic:
        plus, minus = seen[0::2], seen[1::2]
        u = torch.stack([(a[0] - x0) / sigma for a in plus])
        coef = torch.tensor([(a[1] - b[1]) / (2 * sigma) for a, b in zip(plus, minus)], dtype=D)
    else:
        base = seen[0][1]
        pts = seen[1:]
        u = torch.stack([(a[0] - x0) / sigma for a in pts])
        coef = torch.tensor([(a[1] - base) / sigma for a in pts], dtype=D)
    per = coef[:, None] * u
    # the parameters are restored (to rounding) and the written gradient is the mean of the samples
    torch.testing.assert_close(p.detach(), x0, rtol=0, atol=1e-13)
    torch.testing.assert_close(p.grad, per.mean(0), rtol=1e-10, atol=1e-12)
    return p.grad.clone(), per, u


def test_central_estimator_exact_direction_for_quadratic() -> None:
    H, c, x0 = _record_quadratic()

    def f(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x @ H @ x - c @ x

    grad = H @ x0 - c
    _, per, u = _zo_samples(f, x0, 50, 0.5, True)
    # each antithetic sample is exactly (uᵀ∇f)u for a quadratic, at a finite σ
    torch.testing.assert_close(per, (u @ grad)[:, None] * u, rtol=0, atol=1e-9)


@pytest.mark.parametrize("antithetic", [True, False])
def test_unbiased_for_quadratic_and_second_moment(antithetic: bool) -> None:
    H, c, x0 = _record_quadratic()
    d = 5

    def f(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x @ H @ x - c @ x

    grad = H @ x0 - c
    n = 5_000
    mean, per, _ = _zo_samples(f, x0, n, 0.5, antithetic, seed=1)
    se = per.std(0) / math.sqrt(n)
    assert bool(((mean - grad).abs() < 5 * se).all())
    sq = per.pow(2).sum(1)
    ratio = float(sq.mean()) / ((d + 2) * float(grad @ grad))
    ratio_se = float(sq.std()) / math.sqrt(n) / ((d + 2) * float(grad @ grad))
    if antithetic:
        assert abs(ratio - 1.0) < 5 * ratio_se
    else:
        assert ratio > 1.2  # the forward estimator carries extra O(σ) terms


@pytest.mark.parametrize("antithetic", [True, False])
def test_cubic_matches_smoothed_gradient_not_true_gradient(antithetic: bool) -> None:
    g = torch.Generator().manual_seed(3)
    coeffs = torch.tensor([1.0, -2.0, 0.5, 1.5], dtype=D)
    x0 = torch.randn(4, generator=g, dtype=D)
    eps = 0.5

    def f(x: torch.Tensor) -> torch.Tensor:
        return (coeffs * x**3).sum()

    true = 3 * coeffs * x0**2
    smoothed = true + 3 * eps**2 * coeffs
    n = 5_000
    mean, per, _ = _zo_samples(f, x0, n, eps, antithetic, seed=2)
    se = per.std(0) / math.sqrt(n)
    assert bool(((mean - smoothed).abs() < 5 * se).all())
    assert bool(((mean - true).abs() > 5 * se).any())


def test_zo_matches_policy_gradient_direction() -> None:
    g = torch.Generator().manual_seed(4)
    C, Dm, N = 4, 5, 64
    X = torch.randn(N, Dm, generator=g, dtype=D)
    labels = torch.randint(0, C, (N,), generator=g)
    r = torch.nn.functional.one_hot(labels, C).to(D)
    theta0 = 0.3 * torch.randn(C, Dm, generator=g, dtype=D)

    def expected_reward(th: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
        return (torch.softmax(X @ th.T / tau, -1) * r).sum(-1).mean()

    th = theta0.clone().requires_grad_()
    pg = torch.autograd.grad(expected_reward(th), th)[0]

    p = torch.nn.Parameter(theta0.clone())
    zo_grad(lambda: -expected_reward(p), [p], num_samples=2000, sigma=1e-3,
            generator=torch.Generator().manual_seed(0))
    cos = torch.nn.functional.cosine_similarity(-_g(p).flatten(), pg.flatten(), dim=0)
    assert float(cos) > 0.99

    def accuracy(th: torch.Tensor) -> torch.Tensor:  # piecewise constant: argmax prediction
        return (torch.argmax(X @ th.T, -1) == labels).to(D).mean()

    q = torch.nn.Parameter(theta0.clone())
    gen = torch.Generator().manual_seed(1)
    zo_grad(lambda: -accuracy(q), [q], num_samples=2000, sigma=0.3, generator=gen)
    cos_argmax = torch.nn.functional.cosine_similarity(-_g(q).flatten(), pg.flatten(), dim=0)
    assert float(cos_argmax) > 0.0


def test_zo_seed_replay_is_deterministic_and_accumulates() -> None:
    p = torch.nn.Parameter(torch.randn(3, 4, dtype=D))
    before = p.detach().clone()
    for dist in ("gaussian", "rademacher", "sphere"):
        p.grad = None
        zo_grad(
            lambda: (p**2).sum(), [p], 3, 0.1, distribution=dist, generator=torch.Generator().manual_seed(5)
        )
        first = _g(p).clone()
        zo_grad(
            lambda: (p**2).sum(), [p], 3, 0.1, distribution=dist, generator=torch.Generator().manual_seed(5)
        )
        torch.testing.assert_close(p.grad, 2 * first, rtol=1e-12, atol=0)  # adds, like backward
        torch.testing.assert_close(p.detach(), before, rtol=0, atol=1e-14)


@pytest.mark.parametrize("baseline", ["f(x)", "mean", "none"])
def test_forward_baselines_unbiased_for_linear(baseline: str) -> None:
    w = torch.tensor([1.0, -2.0, 0.5], dtype=D)
    p = torch.nn.Parameter(torch.zeros(3, dtype=D))
    zo_grad(
        lambda: w @ p + 3.0,
        [p],
        num_samples=5_000,
        sigma=1.0,
        antithetic=False,
        baseline=baseline,
        generator=torch.Generator().manual_seed(6),
    )
    tol = 0.3 if baseline == "none" else 0.2  # ≈5 standard errors; without a baseline f = 3 adds variance
    torch.testing.assert_close(p.grad, w, rtol=0, atol=tol)


def test_zeroth_order_optimizer_descends_and_resumes() -> None:
    H, c, x0 = _record_quadratic(seed=7)

    def make() -> tuple[torch.nn.Parameter, ZerothOrder]:
        p = torch.nn.Parameter(x0.clone())
        return p, ZerothOrder([p], lr=0.05, sigma=1e-3, num_samples=4, momentum=0.5, seed=3)

    def loss(p: torch.Tensor) -> torch.Tensor:
        return 0.5 * p @ H @ p - c @ p

    p, opt = make()
    start = float(loss(p.detach()))
    for _ in range(10):
        opt.step(lambda: loss(p))
    sd = copy.deepcopy(opt.state_dict())
    snap = p.detach().clone()
    for _ in range(10):
        opt.step(lambda: loss(p))
    assert float(loss(p.detach())) < start - 0.5 * (start - float(loss(torch.linalg.solve(H, c))))
    q, opt2 = make()
    with torch.no_grad():
        q.copy_(snap)
    opt2.load_state_dict(sd)
    for _ in range(10):
        opt2.step(lambda: loss(q))
    assert torch.equal(p, q)
    with pytest.raises(TypeError, match="'closure'"):
        opt.step()


# ----------------------------------------------------------------------------------------- MGS


def test_mgs_importance_estimate_converges_to_newton_step() -> None:
    g = torch.Generator().manual_seed(0)
    H = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 1.5]], dtype=D)
    grad = torch.tensor([0.5, -0.3, 0.8], dtype=D)
    newton = -torch.linalg.solve(H, grad)
    mu = -1.3 * grad  # a biased guide
    n, sigma, lam = 200_000, 1.0, 0.5
    for alpha in (0.1, 0.25, 0.5, 1.0):
        z = torch.randn(n, 3, generator=g, dtype=D) * sigma
        guided = torch.rand(n, generator=g) >= lam
        delta = z + guided[:, None].to(D) * mu
        dl = delta @ grad + 0.5 * ((delta @ H) * delta).sum(1)
        logw = mgs_log_weights(dl, delta.pow(2).sum(1), (delta - mu).pow(2).sum(1), sigma, lam, alpha)
        w = logw.exp()
        est = (w[:, None] * delta).sum(0)
        ess = float(1 / w.pow(2).sum())
        assert ess > 500
        assert float((est - newton).abs().max()) < 0.03, alpha


def test_mgs_weights_uniform_when_proposal_is_target() -> None:
    g = torch.Generator().manual_seed(1)
    c_, alpha, n = 2.0, 0.5, 1000
    grad = torch.randn(4, generator=g, dtype=D)
    sigma = math.sqrt(alpha / c_)
    mu = -grad / c_
    delta = mu + sigma * torch.randn(n, 4, generator=g, dtype=D)
    dl = delta @ grad + 0.5 * c_ * delta.pow(2).sum(1)  # H = c·I, p = N(-g/c, α/c·I) = q
    w = mgs_log_weights(dl, delta.pow(2).sum(1), (delta - mu).pow(2).sum(1), sigma, 0.0, alpha).exp()
    torch.testing.assert_close(w, torch.full((n,), 1.0 / n, dtype=D), rtol=0, atol=1e-12)


def test_mgs_weights_invariances() -> None:
    g = torch.Generator().manual_seed(2)
    dl = torch.randn(16, generator=g, dtype=D)
    a, b = torch.rand(16, generator=g, dtype=D) * 3, torch.rand(16, generator=g, dtype=D) * 3
    w1 = mgs_log_weights(dl, a, b, 0.7, 0.3, 0.4)
    w2 = mgs_log_weights(dl + 123.0, a, b, 0.7, 0.3, 0.4)  # constant added to the loss
    torch.testing.assert_close(w1, w2, rtol=0, atol=1e-12)
    cold = mgs_log_weights(dl, a, b, 0.7, 0.3, 1e-9).exp()
    assert int(cold.argmax()) == int(dl.argmin()) and float(cold.max()) > 1 - 1e-9


def test_mgs_step_applies_weighted_candidates_and_is_reproducible() -> None:
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, 3, generator=g, dtype=D)
    target = torch.randn(2, 3, generator=g, dtype=D)

    def run(seed: int) -> tuple[torch.Tensor, list[torch.Tensor], object]:
        p = torch.nn.Parameter(x0.clone())
        seen: list[torch.Tensor] = []

        def task_loss() -> torch.Tensor:
            seen.append(p.detach().clone())
            return (p - target).abs().sum().round(decimals=1)  # piecewise constant "metric"

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = mgs_step(
                task_loss,
                [p],
                [0.1 * (target - x0)],
                num_candidates=6,
                sigma=0.05,
                generator=torch.Generator().manual_seed(seed),
            )
        return p.detach().clone(), seen, res

    a, seen, res = run(0)
    b, _, _ = run(0)
    assert torch.equal(a, b)  # same seed, same update (two "ranks" agree)
    deltas = torch.stack([s - x0 for s in seen[1:]])
    # weights recomputed from the evaluated points alone (the mixture density needs no component labels)
    vals = torch.stack([(s - target).abs().sum().round(decimals=1) for s in seen])
    dl = vals[1:] - vals[0]
    mu, sig = (0.1 * (target - x0)).flatten(), 0.05
    flat = deltas.flatten(1)
    log_q = torch.logaddexp(
        math.log(0.5) - flat.pow(2).sum(1) / (2 * sig**2),
        math.log(0.5) - (flat - mu).pow(2).sum(1) / (2 * sig**2),
    )
    alpha = max(float(dl.std(unbiased=False)), 1e-8)
    w_ref = torch.softmax(-dl / alpha - log_q, 0)
    torch.testing.assert_close(res.weights, w_ref, rtol=1e-9, atol=1e-12)  # type: ignore[attr-defined]
    expected = x0 + (res.weights[:, None, None] * deltas).sum(0)  # type: ignore[attr-defined]
    torch.testing.assert_close(a, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.weights.sum(), torch.tensor(1.0, dtype=D))  # type: ignore[attr-defined]


@pytest.mark.parametrize("d", [4, 7, 1000])
def test_sampling_view_step_is_gibbs_mean_on_the_ball(d: int) -> None:
    eps, alpha = 1.0, 1.0
    x = torch.linspace(-eps, eps, 400_001, dtype=D)[1:-1]
    for gnorm in (0.1, 1.0, 10.0, 100.0):
        g = torch.randn(d, generator=torch.Generator().manual_seed(d), dtype=D)
        g = g / g.norm() * gnorm
        step = sampling_view_step([g[: d // 2], g[d // 2 :]], eps, alpha)
        delta = torch.cat(step)
        # reference: 1-D marginal of Δ·ĝ on the d-ball, density ∝ exp(-x‖g‖/α)(ε²-x²)^((d-1)/2)
        logw = -x * gnorm / alpha + (d - 1) / 2 * torch.log(eps**2 - x**2)
        w = torch.exp(logw - logw.max())
        mean = float((w * x).sum() / w.sum())
        cos = float(delta @ g) / (float(delta.norm()) * gnorm)
        assert cos < -1 + 1e-12  # direction -g
        assert float(delta.norm()) == pytest.approx(-mean, rel=1e-4, abs=1e-9)
    small = torch.full((d,), 1e-4 / math.sqrt(d), dtype=D)  # ‖g‖ = 1e-4: GD with lr ε²/((d+2)α)
    torch.testing.assert_close(
        sampling_view_step(small, eps, alpha)[0], -(eps**2) / ((d + 2) * alpha) * small, rtol=1e-6, atol=0
    )
    big = torch.full((d,), 1e9, dtype=D)
    assert float(sampling_view_step(big, eps, alpha)[0].norm()) == pytest.approx(eps, rel=1e-3)


def test_bad_inputs() -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="'sigma'"):
        zo_grad(lambda: p.sum(), [p], sigma=0.0)
    with pytest.raises(ValueError, match="'num_samples'"):
        zo_grad(lambda: p.sum(), [p], num_samples=0)
    with pytest.raises(ValueError, match="'distribution'"):
        zo_grad(lambda: p.sum(), [p], distribution="cauchy")
    with pytest.raises(ValueError, match="'guide'"):
        mgs_step(lambda: p.sum(), [p], [torch.zeros(3), torch.zeros(3)])
    with pytest.raises(ValueError, match="'lr'"):
        ZerothOrder([p], lr=-1.0)
    with pytest.raises(ValueError, match="'radius'"):
        sampling_view_step(torch.ones(3), 0.0, 1.0)


def test_mean_baseline_is_leave_one_out_and_unbiased_at_two_samples() -> None:
    w = torch.tensor([1.0, -2.0, 0.5], dtype=D)
    x0 = torch.tensor([0.3, -0.1, 0.2], dtype=D)
    sigma, n = 0.5, 3
    p = torch.nn.Parameter(x0.clone())
    seen: list[tuple[torch.Tensor, float]] = []

    def f() -> torch.Tensor:
        val = w @ p.detach() + 0.1 * p.detach().pow(2).sum()
        seen.append((p.detach().clone(), float(val)))
        return val

    zo_grad(
        f,
        [p],
        num_samples=n,
        sigma=sigma,
        antithetic=False,
        baseline="mean",
        generator=torch.Generator().manual_seed(8),
    )
    u = torch.stack([(pt - x0) / sigma for pt, _ in seen])
    vals = torch.tensor([v for _, v in seen], dtype=D)
    loo = (vals.sum() - vals) / (n - 1)  # mean of the *other* samples
    torch.testing.assert_close(_g(p), ((vals - loo) / sigma)[:, None].mul(u).mean(0), rtol=1e-10, atol=1e-12)

    # with two samples a mean that included the sample itself would halve the estimate; LOO does not
    q = torch.nn.Parameter(torch.zeros(3, dtype=D))
    gen = torch.Generator().manual_seed(9)
    reps = 3000
    est = torch.empty(reps, 3, dtype=D)
    for i in range(reps):
        q.grad = None
        zo_grad(
            lambda: w @ q, [q], num_samples=2, sigma=1.0, antithetic=False, baseline="mean", generator=gen
        )
        est[i] = _g(q)
    se = est.std(0) / math.sqrt(reps)
    assert bool(((est.mean(0) - w).abs() < 5 * se).all())
    with pytest.raises(ValueError, match="'baseline'"):
        zo_grad(lambda: w @ q, [q], num_samples=1, antithetic=False, baseline="mean")


def test_zero_differences_still_write_a_zero_gradient() -> None:
    p = torch.nn.Parameter(torch.ones(4))
    zo_grad(
        lambda: torch.tensor(1.0), [p], num_samples=3, sigma=0.1, generator=torch.Generator().manual_seed(0)
    )
    assert p.grad is not None and torch.equal(p.grad, torch.zeros(4))
