"""`dsmn synth OUT`: write a synthetic TAU-format development set (SPEC section 7)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="generate a synthetic TAU-format dataset",
        description="Write audio/, meta.csv, evaluation_setup/ and split*.csv in TAU22 layout; the same "
        "seed gives the same bytes.",
    )
    parser.add_argument("out", type=Path, help="output folder (created)")
    parser.add_argument("--size", choices=("tiny", "demo", "large"), default="demo",
                        help="tiny: ~500 clips (tests); demo: ~3,000 train + 1,200 evaluate; large: 10x demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    parser.add_argument("--force", action="store_true", help="write into a folder that already holds a dataset")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsmn.data.synth import generate

    if (args.out / "meta.csv").exists() and not args.force:
        print(f"dsmn synth: {args.out} already holds a dataset (meta.csv); use --force to overwrite",
              file=sys.stderr)
        return 2
    summary = generate(args.out, args.size, args.seed, workers=args.workers, progress=sys.stderr.isatty())
    print(f"wrote {summary.clips} clips ({summary.train} train, {summary.evaluate} evaluate) to {summary.root} "
          f"in {summary.seconds:.1f} s")
    return 0
