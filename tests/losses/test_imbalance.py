"""Tests for trainwell.losses.imbalance: logit adjustment (7615), reweighting/F1-CE/Dice (7708), focal and
truncation (4733)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

from trainwell.losses import (
    BinaryFocalLoss,
    ClassBalancedCrossEntropy,
    DiceLoss,
    F1WeightedCrossEntropy,
    FocalLoss,
    HardTruncatedLoss,
    LogitAdjustedCrossEntropy,
    SoftenedTruncatedLoss,
    binary_focal_loss,
    class_balanced_cross_entropy,
    class_balanced_weights,
    dice_loss,
    f1_weighted_cross_entropy,
    focal_loss,
    hard_truncated_loss,
    log_prior_from_counts,
    logit_adjusted_cross_entropy,
    posthoc_logit_adjust,
    softened_truncated_loss,
)


def case(rows: int = 6, classes: int = 5, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, classes, generator=g, dtype=dtype) * 2
    t = torch.randint(0, classes, (rows,), generator=g)
    return x, t


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


# ------------------------------------------------------------------------------- logit adjustment


def test_log_prior_from_counts() -> None:
    lp = log_prior_from_counts([10, 0, 30])
    assert lp.dtype == torch.float32
    torch.testing.assert_close(lp, torch.tensor([math.log(10 / 41), math.log(1 / 41), math.log(30 / 41)]))
    torch.testing.assert_close(lp.exp().sum(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="'counts'"):
        log_prior_from_counts([1.0, -2.0])
    with pytest.raises(ValueError, match="'counts'"):
        log_prior_from_counts(torch.ones(2, 2))


def test_la_pairwise_form_tau0_uniform_and_constant_shift() -> None:
    x, t = case()
    counts = torch.tensor([50.0, 20.0, 10.0, 5.0, 1.0])
    lp = (counts.double() / counts.sum()).log()
    tau = 1.3
    got = logit_adjusted_cross_entropy(x, t, lp, tau, reduction="none")
    p = (counts.double() / counts.double().sum()).tolist()
    want = []
    for row, y in zip(x.tolist(), t.tolist()):
        want.append(
            math.log1p(sum((p[i] / p[y]) ** tau * math.exp(row[i] - row[y]) for i in range(5) if i != y))
        )
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(got, F.cross_entropy(x + tau * lp, t, reduction="none"))
    ce = F.cross_entropy(x, t)
    torch.testing.assert_close(logit_adjusted_cross_entropy(x, t, lp, 0.0), ce)
    torch.testing.assert_close(
        logit_adjusted_cross_entropy(x, t, torch.full((5,), -3.0, dtype=torch.float64), 2.0), ce
    )
    torch.testing.assert_close(logit_adjusted_cross_entropy(x, t, lp + 7.0, tau), got.mean())
    torch.testing.assert_close(logit_adjusted_cross_entropy(x, t, counts.double().log(), tau), got.mean())


def test_la_gradient_and_soft_targets_and_options() -> None:
    x, t = case(seed=1)
    lp = torch.log_softmax(torch.randn(5, dtype=torch.float64), 0)
    xr = x.clone().requires_grad_()
    logit_adjusted_cross_entropy(xr, t, lp, 1.0, reduction="sum").backward()
    want = torch.softmax(x + lp, -1) - F.one_hot(t, 5).double()
    assert xr.grad is not None
    torch.testing.assert_close(xr.grad, want, rtol=0, atol=1e-12)
    probs = torch.softmax(torch.randn(6, 5, dtype=torch.float64), -1)
    torch.testing.assert_close(logit_adjusted_cross_entropy(x, probs, lp), F.cross_entropy(x + lp, probs))
    t2 = t.clone()
    t2[0] = -100
    torch.testing.assert_close(
        logit_adjusted_cross_entropy(x, t2, lp, label_smoothing=0.1),
        F.cross_entropy(x + lp, t2, label_smoothing=0.1),
    )
    x3 = x.reshape(2, 3, 5)
    assert logit_adjusted_cross_entropy(x3, t.reshape(2, 3), lp, reduction="none").shape == (2, 3)
    assert gradcheck(
        lambda a: logit_adjusted_cross_entropy(a, t, lp, 0.7, reduction="none"),
        (xr.detach().clone().requires_grad_(),),
    )


def test_posthoc_and_decision_rules() -> None:
    x, _ = case(rows=20, seed=2)
    lp = log_prior_from_counts([100, 50, 10, 5, 1]).double()
    uniform = torch.zeros(5, dtype=torch.float64)
    assert torch.equal(posthoc_logit_adjust(x, uniform).argmax(-1), x.argmax(-1))
    assert torch.equal(posthoc_logit_adjust(x, lp, 0.0), x)
    # an LA-trained model's logits are CE logits minus τ log p: same argmax as post-hoc adjustment
    f_ce = x
    f_la = f_ce - 1.0 * lp
    assert torch.equal(f_la.argmax(-1), posthoc_logit_adjust(f_ce, lp, 1.0).argmax(-1))
    # larger τ only moves predictions toward rarer classes; τ → ∞ predicts the rarest class
    prior_rank = lp.argsort().argsort()  # 0 = rarest
    prev = posthoc_logit_adjust(x, lp, 0.0).argmax(-1)
    for tau in (0.5, 1.0, 2.0, 4.0):
        cur = posthoc_logit_adjust(x, lp, tau).argmax(-1)
        assert bool((prior_rank[cur] <= prior_rank[prev]).all())
        prev = cur
    assert bool((posthoc_logit_adjust(x, lp, 1e4).argmax(-1) == 4).all())


def test_module_buffer_and_zero_model_outputs_prior() -> None:
    counts = [40, 30, 20, 10]
    mod = LogitAdjustedCrossEntropy.from_counts(counts, tau=1.0)
    assert mod.log_prior.dtype == torch.float32 and "log_prior" in mod.state_dict()
    assert not any(True for _ in mod.parameters())
    # zero-weight model + offset buffer: softmax is the prior itself
    probs = torch.softmax(torch.zeros(3, 4) + mod.tau * mod.log_prior, -1)
    torch.testing.assert_close(probs, torch.tensor([0.4, 0.3, 0.2, 0.1]).expand(3, 4))
    x, t = case(classes=4, seed=3, dtype=torch.float32)
    torch.testing.assert_close(mod(x, t), logit_adjusted_cross_entropy(x, t, mod.log_prior, 1.0))
    torch.testing.assert_close(mod.adjust(x), x - mod.log_prior)
    mod.tau = 0.0  # plain attribute read at call time
    torch.testing.assert_close(mod(x, t), F.cross_entropy(x, t))


def test_la_bf16_autocast_and_compile() -> None:
    x, t = case(seed=4, dtype=torch.float32)
    lp = log_prior_from_counts([5, 4, 3, 2, 1])
    ref = logit_adjusted_cross_entropy(x, t, lp)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = logit_adjusted_cross_entropy(x.bfloat16(), t, lp)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=0)
    torch._dynamo.reset()
    fn = torch.compile(logit_adjusted_cross_entropy, backend="aot_eager")  # inductor: ~15 s/graph here
    torch.testing.assert_close(fn(x, t, lp), ref)


def test_empty_batch_mean_is_zero_not_nan() -> None:
    lp = torch.zeros(5)
    empty, no_target = torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)
    assert logit_adjusted_cross_entropy(empty, no_target, lp).item() == 0.0
    assert logit_adjusted_cross_entropy(empty, no_target, lp, reduction="none").shape == (0,)
    x, t = case(seed=5)
    t[:] = -100  # every target ignored: also 0, as for an empty batch
    assert logit_adjusted_cross_entropy(x, t, lp.double()).item() == 0.0


def test_la_bad_inputs() -> None:
    x, t = case()
    lp = torch.zeros(5)
    with pytest.raises(ValueError, match="'log_prior'"):
        logit_adjusted_cross_entropy(x, t, torch.zeros(4))
    with pytest.raises(ValueError, match="'tau'"):
        logit_adjusted_cross_entropy(x, t, lp, -1.0)
    with pytest.raises(ValueError, match="'target'"):
        logit_adjusted_cross_entropy(x, t + 5, lp)
    with pytest.raises(ValueError, match="'target'"):
        logit_adjusted_cross_entropy(x, t[:3], lp)
    with pytest.raises(TypeError, match="'input'"):
        logit_adjusted_cross_entropy(x.long(), t, lp)


# ------------------------------------------------------------------------------------------- focal


def test_binary_focal_reference_and_bce_limit() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64) * 3
    y = (torch.rand(4, 3, generator=g) < 0.5).double()
    gamma, alpha = 2.0, 0.25
    want = []
    for v, t in zip(x.flatten().tolist(), y.flatten().tolist()):
        p = sigmoid(v)
        want.append(
            -alpha * (1 - p) ** gamma * math.log(p) if t == 1 else -(1 - alpha) * p**gamma * math.log(1 - p)
        )
    got = binary_focal_loss(x, y, gamma, alpha, reduction="none")
    torch.testing.assert_close(got.flatten(), torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)
    bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    torch.testing.assert_close(binary_focal_loss(x, y, 0.0, reduction="none"), bce, rtol=0, atol=1e-12)
    torch.testing.assert_close(BinaryFocalLoss(gamma, alpha)(x, y), got.mean())
    xr = x.clone().requires_grad_()
    assert gradcheck(lambda a: binary_focal_loss(a, y, 1.5, 0.3, reduction="none"), (xr,))


def test_multiclass_focal() -> None:
    x, t = case(seed=6)
    gamma = 2.0
    p = torch.softmax(x, -1)[torch.arange(6), t]
    want = -((1 - p) ** gamma) * p.log()
    torch.testing.assert_close(focal_loss(x, t, gamma, reduction="none"), want, rtol=0, atol=1e-12)
    torch.testing.assert_close(focal_loss(x, t, 0.0), F.cross_entropy(x, t), rtol=0, atol=1e-12)
    w = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(focal_loss(x, t, gamma, w, reduction="none"), want * w[t])
    torch.testing.assert_close(FocalLoss(gamma, w.float())(x, t), (want * w[t]).mean())
    t2 = t.clone()
    t2[1] = -100
    none = focal_loss(x, t2, gamma, reduction="none")
    assert none[1] == 0
    torch.testing.assert_close(focal_loss(x, t2, gamma), none.sum() / 5)
    xr = x.clone().requires_grad_()
    assert gradcheck(lambda a: focal_loss(a, t, 0.5, reduction="none"), (xr,))


def test_focal_extremes_and_bad_inputs() -> None:
    x = (torch.tensor([[1.0, -1.0, 0.5], [-1.0, 1.0, 0.0]]) * 1e4).requires_grad_()
    t = torch.tensor([0, 2])
    for gamma in (0.5, 2.0):
        loss = focal_loss(x, t, gamma, reduction="sum") + binary_focal_loss(
            x, (x > 0).float(), gamma, reduction="sum"
        )
        loss.backward()
        assert x.grad is not None and bool(torch.isfinite(loss)) and bool(torch.isfinite(x.grad).all())
        x.grad = None
    with pytest.raises(ValueError, match="'gamma'"):
        focal_loss(x, t, -1.0)
    with pytest.raises(ValueError, match="'gamma'"):
        binary_focal_loss(x, (x > 0).float(), -0.5)
    with pytest.raises(ValueError, match="'alpha'"):
        binary_focal_loss(x, (x > 0).float(), alpha=1.5)
    with pytest.raises(ValueError, match="'alpha'"):
        focal_loss(x, t, alpha=torch.ones(4))
    with pytest.raises(ValueError, match="'target'"):
        binary_focal_loss(x, torch.full_like(x, 2.0))


# ----------------------------------------------------------------------- truncation and softening


def test_smooth_accuracy_vs_ce_gradient_ratio() -> None:
    z = torch.linspace(-6, 6, 25, dtype=torch.float64, requires_grad=True)
    (g_acc,) = torch.autograd.grad((-torch.sigmoid(z)).sum(), z)
    (g_ce,) = torch.autograd.grad((-F.logsigmoid(z)).sum(), z)
    torch.testing.assert_close(g_acc / g_ce, torch.sigmoid(z.detach()))


def test_softened_truncation_properties() -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(10, generator=g, dtype=torch.float64) * 3
    y = (torch.rand(10, generator=g) < 0.5).double()
    want = [
        -sigmoid(-v) * math.log(sigmoid(v)) if t == 1 else -sigmoid(v) * math.log(sigmoid(-v))
        for v, t in zip(x.tolist(), y.tolist())
    ]
    got = softened_truncated_loss(x, y, 1.0, reduction="none")
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(got, binary_focal_loss(x, y, 1.0, reduction="none"), rtol=0, atol=1e-12)
    # K → ∞ gives the hard truncation (threshold 0.5) pointwise away from 0
    x_far = torch.cat([x[x.abs() > 1e-2], torch.tensor([0.05, -0.05], dtype=torch.float64)])
    y_far = (torch.arange(x_far.numel()) % 2).double()
    torch.testing.assert_close(
        softened_truncated_loss(x_far, y_far, 1e4, reduction="none"),
        hard_truncated_loss(x_far, y_far, 0.5, reduction="none"),
        rtol=0,
        atol=1e-12,
    )
    # multi-class with C = 2 equals the binary form with x = x_0 − x_1 (class 0 = positive)
    xm = torch.randn(8, 2, generator=g, dtype=torch.float64) * 2
    tm = torch.randint(0, 2, (8,), generator=g)
    for k in (1.0, 2.5):
        torch.testing.assert_close(
            softened_truncated_loss(xm, tm, k, reduction="none"),
            softened_truncated_loss(xm[:, 0] - xm[:, 1], (tm == 0).double(), k, reduction="none"),
        )
    # with more than two classes it is not focal γ = 1
    x3, t3 = case(seed=8)
    assert not torch.allclose(softened_truncated_loss(x3, t3), focal_loss(x3, t3, 1.0))
    x3r = x3.clone().requires_grad_()
    assert gradcheck(lambda a: softened_truncated_loss(a, t3, 1.5, reduction="none"), (x3r,))
    xr = x.clone().requires_grad_()
    assert gradcheck(lambda a: softened_truncated_loss(a, y, 2.0, reduction="none"), (xr,))
    torch.testing.assert_close(SoftenedTruncatedLoss(2.0)(x, y), softened_truncated_loss(x, y, 2.0))
    with pytest.raises(ValueError, match="'k'"):
        softened_truncated_loss(x, y, 0.0)


def test_hard_truncation() -> None:
    x = torch.tensor([2.0, 0.1, -2.0, -0.1, 0.3], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    loss = hard_truncated_loss(x, y, 0.6, reduction="none")
    # σ(2) > 0.6 (done), σ(0.1) < 0.6 (active), σ(−2) < 0.4 (done), σ(−0.1) > 0.4 (active), σ(0.3) < 0.6
    active = torch.tensor([False, True, False, True, True])
    bce = F.binary_cross_entropy_with_logits(x.detach(), y, reduction="none")
    torch.testing.assert_close(loss.detach(), torch.where(active, bce, torch.zeros_like(bce)))
    loss.sum().backward()
    assert x.grad is not None and bool((x.grad[~active] == 0).all()) and bool((x.grad[active] != 0).all())
    torch.testing.assert_close(hard_truncated_loss(x, y, 0.6), loss.sum() / 5)  # full count
    # multi-class: rows with p_t > m stop contributing
    xm, tm = case(seed=9)
    pt = torch.softmax(xm, -1)[torch.arange(6), tm]
    ce = F.cross_entropy(xm, tm, reduction="none")
    torch.testing.assert_close(
        hard_truncated_loss(xm, tm, 0.3, reduction="none"), torch.where(pt > 0.3, 0.0, ce)
    )
    torch.testing.assert_close(HardTruncatedLoss(0.3)(xm, tm), torch.where(pt > 0.3, 0.0, ce).mean())
    with pytest.raises(ValueError, match="'margin'"):
        hard_truncated_loss(x, y, 1.0)
    with pytest.raises(ValueError, match="'target'"):
        hard_truncated_loss(xm, tm[:2])


# ------------------------------------------------------------------------------ class reweighting


def test_class_balanced_weights() -> None:
    counts = torch.tensor([100.0, 10.0, 1.0, 0.0])
    w = class_balanced_weights(counts, tau=1.0)
    raw = torch.tensor([1 / 100, 1 / 10, 1.0, 1.0])
    torch.testing.assert_close(w, (raw / raw.mean()).float())
    torch.testing.assert_close(w.mean(), torch.tensor(1.0))
    torch.testing.assert_close(class_balanced_weights(counts, tau=0.0), torch.ones(4))
    beta = 0.99
    eff = torch.tensor([(1 - beta**n) / (1 - beta) for n in [100, 10, 1, 1]], dtype=torch.float64)
    torch.testing.assert_close(
        class_balanced_weights(counts, beta=beta), ((1 / eff) / (1 / eff).mean()).float()
    )
    torch.testing.assert_close(class_balanced_weights(counts, beta=0.0), torch.ones(4))
    with pytest.raises(ValueError, match="'beta'"):
        class_balanced_weights(counts, beta=1.0)


def test_class_balanced_cross_entropy_and_pairwise_margin_form() -> None:
    x, t = case(seed=10)
    w = torch.tensor([0.5, 1.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    ce = F.cross_entropy(x, t, reduction="none")
    torch.testing.assert_close(class_balanced_cross_entropy(x, t, w, reduction="none"), w[t] * ce)
    torch.testing.assert_close(class_balanced_cross_entropy(x, t, w), (w[t] * ce).mean())
    mod = ClassBalancedCrossEntropy.from_counts([5, 4, 3, 2, 1])
    assert "weight" in mod.state_dict()
    torch.testing.assert_close(
        mod(x, t), class_balanced_cross_entropy(x, t, class_balanced_weights([5, 4, 3, 2, 1]))
    )
    with pytest.raises(ValueError, match="'weight'"):
        class_balanced_cross_entropy(x, t, torch.ones(3))


# -------------------------------------------------------------------------------- F1-CE and Dice


def test_f1_ce_gradient_ratio_identity() -> None:
    g = torch.Generator().manual_seed(11)
    z = torch.randn(12, generator=g, dtype=torch.float64)
    y = (torch.rand(12, generator=g) < 0.4).double()
    zr = z.clone().requires_grad_()
    p = torch.sigmoid(zr)
    f1 = 2 * (y * p).sum() / (y + p).sum()
    (g_f1,) = torch.autograd.grad(-f1, zr)
    zr2 = z.clone().requires_grad_()
    (g_ce,) = torch.autograd.grad(f1_weighted_cross_entropy(zr2, y, reduction="sum"), zr2)
    pd = torch.sigmoid(z)
    d = (y + pd).sum()
    want = torch.where(y == 1, 2 / d * pd, 2 / d * (1 - pd))
    torch.testing.assert_close(g_f1 / g_ce, want, rtol=1e-8, atol=1e-8)


def test_f1_ce_weights_and_dice() -> None:
    x = torch.tensor([-30.0, -30.0, -30.0], dtype=torch.float64)  # p ≈ 0 -> F ≈ 0
    y = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    loss = f1_weighted_cross_entropy(x, y, reduction="none")
    torch.testing.assert_close(
        loss, torch.stack([F.softplus(-x[0]), x[1] * 0, x[2] * 0]), rtol=1e-9, atol=1e-9
    )
    x1 = torch.tensor([30.0, -30.0], dtype=torch.float64)  # perfect -> F ≈ 1, weights (1/2, 1/2)
    y1 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(
        f1_weighted_cross_entropy(x1, y1, reduction="none"),
        0.5 * F.binary_cross_entropy_with_logits(x1, y1, reduction="none"),
    )
    g = torch.Generator().manual_seed(12)
    xb = torch.randn(6, 3, generator=g, dtype=torch.float64)
    yb = (torch.rand(6, 3, generator=g) < 0.5).double()
    p = torch.sigmoid(xb)
    torch.testing.assert_close(dice_loss(xb, yb), 1 - 2 * (yb * p).sum() / (yb + p).sum())
    per_class = 1 - 2 * (yb * p).sum(0) / (yb + p).sum(0)
    torch.testing.assert_close(dice_loss(xb, yb, reduction="none", dim=0), per_class)
    torch.testing.assert_close(DiceLoss(dim=0)(xb, yb), per_class.mean())
    torch.testing.assert_close(
        dice_loss(xb, yb, eps=1.0), 1 - (2 * (yb * p).sum() + 1) / ((yb + p).sum() + 1)
    )
    assert dice_loss(torch.full((3,), -1e4), torch.zeros(3)).item() == 0.0  # 0/0 slice -> loss 0
    f_cls = 2 * (yb * p).sum(0) / (yb + p).sum(0)
    want = -(yb * (1 - f_cls / 2) * F.logsigmoid(xb) + (1 - yb) * f_cls / 2 * F.logsigmoid(-xb))
    torch.testing.assert_close(F1WeightedCrossEntropy(reduction="none", dim=0)(xb, yb), want)
    xr = xb.clone().requires_grad_()
    assert gradcheck(lambda a: dice_loss(a, yb, reduction="none", dim=0), (xr,))
    # F is a stop-gradient statistic: the gradient is that of BCE with fixed weights (1 − F/2, F/2)
    f_all = (2 * (yb * p).sum() / (yb + p).sum()).item()
    f1_weighted_cross_entropy(xr, yb, reduction="sum").backward()
    want_grad = yb * (1 - f_all / 2) * (p - 1) + (1 - yb) * (f_all / 2) * p
    assert xr.grad is not None
    torch.testing.assert_close(xr.grad, want_grad, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="'eps'"):
        dice_loss(xb, yb, eps=-1.0)


# ------------------------------------------------------------------------------ dtypes, reductions


@pytest.mark.parametrize(
    "name",
    ["focal", "binary_focal", "hard", "softened_bin", "softened_mc", "cb", "dice", "f1ce", "la"],
)
def test_bf16_autocast_float32_output(name: str) -> None:
    x, t = case(rows=8, classes=6, seed=13, dtype=torch.float32)
    yb = (torch.rand(8, 6, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    w = torch.rand(6) + 0.5
    fns = {
        "focal": lambda a: focal_loss(a, t),
        "binary_focal": lambda a: binary_focal_loss(a, yb),
        "hard": lambda a: hard_truncated_loss(a, yb, 0.9),
        "softened_bin": lambda a: softened_truncated_loss(a, yb),
        "softened_mc": lambda a: softened_truncated_loss(a, t),
        "cb": lambda a: class_balanced_cross_entropy(a, t, w),
        "dice": lambda a: dice_loss(a, yb),
        "f1ce": lambda a: f1_weighted_cross_entropy(a, yb),
        "la": lambda a: logit_adjusted_cross_entropy(a, t, torch.log_softmax(w, 0)),
    }
    f = fns[name]
    ref = f(x)
    lin = torch.nn.Linear(6, 6)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(6))
        lin.bias.zero_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        xb = lin(x)
        assert xb.dtype == torch.bfloat16
        out = f(xb)
    assert ref.dtype == torch.float32 and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=1e-3)
    assert f(x.double()).dtype == torch.float64


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 5), classes=st.integers(2, 6), seed=st.integers(0, 10_000))
def test_reductions_and_permutation(rows: int, classes: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, classes, generator=g, dtype=torch.float64) * 3
    t = torch.randint(0, classes, (rows,), generator=g)
    lp = torch.log_softmax(torch.randn(classes, generator=g, dtype=torch.float64), 0)
    w = torch.rand(classes, generator=g, dtype=torch.float64) + 0.1
    yb = (torch.rand(rows, classes, generator=g) < 0.5).double()
    perm = torch.randperm(classes, generator=g)
    inv = perm.argsort()
    for f, pf in [
        (
            lambda a, r: logit_adjusted_cross_entropy(a, t, lp, 1.0, reduction=r),
            lambda a: logit_adjusted_cross_entropy(a[:, perm], inv[t], lp[perm], 1.0, reduction="none"),
        ),
        (
            lambda a, r: focal_loss(a, t, 2.0, reduction=r),
            lambda a: focal_loss(a[:, perm], inv[t], 2.0, reduction="none"),
        ),
        (
            lambda a, r: class_balanced_cross_entropy(a, t, w, reduction=r),
            lambda a: class_balanced_cross_entropy(a[:, perm], inv[t], w[perm], reduction="none"),
        ),
        (
            lambda a, r: softened_truncated_loss(a, t, 1.0, reduction=r),
            lambda a: softened_truncated_loss(a[:, perm], inv[t], 1.0, reduction="none"),
        ),
        (lambda a, r: binary_focal_loss(a, yb, 2.0, 0.25, reduction=r), None),
        (lambda a, r: f1_weighted_cross_entropy(a, yb, reduction=r), None),
    ]:
        none = f(x, "none")
        torch.testing.assert_close(f(x, "sum"), none.sum())
        torch.testing.assert_close(f(x, "mean"), none.mean())
        if pf is not None:
            torch.testing.assert_close(pf(x), none, rtol=0, atol=1e-12)
