"""VAT: D(0) = 0, finite-difference HVP → exact HVP, power iteration → top eigenvector, ‖r_adv‖ = ε,
isotropy at K = 0, BatchNorm freezing, hand-computed reference of VAT.step, autocast, BERT, errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainwell.regularizers import VAT, freeze_bn_stats, vat_loss, vat_perturbation

torch.set_num_threads(1)


def kl_rows(p_logits, q_logits):
    lp, lq = F.log_softmax(p_logits, -1), F.log_softmax(q_logits, -1)
    return (lp.exp() * (lp - lq)).sum(-1)


def mlp(d=4, k=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, k)).double()


def per_sample_unit(t):
    return t / t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def test_d_zero_and_zero_gradient():
    model = mlp()
    x = torch.randn(5, 4, dtype=torch.float64)
    lds = vat_loss(model, x, epsilon=0.0)
    assert float(lds.detach()) == 0.0
    lds.backward()
    assert all(float(p.grad.abs().max()) < 1e-15 for p in model.parameters())
    # ∇_r D(0) = 0 exactly, D(r) ≥ 0 around it
    logits = model(x).detach()
    r = torch.zeros_like(x, requires_grad=True)
    (g,) = torch.autograd.grad(kl_rows(logits, model(x + r)).mean(), r)
    assert float(g.abs().max()) < 1e-15
    assert float(vat_loss(model, x, epsilon=0.7)) > 0.0


def test_finite_difference_hvp_converges_to_exact_hvp():
    model = mlp(seed=1)
    x = torch.randn(3, 4, dtype=torch.float64)
    target = model(x).detach()
    u = per_sample_unit(torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5)))
    _, hu = torch.autograd.functional.hvp(
        lambda r: kl_rows(target, model(x + r)).mean(), torch.zeros_like(x), u
    )
    expected = per_sample_unit(hu)
    errs = []
    for xi in (1e-2, 5e-3, 2.5e-3, 1e-6):
        r = vat_perturbation(model, x, target, epsilon=1.0, xi=xi, generator=torch.Generator().manual_seed(5))
        errs.append(float((r - expected).norm()))
    assert 1.6 < errs[0] / errs[1] < 2.4 and 1.6 < errs[1] / errs[2] < 2.4, errs  # O(ξ)
    assert errs[3] < 1e-6


def test_power_iteration_finds_top_eigenvector():
    model = mlp(seed=2)
    x = torch.randn(1, 4, dtype=torch.float64)
    target = model(x).detach()
    H = torch.autograd.functional.hessian(lambda r: kl_rows(target, model(x + r)).mean(), torch.zeros_like(x))
    H = H.reshape(4, 4)
    evals, evecs = torch.linalg.eigh(H)
    top = evecs[:, -1]
    r = vat_perturbation(
        model,
        x,
        target,
        epsilon=1.0,
        xi=1e-6,
        power_iterations=60,
        generator=torch.Generator().manual_seed(0),
    )
    assert abs(float(r.flatten() @ top)) > 0.99999
    # one iteration from random directions raises the mean Rayleigh quotient
    r0s = [
        vat_perturbation(model, x, target, power_iterations=0, generator=torch.Generator().manual_seed(s))
        for s in range(30)
    ]
    r1s = [
        vat_perturbation(model, x, target, power_iterations=1, generator=torch.Generator().manual_seed(s))
        for s in range(30)
    ]
    rq0 = sum(float(v.flatten() @ H @ v.flatten()) for v in r0s) / 30
    rq1 = sum(float(v.flatten() @ H @ v.flatten()) for v in r1s) / 30
    assert rq0 < rq1 <= float(evals[-1]) + 1e-12


def test_norms_and_isotropy_at_k0():
    model = mlp(d=3, seed=3)
    x = torch.randn(6, 3, dtype=torch.float64)
    r = vat_perturbation(model, x, epsilon=0.8)
    torch.testing.assert_close(r.norm(dim=1), torch.full((6,), 0.8, dtype=torch.float64))
    rg = vat_perturbation(model, x, epsilon=0.8, norm="global")
    assert abs(float(rg.norm()) - 0.8) < 1e-12
    # K = 0: isotropic direction (mean ≈ 0, covariance ≈ ε²/d · I); statistical, 4000 samples
    xs = torch.randn(4000, 3, dtype=torch.float64)
    r0 = vat_perturbation(
        model, xs, epsilon=1.0, power_iterations=0, generator=torch.Generator().manual_seed(1)
    )
    assert float(r0.mean(0).abs().max()) < 0.05
    cov = r0.T @ r0 / 4000
    torch.testing.assert_close(cov, torch.eye(3, dtype=torch.float64) / 3, atol=0.03, rtol=0)


def test_lds_nonnegative_and_zero_for_constant_model():
    model = mlp(seed=4)
    x = torch.randn(8, 4, dtype=torch.float64)
    gen = torch.Generator()
    per = vat_loss(model, x, epsilon=2.0, reduction="none", generator=gen.manual_seed(0))
    assert per.shape == (8,) and bool((per >= 0).all())
    torch.testing.assert_close(
        vat_loss(model, x, epsilon=2.0, reduction="sum", generator=gen.manual_seed(0)), per.sum()
    )

    class Const(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Parameter(torch.randn(3, dtype=torch.float64))

        def forward(self, x):
            return self.b.expand(x.shape[0], 3) + 0.0 * x.sum(1, keepdim=True)

    assert float(vat_loss(Const(), x, epsilon=3.0)) == 0.0


def test_grad_through_target():
    model = mlp(seed=5)
    x = torch.randn(4, 4, dtype=torch.float64)
    gen = torch.Generator()
    a = copy.deepcopy(model)
    vat_loss(a, x, a(x), epsilon=1.0, generator=gen.manual_seed(0)).backward()
    b = copy.deepcopy(model)
    lb = vat_loss(b, x, b(x), epsilon=1.0, grad_through_target=True, generator=gen.manual_seed(0))
    lb.backward()
    # same value; the extra θ-gradient through the clean prediction is ∇_θ of KL(p_θ ‖ sg q) (written out)
    c = copy.deepcopy(model)
    r = vat_perturbation(c, x, c(x).detach(), epsilon=1.0, generator=gen.manual_seed(0))
    q = c(x + r).detach()
    kl_rows(c(x), q).mean().backward()
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad + pc.grad)


class BNModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 6)
        self.bn = nn.BatchNorm1d(6)
        self.fc = nn.Linear(6, 3)
        self.double()

    def forward(self, ids):
        return self.fc(torch.tanh(self.bn(self.emb(ids).mean(1))))


def test_batchnorm_statistics_frozen():
    torch.manual_seed(0)
    model = BNModel()
    ids = torch.randint(0, 20, (8, 5))
    bn_state = copy.deepcopy(model.bn.state_dict())
    x = model.emb(ids).mean(1).detach()
    head = nn.Sequential(model.bn, nn.Tanh(), model.fc)
    with torch.no_grad():
        logits = head(x)  # this pass updates the statistics once
    once = copy.deepcopy(model.bn.state_dict())
    vat_loss(head, x, logits, epsilon=1.0, power_iterations=2)
    for k, v in model.bn.state_dict().items():
        assert torch.equal(v, once[k]), k
    # VAT.step: only the clean pass updates the statistics
    model.bn.load_state_dict(bn_state)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        ref(ids)
    VAT(model.emb, epsilon=1.0, power_iterations=2).step(lambda: model(ids))
    for k, v in model.bn.state_dict().items():
        assert torch.equal(v, ref.bn.state_dict()[k]), k
    with freeze_bn_stats(model):
        model(ids)
    for k, v in model.bn.state_dict().items():
        assert torch.equal(v, ref.bn.state_dict()[k]), k
    assert model.bn.track_running_stats


class TokModel(nn.Module):
    def __init__(self, dtype=torch.float64):
        super().__init__()
        self.emb = nn.Embedding(20, 6)
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 3)
        self.to(dtype)

    def head(self, e):
        return self.fc2(torch.tanh(self.fc1(e)).mean(1))

    def forward(self, ids):
        return self.head(self.emb(ids))


@pytest.mark.parametrize("labeled", [False, True])
def test_vat_step_matches_hand_reference(labeled):
    torch.manual_seed(0)
    model = TokModel()
    ids, y = torch.randint(0, 20, (4, 5)), torch.randint(0, 3, (4,))
    eps, xi, alpha = 0.9, 1e-6, 0.5
    ref = copy.deepcopy(model)
    torch.manual_seed(42)
    e = ref.emb(ids)
    logits = ref.head(e)
    p = logits.detach()
    d = torch.randn(e.shape, dtype=torch.float64)
    d = (xi * per_sample_unit(d)).requires_grad_(True)
    (g,) = torch.autograd.grad(kl_rows(p, ref.head(e.detach() + d)).mean(), d)
    r = eps * per_sample_unit(g)
    total = alpha * kl_rows(p, ref.head(ref.emb(ids) + r)).mean()
    if labeled:
        total = total + F.cross_entropy(logits, y)
    total.backward()

    vat = VAT(model.emb, epsilon=eps, xi=xi, alpha=alpha)

    def closure():
        out = model(ids)
        return (F.cross_entropy(out, y), out) if labeled else out

    torch.manual_seed(42)
    w0 = model.emb.weight.detach().clone()
    value = vat.step(closure)
    torch.testing.assert_close(value, total.detach())
    torch.testing.assert_close(vat.last_perturbation[0], r)
    for (n, a), b in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12, msg=n)
    assert torch.equal(model.emb.weight, w0)
    # the RNG moves on: the next step starts from a new random direction
    vat.step(closure)
    assert not torch.equal(vat.last_perturbation[0], r)


def test_vat_autocast_power_iteration_in_float32():
    torch.manual_seed(1)
    model = TokModel(torch.float32)
    ids = torch.randint(0, 20, (4, 5))
    vat = VAT(model.emb, epsilon=1.0, xi=1e-3)
    torch.manual_seed(3)
    vat.step(lambda: model(ids))
    r32 = vat.last_perturbation[0]
    model.zero_grad()
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        vat.step(lambda: model(ids))
    torch.testing.assert_close(vat.last_perturbation[0], r32)  # same fp32 power iteration
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.warns(RuntimeWarning, match="xi"):
        VAT(model.emb, xi=1e-30).step(lambda: model(ids))


def _tiny_bert():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        num_labels=2,
    )
    torch.manual_seed(0)
    return (
        transformers.BertForSequenceClassification(cfg),
        torch.randint(1, 100, (3, 7)),
        torch.tensor([0, 1, 1]),
    )


@pytest.mark.parametrize("mode", ["output", "matrix"])
def test_vat_on_bert(mode):
    model, ids, labels = _tiny_bert()
    emb = model.get_input_embeddings()
    w0 = emb.weight.detach().clone()
    vat = VAT(emb, epsilon=1.0, xi=10.0 if mode == "matrix" else 1e-6, mode=mode)
    value = vat.step(lambda: model(input_ids=ids, labels=labels))  # HF output: .loss and .logits
    assert torch.isfinite(value)
    assert torch.equal(emb.weight, w0)
    r = vat.last_perturbation[0]
    if mode == "matrix":
        assert abs(float(r.norm()) - 1.0) < 1e-5
    else:
        torch.testing.assert_close(r.flatten(1).norm(dim=1), torch.ones(3), rtol=1e-5, atol=0)
    assert vat.last_lds is not None and float(vat.last_lds) >= 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bad_inputs():
    model = TokModel()
    ids = torch.randint(0, 20, (2, 3))
    with pytest.raises(ValueError, match="'epsilon'"):
        VAT(model.emb, epsilon=-1.0)
    with pytest.raises(ValueError, match="'xi'"):
        VAT(model.emb, xi=0.0)
    with pytest.raises(ValueError, match="'power_iterations'"):
        VAT(model.emb, power_iterations=-1)
    with pytest.raises(ValueError, match="'norm'"):
        VAT(model.emb, norm="l1")
    with pytest.raises(ValueError, match="'grad_through_target'"):
        VAT(model.emb, mode="matrix", grad_through_target=True)
    with pytest.raises(ValueError, match="'embedding'"):
        VAT(nn.ReLU(), mode="matrix")
    with pytest.raises(ValueError, match="'closure'"):
        VAT(model.emb).step(lambda: model(ids).sum())
    with pytest.raises(ValueError, match="'logits'"):
        vat_loss(mlp(), torch.randn(2, 4, dtype=torch.float64), grad_through_target=True)
    with pytest.raises(ValueError, match="'reduction'"):
        vat_loss(mlp(), torch.randn(2, 4, dtype=torch.float64), reduction="avg")
