"""transformers.Trainer adapter: gradients after one Trainer step equal the plain-loop trainwell step.

Each test records, inside ``training_step``, the prepared micro-batches and the RNG state before each one
(a user subclass on top of ``TrainwellTrainer``, which also checks that the adapter composes), snapshots the
gradients in ``on_pre_optimizer_step`` (after accumulation and clipping, before the update) and replays the
same micro-batches through the technique in a plain loop on a copy of the initial model.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from tests.integrations._tiny import assert_grads_close, collate, examples, grads, tiny_bert  # noqa: E402

from trainwell.integrations import rdrop_model_loss  # noqa: E402
from trainwell.integrations.hf import TrainwellTrainer, TrainwellTrainerMixin  # noqa: E402
from trainwell.losses import ContrastiveGradCache, flooding, info_nce_loss  # noqa: E402
from trainwell.regularizers import FGM, PGD, VAT, FastGradientPenalty, ParameterGradientPenalty  # noqa: E402


class _Grab(transformers.TrainerCallback):
    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] | None = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        self.grads = grads(model)


class Recording(TrainwellTrainer):
    """A user's own subclass: records what each micro-batch saw."""

    def __init__(self, *a, **kw):  # type: ignore[no-untyped-def]
        super().__init__(*a, **kw)
        self.seen: list[tuple[dict[str, torch.Tensor], torch.Tensor]] = []

    def training_step(self, model, inputs, num_items_in_batch=None):  # type: ignore[no-untyped-def]
        self.seen.append(({k: v.clone() for k, v in inputs.items()}, torch.get_rng_state()))
        return super().training_step(model, inputs, num_items_in_batch)


