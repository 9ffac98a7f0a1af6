"""Spec optimization.md §2.6: gradient accumulation built into SGDM/AdamW (post 8634)."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as hst

from trainwell.optim import AccumAdamW, AccumSGDM, UpdateStepScheduler, enable_update_in_backward

D = torch.float64


def _g(p: torch.Tensor) -> torch.Tensor:
    """``p.grad``, asserted present (keeps the tests type-checked)."""
    assert p.grad is not None
    return p.grad


def _grads(
    n: int, shapes: list[tuple[int, ...]], seed: int = 0, dtype: torch.dtype = D
) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g, dtype=dtype) for s in shapes] for _ in range(n)]


def _params(shapes: list[tuple[int, ...]], seed: int = 1, dtype: torch.dtype = D) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in shapes]


SHAPES = [(4, 3), (5,)]


# ----------------------------------------------------------------------------------------- SGDM


@pytest.mark.parametrize("dampening_is_momentum", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_sgdm_equals_buffer_accumulation(dampening_is_momentum: bool, weight_decay: float) -> None:
    k, cycles, beta, lr = 4, 6, 0.9, 0.1
    damp = beta if dampening_is_momentum else 0.0
    ps = _params(SHAPES)
    ref = [p.detach().clone() for p in ps]
    m_ref = [torch.zeros_like(r) for r in ref]
    opt = AccumSGDM(ps, lr=lr, momentum=beta, dampening=damp, weight_decay=weight_decay, accum_steps=k)
    grads = _grads(k * cycles, SHAPES)
    for c in range(cycles):
        for i in range(k):
            before = [p.detach().clone() for p in ps]
            for p, g in zip(ps, grads[c * k + i]):
                p.grad = g.clone()
            opt.step()
            if i < k - 1:
                assert not opt.is_update_step
                assert all(torch.equal(p, b) for p, b in zip(ps, before))  # bitwise unchanged
            else:
                assert opt.is_update_step
        # buffer reference (bert4keras-style): mean gradient, then one EMA-SGDM step
        for j in range(len(ref)):
            gbar = sum(grads[c * k + i][j] for i in range(k)) / k + weight_decay * ref[j]
            m_ref[j] = beta * m_ref[j] + (1 - damp) * gbar
            ref[j] = ref[j] - lr * m_ref[j]
        for p, r, m in zip(ps, ref, m_ref):
            torch.testing.assert_close(p.detach(), r, rtol=0, atol=1e-12)
            torch.testing.assert_close(opt.state[p]["momentum_buffer"], m, rtol=0, atol=1e-12)


def test_sgdm_union_batch_trajectory() -> None:
    """k micro-batches with un-divided mean losses follow SGD(momentum) on the union batch exactly."""
    g = torch.Generator().manual_seed(0)
    k, b, cycles = 3, 5, 5
    X = torch.randn(cycles, k, b, 6, generator=g, dtype=D)
    Y = torch.randn(cycles, k, b, 2, generator=g, dtype=D)
    model = torch.nn.Linear(6, 2).double()
    ref = copy.deepcopy(model)
    opt = AccumSGDM(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01, accum_steps=k)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
    for c in range(cycles):
        for i in range(k):
            torch.nn.functional.mse_loss(model(X[c, i]), Y[c, i]).backward()  # NOT divided by k
            opt.step()
            opt.zero_grad()
        torch.nn.functional.mse_loss(ref(X[c].reshape(k * b, 6)), Y[c].reshape(k * b, 2)).backward()
        ref_opt.step()
        ref_opt.zero_grad()
        for p, q in zip(model.parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-12)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_k1_bit_identical_to_torch(foreach: bool, dtype: torch.dtype) -> None:
    grads = _grads(12, SHAPES, dtype=dtype)
    cases: list[tuple[type, type, dict[str, Any], dict[str, Any]]] = [
        (
            AccumSGDM,
            torch.optim.SGD,
            dict(momentum=0.9, weight_decay=0.1),
            dict(momentum=0.9, weight_decay=0.1),
        ),
        (
            AccumAdamW,
            torch.optim.AdamW,
            dict(betas=(0.8, 0.99), weight_decay=0.1),
            dict(betas=(0.8, 0.99), weight_decay=0.1),
        ),
    ]
    for ours_cls, ref_cls, kw, ref_kw in cases:
        for maximize in (False, True):
            ps, qs = _params(SHAPES, dtype=dtype), _params(SHAPES, dtype=dtype)
            a = ours_cls(ps, lr=0.01, foreach=foreach, maximize=maximize, **kw)
            b = ref_cls(qs, lr=0.01, foreach=foreach, maximize=maximize, **ref_kw)
            for gs in grads:
                for p, q, g in zip(ps, qs, gs):
                    p.grad, q.grad = g.clone(), g.clone()
                a.step()
                b.step()
                assert a.is_update_step
            assert all(torch.equal(p, q) for p, q in zip(ps, qs)), (ours_cls, maximize)


# ----------------------------------------------------------------------------------------- AdamW


def test_adamw_moments_vs_buffer_reference() -> None:
    k, cycles, b1, b2 = 4, 5, 0.9, 0.99
    ps = _params(SHAPES)
    opt = AccumAdamW(ps, lr=0.01, betas=(b1, b2), accum_steps=k)
    grads = _grads(k * cycles, SHAPES, seed=3)
    m_ref = [torch.zeros_like(p) for p in ps]
    v_ref = [torch.zeros_like(p) for p in ps]
    for c in range(cycles):
        for i in range(k):
            for p, g in zip(ps, grads[c * k + i]):
                p.grad = g.clone()
            opt.step()
        for j, p in enumerate(ps):
            gbar = sum(grads[c * k + i][j] for i in range(k)) / k
            m_ref[j] = b1 * m_ref[j] + (1 - b1) * gbar
            v_ref[j] = b2 * v_ref[j] + (1 - b2) * gbar**2
            st = opt.state[p]
            torch.testing.assert_close(st["exp_avg"], m_ref[j], rtol=0, atol=1e-12)
            assert bool((st["exp_avg_sq"] > v_ref[j]).all())  # strict: micro-grads differ
            assert float(st["update_step"]) == c + 1 and float(st["step"]) == (c + 1) * k


@pytest.mark.parametrize("eps_inside_sqrt", [False, True])
def test_adamw_identical_micro_grads_equal_plain_adamw(eps_inside_sqrt: bool) -> None:
    k, cycles, lr, wd, eps, b1, b2 = 3, 6, 0.01, 0.1, 1e-3, 0.9, 0.999
    ps = _params(SHAPES)
    ref = [p.detach().clone() for p in ps]
    m = [torch.zeros_like(r) for r in ref]
    v = [torch.zeros_like(r) for r in ref]
    opt = AccumAdamW(
        ps, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, accum_steps=k, eps_inside_sqrt=eps_inside_sqrt
    )
    grads = _grads(cycles, SHAPES, seed=5)
    for c in range(cycles):
        for _ in range(k):
            for p, g in zip(ps, grads[c]):
                p.grad = g.clone()
            opt.step()
        n = c + 1
        for j in range(len(ref)):
            g = grads[c][j]
            m[j] = b1 * m[j] + (1 - b1) * g
            v[j] = b2 * v[j] + (1 - b2) * g * g
            mhat, vhat = m[j] / (1 - b1**n), v[j] / (1 - b2**n)
            denom = torch.sqrt(vhat + eps) if eps_inside_sqrt else torch.sqrt(vhat) + eps
            ref[j] = ref[j] * (1 - lr * wd) - lr * mhat / denom
        for p, r in zip(ps, ref):
            torch.testing.assert_close(p.detach(), r, rtol=0, atol=1e-12)


def test_adamw_v_excess_statistical() -> None:
    """Per-cycle increment of built-in v minus buffer v averages (1-β2)(k-1)/k·s² for i.i.d. grads."""
    k, b2, mu, s, n = 4, 0.99, 0.7, 1.5, 200_000
    p = torch.nn.Parameter(torch.zeros(n, dtype=D))
    opt = AccumAdamW([p], lr=0.0, betas=(0.9, b2), accum_steps=k)
    g = torch.Generator().manual_seed(11)
    micro = [mu + s * torch.randn(n, generator=g, dtype=D) for _ in range(k)]
    for gi in micro:
        p.grad = gi.clone()
        opt.step()
    diff = opt.state[p]["exp_avg_sq"] - (1 - b2) * (sum(micro) / k) ** 2
    target = (1 - b2) * (k - 1) / k * s**2
    se = float(diff.std()) / n**0.5
    assert abs(float(diff.mean()) - target) < 5 * se


@pytest.mark.parametrize(("beta", "k"), [(0.9, 4), (0.99, 4), (0.9, 16)])
def test_beta_only_approximation_gap(beta: float, k: int) -> None:
    g = torch.Generator().manual_seed(2)
    n_dim, cycles, burn = 256, 400 if beta == 0.99 else 120, 300 if beta == 0.99 else 60
    p = torch.nn.Parameter(torch.zeros(n_dim, dtype=D))
    opt = AccumSGDM([p], lr=0.0, momentum=beta, dampening=beta, accum_steps=k)
    bt = 1 - (1 - beta) / k
    m_tilde = torch.zeros(n_dim, dtype=D)
    gaps = []
    for c in range(cycles):
        for _ in range(k):
            gi = 1 + torch.randn(n_dim, generator=g, dtype=D)
            m_tilde = bt * m_tilde + (1 - bt) * gi
            p.grad = gi
            opt.step()
        if c >= burn:
            m = opt.state[p]["momentum_buffer"]
            gaps.append(float(((m - m_tilde).abs() / m.abs()).mean()))
    assert sum(gaps) / len(gaps) < 0.01


# ----------------------------------------------------------------------------------------- state, AMP, sched


@pytest.mark.parametrize("cls", [AccumSGDM, AccumAdamW])
def test_state_dict_round_trip_mid_cycle(cls: type) -> None:
    k = 4
    grads = _grads(3 * k, SHAPES, seed=9)
    ps = _params(SHAPES)
    full = cls(ps, lr=0.05, accum_steps=k, weight_decay=0.01)
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        full.step()

    qs = _params(SHAPES)
    half = cls(qs, lr=0.05, accum_steps=k, weight_decay=0.01)
    cut = k + k // 2
    for gs in grads[:cut]:
        for q, g in zip(qs, gs):
            q.grad = g.clone()
        half.step()
    buf = io.BytesIO()
    torch.save({"opt": half.state_dict(), "params": [q.detach() for q in qs]}, buf)
    buf.seek(0)
    ck = torch.load(buf)
    rs = [torch.nn.Parameter(t.clone()) for t in ck["params"]]
    resumed = cls(rs, lr=0.05, accum_steps=1, weight_decay=0.01)
    resumed.load_state_dict(ck["opt"])
    assert resumed.accum_steps == k and resumed.cycle_position == k // 2
    assert resumed.state[rs[0]]["update_step"].dtype == torch.float32
    for gs in grads[cut:]:
        for r, g in zip(rs, gs):
            r.grad = g.clone()
        resumed.step()
    assert all(torch.equal(p, r) for p, r in zip(ps, rs))


@pytest.mark.parametrize("cls", [AccumSGDM, AccumAdamW])
def test_inf_micro_step_leaves_state_finite(cls: type) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = cls(model.parameters(), lr=0.1, accum_steps=2)
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)

    def micro(inject: bool) -> None:
        loss = model(torch.randn(8, 4)).pow(2).mean()
        scaler.scale(loss).backward()
        if inject:
            _g(model.weight)[0, 1] = float("inf")
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()

    micro(False)  # first micro-step of the cycle
    snap = copy.deepcopy(opt.state_dict())
    params = [p.detach().clone() for p in model.parameters()]
    micro(True)  # skipped by the scaler: nothing changes, the cycle gets longer
    assert opt.cycle_position == 1 and not opt.is_update_step
    after = opt.state_dict()
    for i, st in snap["state"].items():
        for key, val in st.items():
            assert torch.equal(after["state"][i][key], val)
            assert bool(torch.isfinite(after["state"][i][key]).all())
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
    micro(False)
    assert opt.is_update_step
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())

    # without a scaler: skip_nonfinite does the same check itself
    opt2 = cls(model.parameters(), lr=0.1, accum_steps=2, skip_nonfinite=True)
    for p in model.parameters():
        p.grad = torch.full_like(p, float("nan"))
    opt2.step()
    assert opt2.skipped_steps == 1 and opt2.cycle_position == 0 and not opt2.state


def test_scheduler_steps_once_per_update() -> None:
    k, n = 3, 5
    p = torch.nn.Parameter(torch.zeros(2))
    opt = AccumAdamW([p], lr=1.0, accum_steps=k)
    sched = UpdateStepScheduler(torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5), opt)
    calls: list[int] = []

    def count(epoch: int) -> float:
        calls.append(epoch)
        return 1.0

    plain = AccumSGDM([torch.nn.Parameter(torch.zeros(2))], lr=1.0, accum_steps=k)
    lam = torch.optim.lr_scheduler.LambdaLR(plain, count)
    lrs = []
    for _ in range(n * k):
        p.grad = torch.ones(2)
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        for q in plain.param_groups[0]["params"]:
            q.grad = torch.ones(2)
        plain.step()
        if plain.is_update_step:  # the documented pattern without the wrapper
            lam.step()
    assert sched.num_updates == n and len(calls) == n + 1  # LambdaLR calls once at construction
    assert lrs == [0.5**c for c in range(n) for _ in range(k)]  # constant within each cycle


def test_missing_grad_counts_as_zero() -> None:
    k = 3
    ps, qs = _params(SHAPES), _params(SHAPES)
    a = AccumSGDM(ps, lr=0.1, accum_steps=k)
    b = AccumSGDM(qs, lr=0.1, accum_steps=k)
    grads = _grads(2 * k, SHAPES, seed=4)
    for t, gs in enumerate(grads):
        for p, q, g in zip(ps, qs, gs):
            p.grad = None if (t % k == 1 and p is ps[1]) else g.clone()
            q.grad = torch.zeros_like(g) if (t % k == 1 and q is qs[1]) else g.clone()
        a.step()
        b.step()
        assert a.is_update_step == b.is_update_step
    assert all(torch.equal(p, q) for p, q in zip(ps, qs))


@pytest.mark.parametrize("cls", [AccumSGDM, AccumAdamW])
def test_update_in_backward_matches_regular_step(cls: type) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    twin = copy.deepcopy(net)
    unused = torch.nn.Parameter(torch.ones(3, dtype=D))  # never gets a gradient
    unused2 = torch.nn.Parameter(torch.ones(3, dtype=D))
    a = cls([*net.parameters(), unused], lr=0.05, accum_steps=2, weight_decay=0.01)
    b = cls([*twin.parameters(), unused2], lr=0.05, accum_steps=2, weight_decay=0.01)
    handles = enable_update_in_backward(a)
    assert len(handles) == 5
    x, y = torch.randn(6, 8, 5, dtype=D), torch.randn(6, 8, 2, dtype=D)
    for t in range(6):
        torch.nn.functional.mse_loss(net(x[t]), y[t]).backward()
        assert all(p.grad is None for p in net.parameters())  # freed inside backward
        a.step()
        torch.nn.functional.mse_loss(twin(x[t]), y[t]).backward()
        b.step()
        b.zero_grad()
        assert a.is_update_step == b.is_update_step == (t % 2 == 1)
    for p, q in zip([*net.parameters(), unused], [*twin.parameters(), unused2]):
        assert torch.equal(p, q)


def test_low_precision_params_keep_fp32_moments() -> None:
    torch.manual_seed(0)
    p32 = torch.nn.Parameter(torch.randn(6, 4))
    pbf = torch.nn.Parameter(p32.detach().to(torch.bfloat16))
    a = AccumAdamW([p32], lr=1e-2, accum_steps=2)
    b = AccumAdamW([pbf], lr=1e-2, accum_steps=2)
    for _ in range(6):
        g = torch.randn(6, 4)
        p32.grad, pbf.grad = g.clone(), g.to(torch.bfloat16)
        a.step()
        b.step()
    assert b.state[pbf]["exp_avg"].dtype == torch.float32 and pbf.dtype == torch.bfloat16
    assert bool(torch.isfinite(pbf).all())
    torch.testing.assert_close(pbf.float(), p32.detach(), atol=3e-2, rtol=0)
    sd = b.state_dict()
    c = AccumAdamW([torch.nn.Parameter(pbf.detach().clone())], lr=1e-2)
    c.load_state_dict(sd)
    st = next(iter(c.state.values()))
    assert st["exp_avg"].dtype == torch.float32 and torch.equal(st["exp_avg"], b.state[pbf]["exp_avg"])


def test_accum_steps_change_only_at_boundary() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    opt = AccumSGDM([p], lr=0.1, accum_steps=2)
    p.grad = torch.ones(2)
    opt.step()
    assert opt.next_is_update_step
    with pytest.raises(ValueError, match="'accum_steps'"):
        opt.accum_steps = 3
    opt.step()
    opt.accum_steps = 3
    assert opt.accum_steps == 3


def test_bad_inputs_name_the_argument() -> None:
    ps = _params(SHAPES)
    with pytest.raises(ValueError, match="'lr'"):
        AccumAdamW(ps, lr=-1.0)
    with pytest.raises(ValueError, match="'accum_steps'"):
        AccumAdamW(ps, lr=1e-3, accum_steps=0)
    with pytest.raises(ValueError, match="'betas'"):
        AccumAdamW(ps, lr=1e-3, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="'betas'"):
        AccumAdamW(ps, lr=1e-3, betas=(-0.1, 0.9))
    with pytest.raises(ValueError, match="'momentum'"):
        AccumSGDM(ps, lr=1e-3, momentum=1.0)
    with pytest.raises(ValueError, match="'eps'"):
        AccumAdamW(ps, lr=1e-3, eps=-1.0)
    with pytest.raises(TypeError, match="'accum_steps'"):
        AccumSGDM(ps, lr=1e-3, accum_steps=2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'optimizer'"):
        enable_update_in_backward(torch.optim.SGD(ps, lr=0.1))  # type: ignore[arg-type]


@settings(max_examples=20, deadline=None)
@given(
    k=hst.integers(1, 5),
    cycles=hst.integers(1, 4),
    beta=hst.floats(0.0, 0.99),
    damp_is_beta=hst.booleans(),
    seed=hst.integers(0, 2**16),
)
def test_sgdm_buffer_equivalence_property(
    k: int, cycles: int, beta: float, damp_is_beta: bool, seed: int
) -> None:
    damp = beta if damp_is_beta else 0.0
    p = torch.nn.Parameter(torch.zeros(6, dtype=D))
    opt = AccumSGDM([p], lr=0.3, momentum=beta, dampening=damp, accum_steps=k)
    g = torch.Generator().manual_seed(seed)
    ref, m = torch.zeros(6, dtype=D), torch.zeros(6, dtype=D)
    for _ in range(cycles):
        micro = [torch.randn(6, generator=g, dtype=D) for _ in range(k)]
        for gi in micro:
            p.grad = gi.clone()
            opt.step()
        m = beta * m + (1 - damp) * sum(micro) / k
        ref = ref - 0.3 * m
        torch.testing.assert_close(p.detach(), ref, rtol=0, atol=1e-12)


def _spec_accum_adamw(
    p0: list[torch.Tensor],
    gseq: list[list[torch.Tensor | None]],
    lr: float,
    b1: float,
    b2: float,
    eps: float,
    wd: float,
    k: int,
    inside: bool,
) -> list[torch.Tensor]:
    """Spec §2.4 reference pseudo-code, written out per micro-step (float64, grad None = 0)."""
    ps = [p.clone() for p in p0]
    m = [torch.zeros_like(p) for p in ps]
    v = [torch.zeros_like(p) for p in ps]
    for t, gs in enumerate(gseq, start=1):
        first, last = (t - 1) % k == 0, t % k == 0
        for j, g in enumerate(gs):
            d1, d2 = (b1, b2) if first else (1.0, 1.0)
            gj = torch.zeros_like(ps[j]) if g is None else g
            m[j] = d1 * m[j] + (1 - b1) / k * gj
            v[j] = d2 * v[j] + (1 - b2) / k * gj * gj
            if last:
                n = t // k
                mhat, vhat = m[j] / (1 - b1**n), v[j] / (1 - b2**n)
                denom = torch.sqrt(vhat + eps) if inside else torch.sqrt(vhat) + eps
                ps[j] = ps[j] - lr * wd * ps[j] - lr * mhat / denom
    return ps


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("eps_inside_sqrt", [False, True])
def test_adamw_distinct_micro_grads_match_spec_pseudocode(foreach: bool, eps_inside_sqrt: bool) -> None:
    """k > 1, different micro-grads, a missing grad, both kernels: the spec's per-micro-step recursion."""
    k, steps = 3, 14
    g = torch.Generator().manual_seed(21)
    p0 = [torch.randn(s, generator=g, dtype=D) for s in SHAPES]
    gseq: list[list[torch.Tensor | None]] = [
        [
            None if (t % 5 == 2 and j == 1) else torch.randn(s, generator=g, dtype=D)
            for j, s in enumerate(SHAPES)
        ]
        for t in range(steps)
    ]
    ps = [torch.nn.Parameter(p.clone()) for p in p0]
    frozen = torch.nn.Parameter(torch.ones(3, dtype=D), requires_grad=False)
    opt = AccumAdamW([*ps, frozen], 0.01, (0.8, 0.95), 1e-3, 0.1, k, eps_inside_sqrt, foreach=foreach)
    for t, gs in enumerate(gseq, start=1):
        before = [p.detach().clone() for p in ps]
        for p, gr in zip(ps, gs):
            p.grad = None if gr is None else gr.clone()
        opt.step()
        assert opt.is_update_step == (t % k == 0)
        if t % k:
            assert all(torch.equal(p, b) for p, b in zip(ps, before))  # bitwise unchanged
    ref = _spec_accum_adamw(p0, gseq, 0.01, 0.8, 0.95, 1e-3, 0.1, k, eps_inside_sqrt)
    for p, r in zip(ps, ref):
        torch.testing.assert_close(p.detach(), r, rtol=0, atol=1e-12)
    assert (
        torch.equal(frozen, torch.ones(3, dtype=D)) and frozen not in opt.state
    )  # frozen: no decay, no state


