"""Optimizer benchmarks: built-in accumulation (AccumAdamW / AccumSGDM) vs torch.optim, memory of the three
accumulation styles, and zeroth-order gradient throughput vs nevergrad's ask/tell.

Run: ``.venv/bin/python benchmarks/optim.py [--quick] [--device cuda]``.

Tables
1. Step time on a 10M-parameter MLP (gradients pre-filled, only ``opt.step()`` is timed): torch AdamW with
   the for-loop, ``foreach`` and ``fused`` kernels vs ``trainwell.optim.AccumAdamW`` (``accum_steps=1``;
   default kernel choice and ``foreach=True``; ``accum_steps=4`` averaged per micro-step). "max abs diff" is
   the parameter difference after 3 steps from identical parameters and gradients vs torch AdamW(foreach).
   Same for SGD-momentum vs ``AccumSGDM`` (``dampening=0``, which is torch's SGD exactly at k=1).
   Targets: AccumAdamW step ≤ 1.1 × torch AdamW(foreach=True); AccumAdamW(fused=True) step ≤ 1.2 × torch
   AdamW(fused=True), with the same parameters (both rows show the same difference from foreach).
2. Peak tensor memory of one accumulation cycle (k=4 micro-batches, 10M-parameter MLP, batch 8 so that
   activations are small), measured above the live parameters and optimizer state: "buffer" = the usual
   PyTorch recipe (``(loss/k).backward()`` k times into ``.grad``, then ``torch.optim.AdamW.step()``),
   "built-in" = ``AccumAdamW(accum_steps=4)`` stepping and freeing ``.grad`` every micro-batch,
   "update-in-backward" = ``AccumAdamW(accum_steps=4, update_in_backward=True)`` (each gradient is folded
   into the moments by a post-accumulate-grad hook and freed at once). Target: update-in-backward peak ≤
   params + optimizer state + largest single gradient (activations, measured separately, are allowed on top).
3. Zeroth-order: ``trainwell.optim.zo_grad`` + plain SGD vs nevergrad ``OnePlusOne`` / ``DiagonalCMA``
   ask/tell on the same shifted least-squares objective (d = 100), same budget of function evaluations:
   wall time, evaluations per second and final objective.
"""

from __future__ import annotations

import copy
import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from torch import nn

import _harness as H


def make_mlp(width: int, depth: int, device: str) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).to(device)


def _fill_grads(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g).to(p.device)


def _raise(err: Exception) -> None:
    raise err


def _run_steps(opt: torch.optim.Optimizer, n: int) -> None:
    for _ in range(n):
        opt.step()


