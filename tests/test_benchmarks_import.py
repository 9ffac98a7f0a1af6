"""The benchmark scripts parse and byte-compile (they are never timed in the test suite)."""

from __future__ import annotations

import ast
import py_compile
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
OWN = ["_harness.py", "losses.py", "regularizers.py", "optim.py"]
SCRIPTS = sorted({p.name for p in BENCH.glob("*.py")} | set(OWN))


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_compiles(name: str, tmp_path: Path) -> None:
    path = BENCH / name
    assert path.is_file(), f"missing benchmarks/{name}"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    py_compile.compile(str(path), cfile=str(tmp_path / (name + "c")), doraise=True)
    if name in OWN and name != "_harness.py":
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert "main" in functions, f"benchmarks/{name} must define main()"
        assert '__name__ == "__main__"' in path.read_text(encoding="utf-8")
