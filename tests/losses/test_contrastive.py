"""Tests for trainwell.losses.contrastive: InfoNCE and exact contrastive gradient accumulation (post 8471)."""

from __future__ import annotations

import functools
import math
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from trainwell.losses.contrastive import ContrastiveGradCache, InfoNCELoss, info_nce_loss

# ----------------------------------------------------------------------------------- references


def ref_info_nce_rows(
    q: Tensor,
    k: Tensor,
    target: list[int],
    tau: float,
    mask_diagonal: bool = False,
    symmetric: bool = False,
    normalize: bool = False,
) -> list[float]:
    """Per-pair InfoNCE written with Python floats, one similarity at a time (float64)."""
    qs = q.double().tolist()
    ks = k.double().tolist()

    def unit(v: list[float]) -> list[float]:
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    if normalize:
        qs, ks = [unit(v) for v in qs], [unit(v) for v in ks]
    n, m = len(qs), len(ks)
    masked = {(i, i) for i in range(min(n, m))} if mask_diagonal else set()
    s = [[sum(a * b for a, b in zip(qs[i], ks[j])) / tau for j in range(m)] for i in range(n)]

    def ce(scores: list[float], pos: int) -> float:
        mx = max(scores)
        return mx + math.log(sum(math.exp(x - mx) for x in scores)) - scores[pos]

    rows = []
    for i in range(n):
        row = [s[i][j] for j in range(m) if (i, j) not in masked]
        cols = [j for j in range(m) if (i, j) not in masked]
        rows.append(ce(row, cols.index(target[i])))
    if not symmetric:
        return rows
    inv = {t: i for i, t in enumerate(target)}
    out = []
    for i in range(n):
        j = target[i]
        col = [s[r][j] for r in range(n) if (r, j) not in masked]
        rws = [r for r in range(n) if (r, j) not in masked]
        out.append(0.5 * (rows[i] + ce(col, rws.index(inv[j]))))
    return out


def rel_err(a: list[Tensor], b: list[Tensor]) -> float:
    va = torch.cat([t.reshape(-1).double() for t in a])
    vb = torch.cat([t.reshape(-1).double() for t in b])
    return float((va - vb).norm() / vb.norm())


def grads(module: nn.Module) -> list[Tensor]:
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in module.parameters()]


def scale_grad(loss_fn: InfoNCELoss) -> Tensor:
    """Gradient of a learnable temperature's ``log_scale``."""
    assert loss_fn.log_scale is not None and loss_fn.log_scale.grad is not None
    return loss_fn.log_scale.grad.detach().clone()


class Tower(nn.Module):
    """Small MLP encoder with L2-normalised output (optionally with dropout)."""

    def __init__(self, d_in: int = 6, d_out: int = 5, p: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, 12), nn.Dropout(p), nn.Tanh(), nn.Linear(12, d_out))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=-1)


NB = 10


def pair_target(n: int) -> Tensor:
    """SimCSE layout: rows 2i and 2i+1 are two views of one sentence."""
    return torch.arange(n) ^ 1


# ------------------------------------------------------------------------------ info_nce_loss


