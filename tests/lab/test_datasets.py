"""Lab data loaders: long-tailed Fashion-MNIST (and its digits fallback), Yeast."""

from __future__ import annotations

import pytest
import torch

from trainwell.lab.datasets import fashion_mnist as fm
from trainwell.lab.datasets.yeast import load_yeast

HAVE_FASHION = all((fm.DEFAULT_DIR / f).is_file() for f in fm.FILES.values())


def recipe(head: int, ratio: float = 100.0) -> list[int]:
    return [int(head * ratio ** (-c / 9)) for c in range(10)]


def test_long_tail_counts_follow_the_recipe():
    assert fm.long_tail_counts(6000) == recipe(6000)
    assert fm.long_tail_counts(6000)[0] == 6000 and fm.long_tail_counts(6000)[-1] == 60
    assert fm.long_tail_counts(100, ratio=1.0) == [100] * 10
    with pytest.raises(ValueError, match="'head'"):
        fm.long_tail_counts(0)


@pytest.mark.skipif(not HAVE_FASHION, reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_long_tail_exact_counts_and_balanced_test(monkeypatch):
    monkeypatch.delenv(fm.ENV_VAR, raising=False)
    d = fm.load_long_tailed_fashion_mnist(seed=3)
    assert d.source == "fashion-mnist"
    assert d.x_train.shape == (sum(recipe(6000)), 1, 28, 28) and d.x_train.dtype == torch.float32
    assert d.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(d.y_train, minlength=10).tolist() == recipe(6000)
    assert d.counts.tolist() == recipe(6000)
    assert torch.bincount(d.y_test, minlength=10).tolist() == [1000] * 10
    assert int(d.y_train.min()) == 0 and int(d.y_train.max()) == 9
    assert d.y_train.dtype == torch.int64
    # Standardised with the training subset's statistics.
    assert abs(float(d.x_train.mean())) < 1e-3 and abs(float(d.x_train.std()) - 1) < 1e-3
    assert torch.isfinite(d.x_test).all()


@pytest.mark.skipif(not HAVE_FASHION, reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_selection_is_deterministic_by_seed(monkeypatch):
    monkeypatch.delenv(fm.ENV_VAR, raising=False)
    a = fm.load_long_tailed_fashion_mnist(seed=1, head=600, test_per_class=20)
    b = fm.load_long_tailed_fashion_mnist(seed=1, head=600, test_per_class=20)
    c = fm.load_long_tailed_fashion_mnist(seed=2, head=600, test_per_class=20)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_train, c.x_train)
    assert torch.bincount(a.y_train, minlength=10).tolist() == recipe(600)
    assert torch.bincount(a.y_test, minlength=10).tolist() == [20] * 10


def test_read_idx_roundtrip(tmp_path):
    import gzip
    import struct

    arr = torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4).numpy()
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2, 3, 4) + arr.tobytes())
    assert (fm.read_idx(path) == arr).all()
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an idx file"):
        fm.read_idx(bad)


def test_fallback_to_digits_when_env_dir_is_empty(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path))
    assert fm.fashion_mnist_dir() == tmp_path
    d = fm.load_long_tailed_fashion_mnist(seed=0)
    err = capsys.readouterr().err
    assert "not found" in err and "load_digits" in err and str(tmp_path) in err
    assert d.source == "digits"
    assert d.x_train.shape[1:] == (1, 8, 8)
    # Scaled recipe: class 0 keeps the smallest per-class pool left after the 50-per-class test split.
    from sklearn.datasets import load_digits

    pool_min = int(torch.bincount(torch.as_tensor(load_digits().target)).min()) - 50
    expected = [max(1, int(pool_min * 100 ** (-c / 9))) for c in range(10)]
    assert torch.bincount(d.y_train, minlength=10).tolist() == expected
    assert torch.bincount(d.y_test, minlength=10).tolist() == [50] * 10
    assert int(d.y_train.min()) >= 0 and int(d.y_train.max()) <= 9


def test_yeast_split_shapes_and_determinism():
    s = load_yeast(seed=0)
    n = s.x_train.shape[0] + s.x_val.shape[0] + s.x_test.shape[0]
    assert n == 2417
    assert s.x_train.shape == (1450, 103) and s.y_train.shape == (1450, 14)
    assert s.num_features == 103 and s.num_labels == 14
    for y in (s.y_train, s.y_val, s.y_test):
        assert set(y.unique().tolist()) <= {0.0, 1.0} and y.dtype == torch.float32
    assert torch.allclose(s.x_train.mean(0), torch.zeros(103), atol=1e-4)
    # Every gene has at least one label; about 4.2 labels per gene.
    assert (s.y_train.sum(1) >= 1).all() and 3.8 < float(s.y_train.sum(1).mean()) < 4.7
    same = load_yeast(seed=0)
    other = load_yeast(seed=1)
    assert torch.equal(s.x_test, same.x_test)
    assert not torch.equal(s.y_test, other.y_test)
    with pytest.raises(ValueError, match="'train'"):
        load_yeast(train=0.9, val=0.2)