def test_sgdm_positional_order_matches_issue_signature() -> None:
    """``AccumSGDM(params, lr, momentum=0.9, accum_steps=1, ...)``: accum_steps is the 4th positional."""
    p = torch.nn.Parameter(torch.zeros(2, dtype=D))
    opt = AccumSGDM([p], 0.1, 0.5, 3)
    assert opt.accum_steps == 3 and opt.param_groups[0]["momentum"] == 0.5
    assert opt.param_groups[0]["dampening"] == 0.0


def test_update_step_scheduler_exact_when_gradscaler_skips_after_an_update() -> None:
    # A skipped micro-step right after an update leaves is_update_step True from that update; the
    # scheduler wrapper must not step twice for it.
    from trainwell.optim import AccumSGDM, UpdateStepScheduler

    p = torch.nn.Parameter(torch.ones(3))
    opt = AccumSGDM([p], lr=0.1, accum_steps=2)
    sched = UpdateStepScheduler(torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5), opt)
    calls = 0
    for g, skipped in [(1.0, False), (1.0, False), (float("inf"), True), (1.0, False), (1.0, False)]:
        p.grad = torch.full_like(p, g)
        if not skipped:  # what GradScaler does: no opt.step() on overflow
            opt.step()
        opt.zero_grad()
        calls += sched.step()
    assert opt.num_updates == 2
    assert sched.num_updates == 2 and calls == 2
    assert sched.get_last_lr() == [pytest.approx(0.1 * 0.5**2)]
    sd = sched.state_dict()
    sched2 = UpdateStepScheduler(torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5), opt)
    sched2.load_state_dict(sd)
    assert not sched2.step()


