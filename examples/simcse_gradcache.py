"""Unsupervised SimCSE on BBC News sentences with ContrastiveGradCache: a large batch in small chunks.

    python examples/simcse_gradcache.py        # MiniLM, batch 32 in chunks of 8 (minutes, 2 cores)
    python examples/simcse_gradcache.py --tiny   # tiny random BERT, seconds (what the test suite runs)

SimCSE (kexue.fm/archives/8348) embeds every sentence twice; the two dropout masks make a positive pair and
the other sentences of the batch are negatives (InfoNCE, τ = 0.05). More negatives help, but activation memory
grows with the batch: :class:`trainwell.losses.ContrastiveGradCache` (kexue.fm/archives/8471, GradCache) first
embeds the batch chunk by chunk without activations, takes the gradient of the loss with respect to the
embeddings, then re-embeds each chunk (replaying its dropout masks) and backpropagates — the exact
full-batch gradient with the memory of one chunk.

all-MiniLM-L6-v2 is already a trained sentence encoder: dropout positives are easy for it (the loss starts
near 0) and SimCSE on top of it is not expected to improve retrieval — the script shows the mechanics
(start from a plain pretrained BERT to see SimCSE's gain). It first checks exactness: with dropout off, the
chunked gradient equals the whole-batch gradient.

Hugging Face encoders return a ``ModelOutput``; the ``MeanPooler`` below turns it into sentence vectors
(the mean of the last hidden states over real tokens, as all-MiniLM-L6-v2 is trained). The check at the end
measures retrieval: does the first half of a held-out article find its own second half among the others?
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import example_args, load_bbc_news, minilm_path, tiny_bert_config, tokenizer


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = example_args(__doc__.splitlines()[0], argv=argv, lr=1e-5, batch_size=32, max_length=32)
    import torch
    from torch import nn
    from transformers import AutoModel, BertModel

    from trainwell.losses import ContrastiveGradCache, info_nce_loss

    class MeanPooler(nn.Module):
        """``encoder(**batch).last_hidden_state`` averaged over the tokens the attention mask keeps."""

        def __init__(self, encoder: nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw: torch.Tensor
        ) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    torch.manual_seed(args.seed)
    tok = tokenizer()
    encoder = (
        BertModel(tiny_bert_config(tok.vocab_size)) if args.tiny else AutoModel.from_pretrained(minilm_path())
    )
    model = MeanPooler(encoder)

    train_docs, test_docs = load_bbc_news(seed=args.seed)
    sentences = [
        s.strip() for text, _ in train_docs for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 6
    ]
    steps = 3 if args.tiny else 20
    batch, chunk = (8, 4) if args.tiny else (args.batch_size, 8)
    sentences = sentences[: steps * batch]

    def loss_fn(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        # row i of the first view is positive with row i of the second; everything else is a negative
        return info_nce_loss(z1, z2, temperature=0.05, normalize=True, symmetric=True)

    cache = ContrastiveGradCache(model, loss_fn, chunk_size=chunk)  # replay_rng=True: same dropout masks
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)

    def batch_of(texts: list[str]) -> dict[str, torch.Tensor]:
        enc = tok(texts, truncation=True, max_length=args.max_length, padding=True, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def retrieval_accuracy(n: int) -> float:
        halves = [(d[: len(d) // 2], d[len(d) // 2 :]) for d, _ in test_docs[:n]]
        model.eval()
        with torch.no_grad():
            a = model(**batch_of([h[0] for h in halves]))
            b = model(**batch_of([h[1] for h in halves]))
        sim = nn.functional.normalize(a, dim=-1) @ nn.functional.normalize(b, dim=-1).T
        return float((sim.argmax(-1) == torch.arange(len(halves))).float().mean())

    # Exactness check (dropout off, so both passes see the same function): the cached chunked gradient
    # equals the gradient of the loss on the whole batch at once. In train mode replay_rng=True keeps the
    # same guarantee by replaying each chunk's dropout masks.
    model.eval()
    view = batch_of(sentences[:batch])
    cache.backward(view, view)
    used = [p for p in model.parameters() if p.grad is not None]  # BERT's pooler head is not used
    cached = [p.grad.clone() for p in used]
    model.zero_grad()
    z = model(**view)
    loss_fn(z, z).backward()
    gap = max(float((c - p.grad).abs().max()) for c, p in zip(cached, used))
    model.zero_grad()

    n_eval = 16 if args.tiny else 200
    before = retrieval_accuracy(n_eval)
    losses = []
    for i in range(steps):
        model.train()  # dropout on: the two views of a sentence differ
        view = batch_of(sentences[i * batch : (i + 1) * batch])
        opt.zero_grad()
        losses.append(cache.step(view, view))  # two views of one batch, embedded chunk by chunk
        opt.step()
    after = retrieval_accuracy(n_eval)
    print(
        f"GradCache vs full batch: max |grad difference| {gap:.2e}\n"
        f"SimCSE {steps} steps of {batch} sentences in chunks of {chunk}: "
        f"loss {losses[0]:.4f} -> {losses[-1]:.4f}; "
        f"half-article retrieval top-1 {before:.3f} -> {after:.3f} ({n_eval} held-out articles)"
    )
    return {
        "grad_gap": gap,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "retrieval_before": before,
        "retrieval_after": after,
    }


if __name__ == "__main__":
    main()
