"""``trainwell`` console script:
``trainwell lab [EXPERIMENT ...] [--quick|--full|--tiny] [--seeds N] [--out DIR]``.

Examples::

    trainwell lab                         # the default suite, quick mode, into reports/
    trainwell lab imbalance --seeds 5     # one experiment, five seeds
    trainwell lab --full --out reports-full
    torchrun --nproc_per_node=2 -m trainwell.lab.cli lab imbalance   # seeds dealt out to 2 processes

Exit codes: 0 success, 2 bad arguments (unknown experiment, ``--seeds`` < 1, argparse errors).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _seeds(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {n}")
    return n


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trainwell", description="trainwell: training techniques, proven on real data."
    )
    sub = p.add_subparsers(dest="command", required=True)
    lab = sub.add_parser(
        "lab",
        help="run lab experiments (default: the whole default suite in quick mode)",
        description="Run lab experiments and write <out>/<experiment>/{results.json,table.md,*.png} and "
        "<out>/index.html. Finished (experiment, seed) cells are cached and skipped on re-runs.",
    )
    lab.add_argument("experiments", nargs="*", help="experiment names (default: the default suite)")
    g = lab.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="mode", action="store_const", const="quick", help="quick mode (default)")
    g.add_argument("--full", dest="mode", action="store_const", const="full", help="full reproduction mode")
    g.add_argument(
        "--tiny", dest="mode", action="store_const", const="tiny", help="seconds; proves the pipeline"
    )
    lab.add_argument("--seeds", type=_seeds, default=None, metavar="N",
                     help="number of seeds (default: per experiment and mode)")
    lab.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default: reports/)")
    lab.add_argument("--force", action="store_true", help="recompute cells already on disk")
    lab.add_argument("--no-progress", action="store_true", help="no progress bars")
    lab.add_argument("--no-plots", action="store_true", help="skip the PNG plots (numbers and tables only)")
    lab.add_argument("--threads", type=_seeds, default=None, metavar="N",
                     help="torch intra-op threads during the runs (default: each experiment's own setting, "
                     "else torch's; 1 avoids oversubscription on a busy machine)")
    lab.add_argument("--list", action="store_true", help="list experiments and exit")
    lab.set_defaults(mode="quick")
    sub.add_parser(
        "compare",
        add_help=False,
        help="compare techniques on your own task: trainwell compare CONFIG.toml (docs/compare.md)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trainwell`` script; returns the exit code (never raises SystemExit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:  # its own parser: trainwell compare CONFIG.toml [options]
        from trainwell.compare.cli import main as compare_main

        return compare_main(argv[1:])
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse already printed the message; hand back its code
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from trainwell.lab.experiments import import_errors, registry
    from trainwell.lab.report import claims_summary, summary_table
    from trainwell.lab.runner import finish_distributed, run_suite, setup_distributed

    reg = registry()
    if args.list:
        print(f"{'name':16s} {'suite':7s}  title")
        print(
            "  name: pass it to `trainwell lab NAME`; suite: 'default' = part of a bare `trainwell lab` run"
        )
        for name, exp in reg.items():
            print(f"{name:16s} {'default' if exp.default else '-':7s}  {exp.title}")
        return 0
    unknown = [n for n in args.experiments if n not in reg]
    if unknown:
        errors = import_errors()
        print(
            f"trainwell lab: unknown experiment(s) {', '.join(unknown)}; available: "
            f"{', '.join(reg) or '(none)'}",
            file=sys.stderr,
        )
        for n in unknown:
            if n in errors:
                print(
                    f"trainwell lab: module {n!r} exists but failed to import: {errors[n]}", file=sys.stderr
                )
        return 2
    chosen = [reg[n] for n in dict.fromkeys(args.experiments)] if args.experiments else [
        e for e in reg.values() if e.default]
    if not chosen:
        print("trainwell lab: no experiments to run", file=sys.stderr)
        return 2
    info, created = setup_distributed()
    try:
        results = run_suite(chosen, out=args.out, mode=args.mode, seeds=args.seeds, force=args.force,
                            progress=not args.no_progress and sys.stderr.isatty(), plots=not args.no_plots,
                            threads=args.threads)
    finally:
        finish_distributed(created)
    if info.is_main:
        print()
        print(summary_table(results))
        print()
        print(claims_summary(results))
        print(f"\nreport: {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
