"""WEISSI (§5): scale-shift invariance (cumulative bias scaling), AM–GM balance, Euler identities,
L2 vs weight decay vs AdamW."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from trainwell.regularizers import balance_weight_scales, l2_penalty, weight_scale_shift, weissi_penalty

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
GAMMAS = [2.0, 0.25, 3.0, 2.0 / 3.0]  # product 1


def relu_mlp(bias: bool, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(5, 7, bias=bias), nn.ReLU(), nn.Linear(7, 6, bias=bias), nn.ReLU(),
        nn.Linear(6, 4, bias=bias), nn.LeakyReLU(0.1), nn.Linear(4, 2, bias=bias),
    ).double()


def linears(net):
    return [m for m in net if isinstance(m, nn.Linear)]


def l2_of_weights(net):
    return float(sum(m.weight.pow(2).sum() for m in linears(net)))


@pytest.mark.parametrize("bias", [False, True])
def test_shift_preserves_function_and_weissi_not_l2(bias):
    net = relu_mlp(bias)
    x = torch.randn(9, 5, dtype=torch.float64)
    before = net(x)
    l2_before = l2_of_weights(net)
    log_before = float(weissi_penalty(net, 1.0, 0.0))
    l1_before = float(weissi_penalty(net, 0.0, 1.0))
    weight_scale_shift(net, GAMMAS)
    torch.testing.assert_close(net(x), before, rtol=1e-12, atol=1e-12)
    assert abs(l2_of_weights(net) - l2_before) > 1.0  # L2 is not invariant
    assert abs(float(weissi_penalty(net, 1.0, 0.0)) - log_before) < 1e-12
    assert abs(float(weissi_penalty(net, 0.0, 1.0)) - l1_before) < 1e-10


def test_post_bias_scaling_is_wrong_with_biases():
    """Scaling b_l by γ_l alone (the post) changes the function when biases are present."""
    net = relu_mlp(True, seed=1)
    x = torch.randn(9, 5, dtype=torch.float64)
    before = net(x)
    with torch.no_grad():
        for m, g in zip(linears(net), GAMMAS):
            m.weight.mul_(g)
            m.bias.mul_(g)
    assert float((net(x) - before).abs().max()) > 1e-3


def test_balance_reaches_am_gm_minimum():
    net = relu_mlp(True, seed=2)
    weight_scale_shift(net, GAMMAS)  # unbalance
    x = torch.randn(9, 5, dtype=torch.float64)
    before = net(x)
    norms = [float(m.weight.norm()) for m in linears(net)]
    L = len(norms)
    minimum = L * math.prod(norms) ** (2.0 / L)
    l2_before = l2_of_weights(net)
    gammas = balance_weight_scales(linears(net))
    assert abs(math.prod(gammas) - 1.0) < 1e-12
    assert abs(l2_of_weights(net) - minimum) < 1e-9 * minimum
    assert minimum <= l2_before
    new_norms = [float(m.weight.norm()) for m in linears(net)]
    assert max(new_norms) - min(new_norms) < 1e-9
    torch.testing.assert_close(net(x), before, rtol=1e-12, atol=1e-12)


def test_euler_identities_and_golden_value():
    torch.manual_seed(3)
    W = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    (g_log,) = torch.autograd.grad(weissi_penalty([W], 1.0, 0.0), W)
    (g_l1,) = torch.autograd.grad(weissi_penalty([W], 0.0, 1.0), W)
    assert abs(float((g_log * W).sum()) - 1.0) < 1e-12
    assert abs(float((g_l1 * W).sum())) < 1e-12
    n = math.sqrt(float(W.detach().pow(2).sum()))
    expected = 0.3 * math.log(n) + 0.7 * float(W.detach().abs().sum()) / n
    assert abs(float(weissi_penalty([W], 0.3, 0.7)) - expected) < 1e-12


def test_module_selection_skips_biases_norms_embeddings():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 6), nn.LayerNorm(6), nn.Conv1d(6, 3, 2))
    ws = [model[1].weight, model[3].weight]
    expected = sum(math.log(float(w.norm())) + float(w.abs().sum()) / float(w.norm()) for w in ws)
    assert abs(float(weissi_penalty(model)) - expected) < 1e-5
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    out = weissi_penalty(bf16)
    assert out.dtype == torch.float32 and abs(float(out) - expected) < 0.05


def test_sgd_l2_is_weight_decay_and_adam_differs_from_adamw():
    torch.manual_seed(5)
    theta0 = torch.randn(6, dtype=torch.float64)
    target = torch.randn(6, dtype=torch.float64)
    lr, lam = 0.1, 0.3

    def loss_fn(t):
        return (t - target).pow(4).sum()

    t = theta0.clone().requires_grad_(True)
    opt = torch.optim.SGD([t], lr=lr)
    (loss_fn(t) + l2_penalty([t], lam)).backward()
    opt.step()
    g = 4 * (theta0 - target).pow(3)
    torch.testing.assert_close(t.detach(), theta0 * (1 - lr * lam) - lr * g)

    def one_step(cls, wd):
        p = theta0.clone().requires_grad_(True)
        o = cls([p], lr=lr, weight_decay=wd)
        loss_fn(p).backward()
        o.step()
        return p.detach()

    assert not torch.allclose(one_step(torch.optim.Adam, lam), one_step(torch.optim.AdamW, lam))
    torch.testing.assert_close(one_step(torch.optim.Adam, 0.0), one_step(torch.optim.AdamW, 0.0))


def test_bad_inputs():
    net = relu_mlp(True)
    with pytest.raises(ValueError, match="'lam1'"):
        weissi_penalty(net, lam1=-1.0)
    with pytest.raises(ValueError, match="'lam2'"):
        weissi_penalty(net, lam2=-1.0)
    with pytest.raises(ValueError, match="'model_or_parameters'"):
        weissi_penalty(nn.ReLU())
    with pytest.raises(ValueError, match="'gammas'"):
        weight_scale_shift(net, [1.0, 2.0])
    with pytest.raises(ValueError, match="'gammas'"):
        weight_scale_shift(copy.deepcopy(net), [1.0, -1.0, 1.0, -1.0])
    with pytest.raises(ValueError, match="'lam'"):
        l2_penalty(net, -0.1)
