"""FAVOR+ (models.md §1.6): unbiasedness, variance, convergence, QR pitfall, trig instability, causal
prefix sums, stabilisers, padding, redraw, dtypes, autograd and argument errors."""

from __future__ import annotations

import math

import pytest
import torch

from trainwell.nn import FavorAttention, favor_attention, favor_features, random_projection
from trainwell.nn.masks import causal_mask, masked_attention

D64 = torch.float64


def _qk(n: int = 64, d: int = 16, std: float = 0.5, seed: int = 0, lead: tuple[int, ...] = ()) -> tuple:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*lead, n, d, generator=g, dtype=D64) * std
    k = torch.randn(*lead, n, d, generator=g, dtype=D64) * std
    v = torch.randn(*lead, n, 8, generator=g, dtype=D64)
    return q, k, v


@pytest.fixture(scope="module")
def kernel_estimates() -> dict[str, torch.Tensor]:
    """Mean over 1000 draws of q̃·k̃ / exp(q·k/4) for 12 (q, k) pairs, d = 16, m = 256."""
    g = torch.Generator().manual_seed(1)
    q = torch.randn(12, 16, generator=g, dtype=D64) * 0.5
    k = torch.randn(12, 16, generator=g, dtype=D64) * 0.5
    exact = torch.exp((q * k).sum(-1) / 4)
    out = {}
    for name, kw in {"iid": {"orthogonal": False}, "haar": {}, "raw": {"haar": False}}.items():
        p = random_projection(256, 16, batch_shape=(1000,), dtype=D64,
                              generator=torch.Generator().manual_seed(2), **kw)
        qf = favor_features(q.expand(1000, 12, 16), p, True, eps=0.0, stabilize=False)
        kf = favor_features(k.expand(1000, 12, 16), p, False, eps=0.0, stabilize=False)
        out[name] = (qf * kf).sum(-1).mean(0) / exact
    return out


def test_unbiased_iid_and_haar(kernel_estimates: dict[str, torch.Tensor]) -> None:
    for name in ("iid", "haar"):
        ratio = kernel_estimates[name]
        assert abs(float(ratio.mean()) - 1) < 0.01, name
        assert float((ratio - 1).abs().max()) < 0.04, name


def test_raw_qr_is_biased_guard(kernel_estimates: dict[str, torch.Tensor]) -> None:
    haar = float((kernel_estimates["haar"] - 1).abs().mean())
    raw = float((kernel_estimates["raw"] - 1).abs().mean())
    assert raw > 2 * haar and raw > 0.015


