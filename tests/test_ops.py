"""Shared tensor operations."""

from __future__ import annotations

import math

import pytest
import torch

from trainwell._ops import apply_reduction, float32, log1p_sum_exp, masked_fill_neg_inf


def test_apply_reduction() -> None:
    x = torch.tensor([1.0, 2.0, 6.0])
    assert torch.equal(apply_reduction(x, "none"), x)
    assert apply_reduction(x, "sum").item() == 9.0
    assert apply_reduction(x, "mean").item() == 3.0
    assert apply_reduction(x, "mean", weight_sum=torch.tensor(2.0)).item() == 4.5
    assert apply_reduction(x[:0], "mean").item() == 0.0  # empty batch: 0, not NaN


def test_float32_upcasts_half_only() -> None:
    assert float32(torch.zeros(1, dtype=torch.bfloat16)).dtype == torch.float32
    assert float32(torch.zeros(1, dtype=torch.float16)).dtype == torch.float32
    assert float32(torch.zeros(1, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("shape", [(4,), (3, 5), (2, 3, 6)])
def test_log1p_sum_exp_matches_reference(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, dtype=torch.float64) * 3
    ref = torch.log(1 + x.exp().sum(-1))
    torch.testing.assert_close(log1p_sum_exp(x), ref, rtol=1e-12, atol=1e-12)


def test_log1p_sum_exp_all_masked_row_is_zero_with_zero_grad() -> None:
    s = torch.tensor([[1.0, -2.0], [3.0, 4.0]], requires_grad=True)
    keep = torch.tensor([[False, False], [True, False]])
    out = log1p_sum_exp(masked_fill_neg_inf(s, keep))
    assert out[0].item() == 0.0
    assert math.isclose(out[1].item(), math.log1p(math.exp(3.0)), rel_tol=1e-6)
    out.sum().backward()
    assert torch.isfinite(s.grad).all()
    assert torch.equal(s.grad[0], torch.zeros(2))
    assert s.grad[1, 1].item() == 0.0


def test_log1p_sum_exp_extreme_inputs_finite() -> None:
    x = torch.tensor([[1e4, -1e4], [-1e4, -1e4]], requires_grad=True)
    out = log1p_sum_exp(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert out[0].item() == pytest.approx(1e4)


def test_log1p_sum_exp_gradcheck() -> None:
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(log1p_sum_exp, (x,))


def test_rng_replay_replays_and_restores() -> None:
    from trainwell._ops import RngReplay

    torch.manual_seed(0)
    snap = RngReplay()
    a = torch.rand(3)
    with snap.replayed():
        b = torch.rand(3)
    c = torch.rand(3)
    assert torch.equal(a, b)  # the block drew the snapshot's numbers
    torch.manual_seed(0)
    torch.rand(3)
    assert torch.equal(c, torch.rand(3))  # and the outer stream went on undisturbed
    snap.replay()
    assert torch.equal(torch.rand(3), a)
    off = RngReplay(False)
    with off.replayed():
        off.replay()  # no-ops


def test_autocast_off_and_compute_dtype() -> None:
    from trainwell._ops import autocast_enabled, autocast_off, compute_dtype

    x = torch.randn(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert autocast_enabled("cpu")
        assert (x @ x).dtype == torch.bfloat16
        with autocast_off("cpu"):
            assert not autocast_enabled("cpu")
            assert (x @ x).dtype == torch.float32
    with autocast_off("cpu"):  # a no-op outside autocast
        pass
    assert compute_dtype(x.half(), None) == torch.float32
    assert compute_dtype(x, x.double()) == torch.float64


def test_old_private_paths_still_import() -> None:
    """Parallel branches import these; they moved to _ops/_hooks/_step but stay importable."""
    from trainwell import _hooks, _ops, _step
    from trainwell.losses.contrastive import _autocast_off, _RngState
    from trainwell.regularizers._common import (
        BackwardFn,
        OutputHook,
        RngReplay,
        autocast_enabled,
        grad_scale,
        resolve_backward,
    )
    from trainwell.regularizers.adversarial import _EmbeddingAttack
    from trainwell.regularizers.vat import _no_autocast

    assert OutputHook is _hooks.OutputHook and RngReplay is _ops.RngReplay
    assert _no_autocast is _ops.autocast_off and _autocast_off is _ops.autocast_off
    assert resolve_backward is _step.resolve_backward and grad_scale is _step.grad_scale
    assert BackwardFn is _step.BackwardFn and autocast_enabled is _ops.autocast_enabled
    assert _EmbeddingAttack.__name__ == "EmbeddingAttack"
    torch.manual_seed(0)
    state = _RngState()
    a = torch.rand(2)
    with state.replay():
        assert torch.equal(torch.rand(2), a)