def step_time_tables(args: Any) -> list[bool]:
    AccumAdamW = H.import_public("trainwell.optim", "AccumAdamW", "accumulate")
    AccumSGDM = H.import_public("trainwell.optim", "AccumSGDM", "accumulate")

    width, depth = 1000, 10  # 10 × (1000·1000 + 1000) = 10.01M parameters
    base = make_mlp(width, depth, args.device)
    n_params = sum(p.numel() for p in base.parameters())
    print(f"\nModel: {depth} × Linear({width}, {width}) = {n_params / 1e6:.2f}M parameters, fp32.\n")
    lr = 1e-3

    def adamw_factory(kind: str) -> Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None:
        if kind == "loop":
            return lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=0.01, foreach=False)
        if kind == "foreach":
            return lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=0.01, foreach=True)
        if kind == "fused":
            return lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=0.01, fused=True)
        if kind == "ours":
            return lambda ps: AccumAdamW(ps, lr=lr, weight_decay=0.01)
        if kind == "ours-foreach":
            return lambda ps: AccumAdamW(ps, lr=lr, weight_decay=0.01, foreach=True)
        if kind == "ours-fused":
            return lambda ps: AccumAdamW(ps, lr=lr, weight_decay=0.01, fused=True)
        if kind == "ours-k4":
            return lambda ps: AccumAdamW(ps, lr=lr, weight_decay=0.01, accum_steps=4)
        return None

    def sgd_factory(kind: str) -> Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None:
        if kind == "loop":
            return lambda ps: torch.optim.SGD(ps, lr=lr, momentum=0.9, foreach=False)
        if kind == "foreach":
            return lambda ps: torch.optim.SGD(ps, lr=lr, momentum=0.9, foreach=True)
        if kind == "fused":
            return lambda ps: torch.optim.SGD(ps, lr=lr, momentum=0.9, fused=True)
        if kind == "ours":
            return lambda ps: AccumSGDM(ps, lr=lr, momentum=0.9)
        if kind == "ours-foreach":
            return lambda ps: AccumSGDM(ps, lr=lr, momentum=0.9, foreach=True)
        if kind == "ours-k4":
            return lambda ps: AccumSGDM(ps, lr=lr, momentum=0.9, accum_steps=4)
        return None

    labels = {
        "loop": "torch {name} (for-loop)",
        "foreach": "torch {name} (foreach)",
        "fused": "torch {name} (fused)",
        "ours": "trainwell {ours} k=1 (default kernels)",
        "ours-foreach": "trainwell {ours} k=1 (foreach=True)",
        "ours-fused": "trainwell {ours} k=1 (fused=True)",
        "ours-k4": "trainwell {ours} k=4 (mean per micro-step)",
    }
    met: list[bool] = []
    families = (("AdamW", "AccumAdamW", adamw_factory), ("SGD", "AccumSGDM", sgd_factory))
    for name, ours_name, factory in families:
        results: list[H.Result] = []
        reference_params: list[torch.Tensor] | None = None
        fns: dict[str, Callable[[], Any]] = {}
        diffs: dict[str, float | None] = {}
        keep: list[tuple[nn.Module, torch.optim.Optimizer]] = []
        for kind in ("foreach", "loop", "fused", "ours", "ours-foreach", "ours-fused", "ours-k4"):
            make = factory(kind)
            if make is None:  # no fused AccumSGDM
                continue
            label = labels[kind].format(name=name, ours=ours_name)
            # correctness: 3 steps from identical params/grads (k=4 does 12 micro-steps = 3 updates)
            model = copy.deepcopy(base)
            _fill_grads(model)
            try:
                opt = make(list(model.parameters()))
            except (RuntimeError, ValueError, TypeError) as err:  # e.g. fused unsupported on this device
                fns[label] = functools.partial(_raise, err)
                diffs[label] = None
                continue
            _run_steps(opt, 12 if kind == "ours-k4" else 3)
            params = [p.detach().clone() for p in model.parameters()]
            if kind == "foreach":
                reference_params = params
            diff = H.max_abs_diff(params, reference_params) if reference_params is not None else None
            # timing: the same (already stepped) model and optimizer; only step() is timed, round-robin below
            fns[label] = functools.partial(_run_steps, opt, 4 if kind == "ours-k4" else 1)
            diffs[label] = diff
            keep.append((model, opt))
        timings = H.time_many(fns, args.repeats, args.warmup, args.device)
        for label, t in timings.items():
            if isinstance(t, Exception):
                results.append(H.Result(label, note=f"unavailable: {t}"[:80]))
                continue
            if label.endswith("(mean per micro-step)"):
                t = H.Timing(t.median_ms / 4, t.iqr_ms / 4, t.n, t.runs_ms)
            note = "params after 3 updates vs foreach" if diffs[label] is not None else ""
            results.append(H.Result(label, t, diff=diffs[label], note=note))
        keep.clear()
        print(
            H.results_table(
                results, f"torch {name} (foreach)", title=f"{name} step time, {n_params / 1e6:.1f}M params"
            )
        )
        by_name = {r.name: r for r in results}
        ours = by_name[f"trainwell {ours_name} k=1 (default kernels)"]
        ref = by_name[f"torch {name} (foreach)"]
        if name == "AdamW" and ours.timing and ref.timing:
            met.append(
                H.print_target(
                    "AccumAdamW step / torch AdamW(foreach) step",
                    ours.timing.median_ms / ref.timing.median_ms,
                    1.1,
                )
            )
            ours_fe = by_name[f"trainwell {ours_name} k=1 (foreach=True)"]
            if ours_fe.timing:
                print(
                    f"- (AccumAdamW foreach=True / torch AdamW(foreach): "
                    f"{ours_fe.timing.median_ms / ref.timing.median_ms:.2f}×)"
                )
            ours_fused = by_name[f"trainwell {ours_name} k=1 (fused=True)"]
            ref_fused = by_name[f"torch {name} (fused)"]
            if ours_fused.timing and ref_fused.timing:
                met.append(
                    H.print_target(
                        "AccumAdamW(fused=True) step / torch AdamW(fused) step",
                        ours_fused.timing.median_ms / ref_fused.timing.median_ms,
                        1.2,
                    )
                )
                same = (
                    diffs.get(f"trainwell {ours_name} k=1 (fused=True)"),
                    diffs.get(f"torch {name} (fused)"),
                )
                print(f"- fused params after 3 updates vs torch fused: identical = {same[0] == same[1]}")
            print()
    return met