def _args(tmp_path, batch: int, accum: int = 1, **kw):  # type: ignore[no-untyped-def]
    base = dict(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accum,
        learning_rate=1e-3,
        max_grad_norm=0.0,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    base.update(kw)
    return transformers.TrainingArguments(**base)


def _train(
    model,
    make_technique,
    tmp_path,
    *,
    n=4,
    batch=4,
    accum=1,
    cls=Recording,  # type: ignore[no-untyped-def]
    scaled_for_ga=None,
    **trainer_kw,
):
    grab = _Grab()
    tech = make_technique(model) if make_technique is not None else None
    trainer = cls(
        model=model,
        args=_args(tmp_path, batch, accum, **trainer_kw.pop("args", {})),
        train_dataset=examples(n),
        data_collator=collate,
        callbacks=[grab],
        technique=tech,
        **trainer_kw,
    )
    if scaled_for_ga is not None:
        trainer.loss_is_scaled_for_ga = scaled_for_ga
    trainer.train()
    assert grab.grads is not None
    return trainer, grab.grads


def _plain(ref, make_technique, seen, factor, loss_fn=None):  # type: ignore[no-untyped-def]
    """The plain trainwell loop on the same micro-batches (same RNG state before each)."""
    ref.train()
    ref.zero_grad(set_to_none=True)
    tech = make_technique(ref) if make_technique is not None else None
    for inputs, rng in seen:
        torch.set_rng_state(rng)
        closure = (lambda i=inputs: loss_fn(ref, i)) if loss_fn else (lambda i=inputs: ref(**i).loss)
        if tech is None:
            (closure() * factor).backward()
        else:
            tech.step(closure, backward=lambda loss: (loss * factor).backward())
    return grads(ref)


TECHNIQUES = {
    "fgm_matrix": lambda m: FGM(m.get_input_embeddings(), epsilon=0.5),
    "fgm_output_clean": lambda m: FGM(
        m.get_input_embeddings(), epsilon=0.5, mode="output", include_clean_loss=True
    ),
    "pgd": lambda m: PGD(m.get_input_embeddings(), epsilon=0.5, alpha=0.2, steps=2, mode="output"),
    "fast_gp": lambda m: FastGradientPenalty(m.get_input_embeddings(), epsilon=0.1),
    "param_gp": lambda m: ParameterGradientPenalty(m, beta=0.1, xi=1e-3),
}


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_one_step_equals_plain_loop(name, tmp_path):
    model = tiny_bert(dropout=0.1)
    ref = copy.deepcopy(model)
    trainer, got = _train(model, TECHNIQUES[name], tmp_path)
    assert len(trainer.seen) == 1
    want = _plain(ref, TECHNIQUES[name], trainer.seen, 1.0)
    assert_grads_close(got, want)
    # the technique really changed the gradient (compared with the plain loss)
    plain = _plain(copy.deepcopy(ref), None, trainer.seen, 1.0)
    assert any(not torch.allclose(got[k], plain[k], atol=1e-6) for k in got)


def test_vat_closure_returns_loss_and_logits(tmp_path):
    model = tiny_bert(dropout=0.1)
    ref = copy.deepcopy(model)

    def make(m):  # type: ignore[no-untyped-def]
        return VAT(m.get_input_embeddings(), epsilon=1.0, xi=1e-3, alpha=1.0)

    trainer, got = _train(model, make, tmp_path)
    ref.train()
    vat = make(ref)
    inputs, rng = trainer.seen[0]
    torch.set_rng_state(rng)
    vat.step(lambda: ref(**inputs))  # HF output: .loss and .logits
    assert_grads_close(got, grads(ref))


def test_accumulation_scales_like_trainer(tmp_path):
    """GA = 2: every pass backpropagates loss/2 (the loss Trainer would backpropagate)."""
    model = tiny_bert(dropout=0.1)
    ref = copy.deepcopy(model)
    make = TECHNIQUES["fgm_matrix"]
    trainer, got = _train(model, make, tmp_path, n=4, batch=2, accum=2, scaled_for_ga=False)
    assert len(trainer.seen) == 2
    assert_grads_close(got, _plain(ref, make, trainer.seen, 0.5))


def test_accumulation_follows_trainers_num_items_rule(tmp_path):
    """Trainer treats a model taking **kwargs as normalising by num_items_in_batch: no 1/k then (mirrored)."""
    model = tiny_bert()
    ref = copy.deepcopy(model)
    make = TECHNIQUES["fgm_matrix"]
    trainer, got = _train(model, make, tmp_path, n=4, batch=2, accum=2)
    assert trainer.model_accepts_loss_kwargs
    assert_grads_close(got, _plain(ref, make, trainer.seen, 1.0))
    # and plain Trainer (no technique) does the same with its own training_step
    plain_model = copy.deepcopy(ref)
    grab = _Grab()
    t = transformers.Trainer(
        model=plain_model,
        args=_args(tmp_path, 2, 2),
        train_dataset=examples(4),
        data_collator=collate,
        callbacks=[grab],
    )
    t.train()
    assert_grads_close(grab.grads, _plain(copy.deepcopy(ref), None, trainer.seen, 1.0))


@pytest.mark.parametrize(
    "make",
    [
        lambda m: FGM(m.get_input_embeddings(), epsilon=0.5, mode="output"),
        lambda m: FastGradientPenalty(m.get_input_embeddings(), epsilon=0.1, per_sample=True),
    ],
    ids=["fgm_output", "fast_gp_per_sample"],
)
def test_two_micro_batches_equal_one_double_batch(make, tmp_path):
    """Per-sample scale-free directions, mean losses: 2 × 4 with GA = 2 equals one batch of 8 (no dropout)."""
    model = tiny_bert(dropout=0.0)
    ref = copy.deepcopy(model)
    _, accumulated = _train(model, make, tmp_path / "a", n=8, batch=4, accum=2, scaled_for_ga=False)
    _, full = _train(ref, make, tmp_path / "b", n=8, batch=8, accum=1)
    assert_grads_close(accumulated, full, atol=2e-6, rtol=1e-4)


def test_rdrop_equals_plain_loop(tmp_path):
    model = tiny_bert(dropout=0.2)
    ref = copy.deepcopy(model)
    trainer, got = _train(model, None, tmp_path, n=4, batch=2, accum=2, rdrop_alpha=4.0)
    want = _plain(ref, None, trainer.seen, 0.5, loss_fn=lambda m, i: rdrop_model_loss(m, i, alpha=4.0))
    assert_grads_close(got, want)


def test_rdrop_with_fgm(tmp_path):
    model = tiny_bert(dropout=0.2)
    ref = copy.deepcopy(model)
    make = TECHNIQUES["fgm_matrix"]
    trainer, got = _train(model, make, tmp_path, rdrop_alpha=1.0)
    want = _plain(ref, make, trainer.seen, 1.0, loss_fn=lambda m, i: rdrop_model_loss(m, i, alpha=1.0))
    assert_grads_close(got, want)


def test_flooding_is_applied_before_the_accumulation_factor(tmp_path):
    """b between L/2 and L: flooding L/2 instead of L would flip the sign of the gradient."""
    model = tiny_bert()
    ref = copy.deepcopy(model)
    level = 0.8  # initial loss ≈ ln 3 ≈ 1.1 on 3 classes
    trainer, got = _train(model, None, tmp_path, n=4, batch=2, accum=2, flood_level=level)
    want = _plain(ref, None, trainer.seen, 0.5, loss_fn=lambda m, i: flooding(m(**i).loss, level))
    assert_grads_close(got, want)
    losses = [copy.deepcopy(ref)(**i).loss.item() for i, _ in trainer.seen]
    assert all(level < x and x / 2 < level for x in losses)


def test_soft_clipping(tmp_path):
    model = tiny_bert()
    ref = copy.deepcopy(model)
    gamma = 0.05
    trainer, got = _train(
        model, TECHNIQUES["fgm_matrix"], tmp_path, clip_mode="soft", args={"max_grad_norm": gamma}
    )
    raw = _plain(ref, TECHNIQUES["fgm_matrix"], trainer.seen, 1.0)
    norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in raw.values()))
    assert norm > gamma
    assert_grads_close(got, {k: v * (gamma / (norm + gamma)) for k, v in raw.items()})


