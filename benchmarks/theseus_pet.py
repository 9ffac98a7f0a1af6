"""Theseus and PET benchmarks: training-step cost of module replacement, and PET scoring overhead.

Run: ``.venv/bin/python benchmarks/theseus_pet.py [--quick] [--threads N] [--repeats N]``.

Table 1 — one training step (zero_grad + forward + backward + AdamW step) of a 12-layer
``BertForSequenceClassification`` built from a config (width 64, 4 heads, batch 16 × 64 tokens, dropout
0), compressed 12 → 3 at p = 0.5:

* ``trainwell compress`` — :class:`trainwell.nn.TheseusModuleList`: only the chosen branch of each
  module runs (the official code's per-step layer list).
* ``both branches (mix)`` — the "dropout-like" formulation ``ε·F_s(x) + (1 − ε)·F_p(x)`` that runs the
  successor block and the predecessor group for every module and zeroes one (how a Keras graph does it);
  same ε draws, same result.
* ``teacher step`` — fine-tuning the full 12-layer model; ``successor only`` — the exported 3-layer model.

"max abs diff" compares the mixed formulation's logits with ours under the same ε (must be 0 up to
rounding). Target: our step ≤ 0.8× the both-branches step (expected ≈ (0.5·3 + 0.5·12) / 15 of the
forward work plus the same small backward).

Table 2 — PET zero-shot scoring of 256 texts (batch 64) with a tiny ``BertForMaskedLM``:
``PETClassifier.score`` (pattern building, batching, gather) vs a hand-written loop (tokenize the filled
template with the tokenizer, forward, ``log_softmax``, index the slot). Target: ≤ 1.3× the hand loop.
"""

from __future__ import annotations

import copy
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from torch import Tensor, nn

import _harness as H