def memory_table(args: Any) -> list[bool]:
    AccumAdamW = H.import_public("trainwell.optim", "AccumAdamW", "accumulate")

    width, depth, batch, k = 1000, 10, 8, 4
    base = make_mlp(width, depth, args.device)
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(batch, width, generator=gen).to(args.device) for _ in range(k)]

    def loss_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x).pow(2).mean()

    params_bytes = H.tensor_bytes(base.parameters())
    largest_grad = max(p.numel() * p.element_size() for p in base.parameters())
    activations = H.saved_tensor_bytes(lambda: loss_of(base, xs[0]), exclude=base.parameters())

    def buffer_cycle(model: nn.Module, opt: torch.optim.Optimizer) -> None:
        for x in xs:
            (loss_of(model, x) / k).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def builtin_cycle(model: nn.Module, opt: torch.optim.Optimizer) -> None:
        for x in xs:
            loss_of(model, x).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    setups: list[tuple[str, Callable[[nn.Module], torch.optim.Optimizer], Callable[..., None]]] = [
        (
            "buffer: (loss/k).backward() ×k into .grad, torch AdamW (for-loop)",
            lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3, foreach=False),
            buffer_cycle,
        ),
        (
            "buffer: same, torch AdamW (foreach)",
            lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3, foreach=True),
            buffer_cycle,
        ),
        (
            "built-in: AccumAdamW(accum_steps=4), step + zero_grad each micro-batch",
            lambda m: AccumAdamW(m.parameters(), lr=1e-3, accum_steps=k),
            builtin_cycle,
        ),
        (
            "update-in-backward: AccumAdamW(accum_steps=4, update_in_backward=True)",
            lambda m: AccumAdamW(m.parameters(), lr=1e-3, accum_steps=k, update_in_backward=True),
            builtin_cycle,
        ),
    ]
    rows = []
    peaks: dict[str, int] = {}
    state_bytes = 0
    for label, make_opt, cycle in setups:
        model = copy.deepcopy(base)
        opt = make_opt(model)
        cycle(model, opt)  # allocates the optimizer state outside the measurement
        state_bytes = H.tensor_bytes(
            t
            for st in opt.state.values()
            for t in st.values()
            if isinstance(t, torch.Tensor) and t.numel() > 1
        )
        peak = H.peak_memory(functools.partial(cycle, model, opt), args.device)
        peaks[label] = peak
        rows.append([label, H.format_bytes(peak), f"{peak / largest_grad:.2f}", H.format_bytes(state_bytes)])
        del model, opt
    print(
        f"\n### Peak memory of one accumulation cycle (k={k}, batch {batch}, "
        f"{depth} × Linear({width}, {width}))\n"
    )
    print(
        f"params {H.format_bytes(params_bytes)} MiB, all gradients {H.format_bytes(params_bytes)} MiB, "
        f"largest single gradient {H.format_bytes(largest_grad)} MiB, saved activations per micro-batch "
        f"{H.format_bytes(activations)} MiB. Peak is measured above the live params + optimizer state.\n"
    )
    print(
        H.markdown_table(
            ["method", "peak above params+state MiB", "÷ largest grad", "optimizer state MiB"], rows
        )
    )
    uib = peaks[setups[-1][0]]
    slack = 64 * 1024  # scalars and per-parameter step counters allocated during the cycle
    print()
    return [
        H.print_target(
            "update-in-backward peak above params+state vs largest single gradient "
            "+ saved activations + 64 KiB",
            uib / H.MiB,
            (largest_grad + activations + slack) / H.MiB,
            unit=" MiB",
        )
    ]