def test_haar_blocks_are_orthonormal_with_chi_norms() -> None:
    p = random_projection(40, 16, dtype=D64, generator=torch.Generator().manual_seed(0))
    assert p.shape == (40, 16)
    u = p / p.norm(dim=1, keepdim=True)
    for blk in (u[:16], u[16:32]):
        torch.testing.assert_close(blk @ blk.T, torch.eye(16, dtype=D64), atol=1e-12, rtol=0)
    fixed = random_projection(32, 16, norm_sampling="fixed", dtype=D64)
    torch.testing.assert_close(fixed.norm(dim=1), torch.full((32,), 4.0, dtype=D64))
    quant = random_projection(99, 16, norm_sampling="quantile", dtype=D64).norm(dim=1).sort().values
    cdf = torch.special.gammainc(torch.tensor(8.0, dtype=D64), quant**2 / 2)
    torch.testing.assert_close(cdf, torch.arange(1, 100, dtype=D64) / 100, atol=1e-9, rtol=0)
    # seeded generator: reproducible; per-head batches are independent
    a = random_projection(8, 4, generator=torch.Generator().manual_seed(3))
    b = random_projection(8, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    h = random_projection(8, 4, batch_shape=(2,))
    assert h.shape == (2, 8, 4) and not torch.equal(h[0], h[1])


def test_variance_formulas_and_zero_variance_at_minus_x() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(16, generator=g, dtype=D64)
    y = torch.randn(16, generator=g, dtype=D64)
    x, y = 0.5 * x / x.norm(), 0.6 * y / y.norm()
    n = 400_000
    w = torch.randn(n, 16, generator=g, dtype=D64)
    sm = math.exp(float(x @ y))
    fx = favor_features(x[None], w, True, eps=0.0, scale=1.0, stabilize=False)[0] * math.sqrt(n)
    fy = favor_features(y[None], w, False, eps=0.0, scale=1.0, stabilize=False)[0] * math.sqrt(n)
    est_pos = fx * fy
    s2 = float(((x + y) ** 2).sum())
    var_pos = math.exp(s2) * sm**2 * (1 - math.exp(-s2))
    assert float(est_pos.var()) == pytest.approx(var_pos, rel=0.1)
    tx = favor_features(x[None], w, True, scale=1.0, stabilize=False, feature_type="trig")[0] * math.sqrt(n)
    ty = favor_features(y[None], w, False, scale=1.0, stabilize=False, feature_type="trig")[0] * math.sqrt(n)
    est_trig = tx[:n] * ty[:n] + tx[n:] * ty[n:]
    d2 = float(((x - y) ** 2).sum())
    var_trig = 0.5 * math.exp(s2) * sm**-2 * (1 - math.exp(-d2)) ** 2
    assert float(est_trig.var()) == pytest.approx(var_trig, rel=0.1)
    assert float(est_pos.mean()) == pytest.approx(sm, rel=0.01)
    # y = -x: every positive feature product equals exp(x·(-x)) exactly
    fm = favor_features(-x[None], w[:1000], False, eps=0.0, scale=1.0, stabilize=False)[0] * math.sqrt(1000)
    prod = fx[:1000] * fm
    torch.testing.assert_close(prod, torch.full_like(prod, math.exp(-float(x @ x))), rtol=1e-10, atol=0)


def _row_l1(q: torch.Tensor, k: torch.Tensor, p: torch.Tensor, feature_type: str = "positive") -> float:
    qf = favor_features(q, p, True, feature_type=feature_type)
    kf = favor_features(k, p, False, feature_type=feature_type)
    a = qf @ kf.transpose(-1, -2)
    a = a / a.sum(-1, keepdim=True)
    exact = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
    return float((a - exact).abs().sum(-1).mean())


def test_convergence_with_m_and_orf_beats_iid() -> None:
    q, k, _ = _qk()
    errs = {}
    for m in (256, 1024, 4096):
        errs[m] = sum(_row_l1(q, k, random_projection(m, 16, dtype=D64, orthogonal=False,
                                                       generator=torch.Generator().manual_seed(100 + s)))
                      for s in range(8)) / 8
    assert errs[1024] < 0.08
    assert errs[4096] < 0.4 * errs[256]
    for m in (64, 256):
        e = {o: sum(_row_l1(q, k, random_projection(m, 16, dtype=D64, orthogonal=o,
                                                     generator=torch.Generator().manual_seed(100 + s)))
                    for s in range(20)) / 20 for o in (True, False)}
        assert e[True] <= e[False], (m, e)


def test_trig_features_are_unstable_at_unit_scale() -> None:
    q, k, _ = _qk(std=1.0, seed=3)
    p = random_projection(256, 16, dtype=D64, generator=torch.Generator().manual_seed(0))
    assert _row_l1(q, k, p, "trig") > 1.0
    assert _row_l1(q, k, p, "positive") < 1.0


def test_hyperbolic_features_approximate_softmax() -> None:
    q, k, v = _qk()
    p = random_projection(2048, 16, dtype=D64, generator=torch.Generator().manual_seed(0))
    out = favor_attention(q, k, v, p, feature_type="hyperbolic")
    assert float((out - masked_attention(q, k, v)).abs().mean()) < 0.03
    assert favor_features(q, p, True, feature_type="hyperbolic").shape == (64, 4096)


@pytest.mark.parametrize("chunk", [1, 7, 16, 64, 200])
def test_causal_equals_masked_quadratic_form(chunk: int) -> None:
    q, k, v = _qk(lead=(2, 3))
    p = random_projection(128, 16, dtype=D64, generator=torch.Generator().manual_seed(0))
    out = favor_attention(q, k, v, p, causal=True, chunk_size=chunk)
    a = (favor_features(q, p, True) @ favor_features(k, p, False, causal=True).transpose(-1, -2)).tril()
    ref = a @ v / a.sum(-1, keepdim=True)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)


def test_chunked_equals_unchunked_and_approximates_causal_softmax() -> None:
    q, k, v = _qk(n=100)
    p = random_projection(4096, 16, dtype=D64, generator=torch.Generator().manual_seed(0))
    full = favor_attention(q, k, v, p, causal=True, chunk_size=100)
    for c in (3, 32, 128):
        torch.testing.assert_close(
            favor_attention(q, k, v, p, causal=True, chunk_size=c), full, atol=1e-12, rtol=0
        )
    exact = masked_attention(q, k, v, causal_mask(100))
    assert float((full - exact).abs().mean()) < 0.02