def _bert(layers: int) -> Any:
    import transformers

    cfg = transformers.BertConfig(
        vocab_size=512,
        hidden_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return transformers.BertForSequenceClassification(cfg)


class _Mix(nn.Module):
    """Module i of the dropout-like formulation: both branches run, ε picks one."""

    def __init__(self, succ: nn.Module, group: list[nn.Module], eps: bool) -> None:
        super().__init__()
        self.succ, self.group, self.eps = succ, group, eps

    def forward(self, hidden: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        s = self.succ(hidden, *args, **kwargs)
        p = hidden
        for b in self.group:
            p = b(p, *args, **kwargs)
        e = float(self.eps)
        return e * s + (1.0 - e) * p


class _BothBranches(nn.Module):
    def __init__(self, theseus: Any) -> None:
        super().__init__()
        self.t = theseus
        self.selection: list[bool] = []

    def __iter__(self) -> Any:
        sel = self.selection
        return iter([_Mix(self.t.successor[i], [self.t.predecessor[j] for j in g], sel[i])
                     for i, g in enumerate(self.t.groups())])


def timing_table(args: Any) -> list[bool]:
    from trainwell.nn import ConstantReplacement, compress, export_successor

    torch.manual_seed(0)
    teacher = _bert(12)
    ours = copy.deepcopy(teacher)
    theseus = compress(ours, n_successor=3, scheduler=ConstantReplacement(0.5))
    mixed = copy.deepcopy(ours)
    mixed_t = mixed.bert.encoder.layer
    both = _BothBranches(mixed_t)
    mixed.bert.encoder.layer = both  # type: ignore[assignment]
    small = export_successor(ours)
    ids = torch.randint(0, 512, (16, 64))
    labels = torch.randint(0, 2, (16,))
    # equivalence under a fixed selection, before any training step changes the weights
    sel = [True, False, True]
    theseus.sample = lambda: list(sel)  # type: ignore[method-assign]
    both.selection = sel
    with torch.no_grad():
        ours.train()
        mixed.train()
        diff = H.max_abs_diff(ours(input_ids=ids).logits, mixed(input_ids=ids).logits)
    opts = {
        "trainwell compress": (ours, torch.optim.AdamW(list(theseus.successor_parameters()), 1e-4)),
        "both branches (mix)": (mixed, torch.optim.AdamW(list(mixed_t.successor_parameters()), 1e-4)),
        "teacher step": (teacher, torch.optim.AdamW(teacher.parameters(), 1e-4)),
        "successor only": (small, torch.optim.AdamW(small.parameters(), 1e-4)),
    }
    # both Theseus rows draw the same ε per round: one shared stream
    rng = random.Random(0)

    def make(name: str) -> Any:
        model, opt = opts[name]
        model.train()

        def step() -> None:
            if name == "trainwell compress":
                r = random.Random(rng.random())
                sel = [r.random() < 0.5 for _ in range(3)]
                theseus.sample = lambda: list(sel)  # type: ignore[method-assign]
            elif name == "both branches (mix)":
                r = random.Random(rng.random())
                both.selection = [r.random() < 0.5 for _ in range(3)]
            opt.zero_grad(set_to_none=True)
            model(input_ids=ids, labels=labels).loss.backward()
            opt.step()

        return step

    timings = H.time_many({n: make(n) for n in opts}, repeats=args.repeats, warmup=args.warmup)
    rows = []
    for name, t in timings.items():
        if isinstance(t, Exception):
            rows.append(H.Result(name, note=f"failed: {t}"))
        else:
            rows.append(H.Result(name, timing=t, diff=diff if name == "both branches (mix)" else None))
    print(H.results_table(rows, baseline="both branches (mix)",
                          title="Theseus training step, 12 → 3 layers, batch 16 × 64"))
    t_ours, t_both = timings["trainwell compress"], timings["both branches (mix)"]
    met = []
    if not isinstance(t_ours, Exception) and not isinstance(t_both, Exception):
        met.append(
            H.print_target("compress step / both-branches step", t_ours.median_ms / t_both.median_ms, 0.8)
        )
    return met


def pet_table(args: Any) -> list[bool]:
    import transformers

    from trainwell.nn import Pattern, PETClassifier, Verbalizer

    chars = list("很不满意。服务质量好差价格贵便宜快慢送货书店的了是")
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "vocab.txt").write_text(
            "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]) + "\n"
        )
        tok = transformers.BertTokenizerFast.from_pretrained(d)
    torch.manual_seed(0)
    mlm = transformers.BertForMaskedLM(
        transformers.BertConfig(
            vocab_size=len(tok),
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=128,
        )
    ).eval()
    g = random.Random(0)
    texts = ["".join(g.choice(chars[5:]) for _ in range(g.randint(10, 40))) for _ in range(256)]
    clf = PETClassifier(mlm, tok, Pattern("[MASK]满意。{text}"), Verbalizer({1: "很", 0: "不"}))
    words = tok.convert_tokens_to_ids(["很", "不"])

    def by_hand() -> Tensor:
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), 64):
                enc = tok(["[MASK]满意。" + t for t in texts[i : i + 64]], padding=True, return_tensors="pt")
                lp = torch.log_softmax(mlm(**enc).logits.float(), -1)
                out.append(lp[:, 1, words])  # slot right after [CLS]
        return torch.cat(out)

    diff = H.max_abs_diff(clf.score(texts), by_hand())
    timings = H.time_many({"PETClassifier.score": lambda: clf.score(texts), "hand-written loop": by_hand},
                          repeats=args.repeats, warmup=args.warmup)
    rows = [H.Result(n, timing=t if not isinstance(t, Exception) else None,
                     diff=diff if n == "PETClassifier.score" else None) for n, t in timings.items()]
    print(H.results_table(rows, baseline="hand-written loop", title="PET zero-shot scoring, 256 texts"))
    a, b = timings["PETClassifier.score"], timings["hand-written loop"]
    if isinstance(a, Exception) or isinstance(b, Exception):
        return []
    return [H.print_target("PETClassifier.score / hand loop", a.median_ms / b.median_ms, 1.3)]


def main(argv: list[str] | None = None) -> None:
    args = H.parse_args(__doc__.splitlines()[0], argv)
    print("# Theseus and PET benchmarks\n")
    print(H.environment_line(args))
    met = timing_table(args) + pet_table(args)
    print(f"Targets met: {sum(met)}/{len(met)}")


if __name__ == "__main__":
    main()
