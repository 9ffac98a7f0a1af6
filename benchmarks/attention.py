"""FAVOR+ attention vs exact SDPA vs performer-pytorch: forward+backward time, peak memory, error.

Setup: q, k, v ``[1, 1, n, 64]`` float32 (one batch·head, d_head 64), m = 256 random features (Haar-ORF,
chi norms), n = 512 … 16384, bidirectional and causal (chunk 128). Each timed call runs the forward and the
backward of ``out.sum()`` w.r.t. q, k, v. Rows:

* ``sdpa`` — ``torch.nn.functional.scaled_dot_product_attention`` (exact; the baseline of the ratios);
* ``trainwell`` — :func:`trainwell.nn.favor_attention` (causal: batched chunked prefix sums, no loop);
* ``performer-pytorch`` — ``performer_pytorch.FastAttention(64, nb_features=256, causal=...)`` (its CPU
  causal path loops over chunks in Python and keeps every chunk's prefix state).

"mean abs err" is the mean |output − exact SDPA output| on inputs q, k ~ N(0, 0.5²), v ~ N(0, 1) (the
timings use N(0, 1); time does not depend on the values). At q, k ~ N(0, 1) and d = 64 the positive
estimator's variance ∝ exp(‖q + k‖²/√d) ≈ e^16 makes m = 256 useless for *any* FAVOR+ implementation; the
row ``uniform (mean of v)`` gives the error of ignoring the scores altogether as a yardstick — an error
near it means the method returns little more than the mean of the values (performer-pytorch's eps = 1e-4,
added after a max that omits −‖k‖²/2, pushes it there). Peak memory: the harness's allocator
replay (tensor bytes above what was live at the start of the call). Targets (issue 10, 2 threads):
bidirectional ≤ 0.6× SDPA at n = 8192; causal ≤ 0.8× SDPA at n = 16384 and ≥ 5× faster than
performer-pytorch there. The crossover is the smallest measured n where trainwell is faster than SDPA.

``--quick`` measures n ∈ {1024, 4096, 8192, 16384} with fewer repeats. Long SDPA/performer-pytorch rows take
tens of seconds each on a busy 2-core machine; repeats are reduced automatically for n ≥ 8192.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import torch.nn.functional as F

import _harness as H

D_HEAD, M = 64, 256
NS_FULL = [512, 1024, 2048, 4096, 8192, 16384]
NS_QUICK = [1024, 4096, 8192, 16384]


def _inputs(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 1, n, D_HEAD, generator=g).requires_grad_() for _ in range(3)]


def _fwd_bwd(f: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
             qkv: list[torch.Tensor]) -> Callable[[], None]:
    def run() -> None:
        for t in qkv:
            t.grad = None
        f(*qkv).sum().backward()

    return run


def main(argv: list[str] | None = None) -> None:
    args = H.parse_args(__doc__.splitlines()[0], argv)
    from trainwell.nn import favor_attention, random_projection

    try:
        import performer_pytorch

        has_pp = True
    except ImportError:  # pragma: no cover - the bench extra is not installed
        has_pp = False
    ns = NS_QUICK if args.quick else NS_FULL
    print(H.environment_line(args))
    print(f"q, k, v [1, 1, n, {D_HEAD}] float32, m = {M}; forward + backward of out.sum()\n")
    proj = random_projection(M, D_HEAD, generator=torch.Generator().manual_seed(0))
    summary: dict[tuple[str, int], dict[str, Any]] = {}
    for causal in (False, True):
        mode = "causal" if causal else "bidirectional"
        for n in ns:
            qkv = _inputs(n)
            fns: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
                "sdpa": lambda q, k, v, c=causal: F.scaled_dot_product_attention(q, k, v, is_causal=c),
                "trainwell": lambda q, k, v, c=causal: favor_attention(q, k, v, proj, causal=c),
            }
            if has_pp:
                torch.manual_seed(0)
                pp = performer_pytorch.FastAttention(D_HEAD, nb_features=M, causal=causal)
                fns["performer-pytorch"] = lambda q, k, v, pp=pp: pp(q, k, v)
            with torch.no_grad():
                small = [qkv[0] * 0.5, qkv[1] * 0.5, qkv[2]]
                exact = fns["sdpa"](*small)
                errs = {name: float((f(*small) - exact).abs().mean()) for name, f in fns.items()}
                uniform_err = float((small[2].mean(-2, keepdim=True) - exact).abs().mean())
            del exact, small
            repeats = args.repeats if n < 8192 else max(2, min(args.repeats, 3))
            warmup = args.warmup if n < 8192 else 0  # one call of a big row takes seconds: warm enough
            timings = H.time_many(
                {k: _fwd_bwd(f, qkv) for k, f in fns.items()}, repeats=repeats, warmup=warmup
            )
            results = []
            for name, f in fns.items():
                t = timings.get(name)
                peak = H.peak_memory(_fwd_bwd(f, qkv))
                timing = t if isinstance(t, H.Timing) else None
                note = "" if timing is not None else f"failed: {t}"
                results.append(H.Result(name, timing, peak, errs[name], note))
                summary[(mode, n)] = summary.get((mode, n), {})
                summary[(mode, n)][name] = None if timing is None else timing.median_ms
            results.append(
                H.Result("uniform (mean of v)", None, None, uniform_err, "error yardstick, not timed")
            )
            print(H.results_table(results, baseline="sdpa", title=f"{mode}, n = {n}").replace(
                "max abs diff", "mean abs err"))
            sys.stdout.flush()
    print("## Summary (median ms, ratio to SDPA)\n")
    rows = []
    for (mode, n), r in summary.items():
        s, o, p = r.get("sdpa"), r.get("trainwell"), r.get("performer-pytorch")
        rows.append([mode, n, s, o, None if not (s and o) else f"{o / s:.2f}×", p,
                     None if not (p and o) else f"{p / o:.1f}×"])
    print(H.markdown_table(["mode", "n", "sdpa ms", "trainwell ms", "trainwell/sdpa", "perf-pytorch ms",
                            "perf-pytorch/trainwell"], rows))
    print()
    for mode in ("bidirectional", "causal"):
        cross = next((n for n in ns if (summary[(mode, n)].get("trainwell") or 1e99)
                      < (summary[(mode, n)].get("sdpa") or 0)), None)
        print(f"- Crossover ({mode}): trainwell faster than SDPA from n = {cross} (smallest measured n)")
    b = summary.get(("bidirectional", 8192), {})
    c = summary.get(("causal", 16384), {})
    if b.get("sdpa") and b.get("trainwell"):
        H.print_target("bidirectional n=8192 trainwell / SDPA", b["trainwell"] / b["sdpa"], 0.6)
    if c.get("sdpa") and c.get("trainwell"):
        H.print_target("causal n=16384 trainwell / SDPA", c["trainwell"] / c["sdpa"], 0.8)
    if c.get("performer-pytorch") and c.get("trainwell"):
        H.print_target(
            "causal n=16384 trainwell / performer-pytorch", c["trainwell"] / c["performer-pytorch"], 0.2
        )


if __name__ == "__main__":
    main()
