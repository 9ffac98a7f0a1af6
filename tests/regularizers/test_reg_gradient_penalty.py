"""Input- and parameter-gradient penalties: golden values, FD ≈ double backprop, identities, errors."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainwell.regularizers import (
    FastGradientPenalty,
    ParameterGradientPenalty,
    capture_embedding_output,
    gradient_penalty,
    parameter_gradient_penalty,
)

torch.set_num_threads(1)
V, D, C = 20, 6, 3


class TokModel(nn.Module):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.fc1 = nn.Linear(D, 8)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(8, C)
        self.double()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(torch.tanh(self.fc1(self.emb(ids))).mean(1)))


def make(seed: int = 0, dropout: float = 0.0):
    torch.manual_seed(seed)
    return TokModel(dropout), torch.randint(0, V, (4, 5)), torch.randint(0, C, (4,))


def flat_grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_gradient_penalty_golden_linear_mse():
    """L = mean_b ‖W x_b + c − y_b‖² ⇒ ∇_{x_b} L = (2/B)·Wᵀ(W x_b + c − y_b), written out here."""
    torch.manual_seed(0)
    B, d, k = 5, 4, 3
    W = torch.randn(k, d, dtype=torch.float64, requires_grad=True)
    c = torch.randn(k, dtype=torch.float64)
    x = torch.randn(B, d, dtype=torch.float64, requires_grad=True)
    y = torch.randn(B, k, dtype=torch.float64)
    per = ((x @ W.T + c - y) ** 2).sum(1)
    loss = per.mean()
    g = (2.0 / B) * (x @ W.T + c - y) @ W
    post = float(g.detach().pow(2).sum())
    pen = gradient_penalty(loss, x, epsilon=0.6)
    torch.testing.assert_close(pen, torch.tensor(0.3 * post, dtype=torch.float64))
    # per_sample: exactly B × the post-style penalty, from the mean or from the per-sample losses
    ps_mean = gradient_penalty(loss, x, epsilon=0.6, per_sample=True)
    ps_vec = gradient_penalty(per, x, epsilon=0.6, per_sample=True)
    torch.testing.assert_close(ps_mean, B * pen)
    torch.testing.assert_close(ps_vec, B * pen)
    assert float(gradient_penalty(loss, x, epsilon=0.0)) == 0.0
    # differentiable: gradcheck of the penalty as a function of W (double backprop inside)
    def pen_of_w(w):
        xx = x.detach().requires_grad_(True)
        return gradient_penalty((((xx @ w.T + c - y) ** 2).sum(1)).mean(), xx, epsilon=0.6)

    assert torch.autograd.gradcheck(pen_of_w, (W,))


def test_gradient_penalty_scaler_matches_unscaled():
    torch.manual_seed(1)
    x = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(4, 2, requires_grad=True)
    loss = torch.tanh(x @ w).pow(2).mean()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    a = gradient_penalty(loss, x, 1.0, scaler=scaler)
    b = gradient_penalty(loss, x, 1.0)
    torch.testing.assert_close(a, b)


def test_gradient_penalty_bf16_autocast_is_float32_and_close():
    model, ids, y = make(12)
    model.float()
    with capture_embedding_output(model.emb) as outs:
        loss = F.cross_entropy(model(ids), y)
    ref = gradient_penalty(loss, outs[0], 1.0)
    with capture_embedding_output(model.emb) as outs, torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(ids), y)
        pen = gradient_penalty(loss, outs[0], 1.0)
    assert pen.dtype == torch.float32 and torch.isfinite(pen)
    torch.testing.assert_close(pen, ref, rtol=0.1, atol=0)
    pen.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def gp_exact_grads(model, ids, y, eps, per_sample=False):
    m = copy.deepcopy(model)
    with capture_embedding_output(m.emb) as outs:
        loss = F.cross_entropy(m(ids), y)
    (loss + gradient_penalty(loss, outs[0], eps, per_sample=per_sample)).backward()
    return flat_grads(m)


@pytest.mark.parametrize("per_sample", [False, True])
def test_fast_gradient_penalty_is_gp_to_second_order(per_sample):
    """FGM with Δx = ε∇_x L: ‖∇_θ L(x+Δx) − ∇_θ(L + ε/2‖∇_x L‖²)‖ = O(ε²): halving ε quarters the gap."""
    model, ids, y = make(2)
    gaps = []
    for eps in (1e-2, 5e-3, 2.5e-3):
        m = copy.deepcopy(model)
        FastGradientPenalty(m.emb, epsilon=eps, per_sample=per_sample).step(
            lambda m=m: F.cross_entropy(m(ids), y)
        )
        gaps.append(float((flat_grads(m) - gp_exact_grads(model, ids, y, eps, per_sample)).norm()))
    for a, b in itertools.pairwise(gaps):
        assert 3.3 < a / b < 4.7, gaps


def test_fast_gradient_penalty_replays_dropout():
    """With dropout, both passes use the same masks: the O(ε²) agreement survives train mode."""
    model, ids, y = make(3, dropout=0.3)
    eps = 2e-3
    torch.manual_seed(11)
    m = copy.deepcopy(model)
    FastGradientPenalty(m.emb, epsilon=eps).step(lambda: F.cross_entropy(m(ids), y))
    torch.manual_seed(11)
    ref = gp_exact_grads(model, ids, y, eps)
    assert float((flat_grads(m) - ref).norm()) < 1e-5 * float(ref.norm()) + 1e-6


def _tiny_bert(attn: str):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        num_labels=3, attn_implementation=attn,
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(cfg).double().eval()
    return model, torch.randint(1, 100, (3, 7)), torch.tensor([0, 2, 1])


def test_bert_fast_gradient_penalty_matches_exact_gp():
    """Post's GP on BERT's token-embedding output: FD version vs double backprop (eager attention)."""
    model, ids, labels = _tiny_bert("eager")
    emb_of = lambda m: m.get_input_embeddings()  # noqa: E731

    def flat(m):
        return torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])

    gaps = []
    for eps in (1e-1, 5e-2, 2.5e-2):
        m = copy.deepcopy(model)
        with capture_embedding_output(emb_of(m)) as outs:
            loss = m(input_ids=ids, labels=labels).loss
        (loss + gradient_penalty(loss, outs[0], eps)).backward()
        f = copy.deepcopy(model)
        FastGradientPenalty(emb_of(f), eps).step(lambda f=f: f(input_ids=ids, labels=labels).loss)
        gaps.append(float((flat(f) - flat(m)).norm()))
    for a, b in itertools.pairwise(gaps):
        assert 3.3 < a / b < 4.7, gaps
    # the fused SDPA kernel has no double backward on CPU; the finite-difference form does not need one
    sdpa, ids, labels = _tiny_bert("sdpa")
    w0 = emb_of(sdpa).weight.detach().clone()
    FastGradientPenalty(emb_of(sdpa), 0.1).step(lambda: sdpa(input_ids=ids, labels=labels).loss)
    assert torch.equal(emb_of(sdpa).weight, w0)
    assert all(torch.isfinite(p.grad).all() for p in sdpa.parameters() if p.grad is not None)


def test_capture_embedding_output_frozen():
    model, ids, y = make(4)
    model.emb.weight.requires_grad_(False)
    with capture_embedding_output(model.emb) as outs:
        loss = F.cross_entropy(model(ids), y)
    assert len(outs) == 1 and outs[0].requires_grad
    pen = gradient_penalty(loss, outs[0], 1.0)
    pen.backward()
    assert model.emb.weight.grad is None and model.fc1.weight.grad is not None


# ------------------------------------------------------------------------------- parameter penalty


def test_parameter_gradient_penalty_quadratic_golden():
    """L = ½θᵀAθ − bᵀθ: ∇L = Aθ − b, penalty β/2‖Aθ − b‖², its gradient βA(Aθ − b)."""
    torch.manual_seed(5)
    M = torch.randn(4, 4, dtype=torch.float64)
    A = M @ M.T + torch.eye(4, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    theta = torch.randn(4, dtype=torch.float64, requires_grad=True)
    loss = 0.5 * theta @ A @ theta - b @ theta
    pen = parameter_gradient_penalty(loss, [theta], beta=0.7)
    r = A @ theta.detach() - b
    torch.testing.assert_close(pen, 0.35 * r.pow(2).sum())
    pen.backward()
    torch.testing.assert_close(theta.grad, 0.7 * A @ r)


def test_parameter_gradient_penalty_fd_matches_double_backprop():
    """Central-difference Hg → double-backprop Hg as ξ → 0 (error O(ξ²) here, O(ξ) one-sided)."""
    model, ids, y = make(6)

    def exact():
        m = copy.deepcopy(model)
        loss = F.cross_entropy(m(ids), y)
        (loss + parameter_gradient_penalty(loss, m, beta=0.5)).backward()
        return flat_grads(m)

    ref = exact()
    errs = []
    for xi in (4e-2, 2e-2, 1e-2):
        m = copy.deepcopy(model)
        saved = [p.detach().clone() for p in m.parameters()]
        ParameterGradientPenalty(m, beta=0.5, xi=xi).step(lambda m=m: F.cross_entropy(m(ids), y))
        assert all(torch.equal(p, s) for p, s in zip(m.parameters(), saved))  # bit-exact restore
        errs.append(float((flat_grads(m) - ref).norm()))
    for a, b in itertools.pairwise(errs):
        assert 3.0 < a / b < 5.0, errs
    # quadratic loss: central differences are exact
    torch.manual_seed(7)
    A = torch.randn(3, 3, dtype=torch.float64)
    A = A @ A.T
    theta = nn.Parameter(torch.randn(3, dtype=torch.float64))
    ParameterGradientPenalty([theta], beta=0.3, xi=0.1).step(lambda: 0.5 * theta @ A @ theta)
    g = A @ theta.detach()
    torch.testing.assert_close(theta.grad, g + 0.3 * A @ g)


def test_parameter_gradient_penalty_dropout_and_beta_zero():
    model, ids, y = make(8, dropout=0.3)
    torch.manual_seed(3)
    m = copy.deepcopy(model)
    ParameterGradientPenalty(m, beta=0.5, xi=1e-4).step(lambda: F.cross_entropy(m(ids), y))
    torch.manual_seed(3)
    r = copy.deepcopy(model)
    loss = F.cross_entropy(r(ids), y)
    (loss + parameter_gradient_penalty(loss, r, beta=0.5)).backward()
    torch.testing.assert_close(flat_grads(m), flat_grads(r), rtol=1e-5, atol=1e-7)
    m0, p0 = copy.deepcopy(model), copy.deepcopy(model)
    torch.manual_seed(4)
    ParameterGradientPenalty(m0, beta=0.0).step(lambda: F.cross_entropy(m0(ids), y))
    torch.manual_seed(4)
    F.cross_entropy(p0(ids), y).backward()
    assert torch.equal(flat_grads(m0), flat_grads(p0))


def test_bad_inputs():
    model, ids, y = make()
    x = torch.randn(3, 2, requires_grad=True)
    loss = x.pow(2).sum()
    with pytest.raises(ValueError, match="'epsilon'"):
        gradient_penalty(loss, x, epsilon=-1.0)
    with pytest.raises(ValueError, match="'loss'"):
        gradient_penalty(x.pow(2).sum(1), x)
    with pytest.raises(ValueError, match="'loss'"):
        gradient_penalty(x.pow(2).sum(0), x, per_sample=True)
    with pytest.raises(ValueError, match="'inputs'"):
        gradient_penalty(loss, torch.randn(3, 2))
    with pytest.raises(ValueError, match="'beta'"):
        parameter_gradient_penalty(loss, [x], beta=-1.0)
    with pytest.raises(ValueError, match="'xi'"):
        ParameterGradientPenalty(model, xi=0.0)
    with pytest.raises(ValueError, match="'epsilon'"):
        FastGradientPenalty(model.emb, epsilon=-2.0)
    with pytest.raises(ValueError, match="'closure'"):
        FastGradientPenalty(model.emb).step(lambda: F.cross_entropy(model(ids), y, reduction="none"))
    with pytest.raises(ValueError, match="'closure'"):
        ParameterGradientPenalty(model).step(lambda: F.cross_entropy(model(ids), y, reduction="none"))