def test_skip_nonfinite_with_update_in_backward_is_rejected() -> None:
    from trainwell.optim import AccumAdamW

    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="'skip_nonfinite' and 'update_in_backward'"):
        AccumAdamW([p], lr=0.1, skip_nonfinite=True, update_in_backward=True)
    opt = AccumAdamW([p], lr=0.1, skip_nonfinite=True)
    with pytest.raises(ValueError, match="'skip_nonfinite'"):
        opt.enable_update_in_backward()


def test_num_updates_round_trips_through_state_dict() -> None:
    from trainwell.optim import AccumAdamW

    p = torch.nn.Parameter(torch.ones(3))
    opt = AccumAdamW([p], lr=0.1, accum_steps=2)
    for _ in range(5):
        p.grad = torch.ones(3)
        opt.step()
    assert opt.num_updates == 2
    q = torch.nn.Parameter(torch.ones(3))
    opt2 = AccumAdamW([q], lr=0.1, accum_steps=2)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.num_updates == 2 and opt2.cycle_position == 1


def _adamw_run(make: Any, steps: int = 4, with_none: bool = False) -> list[torch.Tensor]:
    torch.manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(9, 7)), torch.nn.Parameter(torch.randn(5))]
    opt = make(params)
    g = torch.Generator().manual_seed(4)
    for i in range(steps):
        for j, p in enumerate(params):
            p.grad = None if (with_none and j == 1 and i == 2) else torch.randn(p.shape, generator=g)
        opt.step()
    return [p.detach().clone() for p in params]