def test_bf16_autocast_on_cpu(tmp_path):
    model = tiny_bert(dropout=0.1)
    ref = copy.deepcopy(model)
    make = TECHNIQUES["fgm_matrix"]
    trainer, got = _train(model, make, tmp_path, args={"bf16": True})
    ref.train()
    fgm = make(ref)
    inputs, rng = trainer.seen[0]
    torch.set_rng_state(rng)

    def closure():  # type: ignore[no-untyped-def]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return ref(**inputs).loss.float()

    fgm.step(closure)
    assert_grads_close(got, grads(ref), atol=1e-5, rtol=1e-3)


def test_grad_scaler_path(tmp_path):
    """fp16 route: backward goes through accelerator.backward (GradScaler), the direction is unscaled."""
    model = tiny_bert(dropout=0.1)
    ref = copy.deepcopy(model)
    make = TECHNIQUES["fgm_matrix"]
    scale = 1024.0

    class Scaled(Recording):
        def create_accelerator_and_postprocess(self):  # type: ignore[no-untyped-def]
            super().create_accelerator_and_postprocess()
            self.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=scale)

    trainer, got = _train(model, make, tmp_path, cls=Scaled)
    want = _plain(ref, make, trainer.seen, 1.0)
    assert_grads_close(got, {k: v * scale for k, v in want.items()}, atol=1e-3, rtol=1e-5)


def test_mixin_composes_with_a_user_trainer(tmp_path):
    """The user's compute_loss (here label-smoothed CE) is the loss every pass of the step trains on."""

    class SmoothTrainer(transformers.Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            labels = inputs["labels"]
            out = model(**{k: v for k, v in inputs.items() if k != "labels"})
            loss = torch.nn.functional.cross_entropy(out.logits, labels, label_smoothing=0.1)
            return (loss, out) if return_outputs else loss

    class Mine(TrainwellTrainerMixin, SmoothTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            self.seen = [({k: v.clone() for k, v in inputs.items()}, torch.get_rng_state())]
            return super().training_step(model, inputs, num_items_in_batch)

    model = tiny_bert(dropout=0.1)
    ref = copy.deepcopy(model)
    make = TECHNIQUES["fgm_matrix"]
    trainer, got = _train(model, make, tmp_path, cls=Mine)

    def smooth(m, i):  # type: ignore[no-untyped-def]
        out = m(**{k: v for k, v in i.items() if k != "labels"})
        return torch.nn.functional.cross_entropy(out.logits, i["labels"], label_smoothing=0.1)

    assert_grads_close(got, _plain(ref, make, trainer.seen, 1.0, loss_fn=smooth))


def test_no_technique_is_plain_trainer(tmp_path):
    model = tiny_bert(dropout=0.1)
    ref = copy.deepcopy(model)
    trainer, got = _train(model, None, tmp_path)
    assert_grads_close(got, _plain(ref, None, trainer.seen, 1.0))


def test_bad_arguments(tmp_path):
    model = tiny_bert()
    kw = dict(model=model, args=_args(tmp_path, 4), train_dataset=examples(4), data_collator=collate)
    with pytest.raises(TypeError, match=r"TrainwellTrainer\(\): argument 'technique'"):
        TrainwellTrainer(technique=object(), **kw)
    cache = ContrastiveGradCache(lambda x: x, info_nce_loss, chunk_size=2)
    with pytest.raises(TypeError, match=r"ContrastiveGradCache\.step takes the batch views"):
        TrainwellTrainer(technique=cache, **kw)
    with pytest.raises(ValueError, match="argument 'rdrop_alpha'"):
        TrainwellTrainer(technique=VAT(model.get_input_embeddings()), rdrop_alpha=1.0, **kw)
    with pytest.raises(ValueError, match="argument 'clip_mode'"):
        TrainwellTrainer(clip_mode="soft", **kw)  # max_grad_norm = 0 in _args
    with pytest.raises(ValueError, match="argument 'clip_mode'"):
        TrainwellTrainer(clip_mode="gentle", **kw)
    with pytest.raises(ValueError, match="argument 'flood_level'"):
        TrainwellTrainer(flood_level=float("nan"), **kw)