def zo_table(args: Any) -> None:
    try:
        zo_grad = H.import_public("trainwell.optim", "zo_grad", "zeroth_order")
    except ImportError as err:
        print(f"\n### Zeroth-order\n\nskipped: trainwell.optim.zo_grad not importable ({err})\n")
        return
    import nevergrad as ng
    import numpy as np

    d, n_rows = 100, 200
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(n_rows, d, generator=gen, dtype=torch.float64) / d**0.5
    target = (
        torch.randn(d, generator=gen, dtype=torch.float64) + 1.0
    )  # minimiser away from nevergrad's x0 = 0
    b = a @ target

    def objective(theta: torch.Tensor) -> torch.Tensor:
        return (a @ theta - b).pow(2).mean()

    budget = 2000 if args.quick else 5000
    num_samples, sigma, lr = 4, 1e-3, 0.5
    sig = inspect.signature(zo_grad)
    rows = []

    # ours: zo_grad fills/returns the gradient estimate from 2·num_samples evaluations, then plain SGD
    theta = torch.zeros(d, dtype=torch.float64, requires_grad=True)

    def loss_fn() -> torch.Tensor:
        return objective(theta)

    kwargs: dict[str, Any] = {}
    for key, val in (("num_samples", num_samples), ("sigma", sigma), ("antithetic", True)):
        if key in sig.parameters:
            kwargs[key] = val
    evals_per_call = 2 * num_samples

    def run_ours() -> None:
        with torch.no_grad():
            theta.zero_()
        for _ in range(budget // evals_per_call):
            out = zo_grad(loss_fn, [theta], **kwargs)
            grad = (
                theta.grad if theta.grad is not None else (out[0] if isinstance(out, (list, tuple)) else out)
            )
            with torch.no_grad():
                theta.sub_(lr * grad)
            theta.grad = None

    t = H.time_fn(run_ours, repeats=1, warmup=0)
    with torch.no_grad():
        final = float(objective(theta))
    rows.append(
        [
            f"trainwell zo_grad (antithetic, {num_samples} dirs) + SGD lr {lr}",
            budget,
            t.median_ms,
            budget / t.median_ms * 1e3,
            final,
        ]
    )

    for opt_name in ("OnePlusOne", "DiagonalCMA"):
        result: dict[str, float] = {}

        def run_ng(opt_name: str = opt_name, result: dict[str, float] = result) -> None:
            opt = ng.optimizers.registry[opt_name](parametrization=d, budget=budget)
            for _ in range(budget):
                cand = opt.ask()
                value = float(objective(torch.from_numpy(np.asarray(cand.value, dtype=np.float64))))
                opt.tell(cand, value)
            rec = np.asarray(opt.provide_recommendation().value, dtype=np.float64)
            result["final"] = float(objective(torch.from_numpy(rec)))

        t = H.time_fn(run_ng, repeats=1, warmup=0)
        rows.append(
            [
                f"nevergrad {opt_name} ask/tell",
                budget,
                t.median_ms,
                budget / t.median_ms * 1e3,
                result["final"],
            ]
        )
    with torch.no_grad():
        start = float(objective(torch.zeros(d, dtype=torch.float64)))
    print(
        f"\n### Zeroth-order on a shifted least-squares objective (d={d}, start value {start:.3g}, "
        f"minimum 0)\n"
    )
    print(
        f"zo_grad called as zo_grad(loss_fn, [theta], {', '.join(f'{k}={v}' for k, v in kwargs.items())}).\n"
    )
    print(H.markdown_table(["method", "evaluations", "wall ms", "evals / s", "final objective"], rows))
    print()


def main(argv: list[str] | None = None) -> None:
    args = H.parse_args(__doc__.splitlines()[0], argv)
    print("# Optimizer benchmarks\n")
    print(H.environment_line(args))
    met = step_time_tables(args)
    met += memory_table(args)
    zo_table(args)
    print(f"Targets met: {sum(met)}/{len(met)}")


if __name__ == "__main__":
    main()
