"""Conversations of the pip package ``chatterbot-corpus`` (YAML files per topic and language), offline.

:func:`load_conversations` returns every conversation (a list of at least two utterance strings) of the
requested languages, in a fixed order (languages as given, files sorted by name). The package ships about
467 Chinese and 2,026 English conversations across topics (greetings, food, science, ...).
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

__all__ = ["ChatterbotUnavailable", "load_conversations"]


class ChatterbotUnavailable(RuntimeError):
    """``chatterbot-corpus`` (or PyYAML) is not installed."""


def _data_dir() -> Path:
    try:
        root = resources.files("chatterbot_corpus")
    except ModuleNotFoundError:
        raise ChatterbotUnavailable(
            "load_conversations(): install `pip install chatterbot-corpus` (the lab extra)") from None
    return Path(str(root)) / "data"


@functools.lru_cache(maxsize=8)
def _language(language: str) -> tuple[tuple[str, ...], ...]:
    try:
        import yaml
    except ModuleNotFoundError:
        raise ChatterbotUnavailable(
            "load_conversations(): PyYAML is needed to read chatterbot-corpus"
        ) from None
    folder = _data_dir() / language
    if not folder.is_dir():
        raise ValueError(f"load_conversations(): no language {language!r} in {folder.parent}")
    out = []
    for path in sorted(folder.glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conv in doc.get("conversations") or []:
            if isinstance(conv, list):
                turns = tuple(
                    str(u).strip() for u in conv if isinstance(u, (str, int, float)) and str(u).strip()
                )
                if len(turns) >= 2:
                    out.append(turns)
    return tuple(out)


def load_conversations(languages: tuple[str, ...] = ("chinese", "english")) -> list[list[str]]:
    """All conversations (lists of ≥ 2 utterances) of ``languages`` (folder names of the package)."""
    return [list(c) for lang in languages for c in _language(lang)]
