"""Lightning adapter (manual optimization): gradients after one step equal the plain-loop trainwell step.

The module records each micro-batch and the RNG state before it; ``on_before_optimizer_step`` snapshots the
gradients (after accumulation and clipping, before the update).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

pl = pytest.importorskip("pytorch_lightning")
pytest.importorskip("transformers")

from tests.integrations._tiny import assert_grads_close, collate, examples, grads, tiny_bert  # noqa: E402

from trainwell.integrations import rdrop_model_loss  # noqa: E402
from trainwell.integrations.lightning import ManualStep, TrainwellLightningMixin  # noqa: E402
from trainwell.losses import flooding  # noqa: E402
from trainwell.regularizers import FGM, VAT, FastGradientPenalty  # noqa: E402


class Classifier(pl.LightningModule):
    def __init__(self, model, step: ManualStep, loss_fn=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        self.step = step
        self.loss_fn = loss_fn or (lambda m, b: m(**b).loss)
        self.seen: list[tuple[dict[str, torch.Tensor], torch.Tensor]] = []
        self.grads: dict[str, torch.Tensor] | None = None

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        self.seen.append(({k: v.clone() for k, v in batch.items()}, torch.get_rng_state()))
        return self.step(self, lambda: self.loss_fn(self.model, batch), batch_idx)

    def on_before_optimizer_step(self, optimizer):  # type: ignore[no-untyped-def]
        self.grads = {k.removeprefix("model."): v for k, v in grads(self).items()}

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def _fit(module, n: int, batch: int, **trainer_kw):  # type: ignore[no-untyped-def]
    loader = torch.utils.data.DataLoader(examples(n), batch_size=batch, shuffle=False, collate_fn=collate)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kw,
    )
    trainer.fit(module, loader)
    assert module.grads is not None
    return module.grads


def _plain(ref, make, seen, factor, loss_fn=None):  # type: ignore[no-untyped-def]
    ref.train()
    ref.zero_grad(set_to_none=True)
    loss_fn = loss_fn or (lambda m, b: m(**b).loss)
    tech = make(ref) if make is not None else None
    for inputs, rng in seen:
        torch.set_rng_state(rng)
        if tech is None:
            (loss_fn(ref, inputs) * factor).backward()
        else:
            tech.step(lambda i=inputs: loss_fn(ref, i), backward=lambda loss: (loss * factor).backward())
    return grads(ref)


def fgm(m):  # type: ignore[no-untyped-def]
    return FGM(m.get_input_embeddings(), epsilon=0.5)


def test_fgm_one_step_equals_plain_loop():
    model = tiny_bert(dropout=0.1)
    ref = copy.deepcopy(model)
    module = Classifier(model, ManualStep(fgm(model)))
    got = _fit(module, 4, 4)
    assert len(module.seen) == 1
    assert_grads_close(got, _plain(ref, fgm, module.seen, 1.0))


def test_accumulation_divides_each_pass():
    model = tiny_bert(dropout=0.1)
    ref = copy.deepcopy(model)
    module = Classifier(model, ManualStep(fgm(model), accumulate_grad_batches=2))
    got = _fit(module, 4, 2)
    assert len(module.seen) == 2
    assert_grads_close(got, _plain(ref, fgm, module.seen, 0.5))


def test_two_micro_batches_equal_one_double_batch():
    def make(m):  # type: ignore[no-untyped-def]
        return FastGradientPenalty(m.get_input_embeddings(), epsilon=0.1, per_sample=True)

    model = tiny_bert(dropout=0.0)
    ref = copy.deepcopy(model)
    accumulated = _fit(Classifier(model, ManualStep(make(model), accumulate_grad_batches=2)), 8, 4)
    full = _fit(Classifier(ref, ManualStep(make(ref))), 8, 8)
    assert_grads_close(accumulated, full, atol=2e-6, rtol=1e-4)


def test_rdrop_and_flooding_via_the_mixin():
    class RDrop(TrainwellLightningMixin, pl.LightningModule):
        def __init__(self, model) -> None:  # type: ignore[no-untyped-def]
            super().__init__()
            self.model = model
            self.trainwell = ManualStep(accumulate_grad_batches=2, flood_level=2.5)
            self.seen: list = []
            self.grads = None

        def trainwell_loss(self, batch):  # type: ignore[no-untyped-def]
            self.seen.append(({k: v.clone() for k, v in batch.items()}, torch.get_rng_state()))
            return rdrop_model_loss(self.model, batch, alpha=4.0)

        def on_before_optimizer_step(self, optimizer):  # type: ignore[no-untyped-def]
            self.grads = {k.removeprefix("model."): v for k, v in grads(self).items()}

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.SGD(self.parameters(), lr=1e-3)

    model = tiny_bert(dropout=0.2)
    ref = copy.deepcopy(model)
    module = RDrop(model)
    assert module.automatic_optimization is False
    got = _fit(module, 4, 2)

    def loss(m, b):  # type: ignore[no-untyped-def]
        return flooding(rdrop_model_loss(m, b, alpha=4.0), 2.5)

    assert_grads_close(got, _plain(ref, None, module.seen, 0.5, loss_fn=loss))
    # R-Drop ≈ 2·CE ≈ 2.2 < 2.5 at init: flooding ascends
    assert all(rdrop_model_loss(copy.deepcopy(ref).train(), b).item() < 2.5 for b, _ in module.seen)


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_clipping(mode):
    model = tiny_bert()
    ref = copy.deepcopy(model)
    gamma = 0.05
    module = Classifier(model, ManualStep(fgm(model), gradient_clip_val=gamma, clip_mode=mode))
    got = _fit(module, 4, 4)
    raw = _plain(ref, fgm, module.seen, 1.0)
    norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in raw.values()))
    assert norm > gamma
    coef = gamma / (norm + gamma) if mode == "soft" else gamma / (norm + 1e-6)
    assert_grads_close(got, {k: v * coef for k, v in raw.items()})
    assert module.step.last_grad_norm is not None
    assert math.isclose(float(module.step.last_grad_norm), norm, rel_tol=1e-5)


def test_vat_with_hf_output():
    def make(m):  # type: ignore[no-untyped-def]
        return VAT(m.get_input_embeddings(), epsilon=1.0, xi=1e-3)

    model = tiny_bert(dropout=0.1)
    ref = copy.deepcopy(model)
    module = Classifier(model, ManualStep(make(model)), loss_fn=lambda m, b: m(**b))
    got = _fit(module, 4, 4)
    assert_grads_close(got, _plain(ref, make, module.seen, 1.0, loss_fn=lambda m, b: m(**b)))


def test_bf16_mixed_on_cpu():
    model = tiny_bert(dropout=0.1)
    ref = copy.deepcopy(model)
    module = Classifier(model, ManualStep(fgm(model)))
    got = _fit(module, 4, 4, precision="bf16-mixed")

    # Lightning opens autocast around the whole training_step, so the reference step runs inside it too
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = _plain(ref, fgm, module.seen, 1.0)
    assert_grads_close(got, want)


def test_bad_arguments():
    with pytest.raises(TypeError, match=r"ManualStep\(\): argument 'technique'"):
        ManualStep(technique=3)
    with pytest.raises(ValueError, match="argument 'accumulate_grad_batches'"):
        ManualStep(accumulate_grad_batches=0)
    with pytest.raises(ValueError, match="argument 'gradient_clip_val'"):
        ManualStep(gradient_clip_val=0.0)
    with pytest.raises(ValueError, match="argument 'clip_mode'"):
        ManualStep(clip_mode="gentle")
    step = ManualStep()
    with pytest.raises(TypeError, match="argument 'module'"):
        step(torch.nn.Linear(2, 2), lambda: torch.zeros(()), 0)

    class Auto(pl.LightningModule):
        pass

    with pytest.raises(ValueError, match="automatic_optimization = False"):
        step(Auto(), lambda: torch.zeros(()), 0)


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_clipping_scaled_gradients_equals_clipping_unscaled(mode):
    """Under fp16 Lightning unscales inside optimizer.step(): clipping S·g at γ·S is clipping g at γ."""
    torch.manual_seed(0)
    g = [torch.randn(5, 3, dtype=torch.float64), torch.randn(7, dtype=torch.float64)]
    scale = 2.0**10
    params = [torch.nn.Parameter(torch.zeros_like(t)) for t in g]
    for p, t in zip(params, g):
        p.grad = t * scale
    opt = torch.optim.SGD(params, lr=0.1)
    step = ManualStep(gradient_clip_val=0.5, clip_mode=mode)
    norm = step._clip(opt, torch.amp.GradScaler("cpu", init_scale=scale))
    total = math.sqrt(sum(float(t.pow(2).sum()) for t in g))
    assert math.isclose(float(norm), total, rel_tol=1e-12)
    coef = 0.5 / (total + 0.5) if mode == "soft" else min(1.0, 0.5 / (total + 1e-6))
    for p, t in zip(params, g):
        torch.testing.assert_close(p.grad / scale, t * coef, rtol=1e-6, atol=1e-12)
