"""Lab: a DialoGPT-style chat LM over concatenated turns (kexue.fm/archives/7718), loss on all turns vs
replies.

Data: every conversation of ``chatterbot-corpus`` (pip) in Chinese (467) and English (2,025), split 90/10 by a
fixed hash of the text. Each dialogue becomes ``[CLS] u_1 [SEP] u_2 [SEP] …`` with alternating speaker ids
(:class:`~trainwell.seq2seq.DialogueLMCollator`, whole utterances up to 128 character tokens). Model: a small
random GPT-2 (2 layers, width 128) wrapped in :class:`~trainwell.seq2seq.DialogueLM` (learned speaker
embedding), trained here from scratch with the loss on every turn (``loss_on="all"``, the author's setting)
or only on utterances 2..n (``"responses"``), same initial weights and minibatches.

Metric: held-out perplexity of the *responses* (utterances 2..n, ``exp`` of the mean next-token CE; lower is
better); secondary: held-out perplexity of all tokens. Sample replies (top-k 5, ≤ 32 tokens) to a few held-out
Chinese and English histories are in ``info``. The post makes no quantitative claim (replies are judged by
eye); the one checked here, fixed before running: training on all turns gives replies a lower held-out
perplexity than training on replies only (more supervised tokens per dialogue).
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any

import torch

from trainwell.lab.base import Experiment, MethodStats, RunContext, SeedResult
from trainwell.lab.experiments._seq2seq import char_tokenizer, tiny_gpt2, train, write_effects

METHODS = ['loss_on="all"', 'loss_on="responses"']
MAX_LEN = 128


def _split(convs: list[list[str]]) -> tuple[list[list[str]], list[list[str]]]:
    tr: list[list[str]] = []
    te: list[list[str]] = []
    for c in convs:
        (te if zlib.crc32("\n".join(c).encode("utf-8")) % 10 == 0 else tr).append(c)
    return tr, te


@torch.no_grad()
def perplexity(model: Any, collator: Any, dialogues: list[list[str]], batch: int = 64) -> float:
    """``exp`` of the mean next-token CE over the positions the collator labels."""
    total, count = 0.0, 0
    model.eval()
    for i in range(0, len(dialogues), batch):
        b = collator(dialogues[i : i + batch])
        logits = model(b["input_ids"], b["attention_mask"], b["token_type_ids"]).logits.float()
        lab = b["labels"][:, 1:]
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), lab.reshape(-1),
                                               ignore_index=-100, reduction="sum")
        total += float(ce)
        count += int((lab != -100).sum())
    return math.exp(total / max(count, 1))


def run_seed(ctx: RunContext) -> SeedResult:
    from trainwell.lab.datasets.chatterbot import load_conversations
    from trainwell.seq2seq import DialogueLM, DialogueLMCollator

    convs = load_conversations(("chinese", "english"))
    train_set, test_set = _split(convs)
    if ctx.tiny:
        train_set, test_set = train_set[:40], test_set[:10]
    steps = ctx.pick(tiny=4, quick=300, full=5000)
    batch = ctx.pick(tiny=4, quick=32, full=32)
    hidden, layers = ctx.pick(tiny=(32, 1), quick=(128, 2), full=(256, 4))
    tok = char_tokenizer(u for c in convs for u in c)
    eval_resp = DialogueLMCollator(tok, max_len=MAX_LEN, loss_on="responses")
    eval_all = DialogueLMCollator(tok, max_len=MAX_LEN, loss_on="all")
    values: dict[str, float] = {}
    ppl_all: dict[str, float] = {}
    curves: dict[str, list[float]] = {}
    samples: dict[str, Any] = {}
    histories = [c[:1] for c in test_set if any("\u4e00" <= ch <= "\u9fff" for ch in c[0])][:3]
    histories += [c[:1] for c in test_set if c[0].isascii()][:3]
    for method in METHODS:
        loss_on = method.split('"')[1]
        col = DialogueLMCollator(tok, max_len=MAX_LEN, loss_on=loss_on)
        model = DialogueLM(tiny_gpt2(tok.vocab_size, hidden=hidden, layers=layers, seed=ctx.seed), tok,
                           max_len=MAX_LEN)
        model.train()

        def loss_fn(items: list[Any], model: Any = model, col: Any = col) -> torch.Tensor:
            return model(**col(items)).loss  # type: ignore[no-any-return]

        curve, _ = train(model.parameters(), loss_fn, train_set, steps, batch, 1e-3, ctx.seed,
                         progress=ctx.progress, desc=f"dialog {loss_on}")
        curves[f"{method}/train loss"] = curve
        values[method] = perplexity(model, eval_resp, test_set)
        ppl_all[method] = perplexity(model, eval_all, test_set)
        g = torch.Generator().manual_seed(ctx.seed)
        samples[method] = [
            {
                "history": h,
                "replies": [model.respond(h, top_k=5, max_new_tokens=32, generator=g) for _ in range(2)],
            }
            for h in histories
        ]
        ctx.log(
            f"seed {ctx.seed} {method}: response ppl {values[method]:.2f}, "
            f"all-token ppl {ppl_all[method]:.2f}"
        )
    info = {
        "sizes": {"train": len(train_set), "test": len(test_set), "vocab": tok.vocab_size},
        "config": {"steps": steps, "batch": batch, "hidden": hidden, "layers": layers, "max_len": MAX_LEN},
        "sample_replies": samples,
    }
    return SeedResult(values=values, secondary={"all-token perplexity": ppl_all}, curves=curves, info=info)


def judge(stats: dict[str, MethodStats]) -> bool:
    """Held-out response perplexity: mean with loss on all turns < mean with loss on responses only."""
    if any(m not in stats for m in METHODS):
        return False
    return stats[METHODS[0]].mean < stats[METHODS[1]].mean


def _plot(res: dict[str, Any], cells: list[SeedResult], out_dir: Path) -> list[Path]:
    write_effects(res, out_dir, METHODS[1], scale=1.0, unit="perplexity")
    return []


EXPERIMENT = Experiment(
    name="dialog",
    title="DialoGPT-style chat LM on chatterbot-corpus (zh + en): loss on all turns vs on responses only",
    metric="held-out response perplexity",
    higher_is_better=False,
    claim=(
        "One LM over the concatenated dialogue trains every turn in one pass; with the loss on all turns "
        "(author) the held-out replies get a lower perplexity than with the loss on replies only."
    ),
    methods=METHODS,
    run_seed=run_seed,
    judge=judge,
    source="kexue.fm/archives/7718; arXiv:2008.03946 (LCCC, CDial-GPT)",
    reported="qualitative only (varied, on-topic sampled replies); final training loss ≈ 2.83 nats/token "
    "on LCCC",
    seeds={"tiny": 1, "quick": 3, "full": 3},
    default=False,  # ≈ 3.5 min per seed on one thread in quick mode: run it by name (`trainwell lab dialog`)
    full_runtime="about 40 min on 2 CPU cores (width 256, 4 layers, 5,000 steps × 2 × 3 seeds)",
    plot=_plot,
    threads=2,
)