def test_causal_future_tokens_do_not_change_the_past() -> None:
    q, k, v = _qk(n=48)
    p = random_projection(64, 16, dtype=D64, generator=torch.Generator().manual_seed(0))
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    g = torch.Generator().manual_seed(7)
    q2[30:] += 3.0 * torch.randn(18, 16, generator=g, dtype=D64)
    k2[30:] += torch.randn(18, 16, generator=g, dtype=D64)
    k2[35] = 2.0 * p[0]  # k/d^¼ = ω_0 maximises ω_0·x − ‖x‖²/2: raises the key stabiliser
    v2[30:] = torch.randn(18, 8, generator=g, dtype=D64)
    a = favor_attention(q, k, v, p, causal=True, chunk_size=16, eps=0.0)
    b = favor_attention(q2, k2, v2, p, causal=True, chunk_size=16, eps=0.0)
    torch.testing.assert_close(a[:30], b[:30], atol=1e-12, rtol=1e-12)
    # default eps: the key eps is anchored to position 0, so the future-dependent key max still cancels
    a = favor_attention(q, k, v, p, causal=True, chunk_size=16)
    b = favor_attention(q2, k2, v2, p, causal=True, chunk_size=16)
    torch.testing.assert_close(a[:30], b[:30], atol=1e-12, rtol=1e-12)
    assert float((a[30:] - b[30:]).abs().max()) > 1e-2
    # guard: a plain "+ eps" on the globally stabilised keys would leak the future through eps
    def plain_eps(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        a = (favor_features(q, p, True) @ favor_features(k, p, False).transpose(-1, -2)).tril()
        return a @ v / a.sum(-1, keepdim=True)

    assert float((plain_eps(q, k, v)[:30] - plain_eps(q2, k2, v2)[:30]).abs().max()) > 1e-6


@pytest.mark.parametrize("causal", [False, True])
def test_stabiliser_cancels_and_per_key_max_guard(causal: bool) -> None:
    q, k, v = _qk(std=1.5, lead=(2,))
    p = random_projection(64, 16, dtype=D64, generator=torch.Generator().manual_seed(0))
    on = favor_attention(q, k, v, p, causal=causal, eps=0.0, chunk_size=16)
    off = favor_attention(q, k, v, p, causal=causal, eps=0.0, chunk_size=16, stabilize=False)
    torch.testing.assert_close(on, off, rtol=1e-10, atol=1e-12)
    # guard: a per-key max (one constant per key row) is not a constant that cancels
    qf = favor_features(q, p, True, eps=0.0)
    kf = favor_features(k, p, False, eps=0.0, stabilize=False)
    kf = kf / kf.amax(-1, keepdim=True)
    a = qf @ kf.transpose(-1, -2)
    if causal:
        a = a.tril()
    wrong = a @ v / a.sum(-1, keepdim=True)
    assert float((wrong - on).abs().max()) > 1e-2


def test_padded_keys_are_ignored() -> None:
    q, k, v = _qk(n=40, lead=(2,))
    p = random_projection(64, 16, dtype=D64, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 25:] = False
    k2, v2 = k.clone(), v.clone()
    k2[1, 25:] = 1e4  # garbage in the padded slots (would dominate the key max)
    v2[1, 25:] = -1e4
    out = favor_attention(q, k2, v2, p, attention_mask=mask)
    ref1 = favor_attention(q[1], k[1, :25], v[1, :25], p)
    torch.testing.assert_close(out[1], ref1, atol=1e-10, rtol=0)
    torch.testing.assert_close(out[0], favor_attention(q[0], k[0], v[0], p), atol=1e-12, rtol=0)
    # HF-style 0/1 int masks and [B, n] masks for [B, H, n, d] inputs
    qh, kh, vh = (t.unsqueeze(1).expand(2, 3, *t.shape[1:]) for t in (q, k2, v2))
    outh = favor_attention(qh, kh, vh, p, attention_mask=mask.long(), causal=True)
    assert outh.shape == (2, 3, 40, 8) and torch.isfinite(outh).all()
    # all keys padded: zero output, never NaN
    z = favor_attention(q, k, v, p, attention_mask=torch.zeros(2, 40, dtype=torch.bool))
    assert torch.equal(z, torch.zeros_like(z))


def test_module_redraw_changes_only_projection_and_shapes() -> None:
    torch.manual_seed(0)
    att = FavorAttention(16, nb_features=32)
    before = {k: v.clone() for k, v in att.state_dict().items()}
    assert list(before) == ["projection"] and before["projection"].shape == (32, 16)
    att.redraw_features(torch.Generator().manual_seed(1))
    after = att.state_dict()
    assert set(after) == set(before) and not torch.equal(after["projection"], before["projection"])
    assert not any(True for _ in att.parameters())
    q = torch.randn(2, 4, 10, 16)
    assert att(q, q, torch.randn(2, 4, 10, 5)).shape == (2, 4, 10, 5)
    # redraw_interval: every N training forwards; none in eval
    r = FavorAttention(16, nb_features=8, redraw_interval=2)
    p0 = r.projection.clone()
    r(q, q, q)
    r(q, q, q)
    assert torch.equal(r.projection, p0)
    r(q, q, q)
    assert not torch.equal(r.projection, p0)
    p1 = r.projection.clone()
    r.eval()
    for _ in range(5):
        r(q, q, q)
    assert torch.equal(r.projection, p1)


def test_gradcheck_bidirectional_and_causal() -> None:
    q, k, v = (t.requires_grad_() for t in _qk(n=9, d=4, lead=(1,)))
    p = random_projection(6, 4, dtype=D64, generator=torch.Generator().manual_seed(0))
    for causal in (False, True):
        assert torch.autograd.gradcheck(
            lambda a, b, c, causal=causal: favor_attention(a, b, c, p, causal=causal, chunk_size=4), (q, k, v)
        )


def test_bf16_autocast_and_extreme_inputs_stay_finite() -> None:
    torch.manual_seed(0)
    att = FavorAttention(16, nb_features=64, causal=True, chunk_size=8)
    q, k, v = (torch.randn(2, 20, 16) for _ in range(3))
    ref = att(q, k, v)
    out = att(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16
    assert float((out.float() - ref).abs().max()) < 0.05
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out2 = att(q, k, v)
    assert torch.isfinite(out2).all()
    for big in (1e4, -1e4):
        x = torch.full((2, 20, 16), big)
        x[:, ::2] *= -1
        y = att(x, x, v)
        assert torch.isfinite(y).all()
        y.sum().backward() if y.requires_grad else None
    qb = (q * 1e3).requires_grad_()
    favor_attention(qb, k * 1e3, v, att.projection).sum().backward()
    assert qb.grad is not None and torch.isfinite(qb.grad).all()


def test_per_head_projection_broadcasts() -> None:
    q, k, v = _qk(n=12, lead=(2, 3))
    p = random_projection(32, 16, batch_shape=(3,), dtype=D64)
    out = favor_attention(q, k, v, p)
    for h in range(3):
        torch.testing.assert_close(out[:, h], favor_attention(q[:, h], k[:, h], v[:, h], p[h]))


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda q, p: favor_attention(q[0, 0, 0], q, q, p), ValueError, "at least 2 dims"),
        (lambda q, p: favor_attention(q, q[..., :8], q, p), ValueError, "last dim equals q's"),
        (lambda q, p: favor_attention(q, q, q[:, :, :5], p), ValueError, "argument 'v'"),
        (lambda q, p: favor_attention(q, q, q, p[:, :8]), ValueError, "projection"),
        (
            lambda q, p: favor_attention(q, q, q, p, attention_mask=torch.ones(2, 7)),
            ValueError,
            "attention_mask",
        ),
        (lambda q, p: favor_attention(q, q, q, p, attention_mask=torch.ones(5, 10)), ValueError, "broadcast"),
        (
            lambda q, p: favor_attention(q, q[:, :, :4], q[:, :, :4], p, causal=True),
            ValueError,
            "as many queries",
        ),
        (lambda q, p: favor_attention(q, q, q, p, chunk_size=0), ValueError, "chunk_size"),
        (lambda q, p: favor_attention(q, q, q, p, eps=-1.0), ValueError, "eps"),
        (lambda q, p: favor_attention(q.long(), q, q, p), TypeError, "argument 'q'"),
        (lambda q, p: favor_features(q, p, "yes"), TypeError, "is_query"),  # type: ignore[arg-type]
        (lambda q, p: favor_features(q, p, True, feature_type="cos"), ValueError, "feature_type"),
        (lambda q, p: FavorAttention(16, nb_features=0), ValueError, "nb_features"),
        (lambda q, p: FavorAttention(16, redraw_interval=0), ValueError, "redraw_interval"),
        (lambda q, p: FavorAttention(16)(q[..., :8], q[..., :8], q), ValueError, "d_head"),
        (lambda q, p: random_projection(0, 16), ValueError, "nb_features"),
        (lambda q, p: random_projection(4, 16, norm_sampling="unit"), ValueError, "norm_sampling"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, exc, match) -> None:  # type: ignore[no-untyped-def]
    q = torch.randn(2, 3, 10, 16)
    p = torch.randn(8, 16)
    with pytest.raises(exc, match=match):
        call(q, p)
