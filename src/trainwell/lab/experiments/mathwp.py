"""Lab: math word problems as seq2seq ("BERT + UniLM", kexue.fm/archives/7809), beam widths and TeaForN.

Data: DeepMind's ``mathematics-dataset`` (pip, generated offline; :mod:`trainwell.lab.datasets.mathematics`).
Arithmetic modules whose question contains the expression in words around it
(``arithmetic__add_sub_multiple``,
``__mixed``, ``__mul_div_multiple``, ``__add_or_sub``, ``__mul``) become Ape210K-format records
(``original_text`` = question, ``equation`` = ``x=`` + the expression found in the question, ``ans``) and go
through :class:`~trainwell.seq2seq.mathwp.MathWordProblemDataset` — normalisation, the ``eval(equation) ≈
ans`` filter and redundant-bracket removal — exactly as Ape210K data would. Training: ``train-easy``; test:
other ``train-easy`` problems whose questions never occur in training (the same distribution, as Ape210K's
test set is); secondary metric: the ``interpolate`` split (other numbers, longer expressions), which a
model trained for minutes barely solves (≈ 1–7%). The model must write an executable expression
(spaces dropped, redundant brackets removed); accuracy = the generated expression evaluates (bounded AST
evaluator, never ``eval``) to the answer within 6 decimals; unparsable output counts as wrong.

Model: a small random BERT (2 layers, width 128) with the UniLM mask, trained here from scratch with teacher
forcing or with :class:`~trainwell.seq2seq.TeaForNLoss` (N=2, identity feedback, λ = ½, ½), same minibatches;
decoded with beam widths 1, 2, 3 (post: beam 1–3; +0.1–0.6 points from beams). A small hand-written
Ape210K-format JSONL (Chinese problems with percentages, mixed numbers, ratios, one wrong answer and one
hostile equation) is read end to end each run; its kept/dropped ids and normalised equations are in ``info``.

Judge (non-inferiority, with the paired helper ``MethodStats.clearly_above``): the claim holds when (a)
teacher forcing with beam 3 is not clearly below its greedy decoding, and (b) TeaForN greedy is not clearly
below teacher-forcing greedy ("does not hurt"); "clearly below" means the 95% paired bootstrap CI of the
per-seed difference lies below 0. Paired Δ's vs teacher-forcing greedy are in ``effects.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from trainwell.lab.base import Experiment, MethodStats, RunContext, SeedResult
from trainwell.lab.experiments._seq2seq import char_tokenizer, tiny_bert, train, write_effects
from trainwell.lab.io import atomic_write_text

MODULES = [
    "arithmetic__add_sub_multiple",
    "arithmetic__mixed",
    "arithmetic__mul_div_multiple",
    "arithmetic__add_or_sub",
    "arithmetic__mul",
]
TRAININGS = {"teacher forcing": 1, "TeaForN N=2": 2}
BEAMS = (1, 2, 3)
METHODS = [f"{t} / beam {b}" for t in TRAININGS for b in BEAMS]
REFERENCE = METHODS[0]
LR = 3e-3  # from scratch the copy behaviour emerges after ~300 steps at 3e-3 (not within 300 at 1e-3)

# Hand-written Ape210K-format records (original_text / equation / ans), read end to end every run.
APE_SAMPLE = [
    {
        "id": "a1",
        "original_text": "一件衣服原价150元，打八折后再降价20%，现价是多少元？",
        "equation": "x=150*80%*(1-20%)",
        "ans": "96",
    },
    {
        "id": "a2",
        "original_text": "一根绳子长3(1/2)米，剪去(1/4)米，还剩多少米？",
        "equation": "x=3(1/2)-(1/4)",
        "ans": "3(1/4)",
    },
    {
        "id": "a3",
        "original_text": "甲乙两数的比是(1/2):(1/4)，甲是乙的几倍？",
        "equation": "x=(1/2):(1/4)",
        "ans": "2",
    },
    {
        "id": "a4",
        "original_text": "圆的半径是5厘米，面积是多少平方厘米？",
        "equation": "x=(3.14*(5**2))",
        "ans": "78.5",
    },
    {
        "id": "a5",
        "original_text": "书店有图书1200本，卖出25%，还剩多少本？",
        "equation": "x=1200*(1-25%)",
        "ans": "900",
    },
    {
        "id": "a6",
        "original_text": "小明有12个苹果，吃了(5-3)个，还剩多少个？",
        "equation": "x=12-(5-3)",
        "ans": "10",
    },
    {"id": "a7", "original_text": "答案写错的题：2加2等于几？", "equation": "x=2+2", "ans": "5"},
    {"id": "a8", "original_text": "恶意算式", "equation": "x=__import__('os').getcwd()", "ans": "1"},
    {"id": "a9", "original_text": "一个数的40%是60，这个数是多少？", "equation": "x=60/40%", "ans": "150"},
]


def _records(split: str, n_per_module: int, seed: int) -> list[dict[str, str]]:
    from trainwell.lab.datasets.mathematics import arithmetic_expression, sample_problems

    out = []
    for m_i, module in enumerate(MODULES):
        for j, (q, a) in enumerate(
            sample_problems(module, n_per_module, split=split, seed=seed + 1000 * m_i)
        ):
            expr = arithmetic_expression(q)
            if expr is None:
                continue
            out.append({"id": f"{split}-{module}-{j}", "original_text": q, "equation": "x=" + expr, "ans": a})
    return out


def _ape_sample(out_dir: Path) -> dict[str, Any]:
    from trainwell.seq2seq.mathwp import MathWordProblemDataset, answers_match, safe_eval

    path = out_dir / "ape210k_sample.jsonl"
    atomic_write_text(path, "\n".join(json.dumps(r, ensure_ascii=False) for r in APE_SAMPLE) + "\n")
    ds = MathWordProblemDataset(path)
    return {
        "kept": [it["id"] for it in ds],
        "dropped": list(ds.dropped),
        "equations": {it["id"]: it["equation"] for it in ds},
        "all_kept_evaluate_to_answer": all(
            answers_match(safe_eval(it["equation"]), it["answer"]) for it in ds
        ),
    }


def _accuracy(solver: Any, items: list[dict[str, Any]], batch: int = 128) -> tuple[float, float, list[Any]]:
    from trainwell.seq2seq.mathwp import answers_match

    correct, parsed = 0, 0
    examples: list[dict[str, Any]] = []
    for i in range(0, len(items), batch):
        chunk = items[i : i + batch]
        outs = solver.solve_batch([it["question"] for it in chunk])
        for it, (expr, value) in zip(chunk, outs):
            ok = value is not None and answers_match(float(value), it["answer"])
            correct += ok
            parsed += value is not None
            if len(examples) < 4:
                examples.append(
                    {
                        "question": it["question"],
                        "target": it["equation"],
                        "generated": expr,
                        "correct": bool(ok),
                    }
                )
    return correct / len(items), parsed / len(items), examples


def run_seed(ctx: RunContext) -> SeedResult:
    from trainwell.seq2seq import (
        MathSolver,
        MathWordProblemDataset,
        Seq2SeqCollator,
        TeaForNLoss,
        UniLMSeq2Seq,
    )

    n_train = ctx.pick(tiny=30, quick=700, full=6000)  # per module, before the filters
    n_test = ctx.pick(tiny=6, quick=120, full=400)
    n_interp = ctx.pick(tiny=6, quick=30, full=400)
    steps = ctx.pick(tiny=6, quick=500, full=6000)
    batch = ctx.pick(tiny=8, quick=32, full=64)
    hidden, layers = ctx.pick(tiny=(32, 1), quick=(128, 2), full=(256, 4))
    train_set = MathWordProblemDataset(_records("train-easy", n_train, seed=0))
    # held-out problems of the training distribution (as Ape210K's test set is), none of whose questions
    # occurs in training; the interpolate split (other numbers, longer expressions) is a secondary metric
    seen = {it["question"] for it in train_set}
    fresh = [r for r in _records("train-easy", -(-2 * n_test // len(MODULES)), seed=777)
             if r["original_text"] not in seen]
    test_set = MathWordProblemDataset(fresh[:n_test])
    interp_set = MathWordProblemDataset(_records("interpolate", n_interp, seed=1))
    pairs = train_set.pairs()
    tok = char_tokenizer(
        [q for q, _ in pairs] + [e for _, e in pairs]
        + [it["question"] for it in test_set] + [it["question"] for it in interp_set],
        extra="0123456789+-*/().",
    )
    col = Seq2SeqCollator(tok, max_source_len=100, max_target_len=60)
    values: dict[str, float] = {}
    parse: dict[str, float] = {}
    interp: dict[str, float] = {}
    secs: dict[str, float] = {}
    curves: dict[str, list[float]] = {}
    examples: dict[str, Any] = {}
    for name, n_steps in TRAININGS.items():
        model = UniLMSeq2Seq(tiny_bert(tok.vocab_size, hidden=hidden, layers=layers, seed=ctx.seed), tok)
        model.train()
        tf = TeaForNLoss(model, n_steps=n_steps)

        def loss_fn(items: list[Any], tf: TeaForNLoss = tf) -> torch.Tensor:
            b = col(items)
            return tf(b["input_ids"], b["attention_mask"], b["token_type_ids"], b["labels"]).loss

        curve, t = train(
            model.parameters(),
            loss_fn,
            pairs,
            steps,
            batch,
            LR,
            ctx.seed,
            progress=ctx.progress,
            desc=f"mathwp {name}",
        )
        curves[f"{name}/train loss"] = curve
        model.eval()
        with torch.no_grad():
            for beams in BEAMS:
                key = f"{name} / beam {beams}"
                solver = MathSolver(model, num_beams=beams, max_new_tokens=64)
                acc, pr, ex = _accuracy(solver, list(test_set))
                values[key], parse[key] = acc, pr
                interp[key] = _accuracy(solver, list(interp_set))[0]
                if beams == 1:
                    examples[name] = ex
        secs[name] = t
        ctx.log(
            f"seed {ctx.seed} {name}: "
            + ", ".join(f"beam {b} {values[f'{name} / beam {b}']:.3f}" for b in BEAMS)
        )
    info = {
        "sizes": {
            "train": len(train_set),
            "train_dropped": len(train_set.dropped),
            "test": len(test_set),
            "test_dropped": len(test_set.dropped),
            "interpolate": len(interp_set),
            "vocab": tok.vocab_size,
        },
        "config": {"steps": steps, "batch": batch, "hidden": hidden, "layers": layers, "lr": LR},
        "examples": examples,
        "ape210k_sample": _ape_sample(ctx.out_dir) if ctx.is_main else {},
        "train_seconds": secs,
    }
    secondary = {"parse_rate": parse, "interpolate accuracy": interp}
    return SeedResult(values=values, secondary=secondary, curves=curves, info=info)


def judge(stats: dict[str, MethodStats]) -> bool:
    """Non-inferiority: (a) TF beam 3 and (b) TeaForN greedy are not clearly below TF greedy (paired CI)."""
    need = ["teacher forcing / beam 1", "teacher forcing / beam 3", "TeaForN N=2 / beam 1"]
    if any(k not in stats for k in need):
        return False
    tf1, tf3, tn1 = (stats[k] for k in need)
    return not tf1.clearly_above(tf3) and not tf1.clearly_above(tn1)


def _plot(res: dict[str, Any], cells: list[SeedResult], out_dir: Path) -> list[Path]:
    write_effects(res, out_dir, REFERENCE)
    return []


EXPERIMENT = Experiment(
    name="mathwp",
    title="Math problems as seq2seq on a UniLM-masked BERT: execution accuracy by beam width, TeaForN vs "
    "teacher forcing",
    metric="execution accuracy",
    claim=(
        "Beam search is at least as accurate as greedy decoding (post: +0.1–0.6 points with beam 2–3), "
        "and TeaForN (N=2) does not hurt (paper: helps more at larger beams); judged as non-inferiority: "
        "neither TF beam 3 nor TeaForN greedy is clearly below TF greedy (the 95% paired bootstrap CI of "
        "the per-seed difference lying below 0)."
    ),
    methods=METHODS,
    run_seed=run_seed,
    judge=judge,
    source="kexue.fm/archives/7809; kexue.fm/archives/7818; arXiv:2009.11506, 2010.03494",
    reported="Ape210K BERT-base valid/test: beam 1 71.67/71.65, beam 2 71.81/72.27, beam 3 71.85/72.35; "
    "TeaForN: larger gains at larger beams (WMT14, CNN/DM, Gigaword)",
    seeds={"tiny": 1, "quick": 3, "full": 3},
    default=False,  # about 3.3 min on 2 threads in quick mode: run it by name (`trainwell lab mathwp`)
    version="2",  # held-out train-easy test set (interpolate as a secondary metric); cached decoding
    full_runtime="about 1.5 h on 2 CPU cores (width 256, 4 layers, 6,000 steps × 2 trainings × 3 seeds)",
    plot=_plot,
    threads=2,
)
