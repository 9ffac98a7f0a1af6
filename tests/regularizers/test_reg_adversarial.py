"""FGM / PGD: hand-computed references, bit-exact restore, ε = 0, AMP, accumulation, BERT, errors."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainwell.regularizers import FGM, PGD, FastGradientPenalty

torch.set_num_threads(1)

V, D, C = 20, 6, 3


class TokModel(nn.Module):
    """Embedding → tanh MLP → mean pool → logits (smooth, samples independent)."""

    def __init__(self, dtype: torch.dtype = torch.float64, sparse: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, D, sparse=sparse)
        self.fc1 = nn.Linear(D, 8)
        self.fc2 = nn.Linear(8, C)
        self.to(dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.fc1(self.emb(ids))).mean(1)
        return self.fc2(h)


def make(seed: int = 0, dtype: torch.dtype = torch.float64, **kw):
    torch.manual_seed(seed)
    model = TokModel(dtype, **kw)
    ids = torch.randint(0, V - 5, (4, 5))  # rows V-5.. never used
    y = torch.randint(0, C, (4,))
    return model, ids, y


def closure_for(model, ids, y):
    return lambda: F.cross_entropy(model(ids), y)


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def reference_fgm(model, ids, y, eps, mode, include_clean=False, normalize=True):
    """FGM written out by hand on a deep copy: direction, perturbed model, gradients."""
    m = copy.deepcopy(model)
    for p in m.parameters():
        p.grad = None
    loss = F.cross_entropy(m(ids), y)
    if mode == "matrix":
        (g,) = torch.autograd.grad(loss, m.emb.weight)
        delta = eps * g / (g.norm() + 1e-8) if normalize else eps * g
        ref = copy.deepcopy(m)
        with torch.no_grad():
            ref.emb.weight += delta
        F.cross_entropy(ref(ids), y).backward()
        out = grads(ref)
    else:
        e = m.emb(ids)
        e = e if e.requires_grad else e.detach().requires_grad_(True)
        logits = m.fc2(torch.tanh(m.fc1(e)).mean(1))
        (g,) = torch.autograd.grad(F.cross_entropy(logits, y), e)
        n = g.flatten(1).norm(dim=1).view(-1, 1, 1)
        delta = eps * g / n if normalize else eps * g  # exact per-sample unit vectors
        e2 = m.emb(ids) + delta
        F.cross_entropy(m.fc2(torch.tanh(m.fc1(e2)).mean(1)), y).backward()
        out = grads(m)
    if include_clean:
        c = copy.deepcopy(model)
        for p in c.parameters():
            p.grad = None
        F.cross_entropy(c(ids), y).backward()
        clean = grads(c)
        out = {k: v + clean[k] for k, v in out.items()}
    return out, delta


@pytest.mark.parametrize("mode", ["matrix", "output"])
@pytest.mark.parametrize("include_clean", [False, True])
def test_fgm_matches_hand_reference(mode, include_clean):
    model, ids, y = make()
    expected, delta = reference_fgm(model, ids, y, 0.7, mode, include_clean)
    w0 = model.emb.weight.detach().clone()
    fgm = FGM(model.emb, epsilon=0.7, mode=mode, include_clean_loss=include_clean)
    loss = fgm.step(closure_for(model, ids, y))
    assert not loss.requires_grad
    torch.testing.assert_close(loss, F.cross_entropy(model(ids), y).detach())
    got = grads(model)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-10, atol=1e-12)
    assert torch.equal(model.emb.weight, w0)  # bit-identical restore
    torch.testing.assert_close(fgm.last_perturbation[0].to(delta.dtype), delta)


def test_perturbation_norms_and_absent_rows():
    model, ids, y = make()
    fgm = FGM(model.emb, epsilon=0.5)
    fgm.step(closure_for(model, ids, y))
    delta = fgm.last_perturbation[0]
    assert abs(float(delta.norm()) - 0.5) < 1e-7
    assert torch.all(delta[V - 5 :] == 0)  # rows of tokens absent from the batch never move
    fgm_o = FGM(model.emb, epsilon=0.5, mode="output")
    fgm_o.step(closure_for(model, ids, y))
    norms = fgm_o.last_perturbation[0].flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, 0.5), rtol=1e-12, atol=0)


@pytest.mark.parametrize("cls", [FGM, PGD, FastGradientPenalty])
def test_epsilon_zero_is_plain_step(cls):
    model, ids, y = make()
    plain = copy.deepcopy(model)
    F.cross_entropy(plain(ids), y).backward()
    cls(model.emb, epsilon=0.0).step(closure_for(model, ids, y))
    for (n, p), q in zip(model.named_parameters(), plain.parameters()):
        assert torch.equal(p.grad, q.grad), n


def test_fgm_first_order_equals_norm_penalty():
    """Normalized FGM ≈ ∇(L + ε‖∇_E L‖_F): the gap is O(ε²) (halving ε quarters it)."""
    model, ids, y = make(1)

    def exact(eps):
        m = copy.deepcopy(model)
        loss = F.cross_entropy(m(ids), y)
        (g,) = torch.autograd.grad(loss, m.emb.weight, create_graph=True)
        (loss + eps * g.norm()).backward()
        return torch.cat([p.grad.flatten() for p in m.parameters()])

    gaps = []
    for eps in (1e-2, 5e-3, 2.5e-3):
        m = copy.deepcopy(model)
        FGM(m.emb, epsilon=eps).step(closure_for(m, ids, y))
        got = torch.cat([p.grad.flatten() for p in m.parameters()])
        gaps.append(float((got - exact(eps)).norm()))
    for a, b in itertools.pairwise(gaps):
        assert 3.0 < a / b < 5.0, gaps


def test_pgd_one_step_is_fgm_and_projection():
    model, ids, y = make(2)
    m1, m2 = copy.deepcopy(model), copy.deepcopy(model)
    FGM(m1.emb, epsilon=0.3).step(closure_for(m1, ids, y))
    PGD(m2.emb, epsilon=0.3, alpha=0.3, steps=1).step(closure_for(m2, ids, y))
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-14)
    for mode in ("matrix", "output"):
        m = copy.deepcopy(model)
        pgd = PGD(m.emb, epsilon=0.4, alpha=0.3, steps=4, mode=mode)
        pgd.step(closure_for(m, ids, y))
        r = pgd.last_perturbation[0]
        n = r.norm() if mode == "matrix" else r.flatten(1).norm(dim=1)
        assert torch.all(n <= 0.4 + 1e-9)
        assert torch.all(n >= 0.4 - 1e-9)  # 4 steps of 0.3 leave the ball, so the projection is active


def test_pgd_matches_hand_reference():
    model, ids, y = make(3)
    eps, alpha = 0.5, 0.3
    m = copy.deepcopy(model)
    w0 = m.emb.weight.detach().clone()

    def grad_at(r):
        with torch.no_grad():
            m.emb.weight.copy_(w0 + r)
        (g,) = torch.autograd.grad(F.cross_entropy(m(ids), y), m.emb.weight)
        return g

    r = torch.zeros_like(w0)
    g = grad_at(r)
    for k in range(3):
        r = r + alpha * g / (g.norm() + 1e-8)
        if r.norm() > eps:
            r = eps * r / r.norm()
        if k < 2:
            g = grad_at(r)
    with torch.no_grad():
        m.emb.weight.copy_(w0 + r)
    F.cross_entropy(m(ids), y).backward()
    pgd = PGD(model.emb, epsilon=eps, alpha=alpha, steps=3)
    pgd.step(closure_for(model, ids, y))
    for (n, p), q in zip(model.named_parameters(), m.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=n)
    assert torch.equal(model.emb.weight, w0)


@pytest.mark.parametrize("cls", [FGM, PGD])
def test_gradient_accumulation_direction_is_micro_batch_only(cls):
    model, ids, y = make(4)
    torch.manual_seed(9)
    ids2, y2 = torch.randint(0, V - 5, (3, 5)), torch.randint(0, C, (3,))
    # reference: each micro-batch alone, gradients summed
    refs = []
    for i, t in ((ids, y), (ids2, y2)):
        m = copy.deepcopy(model)
        cls(m.emb, epsilon=0.5).step(closure_for(m, i, t))
        refs.append(grads(m))
    reg = cls(model.emb, epsilon=0.5)
    reg.step(closure_for(model, ids, y))
    # poison the embedding gradient: a stale .grad must not steer the second direction
    model.emb.weight.grad += 1e3 * torch.randn_like(model.emb.weight)
    poison = model.emb.weight.grad - refs[0]["emb.weight"]
    reg.step(closure_for(model, ids2, y2))
    for n, p in model.named_parameters():
        expected = refs[0][n] + refs[1][n] + (poison if n == "emb.weight" else 0)
        torch.testing.assert_close(p.grad, expected, rtol=1e-9, atol=1e-9, msg=n)


def test_grad_scaler_and_backward_hook():
    model, ids, y = make(5, dtype=torch.float32)
    expected, _ = reference_fgm(model, ids, y, 0.5, "matrix")
    # a manual constant scale through the backward hook: grads are exactly 128x, direction unchanged
    m = copy.deepcopy(model)
    FGM(m.emb, epsilon=0.5).step(closure_for(m, ids, y), backward=lambda loss: (128.0 * loss).backward())
    for (n, p) in m.named_parameters():
        torch.testing.assert_close(p.grad / 128.0, expected[n], rtol=1e-5, atol=1e-6, msg=n)
    # the CPU GradScaler: scaled grads, unscale_ recovers the reference; include_clean uses the hook path
    for include_clean in (False, True):
        exp, _ = reference_fgm(model, ids, y, 0.5, "matrix", include_clean)
        m = copy.deepcopy(model)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        FGM(m.emb, epsilon=0.5, include_clean_loss=include_clean).step(closure_for(m, ids, y), scaler=scaler)
        scaler.unscale_(opt)
        for (n, p) in m.named_parameters():
            torch.testing.assert_close(p.grad, exp[n], rtol=1e-5, atol=1e-6, msg=n)


def test_grad_scaler_overflow_skips_perturbation_and_keeps_weights():
    model, ids, y = make(6, dtype=torch.float32)
    w0 = model.emb.weight.detach().clone()
    scaler = torch.amp.GradScaler("cpu", init_scale=3.0e38)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fgm = FGM(model.emb, epsilon=0.5)
    fgm.step(lambda: 50.0 * F.cross_entropy(model(ids), y), scaler=scaler)
    assert fgm.perturbed is False
    assert torch.equal(model.emb.weight, w0)
    scaler.step(opt)  # the scaler sees the inf gradients and skips the update
    scaler.update()
    assert torch.equal(model.emb.weight, w0)
    assert scaler.get_scale() < 3.0e38


@pytest.mark.parametrize("mode", ["matrix", "output"])
def test_bf16_autocast_and_bf16_weights(mode):
    model, ids, y = make(7, dtype=torch.float32)
    expected, _ = reference_fgm(model.double(), ids, y, 0.5, mode)
    model.float()
    w0 = model.emb.weight.detach().clone()

    def closure():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return F.cross_entropy(model(ids), y)

    FGM(model.emb, epsilon=0.5, mode=mode).step(closure)
    assert torch.equal(model.emb.weight, w0)
    for n, p in model.named_parameters():
        assert torch.isfinite(p.grad).all()
        cos = F.cosine_similarity(p.grad.double().flatten(), expected[n].flatten(), dim=0)
        assert cos > 0.97, (n, float(cos))
    # bf16 weights: restore is still bit-exact (copy, never subtract)
    mb, ids_b, y_b = make(8, dtype=torch.bfloat16)
    wb = mb.emb.weight.detach().clone()
    PGD(mb.emb, epsilon=0.5, mode=mode).step(lambda: F.cross_entropy(mb(ids_b).float(), y_b))
    assert torch.equal(mb.emb.weight, wb)


def test_sparse_embedding():
    model, ids, y = make(9, sparse=True)
    dense_model = copy.deepcopy(model)
    dense_model.emb.sparse = False
    expected, _ = reference_fgm(dense_model, ids, y, 0.5, "matrix")
    FGM(model.emb, epsilon=0.5).step(closure_for(model, ids, y))
    grad = model.emb.weight.grad.to_dense()
    torch.testing.assert_close(grad, expected["emb.weight"], rtol=1e-10, atol=1e-12)


def test_frozen_embedding_output_mode():
    model, ids, y = make(10)
    model.emb.weight.requires_grad_(False)
    expected, _ = reference_fgm(model, ids, y, 0.5, "output")
    FGM(model.emb, epsilon=0.5, mode="output").step(closure_for(model, ids, y))
    assert model.emb.weight.grad is None
    torch.testing.assert_close(model.fc1.weight.grad, expected["fc1.weight"], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="'embedding'"):
        FGM(model.emb, epsilon=0.5).step(closure_for(model, ids, y))


def _tiny_bert():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        num_labels=3,
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(cfg).double().eval()  # eval: no dropout
    ids = torch.randint(1, 100, (3, 7))
    labels = torch.tensor([0, 2, 1])
    return model, ids, labels


@pytest.mark.parametrize("mode", ["matrix", "output"])
def test_bert_fgm_matches_reference(mode):
    model, ids, labels = _tiny_bert()
    emb = model.get_input_embeddings()
    ref = copy.deepcopy(model)
    ref_emb = ref.get_input_embeddings()
    if mode == "matrix":
        (g,) = torch.autograd.grad(ref(input_ids=ids, labels=labels).loss, ref_emb.weight)
        with torch.no_grad():
            ref_emb.weight += 0.5 * g / (g.norm() + 1e-8)
        ref(input_ids=ids, labels=labels).loss.backward()
    else:
        e = ref_emb(ids).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(ref(inputs_embeds=e, labels=labels).loss, e)
        delta = 0.5 * g / g.flatten(1).norm(dim=1).view(-1, 1, 1)
        ref(inputs_embeds=ref_emb(ids) + delta, labels=labels).loss.backward()
    w0 = emb.weight.detach().clone()
    FGM(emb, epsilon=0.5, mode=mode).step(lambda: model(input_ids=ids, labels=labels).loss)
    assert torch.equal(emb.weight, w0)
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        if q.grad is None:
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, n
            continue
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-8, atol=1e-10, msg=n)


def test_bert_pgd_train_mode_runs_and_restores():
    model, ids, labels = _tiny_bert()
    model.float().train()
    emb = model.get_input_embeddings()
    w0 = emb.weight.detach().clone()
    loss = PGD(emb, epsilon=0.5, alpha=0.2, steps=2).step(lambda: model(input_ids=ids, labels=labels).loss)
    assert torch.isfinite(loss)
    assert torch.equal(emb.weight, w0)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bad_inputs():
    model, ids, y = make()
    with pytest.raises(ValueError, match="'embedding'"):
        FGM(nn.ReLU())
    with pytest.raises(ValueError, match="'embedding'"):
        FGM(model)  # the whole model is not the embedding
    with pytest.raises(TypeError, match="'embedding'"):
        FGM("word_embeddings")
    with pytest.raises(ValueError, match="'epsilon'"):
        FGM(model.emb, epsilon=-0.1)
    with pytest.raises(ValueError, match="'mode'"):
        FGM(model.emb, mode="rows")
    with pytest.raises(ValueError, match="'alpha'"):
        PGD(model.emb, alpha=0.0)
    with pytest.raises(ValueError, match="'steps'"):
        PGD(model.emb, steps=0)
    with pytest.raises(TypeError, match="'ddp_model'"):
        FGM(model.emb, ddp_model=model)
    with pytest.raises(ValueError, match="'closure'"):
        FGM(model.emb).step(lambda: F.cross_entropy(model(ids), y, reduction="none"))
    with pytest.raises(TypeError, match="'closure'"):
        FGM(model.emb).step(lambda: 1.0)
    with pytest.raises(TypeError, match="'closure'"):
        FGM(model.emb).step(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'backward'"):
        FGM(model.emb).step(closure_for(model, ids, y), backward=3)  # type: ignore[arg-type]
    other = nn.Embedding(V, D).double()
    with pytest.raises(ValueError, match="'embedding'"):
        FGM(other, mode="output").step(closure_for(model, ids, y))  # never called by the closure
    w0 = model.emb.weight.detach().clone()
    with pytest.raises(RuntimeError, match="boom"):

        def bad():
            if fgm.last_perturbation is None and calls.append(1) is None and len(calls) > 1:
                raise RuntimeError("boom")
            return F.cross_entropy(model(ids), y)

        calls: list[int] = []
        fgm = FGM(model.emb, epsilon=0.5)
        fgm.step(bad)
    assert torch.equal(model.emb.weight, w0)  # restored even when the attack pass raises
