"""Framework adapters: TrainwellTrainer's step vs the hand-written FGM Trainer subclass people copy today.

Run: ``.venv/bin/python benchmarks/integrations.py [--quick]``.

Model: a 2-layer ``BertForSequenceClassification`` built from a config (no download, dropout 0), batch 16 × 64
tokens, float32, CPU. Every row is one call of ``trainer.training_step(model, batch)`` (forward and backward
passes, no optimizer step; ``.grad`` zeroed first):

* ``Trainer`` — plain ``transformers.Trainer.training_step`` (the baseline: one forward, one backward);
* ``hand-written FGM subclass`` — the recipe found in blog posts and bert4torch-style code: override
  ``training_step``, backpropagate the clean loss, add ``ε·g/‖g‖`` to the word-embedding matrix in place,
  backpropagate the attacked loss, subtract it again (the anchor);
* ``TrainwellTrainer(FGM(include_clean_loss=True))`` — the same objective through the adapter (ours);
* ``TrainwellTrainer(FGM())`` — the post's objective (attacked loss only; the direction by ``autograd.grad``).

"max abs diff" compares the gradients the step leaves in ``.grad`` with the hand-written subclass (same
objective) — 0 up to rounding means the adapter trains the same thing. Target: the adapter adds no work, so
``TrainwellTrainer(FGM(include_clean_loss=True))`` ≤ 1.05 × the hand-written subclass.
"""

from __future__ import annotations

import copy
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H

EPS = 0.5


def _model() -> Any:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=256, max_position_embeddings=128, num_labels=3,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return BertForSequenceClassification(cfg)


def _trainers(out: str) -> dict[str, Any]:
    import transformers

    from trainwell.integrations.hf import TrainwellTrainer
    from trainwell.regularizers import FGM

    class HandFGM(transformers.Trainer):
        """The usual copy-paste recipe (clean backward, in-place attack on the embedding matrix, restore)."""

        def training_step(self, model, inputs, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            model.train()
            loss = self.compute_loss(model, inputs)
            self.accelerator.backward(loss)
            emb = model.get_input_embeddings().weight
            norm = torch.norm(emb.grad)
            if norm != 0 and not torch.isnan(norm):
                r_at = EPS * emb.grad / (norm + 1e-8)  # .grad also holds earlier micro-batches
                emb.data.add_(r_at)
                self.accelerator.backward(self.compute_loss(model, inputs))
                emb.data.sub_(r_at)
            return loss.detach()

    args = transformers.TrainingArguments(output_dir=out, use_cpu=True, report_to=[], save_strategy="no",
                                          per_device_train_batch_size=16, max_grad_norm=0.0)
    base = _model()
    base.accepts_loss_kwargs = False
    made: dict[str, Any] = {}
    for name, cls, tech in (
        ("Trainer", transformers.Trainer, None),
        ("hand-written FGM subclass", HandFGM, None),
        ("TrainwellTrainer(FGM(include_clean_loss=True))", TrainwellTrainer, "clean"),
        ("TrainwellTrainer(FGM())", TrainwellTrainer, "adv"),
    ):
        model = copy.deepcopy(base)
        kw: dict[str, Any] = {}
        if tech is not None:
            kw["technique"] = FGM(model.get_input_embeddings(), EPS, include_clean_loss=tech == "clean")
        trainer = cls(model=model, args=args, **kw)
        trainer.current_gradient_accumulation_steps = 1
        made[name] = trainer
    return made


def main(argv: list[str] | None = None) -> None:
    args = H.parse_args(__doc__.splitlines()[0], argv)
    print("# Integration benchmarks\n")
    print(H.environment_line(args))
    g = torch.Generator().manual_seed(1)
    batch = {"input_ids": torch.randint(1, 1000, (16, 64), generator=g),
             "attention_mask": torch.ones(16, 64, dtype=torch.long),
             "labels": torch.randint(0, 3, (16,), generator=g)}
    with tempfile.TemporaryDirectory() as out, H.quiet_stderr():
        trainers = _trainers(out)

        def step(t: Any) -> Callable[[], Any]:
            def run() -> Any:
                t.model.zero_grad(set_to_none=True)
                return t.training_step(t.model, dict(batch))

            return run

        fns = {name: step(t) for name, t in trainers.items()}
        timings = H.time_many(fns, args.repeats, args.warmup, args.device)
        grads: dict[str, list[torch.Tensor]] = {}
        for name, t in trainers.items():
            fns[name]()
            grads[name] = [p.grad.detach().clone() for p in t.model.parameters() if p.grad is not None]
    ref = grads["hand-written FGM subclass"]
    results = []
    for name, t in timings.items():
        if isinstance(t, Exception):
            results.append(H.Result(name, note=f"error: {type(t).__name__}: {t}"[:100]))
            continue
        same = name in ("hand-written FGM subclass", "TrainwellTrainer(FGM(include_clean_loss=True))")
        diff = H.max_abs_diff(grads[name], ref) if same else None
        results.append(H.Result(name, t, diff=diff, note="clean + attacked loss" if same else ""))
    print(H.results_table(results, "hand-written FGM subclass", title=(
        "Trainer.training_step, BERT 2 layers hidden 128, batch 16×64, float32")))
    by = {r.name: r for r in results if r.timing is not None}
    anchor = by["hand-written FGM subclass"].timing.median_ms  # type: ignore[union-attr]
    ours = by["TrainwellTrainer(FGM(include_clean_loss=True))"].timing.median_ms  # type: ignore[union-attr]
    met = H.print_target("TrainwellTrainer(FGM clean+adv) / hand-written subclass", ours / anchor, 1.05)
    print(f"Targets met: {int(met)}/1")


if __name__ == "__main__":
    main()
