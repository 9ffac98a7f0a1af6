"""TeaForNLoss: N=1 is teacher forcing, the nested dependency structure (autograd), top-k feedback, UniLM."""

from __future__ import annotations

import pytest
import torch

from trainwell.seq2seq import Seq2SeqCollator, TeaForNLoss, UniLMSeq2Seq, shifted_lm_loss

from .conftest import tiny_bert, tiny_gpt2


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def test_n1_equals_teacher_forcing_loss_and_gradients() -> None:
    model = tiny_gpt2(vocab_size=30, seed=0)
    ids = torch.randint(0, 30, (3, 9), generator=torch.Generator().manual_seed(0))
    out = TeaForNLoss(model, n_steps=1)(ids)
    out.loss.backward()
    g1 = _grads(model)
    model.zero_grad()
    ref = shifted_lm_loss(model(ids).logits, ids)
    ref.backward()
    g2 = _grads(model)
    assert torch.equal(out.loss, ref) and len(out.losses) == 1
    assert all(torch.allclose(a, b, atol=1e-7, rtol=0) for a, b in zip(g1, g2))
    # weights (1, 0, 0) give the same loss value through three passes
    three = TeaForNLoss(model, n_steps=3, weights=[1.0, 0.0, 0.0])(ids)
    assert torch.allclose(three.loss, ref) and len(three.losses) == 3


def test_dependency_structure_by_autograd() -> None:
    model = tiny_gpt2(vocab_size=30, seed=1)
    n_steps, length = 4, 8
    tf = TeaForNLoss(model, n_steps=n_steps)
    ids = torch.randint(0, 30, (1, length), generator=torch.Generator().manual_seed(1))
    gold = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    _, hidden = tf.passes(inputs_embeds=gold)
    probe = torch.randn(
        hidden[0].shape[-1], generator=torch.Generator().manual_seed(0)
    )  # (a LayerNorm'd sum is flat)
    for n in range(1, n_steps + 1):
        for p in range(length):
            (grad,) = torch.autograd.grad(hidden[n - 1][0, p] @ probe, gold, retain_graph=True)
            norms = grad[0].norm(dim=-1)
            # output at position p of pass n depends on gold tokens 0..p-n+1 only (post: h^(n)_t on
            # w_0..w_{t-n})
            last = max(p - n + 1, 0)
            assert torch.all(norms[last + 1 :] == 0), (n, p, norms)
            assert norms[last] > 0
    # h^(n)_1 = h^(1)_1 and h^(n)_t = h^(t)_t for n >= t
    for n in range(2, n_steps + 1):
        assert torch.allclose(hidden[n - 1][:, 0], hidden[0][:, 0])
        for p in range(n - 1):
            assert torch.allclose(hidden[n - 1][:, p], hidden[p][:, p], atol=1e-6)


def test_perturbing_previous_gold_token_leaves_pass2_unchanged() -> None:
    model = tiny_gpt2(vocab_size=30, seed=2)
    tf = TeaForNLoss(model, n_steps=2)
    ids = torch.randint(0, 30, (1, 7), generator=torch.Generator().manual_seed(2))
    t = 4
    other = ids.clone()
    other[0, t] = (other[0, t] + 5) % 30
    with torch.no_grad():
        _, h_a = tf.passes(ids)
        _, h_b = tf.passes(other)
    # the post's h_{t+1} is the output at position t; pass 2 does not see the gold token at t
    assert torch.equal(h_a[1][0, t], h_b[1][0, t])
    assert not torch.allclose(h_a[0][0, t], h_b[0][0, t])


def test_topk_feedback_full_vocab_is_dense_expectation_and_mixture_normalised() -> None:
    model = tiny_gpt2(vocab_size=30, seed=3)
    logits = torch.randn(2, 5, 30, dtype=torch.float32)
    e = model.get_input_embeddings().weight
    dense = TeaForNLoss(model, feedback="topk").mix(logits)
    assert torch.allclose(dense, torch.softmax(logits, -1) @ e, atol=1e-6)
    assert torch.allclose(TeaForNLoss(model, feedback="topk", topk=30).mix(logits), dense, atol=1e-6)
    with torch.no_grad():
        saved = e.clone()
        e.copy_(torch.ones_like(e) * 0.5)  # every embedding equal: a normalised mixture returns it
        mixed = TeaForNLoss(model, feedback="topk", topk=4).mix(logits)
        e.copy_(saved)
    assert torch.allclose(mixed, torch.full_like(mixed, 0.5))
    ids = torch.randint(0, 30, (2, 6), generator=torch.Generator().manual_seed(0))
    out = TeaForNLoss(model, n_steps=2, feedback="topk", topk=4)(ids)
    assert torch.isfinite(out.loss) and len(out.losses) == 2


def test_parameters_and_inference_path_untouched() -> None:
    model = tiny_gpt2(vocab_size=30)
    n_before = sum(p.numel() for p in model.parameters())
    tf = TeaForNLoss(model, n_steps=3)
    assert sum(p.numel() for p in tf.parameters()) == n_before
    ids = torch.randint(0, 30, (2, 6))
    out = tf(ids)
    assert torch.equal(out.logits, model(ids).logits)


def test_unilm_feedback_replaces_target_positions_only(tokenizer) -> None:
    model = UniLMSeq2Seq(tiny_bert(tokenizer.vocab_size, seed=4), tokenizer)
    b = Seq2SeqCollator(tokenizer)([("12加3", "12+3"), ("7减4", "7-4")])
    tf = TeaForNLoss(model, n_steps=3)
    out = tf(b["input_ids"], b["attention_mask"], b["token_type_ids"], b["labels"])
    src = (b["token_type_ids"] == 0) & (b["attention_mask"] == 1)
    for h in out.hidden_states[1:]:
        assert torch.allclose(h[src], out.hidden_states[0][src], atol=1e-6)
    assert torch.allclose(out.losses[0], model(**b).loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p.dim() > 1)


def test_detach_and_errors() -> None:
    model = tiny_gpt2(vocab_size=30)
    ids = torch.randint(0, 30, (1, 6))
    gold = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    _, hidden = TeaForNLoss(model, n_steps=2, detach=True).passes(inputs_embeds=gold)
    (grad,) = torch.autograd.grad(hidden[1][0, 5] @ torch.randn(hidden[1].shape[-1]), gold)
    assert torch.all(grad[0, 1:] == 0)  # fed-back states carry no gradient to the gold embeddings
    with pytest.raises(ValueError, match="'n_steps'"):
        TeaForNLoss(model, n_steps=0)
    with pytest.raises(ValueError, match="'weights'"):
        TeaForNLoss(model, n_steps=2, weights=[1.0])
    with pytest.raises(ValueError, match="'feedback'"):
        TeaForNLoss(model, feedback="gumbel")