def test_fused_k1_is_bit_identical_to_torch_fused_adamw() -> None:
    kw = dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1)
    ours = _adamw_run(lambda ps: AccumAdamW(ps, fused=True, **kw))
    ref = _adamw_run(lambda ps: torch.optim.AdamW(ps, fused=True, **kw))
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)
    # and the default kernels stay bit-identical to torch's for-loop AdamW
    ours = _adamw_run(lambda ps: AccumAdamW(ps, **kw))
    ref = _adamw_run(lambda ps: torch.optim.AdamW(ps, foreach=False, **kw))
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)


def test_fused_keeps_the_grad_none_rule() -> None:
    """A parameter without a gradient still decays its moments and moves (AccumAdamW's rule, not torch's)."""
    kw = dict(lr=1e-2, weight_decay=0.1)
    fused = _adamw_run(lambda ps: AccumAdamW(ps, fused=True, **kw), with_none=True)
    plain = _adamw_run(lambda ps: AccumAdamW(ps, **kw), with_none=True)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_fused_falls_back_for_accumulation_and_resumes() -> None:
    kw = dict(lr=1e-2, accum_steps=2)
    for a, b in zip(
        _adamw_run(lambda ps: AccumAdamW(ps, fused=True, **kw)), _adamw_run(lambda ps: AccumAdamW(ps, **kw))
    ):
        assert torch.equal(a, b)
    params = [torch.nn.Parameter(torch.ones(3))]
    opt = AccumAdamW(params, fused=True)
    params[0].grad = torch.ones(3)
    opt.step()
    opt2 = AccumAdamW([torch.nn.Parameter(params[0].detach().clone())], fused=True)
    opt2.load_state_dict(opt.state_dict())
    assert float(opt2.state[opt2.param_groups[0]["params"][0]]["update_step"]) == 1.0
    with pytest.raises(ValueError, match="'fused'"):
        AccumAdamW(params, fused=True, foreach=True)
    with pytest.raises(TypeError, match="'fused'"):
        AccumAdamW(params, fused=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("foreach", [False, True])
def test_functional_accum_adamw_matches_the_class(foreach: bool) -> None:
    from trainwell.optim import accum_adamw

    ref = _adamw_run(lambda ps: AccumAdamW(ps, lr=1e-2, weight_decay=0.1, accum_steps=2))
    torch.manual_seed(3)
    params = [torch.randn(9, 7), torch.randn(5)]
    ms = [torch.zeros_like(p) for p in params]
    vs = [torch.zeros_like(p) for p in params]
    g = torch.Generator().manual_seed(4)
    for i in range(4):
        grads = [torch.randn(p.shape, generator=g) for p in params]
        accum_adamw(
            params,
            grads,
            ms,
            vs,
            i // 2 + 1,
            lr=1e-2,
            beta1=0.9,
            beta2=0.999,
            eps=1e-8,
            weight_decay=0.1,
            accum_steps=2,
            first=i % 2 == 0,
            last=i % 2 == 1,
            foreach=foreach,
        )
    for a, b in zip(params, ref):
        torch.testing.assert_close(a, b, atol=0, rtol=0) if not foreach else torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="'update_step'"):
        accum_adamw(params, grads, ms, vs, 0, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)


@pytest.mark.parametrize("foreach", [False, True])
def test_functional_accum_sgdm_matches_the_class(foreach: bool) -> None:
    from trainwell.optim import accum_sgdm

    torch.manual_seed(3)
    init = [torch.randn(9, 7), torch.randn(5)]
    params = [torch.nn.Parameter(p.clone()) for p in init]
    opt = AccumSGDM(params, lr=1e-2, momentum=0.9, weight_decay=0.1, accum_steps=2)
    flat = [p.clone() for p in init]
    bufs = [torch.zeros_like(p) for p in flat]
    g = torch.Generator().manual_seed(4)
    for i in range(4):
        grads = [torch.randn(p.shape, generator=g) for p in flat]
        for p, gr in zip(params, grads):
            p.grad = gr.clone()
        opt.step()
        accum_sgdm(flat, grads, bufs, lr=1e-2, momentum=0.9, weight_decay=0.1, accum_steps=2,
                   first=i % 2 == 0, last=i % 2 == 1, foreach=foreach)
    for a, b in zip(flat, params):
        torch.testing.assert_close(a, b.detach(), atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match="'grads'"):
        accum_sgdm(flat, grads[:1], bufs, lr=1e-2)