@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"mask_diagonal": True, "target": "pairs", "key": None},
        {"symmetric": True},
        {"symmetric": True, "mask_diagonal": True, "target": "pairs", "key": None},
        {"normalize": True, "temperature": 0.05},
        {"target": "perm", "temperature": 0.7},
        {"hard_negatives": True},
    ],
)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_info_nce_matches_reference(opts: dict, reduction: str) -> None:
    g = torch.Generator().manual_seed(1)
    n, d = 6, 4
    q = torch.randn(n, d, generator=g, dtype=torch.float64)
    m = 2 * n if opts.get("hard_negatives") else n
    k = torch.randn(m, d, generator=g, dtype=torch.float64)
    key = None if "key" in opts else k
    tgt = opts.get("target")
    if tgt == "pairs":
        target: Tensor | None = pair_target(n)
    elif tgt == "perm":
        target = torch.randperm(n, generator=g)
    else:
        target = None
    tau = opts.get("temperature", 0.1)
    out = info_nce_loss(
        q,
        key,
        target,
        temperature=tau,
        mask_diagonal=opts.get("mask_diagonal", False),
        symmetric=opts.get("symmetric", False),
        reduction=reduction,
        normalize=opts.get("normalize", False),
    )
    rows = ref_info_nce_rows(
        q,
        q if key is None else k,
        (target if target is not None else torch.arange(n)).tolist(),
        tau,
        opts.get("mask_diagonal", False),
        opts.get("symmetric", False),
        opts.get("normalize", False),
    )
    expected = torch.tensor(rows, dtype=torch.float64)
    if reduction == "mean":
        expected = expected.mean()
    elif reduction == "sum":
        expected = expected.sum()
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_info_nce_scale_equals_inverse_temperature_and_leading_dims() -> None:
    g = torch.Generator().manual_seed(2)
    q = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    k = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    a = info_nce_loss(q, k, temperature=0.2, reduction="none")
    b = info_nce_loss(q, k, scale=5.0, reduction="none")
    c = info_nce_loss(q, k, scale=torch.tensor(5.0, dtype=torch.float64), reduction="none")
    assert a.shape == (3, 5)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    for i in range(3):  # each leading slice is an independent batch
        rows = ref_info_nce_rows(q[i], k[i], list(range(5)), 0.2)
        torch.testing.assert_close(a[i], torch.tensor(rows, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert torch.allclose(info_nce_loss(q, k, temperature=0.2), a.mean())
    assert torch.allclose(info_nce_loss(q, k, temperature=0.2, reduction="sum"), a.sum())


def test_info_nce_gradcheck() -> None:
    g = torch.Generator().manual_seed(3)
    q = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([1, 0, 3, 2, 4])
    assert torch.autograd.gradcheck(
        lambda a, b, c: info_nce_loss(a, b, target, scale=c, symmetric=True, normalize=True), (q, k, s)
    )
    assert torch.autograd.gradcheck(
        lambda a: info_nce_loss(
            a, None, pair_target(4), mask_diagonal=True, temperature=0.5, reduction="none"
        ),
        (q[:4].detach().clone().requires_grad_(),),
    )


def test_info_nce_autocast_bf16_and_half_inputs() -> None:
    g = torch.Generator().manual_seed(4)
    q = torch.randn(16, 8, generator=g)
    k = torch.randn(16, 8, generator=g)
    ref = info_nce_loss(q, k, normalize=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lin = nn.Linear(8, 8)
        with torch.no_grad():
            lin.weight.copy_(torch.eye(8))
            lin.bias.zero_()
        qa, ka = lin(q), lin(k)
        assert qa.dtype == torch.bfloat16
        out = info_nce_loss(qa, ka, normalize=True)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    assert abs(out.item() - ref.item()) <= 1e-2 * abs(ref.item())
    out16 = info_nce_loss(q.half(), k.half(), normalize=True)
    assert out16.dtype == torch.float32
    assert abs(out16.item() - ref.item()) <= 1e-2 * abs(ref.item())


def test_info_nce_extreme_and_masked_inputs_are_finite() -> None:
    g = torch.Generator().manual_seed(5)
    q = (torch.randn(6, 4, generator=g) * 1e4).requires_grad_()
    out = info_nce_loss(q, None, pair_target(6), temperature=0.05, mask_diagonal=True)
    out.backward()
    assert torch.isfinite(out) and q.grad is not None and torch.isfinite(q.grad).all()
    # whatever sits on a masked diagonal does not matter
    k = torch.randn(6, 4, generator=g, dtype=torch.float64)
    k2 = k.clone()
    k2[2] = k[2] * 1e6
    q2 = k.clone()
    a = info_nce_loss(q2, k, pair_target(6), mask_diagonal=True, reduction="none")
    # only row 2 of key changes → rows whose scores involve key 2 (all but the masked row 2) change
    b = info_nce_loss(q2, k2, pair_target(6), mask_diagonal=True, reduction="none")
    assert torch.isfinite(b).all()
    assert not torch.equal(a, b)
    # batch of one with a single key: loss is exactly 0
    one = info_nce_loss(torch.randn(1, 3), torch.randn(1, 3))
    assert one.item() == 0.0


def test_info_nce_module_matches_functional_and_learnable_temperature() -> None:
    g = torch.Generator().manual_seed(6)
    q = torch.randn(7, 4, generator=g)
    k = torch.randn(7, 4, generator=g)
    mod = InfoNCELoss(0.1, symmetric=True, normalize=True)
    torch.testing.assert_close(
        mod(q, k), info_nce_loss(q, k, temperature=0.1, symmetric=True, normalize=True)
    )
    mod.temperature = 0.3  # hyperparameters are read at call time
    torch.testing.assert_close(
        mod(q, k), info_nce_loss(q, k, temperature=0.3, symmetric=True, normalize=True)
    )
    learn = InfoNCELoss(0.1, learnable_temperature=True)
    assert learn.log_scale is not None
    torch.testing.assert_close(learn(q, k), info_nce_loss(q, k, temperature=0.1), rtol=1e-6, atol=1e-6)
    learn(q, k).backward()
    assert scale_grad(learn).abs() > 0
    assert "learnable_temperature=True" in repr(learn)


def test_info_nce_compiles_without_graph_breaks() -> None:
    """Value checks are skipped while tracing, so the loss traces as one graph (fullgraph=True)."""
    g = torch.Generator().manual_seed(8)
    q = torch.randn(6, 4, generator=g, requires_grad=True)
    target = pair_target(6)

    def loss(x: Tensor) -> Tensor:
        return info_nce_loss(x, None, target, mask_diagonal=True, symmetric=True, normalize=True)

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    out = compiled(q)
    (gq,) = torch.autograd.grad(out, q)
    ref = loss(q)
    (gr,) = torch.autograd.grad(ref, q)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gq, gr)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 6), extra=st.integers(0, 3))
