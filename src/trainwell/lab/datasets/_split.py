"""The fixed, stratified train / dev / test split shared by the lab's text loaders."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from trainwell._validation import check_int, check_number, fail

__all__ = ["TextSplits", "hash_text", "stratified_split"]


@dataclass(frozen=True)
class TextSplits:
    """Train / dev / test texts and integer labels."""

    train_texts: tuple[str, ...]
    train_labels: tuple[int, ...]
    dev_texts: tuple[str, ...]
    dev_labels: tuple[int, ...]
    test_texts: tuple[str, ...]
    test_labels: tuple[int, ...]

    def sizes(self) -> dict[str, int]:
        """Number of texts per split."""
        return {"train": len(self.train_texts), "dev": len(self.dev_texts), "test": len(self.test_texts)}

    def texts(self, split: str) -> tuple[str, ...]:
        """Texts of ``split`` (``"train"``, ``"dev"`` or ``"test"``)."""
        self._check(split, "texts")
        texts: tuple[str, ...] = getattr(self, f"{split}_texts")
        return texts

    def labels_tensor(self, split: str) -> Tensor:
        """Labels of ``split`` (``"train"``, ``"dev"`` or ``"test"``) as a ``LongTensor``."""
        self._check(split, "labels_tensor")
        return torch.tensor(getattr(self, f"{split}_labels"), dtype=torch.long)

    def _check(self, split: str, method: str) -> None:
        if split not in ("train", "dev", "test"):
            fail(f"{type(self).__name__}.{method}", "split", "one of 'train', 'dev', 'test'", split)


def hash_text(text: str) -> int:
    """A process-independent 32-bit hash of a text (Python's ``hash`` is salted per process)."""
    h = 2166136261
    for b in text.encode("utf-8")[:64]:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def stratified_split(
    by_label: Mapping[int, Iterable[str]],
    dev_fraction: float,
    test_fraction: float,
    split_seed: int,
    *,
    fn: str,
) -> TextSplits:
    """Split each class's texts into train / dev / test with fixed fractions; independent of any run seed.

    Inside each class (in the mapping's order, one shared ``numpy.random.RandomState(split_seed)``) the
    sorted texts are shuffled and the first ``round(test_fraction·n)`` go to test, the next
    ``round(dev_fraction·n)`` to dev, the rest to train. Each split is then ordered by a fixed text hash,
    so the classes are interleaved (a prefix of the training split is a class-mixed subset).
    """
    dev_f = check_number("dev_fraction", dev_fraction, fn=fn, min=0.0, max=1.0, max_inclusive=False)
    test_f = check_number("test_fraction", test_fraction, fn=fn, min=0.0, max=1.0, max_inclusive=False)
    assert dev_f is not None and test_f is not None
    if dev_f + test_f >= 1.0:
        fail(fn, "dev_fraction + test_fraction", "< 1", dev_f + test_f)
    check_int("split_seed", split_seed, fn=fn, min=0)
    out: dict[str, list[tuple[str, int]]] = {"train": [], "dev": [], "test": []}
    rng = np.random.RandomState(split_seed)
    for label, texts in by_label.items():
        ordered = sorted(texts)
        perm = rng.permutation(len(ordered))
        n_test = round(test_f * len(ordered))
        n_dev = round(dev_f * len(ordered))
        for rank, idx in enumerate(perm):
            split = "test" if rank < n_test else "dev" if rank < n_test + n_dev else "train"
            out[split].append((ordered[idx], label))
    for split in out:
        out[split].sort(key=lambda tl: (hash_text(tl[0]), tl[0]))
    return TextSplits(
        train_texts=tuple(t for t, _ in out["train"]),
        train_labels=tuple(y for _, y in out["train"]),
        dev_texts=tuple(t for t, _ in out["dev"]),
        dev_labels=tuple(y for _, y in out["dev"]),
        test_texts=tuple(t for t, _ in out["test"]),
        test_labels=tuple(y for _, y in out["test"]),
    )
