"""Tiny random Hugging Face BERT classifiers and batches shared by the adapter tests (never downloads)."""

from __future__ import annotations

import torch

V, C, L = 128, 3, 8


def tiny_bert(dropout: float = 0.0, seed: int = 0, eager: bool = False):
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=C,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    if eager:
        cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    return BertForSequenceClassification(cfg)


def examples(n: int, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (n, L), generator=g)
    mask = torch.ones(n, L, dtype=torch.long)
    mask[: n // 2, -2:] = 0  # some padding
    labels = torch.randint(0, C, (n,), generator=g)
    return [{"input_ids": ids[i], "attention_mask": mask[i], "labels": labels[i]} for i in range(n)]


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_grads_close(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6, rtol: float = 1e-5
) -> None:
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    assert a, "no gradients"
    for n in a:
        torch.testing.assert_close(a[n], b[n], atol=atol, rtol=rtol, msg=lambda m, n=n: f"{n}: {m}")
