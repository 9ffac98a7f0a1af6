"""``trainwell`` console script: ``trainwell lab [EXPERIMENT ...] [--quick|--full] [--seeds N] [--out DIR]``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trainwell", description="trainwell: training techniques, proven on real data.")
    sub = p.add_subparsers(dest="command", required=True)
    lab = sub.add_parser("lab", help="run lab experiments (default: the whole default suite in quick mode)")
    lab.add_argument("experiments", nargs="*", help="experiment names (default: the default suite)")
    g = lab.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="mode", action="store_const", const="quick", help="quick mode (default)")
    g.add_argument("--full", dest="mode", action="store_const", const="full", help="full reproduction mode")
    g.add_argument("--tiny", dest="mode", action="store_const", const="tiny", help="seconds; proves the pipeline")
    lab.add_argument("--seeds", type=int, default=None, help="number of seeds (default: per experiment and mode)")
    lab.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default: reports/)")
    lab.add_argument("--force", action="store_true", help="recompute cells already on disk")
    lab.add_argument("--no-progress", action="store_true", help="no progress bars")
    lab.add_argument("--list", action="store_true", help="list experiments and exit")
    lab.set_defaults(mode="quick")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from trainwell.lab.experiments import registry
    from trainwell.lab.report import summary_table
    from trainwell.lab.runner import run_suite

    reg = registry()
    if args.list:
        for name, exp in reg.items():
            print(f"{name:16s} {'default' if exp.default else '       '}  {exp.title}")
        return 0
    if args.seeds is not None and args.seeds < 1:
        print(f"trainwell lab: --seeds must be >= 1, got {args.seeds}", file=sys.stderr)
        return 2
    unknown = [n for n in args.experiments if n not in reg]
    if unknown:
        print(f"trainwell lab: unknown experiment(s) {', '.join(unknown)}; available: {', '.join(reg)}",
              file=sys.stderr)
        return 2
    chosen = [reg[n] for n in args.experiments] if args.experiments else [e for e in reg.values() if e.default]
    results = run_suite(chosen, out=args.out, mode=args.mode, seeds=args.seeds, force=args.force,
                        progress=not args.no_progress and sys.stderr.isatty())
    print()
    print(summary_table(results))
    print(f"\nreport: {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
