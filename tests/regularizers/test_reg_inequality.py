"""Input- vs parameter-gradient inequality (§4): identities (4.2), inequality (4.1), Frobenius variant."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainwell.regularizers import input_parameter_gradient_bound

torch.set_num_threads(1)
ACTS = {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus}


def mlp(act: str, bias: bool = True, seed: int = 0, widths=(4, 7, 6, 3)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(ACTS[act]())
    return nn.Sequential(*layers).double()


@pytest.mark.parametrize("act", list(ACTS))
def test_exact_identities_4_2(act):
    """h^t ∇_x f = (∇_{W^t} f)ᵀ W^t J_t and ∇_x f = (∇_{b^t} f)ᵀ W^t J_t, for every layer (float64)."""
    net = mlp(act, seed=1)
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([2])
    lins = [m for m in net if isinstance(m, nn.Linear)]
    f = F.cross_entropy(net(x.unsqueeze(0)), y)
    grads = torch.autograd.grad(f, [x, *[p for m in lins for p in (m.weight, m.bias)]])
    gx = grads[0]
    idx = [i for i, m in enumerate(net) if isinstance(m, nn.Linear)]
    for t, i in enumerate(idx):
        prefix = net[:i]
        J = torch.autograd.functional.jacobian(lambda v, p=prefix: p(v), x.detach())
        h = prefix(x.detach()).detach()
        gW, gb = grads[1 + 2 * t], grads[2 + 2 * t]
        W = lins[t].weight.detach()
        torch.testing.assert_close(torch.outer(h, gx), gW.T @ W @ J, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(gx, gb @ W @ J, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("bias", [True, False])
def test_inequality_holds_and_sides_match_independent_values(act, bias):
    ratios = []
    for seed in range(4):
        net = mlp(act, bias=bias, seed=seed)
        x = torch.randn(5, 4, dtype=torch.float64)
        y = torch.randint(0, 3, (5,))
        lhs, rhs = input_parameter_gradient_bound(net, x, y, F.cross_entropy)
        assert lhs.shape == rhs.shape == (5,)
        assert bool((lhs <= rhs * (1 + 1e-12)).all())
        fro = input_parameter_gradient_bound(net, x, y, F.cross_entropy, norm="frobenius")
        assert bool((fro.lhs <= fro.rhs * (1 + 1e-12)).all())
        assert bool((fro.lhs <= lhs * (1 + 1e-12)).all())  # Frobenius ≥ spectral: weaker bound
        torch.testing.assert_close(fro.rhs, rhs)
        ratios.append(float((lhs / rhs).max()))
        # independent RHS and LHS for the first sample
        xb = x[:1].clone().requires_grad_(True)
        f = F.cross_entropy(net(xb), y[:1])
        gx, *gp = torch.autograd.grad(f, [xb, *net.parameters()])
        torch.testing.assert_close(rhs[0], sum(g.pow(2).sum() for g in gp))
        idx = [i for i, m in enumerate(net) if isinstance(m, nn.Linear)]
        total = 0.0
        for i in idx:
            h = net[:i](x[0]).detach()
            J = (
                torch.autograd.functional.jacobian(lambda v, p=net[:i]: p(v), x[0])
                if i
                else torch.eye(4).double()
            )
            sJ = torch.linalg.matrix_norm(J, 2)
            if float(sJ) > 0:
                total += float(
                    (float(bias) + h.pow(2).sum())
                    / (torch.linalg.matrix_norm(net[i].weight.detach(), 2) * sJ) ** 2
                )
        torch.testing.assert_close(lhs[0], gx.pow(2).sum().detach() * total)
    assert max(ratios) < 1.0


def test_default_f_and_errors():
    net = mlp("tanh")
    x = torch.randn(3, 4, dtype=torch.float64)
    lhs, rhs = input_parameter_gradient_bound(net, x)
    assert bool((lhs <= rhs).all())
    with pytest.raises(ValueError, match="'mlp'"):
        input_parameter_gradient_bound(nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3)).double(), x)
    with pytest.raises(ValueError, match="'mlp'"):
        input_parameter_gradient_bound(nn.Sequential(nn.Tanh()), x)
    with pytest.raises(ValueError, match="'x'"):
        input_parameter_gradient_bound(net, x[0])
    with pytest.raises(ValueError, match="'norm'"):
        input_parameter_gradient_bound(net, x, norm="nuclear")
    with pytest.raises(ValueError, match="'y'"):
        input_parameter_gradient_bound(net, x, torch.zeros(2, dtype=torch.long), F.cross_entropy)
