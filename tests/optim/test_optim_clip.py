"""Spec optimization.md §1.6: hard/soft global-norm clipping (post 7469)."""

from __future__ import annotations

import pytest
import torch

from trainwell.optim import Clipped, clip_coefficient, clip_grad_norm_


def _g(p: torch.Tensor) -> torch.Tensor:
    """``p.grad``, asserted present (keeps the tests type-checked)."""
    assert p.grad is not None
    return p.grad


def _params(seed: int, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 3), (5,), (2, 4, 3)]
    ps = []
    for s in shapes:
        p = torch.randn(s, generator=g, dtype=dtype, requires_grad=True)
        p.grad = torch.randn(s, generator=g, dtype=dtype) * 3
        ps.append(p)
    return ps


def _global_norm(ps: list[torch.Tensor]) -> float:
    return float(torch.stack([(_g(p).double() ** 2).sum() for p in ps]).sum().sqrt())


def test_sandwich_inequality() -> None:
    g = torch.Generator().manual_seed(0)
    n = 10_000
    norms = torch.rand(n, generator=g, dtype=torch.float64) * 10.0 ** torch.randint(-4, 5, (n,), generator=g)
    gammas = torch.rand(n, generator=g, dtype=torch.float64) * 10.0 ** torch.randint(-3, 4, (n,), generator=g)
    norms[:3] = torch.tensor([0.0, 2.5, 1e6], dtype=torch.float64)  # ‖g‖ = 0, = γ, ≫ γ
    gammas[:3] = torch.tensor([1.0, 2.5, 1e-3], dtype=torch.float64)
    hard = torch.stack([clip_coefficient(a, float(c), "hard", eps=0.0) for a, c in zip(norms, gammas)])
    soft = torch.stack([clip_coefficient(a, float(c), "soft") for a, c in zip(norms, gammas)])
    torch.testing.assert_close(hard, torch.clamp(gammas / norms, max=1.0), rtol=1e-15, atol=0)
    torch.testing.assert_close(soft, gammas / (norms + gammas), rtol=1e-15, atol=0)
    assert bool((0.5 * hard <= soft * (1 + 1e-15)).all())
    assert bool((soft <= hard * (1 + 1e-15)).all())
    assert float(hard[0]) == 1.0 and float(soft[0]) == 1.0 and float(soft[1]) == 0.5


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_update_norm_bounded_and_direction_kept(mode: str) -> None:
    for seed in range(5):
        ps = _params(seed)
        before = [_g(p).clone() for p in ps]
        gamma = 0.7
        total = clip_grad_norm_(ps, gamma, mode=mode)
        assert abs(float(total) - float(torch.stack([(b**2).sum() for b in before]).sum().sqrt())) < 1e-12
        assert _global_norm(ps) <= gamma * (1 + 1e-12)
        flat_b = torch.cat([b.flatten() for b in before])
        flat_a = torch.cat([_g(p).flatten() for p in ps])
        cos = torch.dot(flat_a, flat_b) / (flat_a.norm() * flat_b.norm())
        assert abs(float(cos) - 1.0) < 1e-12


def test_hard_leaves_small_grads_bitwise_unchanged() -> None:
    ps = _params(3)
    before = [_g(p).clone() for p in ps]
    clip_grad_norm_(ps, _global_norm(ps) * 1.01, mode="hard")
    assert all(torch.equal(_g(p), b) for p, b in zip(ps, before))


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
@pytest.mark.parametrize("foreach", [None, True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hard_matches_torch(norm_type: float, foreach: bool | None, dtype: torch.dtype) -> None:
    ps = _params(7, dtype)
    qs = [p.detach().clone().requires_grad_() for p in ps]
    for p, q in zip(ps, qs):
        q.grad = _g(p).clone()
    ours = clip_grad_norm_(ps, 1.5, norm_type=norm_type, foreach=foreach)
    ref = torch.nn.utils.clip_grad_norm_(qs, 1.5, norm_type=norm_type, foreach=foreach)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0)


def test_soft_clip_is_optimal_relaxed_smooth_step() -> None:
    L0, L1 = 12.0, 3.0
    for seed in range(5):
        ps = _params(seed)
        raw = [_g(p).clone() for p in ps]
        gnorm = _global_norm(ps)
        clip_grad_norm_(ps, L0 / L1, mode="soft")
        for p, g in zip(ps, raw):
            step = _g(p) / L0
            torch.testing.assert_close(step, g / (L0 + L1 * gnorm), rtol=0, atol=1e-12)


def test_theta4_plain_gd_blows_up_soft_clip_descends() -> None:
    theta = torch.tensor(10.0, dtype=torch.float64)
    for _ in range(5):
        theta = theta - 0.01 * 4 * theta**3
    assert abs(float(theta)) > 1e6 or not torch.isfinite(theta)

    starts = torch.tensor([0.3, -0.3, 1, -1, 3, -3, 10, -10, 100, -100], dtype=torch.float64)
    th = starts.clone()
    f_prev = th**4
    eta, gamma = 1 / 12.0, 12.0 / 3.0
    for _ in range(2000):
        g = 4 * th**3
        coef = clip_coefficient(g.abs(), gamma, "soft")  # per-coordinate independent 1-D problems
        th = th - eta * g * coef
        f = th**4
        assert bool((f <= f_prev).all())
        f_prev = f
    assert float(th.abs().max()) < 0.5  # and it actually made progress from every start
    # (L0, L1) = (12, 3) Hessian bound for θ⁴ on a dense grid
    grid = torch.linspace(-100, 100, 200_001, dtype=torch.float64)
    assert bool((12 * grid**2 <= 12 + 3 * 4 * grid.abs() ** 3 + 1e-9).all())


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_amp_inf_gradient_is_skipped(mode: str) -> None:
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    before = [p.detach().clone() for p in model.parameters()]
    loss = model(torch.randn(8, 4)).pow(2).mean()
    scaler.scale(loss).backward()
    _g(model.weight)[0, 0] = float("inf")
    scaler.unscale_(opt)
    clip_grad_norm_(model.parameters(), 1.0, mode=mode)  # must not raise
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert scaler.get_scale() < 1024.0


def test_error_if_nonfinite() -> None:
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)


def test_clipped_wrapper() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    opt = Clipped(torch.optim.SGD([p], lr=1.0), max_norm=1.0, mode="soft")
    p.grad = torch.tensor([3.0, 4.0])
    opt.step()
    torch.testing.assert_close(p.detach(), -torch.tensor([3.0, 4.0]) / 6.0)
    assert opt.clipped_fraction == 1.0 and opt.last_norm is not None and float(opt.last_norm) == 5.0
    p.grad = torch.tensor([0.3, 0.4])
    opt.step()
    assert opt.clipped_fraction == 0.5


def test_bad_inputs() -> None:
    p = torch.zeros(2, requires_grad=True)
    p.grad = torch.ones(2)
    with pytest.raises(ValueError, match="'max_norm'"):
        clip_grad_norm_([p], 0.0)
    with pytest.raises(ValueError, match="'mode'"):
        clip_grad_norm_([p], 1.0, mode="medium")
    with pytest.raises(ValueError, match="'norm_type'"):
        clip_grad_norm_([p], 1.0, norm_type=-1)
    assert float(clip_grad_norm_([torch.zeros(2)], 1.0)) == 0.0
    with pytest.raises(ValueError, match="'max_norm'"):
        clip_coefficient(torch.tensor(2.0), -1.0, "soft")
    with pytest.raises(TypeError, match="'total_norm'"):
        clip_coefficient(2.0, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'norm_type'"):
        Clipped(torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1), norm_type=0.0)
