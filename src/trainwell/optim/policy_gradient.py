"""REINFORCE with a baseline, for training on non-differentiable rewards (accuracy, F1, BLEU).

Source: kexue.fm/archives/7737 (殊途同归的策略梯度与零阶优化); Williams 1992 (REINFORCE).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from trainwell._ops import apply_reduction, float32
from trainwell._validation import (
    check_int,
    check_reduction,
    check_same_shape,
    check_tensor,
    fail,
)

__all__ = ["PG_BASELINES", "optimal_baseline", "reinforce_loss", "sample_with_log_probs"]

PG_BASELINES = ("loo", "mean", "none")


def _baseline_values(rewards: Tensor, baseline: Any, fn: str) -> Tensor:
    """Baseline b per sample; ``rewards`` is [..., K] with the K samples of one input on the last dim."""
    if isinstance(baseline, str):
        if baseline not in PG_BASELINES:
            fail(fn, "baseline", "one of 'loo', 'mean', 'none', a number or a tensor", baseline)
        if baseline == "none":
            return torch.zeros_like(rewards)
        k = rewards.shape[-1]
        if k < 2:
            fail(
                fn,
                "baseline",
                f"'none' or a value when there is one sample per input ({baseline!r} needs K >= 2)",
                baseline,
            )
        total = rewards.sum(dim=-1, keepdim=True)
        if baseline == "mean":
            return (total / k).expand_as(rewards)
        return (total - rewards) / (k - 1)
    if isinstance(baseline, Tensor):
        try:
            return torch.broadcast_to(baseline.to(rewards.dtype), rewards.shape)
        except RuntimeError:
            fail(fn, "baseline", f"a tensor broadcastable to rewards {tuple(rewards.shape)}", baseline)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(rewards, float(baseline))
    fail(fn, "baseline", "one of 'loo', 'mean', 'none', a number or a tensor", baseline, exc=TypeError)


def reinforce_loss(
    log_probs: Tensor,
    rewards: Tensor,
    baseline: str | float | Tensor = "loo",
    reduction: str = "mean",
) -> Tensor:
    """Surrogate loss whose gradient is the REINFORCE estimate ``-E[(r - b)·∇log p(y)]``.

    ``loss = -(r - b).detach() · log p_θ(y)`` for K sampled outputs per input (last dim). Minimising it
    ascends the expected reward ``Σ_y p_θ(y) r(y)``, whose maximiser ranks outputs like their rewards (so
    the argmax gets the best reward, post 7737). Only the gradient is meaningful, not the value: the
    dependence of the sampled y on θ is deliberately ignored. Any baseline not depending on the sample
    keeps the estimator unbiased because ``E[∇log p] = 0``; ``"loo"`` (default, leave-one-out mean of the
    other K-1 rewards) is unbiased and reduces variance; ``"mean"`` (the mean of all K, including the sample
    itself) shrinks the estimate by (K-1)/K; a number or tensor (e.g. a critic's value) is used as given.

    Args:
        log_probs: log-probabilities of the sampled outputs ``[..., K]`` (summed over tokens for sequences),
            differentiable w.r.t. the model.
        rewards: rewards of the samples, same shape (any sign; detached).
        baseline: ``"loo"``, ``"mean"``, ``"none"``, a number or a tensor broadcastable to ``rewards``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Returns:
        The surrogate loss (float32, or float64 for float64 inputs).

    Source: kexue.fm/archives/7737; Williams 1992.
    """
    fn = "reinforce_loss"
    check_tensor("log_probs", log_probs, fn=fn, kind="float", min_ndim=1)
    check_tensor("rewards", rewards, fn=fn, kind=("float", "int", "bool"))
    check_same_shape("log_probs", log_probs, "rewards", rewards, fn=fn)
    reduction = check_reduction(reduction, fn=fn)
    lp = float32(log_probs)
    r = rewards.detach().to(lp.dtype)
    b = _baseline_values(r, baseline, fn).detach()
    per_sample = -(r - b) * lp
    return apply_reduction(per_sample, reduction)


def sample_with_log_probs(
    logits: Tensor, num_samples: int = 4, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Draw K categorical samples per row of ``logits [..., C]``; return (indices [..., K], log p [..., K]).

    Sampling runs without gradient (``torch.multinomial``, with replacement); the returned log-probabilities
    are differentiable and computed in float32, ready for :func:`reinforce_loss`.
    """
    fn = "sample_with_log_probs"
    check_tensor("logits", logits, fn=fn, kind="float", min_ndim=1)
    k = check_int("num_samples", num_samples, fn=fn, min=1)
    logp = torch.log_softmax(float32(logits), dim=-1)
    flat = logp.detach().reshape(-1, logp.shape[-1])
    with torch.no_grad():
        idx = torch.multinomial(flat.exp(), k, replacement=True, generator=generator)
    idx = idx.reshape(*logp.shape[:-1], k)
    return idx, torch.gather(logp, -1, idx)


def optimal_baseline(rewards: Tensor, score_sq_norms: Tensor, dim: int = -1) -> Tensor:
    """Variance-optimal constant baseline ``b* = E[r‖∇log p‖²] / E[‖∇log p‖²]`` along ``dim``.

    ``score_sq_norms`` holds ``‖∇θ log p_θ(y_i)‖²`` for each sample (same shape as ``rewards``). The result
    keeps ``dim`` (size 1) so it broadcasts against ``rewards``. Source: kexue.fm/archives/7737.
    """
    fn = "optimal_baseline"
    check_tensor("rewards", rewards, fn=fn, kind=("float", "int"))
    check_tensor("score_sq_norms", score_sq_norms, fn=fn, kind="float")
    check_same_shape("rewards", rewards, "score_sq_norms", score_sq_norms, fn=fn)
    w = score_sq_norms
    return (rewards.to(w.dtype) * w).sum(dim, keepdim=True) / w.sum(dim, keepdim=True).clamp_min(
        torch.finfo(w.dtype).tiny
    )
