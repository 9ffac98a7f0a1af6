"""Spec optimization.md §4.6 (1-2): REINFORCE with baselines (post 7737)."""

from __future__ import annotations

import math

import pytest
import torch

from trainwell.optim import optimal_baseline, reinforce_loss, sample_with_log_probs

D = torch.float64
Z = torch.tensor([0.3, -1.0, 0.8, 0.0, 1.5], dtype=D)
R = torch.tensor([1.0, -0.5, 2.0, 0.3, 0.1], dtype=D)


def _per_row_estimates(baseline: object, n: int = 20_000, k: int = 4, shift: float = 0.0,
                       seed: int = 0) -> torch.Tensor:
    """One REINFORCE estimate of ∇_z Σ_y p_y r_y per row (each row: K samples from the same logits)."""
    logits = Z.expand(n, -1).clone().requires_grad_()
    idx, logp = sample_with_log_probs(logits, k, generator=torch.Generator().manual_seed(seed))
    rewards = (R + shift)[idx]
    loss = reinforce_loss(logp, rewards, baseline=baseline, reduction="sum")  # type: ignore[arg-type]
    (grad,) = torch.autograd.grad(loss, logits)
    return -grad / k


def _exact() -> torch.Tensor:
    p = torch.softmax(Z, 0)
    return p * (R - p @ R)


@pytest.mark.parametrize("baseline", ["none", 5.0, "loo"])
def test_unbiased_for_several_baselines(baseline: object) -> None:
    est = _per_row_estimates(baseline)
    se = est.std(0) / math.sqrt(est.shape[0])
    assert bool(((est.mean(0) - _exact()).abs() < 5 * se).all())


def test_mean_baseline_is_shrunk_by_k_minus_1_over_k() -> None:
    k = 3
    est = _per_row_estimates("mean", k=k, seed=1)
    se = est.std(0) / math.sqrt(est.shape[0])
    assert bool(((est.mean(0) - (k - 1) / k * _exact()).abs() < 5 * se).all())


def test_expected_reward_baseline_cuts_variance() -> None:
    p = torch.softmax(Z, 0)
    expected = float(p @ (R + 100.0))
    v0 = _per_row_estimates("none", shift=100.0, n=5000, k=1).var(0).sum()
    vb = _per_row_estimates(expected, shift=100.0, n=5000, k=1).var(0).sum()
    assert float(v0) >= 100 * float(vb)


def test_optimal_baseline_minimises_second_moment() -> None:
    g = torch.Generator().manual_seed(2)
    p = torch.softmax(Z, 0)
    ys = torch.multinomial(p.expand(4000, -1), 1, generator=g).squeeze(1)
    score = torch.nn.functional.one_hot(ys, 5).to(D) - p  # ∇_z log p_y
    s = score.pow(2).sum(1)
    r = R[ys] + 3.0
    b_star = float(optimal_baseline(r, s, dim=0))

    def second_moment(b: float) -> float:
        return float(((r - b)[:, None] * score).pow(2).sum(1).mean())

    best = second_moment(b_star)
    for b in torch.linspace(b_star - 3, b_star + 3, 61).tolist():
        assert best <= second_moment(b) + 1e-12


def test_reductions_dtypes_and_gradient_only_meaning() -> None:
    logp = torch.randn(2, 3, 4, requires_grad=True)
    r = torch.rand(2, 3, 4)
    assert reinforce_loss(logp, r, reduction="none").shape == (2, 3, 4)
    torch.testing.assert_close(
        reinforce_loss(logp, r, reduction="sum"), reinforce_loss(logp, r, reduction="none").sum()
    )
    out = reinforce_loss(logp.to(torch.bfloat16), r)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out))
    # rewards are detached: no gradient flows into them
    rr = r.clone().requires_grad_()
    reinforce_loss(logp, rr).backward()
    assert rr.grad is None and logp.grad is not None
    # loo advantage: r_i minus the mean of the other K-1 rewards
    lp = torch.zeros(1, 3, requires_grad=True)
    reinforce_loss(lp, torch.tensor([[1.0, 2.0, 6.0]]), reduction="sum").backward()
    torch.testing.assert_close(lp.grad, -torch.tensor([[1 - 4.0, 2 - 3.5, 6 - 1.5]]))


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="'rewards'"):
        reinforce_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="'baseline'"):
        reinforce_loss(torch.zeros(2, 1), torch.zeros(2, 1), baseline="loo")
    with pytest.raises(ValueError, match="'baseline'"):
        reinforce_loss(torch.zeros(2, 3), torch.zeros(2, 3), baseline="critic")
    with pytest.raises(ValueError, match="'num_samples'"):
        sample_with_log_probs(torch.zeros(2, 3), 0)
    with pytest.raises(ValueError, match="'reduction'"):
        reinforce_loss(torch.zeros(2, 3), torch.zeros(2, 3), reduction="avg")