def test_info_nce_invariant_to_key_permutation(seed: int, n: int, extra: int) -> None:
    """Relabelling the keys (and the targets with them) leaves every row's loss unchanged."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 3, generator=g, dtype=torch.float64)
    k = torch.randn(n + extra, 3, generator=g, dtype=torch.float64)
    target = torch.randint(0, n + extra, (n,), generator=g)
    perm = torch.randperm(n + extra, generator=g)
    a = info_nce_loss(q, k, target, temperature=0.3, reduction="none")
    b = info_nce_loss(q, k[perm], torch.argsort(perm)[target], temperature=0.3, reduction="none")
    torch.testing.assert_close(a, b)
    assert (a >= 0).all()


@pytest.mark.parametrize(
    "call, exc, name",
    [
        (lambda q: info_nce_loss(q, q, temperature=0.0), ValueError, "'temperature'"),
        (lambda q: info_nce_loss(q, q, scale=-1.0), ValueError, "'scale'"),
        (lambda q: info_nce_loss(q, q, scale=torch.tensor([1.0, 2.0])), ValueError, "'scale'"),
        (lambda q: info_nce_loss(q, q, reduction="avg"), ValueError, "'reduction'"),
        (lambda q: info_nce_loss(q[0], q), ValueError, "'query'"),
        (lambda q: info_nce_loss(q, q[:, :2]), ValueError, "'key'"),
        (lambda q: info_nce_loss(q.long(), q), TypeError, "'query'"),
        (lambda q: info_nce_loss(q, q, torch.tensor([0, 1, 2, 9])), ValueError, "'target'"),
        (lambda q: info_nce_loss(q, q, torch.tensor([0, 1])), ValueError, "'target'"),
        (lambda q: info_nce_loss(q, q, torch.zeros(4)), TypeError, "'target'"),
        (lambda q: info_nce_loss(q, q[:2]), ValueError, "'target'"),
        (lambda q: info_nce_loss(q, None, mask_diagonal=True), ValueError, "'target'"),
        (lambda q: info_nce_loss(q, q, torch.tensor([0, 0, 1, 2]), symmetric=True), ValueError, "'target'"),
        (lambda q: info_nce_loss(q, torch.cat([q, q]), symmetric=True), ValueError, "'symmetric'"),
        (lambda q: info_nce_loss(q, q, mask_diagonal=1), TypeError, "'mask_diagonal'"),  # type: ignore[arg-type]
        (lambda q: InfoNCELoss(temperature=-0.1), ValueError, "'temperature'"),
    ],
)
def test_info_nce_bad_inputs(call: Callable, exc: type[Exception], name: str) -> None:
    with pytest.raises(exc, match=name):
        call(torch.randn(4, 3))


# -------------------------------------------------------------------------- ContrastiveGradCache


def make_problem(kind: str, dtype: torch.dtype, p: float = 0.0) -> tuple:
    """(encoder(s), inputs, loss_fn, loss_kwargs) for a SimCSE-style or a two-tower batch of NB rows."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(7)
    if kind == "simcse":
        enc: nn.Module | tuple[nn.Module, nn.Module] = Tower(p=p).to(dtype)
        base = torch.randn(NB // 2, 6, generator=g, dtype=dtype)
        x = base.repeat_interleave(2, dim=0) + 0.3 * torch.randn(NB, 6, generator=g, dtype=dtype)
        loss = functools.partial(info_nce_loss, key=None, temperature=0.05, mask_diagonal=True)
        return enc, (x,), loss, {"target": pair_target(NB)}
    enc = (Tower(p=p).to(dtype), Tower(d_in=3, p=p).to(dtype))
    x = torch.randn(NB, 6, generator=g, dtype=dtype)
    y = torch.randn(NB, 3, generator=g, dtype=dtype)
    return enc, (x, y), functools.partial(info_nce_loss, temperature=0.05), {}


def modules_of(enc: nn.Module | tuple[nn.Module, ...]) -> nn.ModuleList:
    return nn.ModuleList(enc if isinstance(enc, tuple) else [enc])


def full_batch(
    enc: nn.Module | tuple, inputs: tuple, loss_fn: Callable, kw: dict, chunk: int | None = None
) -> Tensor:
    """Reference: ordinary autograd on the whole batch (optionally embedded chunk by chunk, with grad)."""
    encs = enc if isinstance(enc, tuple) else (enc,) * len(inputs)
    embs = []
    for e, x in zip(encs, inputs):
        parts = [e(x[s : s + chunk]) for s in range(0, x.shape[0], chunk)] if chunk else [e(x)]
        embs.append(torch.cat(parts))
    loss = loss_fn(*embs, **kw)
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("kind", ["simcse", "two_tower"])
@pytest.mark.parametrize("chunk", [1, 3, NB])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_gradcache_equals_full_batch_gradient(kind: str, chunk: int, dtype: torch.dtype, tol: float) -> None:
    enc, inputs, loss_fn, kw = make_problem(kind, dtype)
    mods = modules_of(enc)
    ref_loss = full_batch(enc, inputs, loss_fn, kw)
    ref = grads(mods)
    mods.zero_grad()
    cache = ContrastiveGradCache(list(enc) if isinstance(enc, tuple) else enc, loss_fn, chunk)
    loss = cache.backward(*inputs, **kw)
    assert rel_err(grads(mods), ref) <= tol
    torch.testing.assert_close(loss, ref_loss, rtol=tol, atol=0.0)  # pass-1 loss is the real loss
    assert not loss.requires_grad
    assert cache.step(*inputs, **kw) == pytest.approx(ref_loss.item(), rel=tol)


def test_cached_gradients_match_closed_form() -> None:
    """With embedding-table towers, the weight gradient *is* the cached ∂L/∂h; check the post's formulas."""
    n, d, tau = 7, 4, 0.05
    torch.manual_seed(1)
    eu, ev = nn.Embedding(n, d).double(), nn.Embedding(n, d).double()
    idx = torch.arange(n)
    cache = ContrastiveGradCache([eu, ev], functools.partial(info_nce_loss, temperature=tau), chunk_size=3)
    cache.backward(idx, idx)
    u, v = eu.weight.detach(), ev.weight.detach()
    p = torch.softmax(u @ v.T / tau, dim=-1)
    gmat = (p - torch.eye(n, dtype=torch.float64)) / n  # G = (P − T)/Z, Z = n for 'mean'
    torch.testing.assert_close(eu.weight.grad, gmat @ v / tau, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ev.weight.grad, gmat.T @ u / tau, rtol=1e-10, atol=1e-12)

    # single tower, symmetric similarities: ∂L/∂h = (1/τ)(G + Gᵀ)H (post's h̃ with p̄ = (p + pᵀ)/2)
    eh = nn.Embedding(n + 1, d).double()
    t = pair_target(n + 1)
    cache = ContrastiveGradCache(eh, functools.partial(info_nce_loss, key=None, mask_diagonal=True), 2)
    cache.backward(torch.arange(n + 1), target=t)
    h = eh.weight.detach()
    s = (h @ h.T / 0.05).fill_diagonal_(float("-inf"))
    gmat = (torch.softmax(s, -1) - F.one_hot(t, n + 1).double()) / (n + 1)
    torch.testing.assert_close(eh.weight.grad, (gmat + gmat.T) @ h / 0.05, rtol=1e-10, atol=1e-12)


def test_gradcache_hard_negatives_views_of_different_sizes() -> None:
    torch.manual_seed(2)
    enc = Tower().double()
    x, y = torch.randn(6, 6, dtype=torch.float64), torch.randn(9, 6, dtype=torch.float64)  # 3 extra negatives
    loss_fn = functools.partial(info_nce_loss, temperature=0.05, symmetric=False)
    full_batch(enc, (x, y), loss_fn, {})
    ref = grads(enc)
    enc.zero_grad()
    with torch.no_grad():  # a caller's no_grad does not leak into the passes that need autograd
        ContrastiveGradCache(enc, loss_fn, 4).backward(x, y)
    assert rel_err(grads(enc), ref) <= 1e-10


@pytest.mark.parametrize("kind", ["simcse", "two_tower"])
def test_dropout_needs_rng_replay(kind: str) -> None:
    """Replay ⇒ exact (same masks as a with-grad forward of the same chunks); no replay ⇒ not exact."""
    enc, inputs, loss_fn, kw = make_problem(kind, torch.float64, p=0.3)
    mods = modules_of(enc)
    encs = list(enc) if isinstance(enc, tuple) else enc
    torch.manual_seed(11)
    full_batch(enc, inputs, loss_fn, kw, chunk=3)  # draws the masks in pass-1 order
    ref = grads(mods)
    for replay, exact in [(True, True), (False, False)]:
        mods.zero_grad()
        torch.manual_seed(11)
        ContrastiveGradCache(encs, loss_fn, 3, replay_rng=replay).backward(*inputs, **kw)
        err = rel_err(grads(mods), ref)
        assert (err <= 1e-10) if exact else (err > 1e-3), (replay, err)
    # replay does not rewind the caller's RNG stream: it ends where pass 1 left it
    torch.manual_seed(11)
    full_batch(enc, inputs, loss_fn, kw, chunk=3)
    after_ref = torch.rand(1)
    torch.manual_seed(11)
    ContrastiveGradCache(encs, loss_fn, 3).backward(*inputs, **kw)
    assert torch.equal(torch.rand(1), after_ref)


def test_naive_chunk_accumulation_is_not_exact() -> None:
    """Regression guard: summing per-chunk InfoNCE losses is a different (smaller-batch) objective."""
    enc, (x, y), loss_fn, _ = make_problem("two_tower", torch.float64)
    mods = modules_of(enc)
    full_batch(enc, (x, y), loss_fn, {})
    ref = grads(mods)
    mods.zero_grad()
    for s in range(0, NB, 3):
        n_chunk = min(3, NB - s)
        (loss_fn(enc[0](x[s : s + 3]), enc[1](y[s : s + 3])) * n_chunk / NB).backward()
    assert rel_err(grads(mods), ref) > 0.05
    mods.zero_grad()
    ContrastiveGradCache(list(enc), loss_fn, 3).backward(x, y)
    assert rel_err(grads(mods), ref) <= 1e-10


def test_learnable_logit_scale_gradient() -> None:
    enc, inputs, _, _ = make_problem("two_tower", torch.float64)
    mods = modules_of(enc)
    loss_fn = InfoNCELoss(0.05, symmetric=True, learnable_temperature=True).double()
    full_batch(enc, inputs, loss_fn, {})
    ref = [*grads(mods), scale_grad(loss_fn)]
    mods.zero_grad()
    loss_fn.zero_grad()
    ContrastiveGradCache(list(enc), loss_fn, 3).backward(*inputs)
    assert scale_grad(loss_fn).abs() > 0
    assert rel_err([*grads(mods), scale_grad(loss_fn)], ref) <= 1e-10
    assert rel_err([scale_grad(loss_fn)], [ref[-1]]) <= 1e-10


def test_grad_scaler_scale_is_applied_once() -> None:
    enc, inputs, _, _ = make_problem("two_tower", torch.float32)
    mods = modules_of(enc)
    loss_fn = InfoNCELoss(0.05, learnable_temperature=True)
    full_batch(enc, inputs, loss_fn, {})
    ref = [*grads(mods), scale_grad(loss_fn)]
    mods.zero_grad()
    loss_fn.zero_grad()
    params = [*mods.parameters(), *loss_fn.parameters()]
    opt = torch.optim.SGD(params, lr=0.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    cache = ContrastiveGradCache(list(enc), loss_fn, 4, backward=lambda t: scaler.scale(t).backward())
    cache.backward(*inputs)
    scaled = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
    assert rel_err(scaled, [1024.0 * r for r in ref]) <= 1e-5
    scaler.unscale_(opt)
    assert rel_err([p.grad for p in params if p.grad is not None], ref) <= 1e-5


def test_gradcache_under_bf16_autocast() -> None:
    enc, inputs, loss_fn, kw = make_problem("simcse", torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref_loss = full_batch(enc, inputs, loss_fn, kw)
        ref = grads(enc)
        enc.zero_grad()
        loss = ContrastiveGradCache(enc, loss_fn, 3).backward(*inputs, **kw)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert abs(loss.item() - ref_loss.item()) <= 1e-2 * abs(ref_loss.item())
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads(enc))
    assert rel_err(grads(enc), ref) <= 5e-2  # bf16 matmuls; loose, exactness is tested in fp32/fp64


def test_dict_inputs_tiny_bert_with_dropout() -> None:
    """A Hugging Face encoder fed tokenizer-style dicts (kwargs), dropout on, RNG replay: exact."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        hidden_dropout_prob=0.2,
        attention_probs_dropout_prob=0.2,
    )
    torch.manual_seed(3)
    bert = transformers.BertModel(cfg, add_pooling_layer=False).double().train()

    class MeanPool(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1)

    enc = MeanPool()
    g = torch.Generator().manual_seed(4)
    batch = {
        "input_ids": torch.randint(1, 100, (6, 5), generator=g),
        "attention_mask": torch.ones(6, 5, dtype=torch.long),
    }
    batch["attention_mask"][::2, -2:] = 0
    loss_fn = functools.partial(info_nce_loss, key=None, mask_diagonal=True, normalize=True, temperature=0.05)
    kw = {"target": pair_target(6)}
    torch.manual_seed(5)
    embs = torch.cat([enc(**{k: v[s : s + 4] for k, v in batch.items()}) for s in (0, 4)])
    loss_fn(embs, target=kw["target"]).backward()
    ref = grads(enc)
    enc.zero_grad()
    torch.manual_seed(5)
    ContrastiveGradCache(enc, loss_fn, 4).backward(batch, **kw)
    assert rel_err(grads(enc), ref) <= 1e-10


@pytest.mark.parametrize(
    "make, exc, name",
    [
        (lambda e, f: ContrastiveGradCache(e, f, 0), ValueError, "'chunk_size'"),
        (lambda e, f: ContrastiveGradCache(e, f, 2.5), TypeError, "'chunk_size'"),  # type: ignore[arg-type]
        (lambda e, f: ContrastiveGradCache("enc", f, 2), TypeError, "'encoder'"),  # type: ignore[arg-type]
        (lambda e, f: ContrastiveGradCache([], f, 2), ValueError, "'encoder'"),
        (lambda e, f: ContrastiveGradCache(e, 3, 2), TypeError, "'loss_fn'"),  # type: ignore[arg-type]
        (lambda e, f: ContrastiveGradCache(e, f, 2, replay_rng=None), TypeError, "'replay_rng'"),  # type: ignore[arg-type]
        (lambda e, f: ContrastiveGradCache(e, f, 2, backward=1), TypeError, "'backward'"),  # type: ignore[arg-type]
        (lambda e, f: ContrastiveGradCache(e, f, 2, gather=True), ValueError, "'gather'"),
    ],
)
def test_gradcache_bad_arguments(make: Callable, exc: type[Exception], name: str) -> None:
    with pytest.raises(exc, match=name):
        make(Tower(), info_nce_loss)


def test_gradcache_bad_step_inputs() -> None:
    enc = Tower()
    x = torch.randn(4, 6)
    lf = functools.partial(info_nce_loss, temperature=0.1)
    with pytest.raises(ValueError, match="'inputs'"):
        ContrastiveGradCache([enc, Tower()], lf, 2).backward(x)  # one view, two encoders
    with pytest.raises(ValueError, match="'inputs'"):
        ContrastiveGradCache(enc, lf, 2).backward((x, torch.randn(3, 6)), x)
    with pytest.raises(TypeError, match="'inputs'"):
        ContrastiveGradCache(enc, lf, 2).backward("text", x)
    with pytest.raises(TypeError, match="'loss_fn'"):
        ContrastiveGradCache(enc, lambda a, b: info_nce_loss(a, b, reduction="none"), 2).backward(x, x)
    with pytest.raises(TypeError, match="'encoder'"):
        ContrastiveGradCache(lambda t: {"emb": t}, lf, 2).backward(x, x)
    with pytest.raises(ValueError, match="'inputs'"):
        ContrastiveGradCache(enc, lf, 2).backward()


# ---------------------------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        enc = Tower().double()
        ref_enc = Tower().double()
        ref_enc.load_state_dict(enc.state_dict())
        g = torch.Generator().manual_seed(9)
        n_global = 10
        x = torch.randn(n_global, 6, generator=g, dtype=torch.float64)
        y = x + 0.2 * torch.randn(n_global, 6, generator=g, dtype=torch.float64)

        # single-process reference on the global batch (shared tower, two views, learnable scale)
        ref_loss_fn = InfoNCELoss(0.05, symmetric=True, learnable_temperature=True).double()
        ref_loss = ref_loss_fn(ref_enc(x), ref_enc(y))
        ref_loss.backward()
        ref = [*grads(ref_enc), scale_grad(ref_loss_fn)]

        ddp = DDP(enc)
        loss_fn = InfoNCELoss(0.05, symmetric=True, learnable_temperature=True).double()
        n = n_global // world
        local = slice(rank * n, (rank + 1) * n)
        cache = ContrastiveGradCache(ddp, loss_fn, chunk_size=3)  # 5 local rows: chunks 3 + 2
        loss = cache.backward(x[local], y[local])
        got = [*grads(enc), scale_grad(loss_fn)]
        torch.save(
            {"err": rel_err(got, ref), "loss": loss.item(), "ref_loss": ref_loss.item()},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_ddp_gradient_equals_single_process_full_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # spawn, not fork: by this point the test process has run thread pools (OpenMP, tokenizers, Ray's
    # gRPC), and a forked child can inherit one of their locks held. Spawned children unpickle the worker by
    # its module name ('tests.losses.test_contrastive' under --import-mode=importlib), so the repository
    # root goes on sys.path, which they inherit.
    here = Path(__file__).resolve()
    monkeypatch.syspath_prepend(str(here.parents[2]))
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        res = torch.load(tmp_path / f"rank{rank}.pt")
        assert res["err"] <= 1e-10, (rank, res)
        assert res["loss"] == pytest.approx(res["ref_loss"], rel=1e-12)


def test_unequal_views_under_a_gather_need_a_target() -> None:
    """Views of different sizes under a multi-rank gather would pair queries with another rank's keys."""
    enc = torch.nn.Linear(3, 2)
    cache = ContrastiveGradCache(enc, info_nce_loss, 2)
    cache._distributed = lambda: (0, 2)  # type: ignore[method-assign]  # as if 2 ranks gathered
    with pytest.raises(ValueError, match="explicit 'target='"):
        cache.step(torch.randn(3, 3), torch.randn(5, 3))


def test_step_returns_a_detached_tensor_and_backward_is_kept() -> None:
    enc = torch.nn.Linear(3, 2)
    cache = ContrastiveGradCache(enc, info_nce_loss, 2)
    x, y = torch.randn(4, 3), torch.randn(4, 3)
    out = cache.step(x, y)
    assert isinstance(out, torch.Tensor) and out.dim() == 0 and not out.requires_grad
    torch.testing.assert_close(cache.backward(x, y), out)  # the old entry point, same value
    with pytest.raises(TypeError, match="'backward'"):
        cache.step(x, y, backward=3)
