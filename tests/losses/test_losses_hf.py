"""Hugging Face regressions for the losses: rdrop_forward on ModelOutput, ContrastiveGradCache pooling.

Tiny random BERTs built from a config (never downloaded).
"""

from __future__ import annotations

import functools

import pytest
import torch

from trainwell.losses import ContrastiveGradCache, info_nce_loss, rdrop_forward, rdrop_loss
from trainwell.regularizers import MultiPassStep

transformers = pytest.importorskip("transformers")


def _config(**kw: object) -> object:
    return transformers.BertConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, **kw,
    )


@pytest.mark.parametrize("with_labels", [False, True])
def test_rdrop_forward_on_hf_classifier_gives_logits(with_labels: bool) -> None:
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(_config(num_labels=3)).train()
    ids = torch.randint(0, 128, (4, 8))
    mask = torch.ones(4, 8, dtype=torch.long)
    y = torch.tensor([0, 1, 2, 1])
    kw = {"labels": y} if with_labels else {}
    out1, out2 = rdrop_forward(model, input_ids=ids, attention_mask=mask, **kw)
    assert isinstance(out1, torch.Tensor) and out1.shape == (4, 3) and out2.shape == (4, 3)
    assert not torch.equal(out1, out2)  # two dropout masks
    loss = rdrop_loss(out1, out2, y)
    loss.backward()
    assert torch.isfinite(loss)
    # the halves are the model's logits on each copy: eval mode makes them equal to one forward
    model.eval()
    e1, e2 = rdrop_forward(model, input_ids=ids, attention_mask=mask, **kw)
    ref = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(e1, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e2, ref, atol=1e-5, rtol=1e-5)


def _encoder_inputs(n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 128, (n, 7), generator=g)
    mask = torch.ones(n, 7, dtype=torch.long)
    mask[::2, 5:] = 0  # padding on every other row: mean pooling must skip it
    return {"input_ids": ids, "attention_mask": mask}


def _pooled(out: object, inp: dict[str, torch.Tensor], pooling: str) -> torch.Tensor:
    h = out.last_hidden_state  # type: ignore[attr-defined]
    if pooling == "cls":
        return h[:, 0]
    m = inp["attention_mask"].to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1)


@pytest.mark.parametrize("pooling", ["mean", "cls", "callable"])
def test_gradcache_pooling_on_hf_encoder_is_exact(pooling: str) -> None:
    torch.manual_seed(0)
    model = transformers.BertModel(_config()).eval()  # eval: exactness needs identical passes
    n = 6
    q, d = _encoder_inputs(n), _encoder_inputs(n)
    d["input_ids"] = (d["input_ids"] + 1) % 128
    mode = "mean" if pooling == "callable" else pooling
    loss_fn = functools.partial(info_nce_loss, temperature=0.1, normalize=True)
    ref = loss_fn(_pooled(model(**q), q, mode), _pooled(model(**d), d, mode))
    ref.backward()
    ref_grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    arg = (lambda out, inp: _pooled(out, inp, "mean")) if pooling == "callable" else pooling
    cache = ContrastiveGradCache(model, loss_fn, chunk_size=4, pooling=arg)
    assert isinstance(cache, MultiPassStep)
    loss = cache.step(q, d)
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and not loss.requires_grad
    torch.testing.assert_close(loss, ref.detach(), atol=1e-6, rtol=1e-6)
    got = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == ref_grads.keys() and len(got) > 10
    for k, g in ref_grads.items():
        torch.testing.assert_close(got[k], g, atol=1e-5, rtol=1e-4)


def test_gradcache_hf_output_without_pooling_says_what_to_do() -> None:
    model = transformers.BertModel(_config()).eval()
    cache = ContrastiveGradCache(model, info_nce_loss, chunk_size=4)
    with pytest.raises(TypeError, match="pooling='mean'") as err:
        cache.step(_encoder_inputs(4), _encoder_inputs(4))
    assert len(str(err.value)) < 600  # the output is described, not printed


def test_gradcache_scaler_scales_every_gradient_once() -> None:
    torch.manual_seed(0)
    enc = torch.nn.Linear(5, 4)
    x, y = torch.randn(6, 5), torch.randn(6, 5)
    cache = ContrastiveGradCache(enc, info_nce_loss, chunk_size=4)
    cache.step(x, y)
    plain = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    cache.step(x, y, scaler=scaler)
    for p, g in zip(enc.parameters(), plain):
        torch.testing.assert_close(p.grad, 8.0 * g)


def test_gradcache_pooling_is_validated() -> None:
    with pytest.raises(ValueError, match="'pooling'"):
        ContrastiveGradCache(torch.nn.Linear(2, 2), info_nce_loss, 2, pooling="max")
    with pytest.raises(TypeError, match="'pooling'"):
        ContrastiveGradCache(torch.nn.Linear(2, 2), info_nce_loss, 2, pooling=3)  # type: ignore[arg-type]
