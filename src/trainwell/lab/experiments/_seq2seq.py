"""Shared pieces of the seq2seq lab experiments (``mathwp``, ``dialog``, ``qagen``).

A character-level BERT tokenizer built offline from the training texts (a ``vocab.txt`` in a temporary
folder: every character seen, plus ``##`` continuations for letters and digits so words split into
characters), tiny random BERT / GPT-2 models from configs, a plain training loop, and the effect table.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from trainwell.lab.base import MethodStats
from trainwell.lab.experiments.regularize import effect_sizes
from trainwell.lab.io import atomic_write_text

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def char_tokenizer(texts: Iterable[str], extra: str = "") -> Any:
    """A BERT tokenizer over the characters of ``texts`` (lower-cased), built without downloads."""
    import transformers

    chars: set[str] = set(extra)
    for t in texts:
        chars.update(t.lower())
    chars.discard(" ")
    chars = {c for c in chars if not c.isspace()}
    ordered = sorted(chars)
    vocab = SPECIALS + ordered + ["##" + c for c in ordered if c.isalnum()]
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
        return transformers.BertTokenizer.from_pretrained(folder)


def tiny_bert(vocab_size: int, hidden: int = 128, layers: int = 2, heads: int = 4, max_len: int = 160,
              seed: int = 0) -> Any:
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                  num_attention_heads=heads, intermediate_size=2 * hidden,
                                  max_position_embeddings=max_len, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    return transformers.BertForMaskedLM(cfg)


def tiny_gpt2(vocab_size: int, hidden: int = 128, layers: int = 2, heads: int = 4, max_len: int = 256,
              seed: int = 0) -> Any:
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads,
                                  n_positions=max_len, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=None, eos_token_id=None)
    return transformers.GPT2LMHeadModel(cfg)


def train(
    params: Iterable[torch.nn.Parameter],
    loss_fn: Callable[[list[Any]], torch.Tensor],
    data: Sequence[Any],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: Callable[..., Any] | None = None,
    desc: str = "",
) -> tuple[list[float], float]:
    """AdamW with linear warm-up (10%) and linear decay; minibatches drawn with a seeded generator.

    Returns the loss curve (every 10 steps) and the wall time in seconds. Every method of a seed draws the
    same minibatch sequence (same ``seed``), so per-seed differences are paired.
    """
    params = list(params)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warm) * max(0.0, (steps - s) / max(1, steps - warm))
            if s >= warm
            else (s + 1) / warm
        ),
    )
    g = torch.Generator().manual_seed(seed)
    curve: list[float] = []
    t0 = time.perf_counter()
    it: Iterable[int] = range(steps)
    if progress is not None:
        it = progress(it, desc=desc, total=steps)
    run = 0.0
    for step in it:
        idx = torch.randint(0, len(data), (batch_size,), generator=g).tolist()
        loss = loss_fn([data[i] for i in idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        run += float(loss.detach())
        if (step + 1) % 10 == 0:
            curve.append(run / 10)
            run = 0.0
    return curve, time.perf_counter() - t0


def write_effects(
    res: dict[str, Any], out_dir: Path, reference: str, scale: float = 100.0, unit: str = "points"
) -> None:
    """``effects.md``: paired Δ of every method vs ``reference`` with its SE (shared effect_sizes)."""
    stats = {m: MethodStats(list(r["values"])) for m, r in res["results"].items()}
    effects = effect_sizes(stats, reference=reference)
    res["effects"] = effects
    lines = [
        f"# Effect sizes vs {reference} (`{res['experiment']}`, {res['mode']} mode, {res['seeds']} seeds)",
        "",
        f"Δ = mean of the paired per-seed differences (method − {reference}), in {unit}.",
        "",
        f"| method | Δ ({unit}) | paired SE | pooled std | within noise (abs Δ < 2 SE) |",
        "|---|---|---|---|---|",
    ]
    for m, e in effects.items():
        w = "n/a (1 seed)" if e["within_noise"] is None else ("yes" if e["within_noise"] else "no")
        se = e["paired_se"] if not math.isnan(e["paired_se"]) else float("nan")
        lines.append(
            f"| {m} | {scale * e['delta']:+.2f} | {scale * se:.2f} | {scale * e['pooled_std']:.2f} | {w} |"
        )
    atomic_write_text(out_dir / "effects.md", "\n".join(lines) + "\n")
