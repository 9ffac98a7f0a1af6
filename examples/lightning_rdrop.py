"""Fine-tune all-MiniLM-L6-v2 on BBC News topics with R-Drop, in PyTorch Lightning.

    python examples/lightning_rdrop.py         # MiniLM, 400 articles x 64 tokens, 1 epoch (minutes, 2 cores)
    python examples/lightning_rdrop.py --tiny    # tiny random BERT, seconds (what the test suite runs)

R-Drop (kexue.fm/archives/8496) runs every article through the network twice with independent dropout masks
(one forward on the doubled batch) and trains ``CE¹ + CE² + α·½(KL¹² + KL²¹)``. The module uses
:class:`trainwell.integrations.lightning.TrainwellLightningMixin`: you write ``trainwell_loss(batch)``, and
:class:`~trainwell.integrations.lightning.ManualStep` does the accumulation (2 micro-batches per step) and
soft gradient clipping (kexue.fm/archives/7469) that Lightning's manual optimization leaves to you. Swap in
``ManualStep(FGM(...))`` to add adversarial training on top. Everything is offline.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import TOPICS, accuracy, classifier, encode, example_args, load_bbc_news, tokenizer


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = example_args(__doc__.splitlines()[0], argv=argv, lr=5e-5, epochs=1.0)
    import torch

    try:
        import lightning.pytorch as pl
    except ImportError:
        import pytorch_lightning as pl

    from trainwell.integrations import rdrop_model_loss
    from trainwell.integrations.lightning import ManualStep, TrainwellLightningMixin

    class RDropClassifier(TrainwellLightningMixin, pl.LightningModule):
        def __init__(self, model: torch.nn.Module, lr: float, alpha: float = 4.0) -> None:
            super().__init__()
            self.model, self.lr, self.alpha = model, lr, alpha
            self.trainwell = ManualStep(accumulate_grad_batches=2, gradient_clip_val=1.0, clip_mode="soft")

        def trainwell_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return rdrop_model_loss(self.model, batch, alpha=self.alpha)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=self.lr)

    pl.seed_everything(args.seed, verbose=False)
    train_rows, test_rows = load_bbc_news(seed=args.seed)
    train_rows, test_rows = train_rows[: args.train_size], test_rows[: (32 if args.tiny else len(test_rows))]
    tok = tokenizer()
    train, test = encode(tok, train_rows, args.max_length), encode(tok, test_rows, args.max_length)
    model = classifier(args.tiny, len(TOPICS), tok.vocab_size)
    module = RDropClassifier(model, args.lr)

    def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}

    # R-Drop doubles the batch inside the forward: half the micro-batch of the Trainer example
    loader = torch.utils.data.DataLoader(
        train, batch_size=max(1, args.batch_size // 4), shuffle=True, collate_fn=collate
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=int(max(1, args.epochs)),
        max_steps=3 if args.tiny else -1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=not args.tiny,
        enable_model_summary=False,
        default_root_dir=args.out,
    )
    before = accuracy(model, test)
    # Lightning keeps each submodule's train/eval mode: switch dropout back on, R-Drop needs it
    module.train()
    trainer.fit(module, loader)
    after = accuracy(model, test)
    loss = float(trainer.callback_metrics.get("train_loss", torch.tensor(float("nan"))))
    print(
        f"test accuracy {before:.3f} -> {after:.3f} ({len(train)} train / {len(test)} test articles, "
        f"last R-Drop loss {loss:.4f}, optimizer steps {trainer.global_step})"
    )
    return {
        "accuracy_before": before,
        "accuracy_after": after,
        "train_loss": loss,
        "steps": trainer.global_step,
    }


if __name__ == "__main__":
    main()
