"""`dsmn synth OUT`: write a synthetic TAU-format development set (docs/data.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="generate a synthetic TAU-format dataset",
        description="Write audio/, meta.csv and evaluation_setup/ in TAU Urban Acoustic Scenes layout: tau22 "
        "(2022 Mobile: 1-s clips, plus the DCASE 2024 split*.csv) or tau20 (2020 Mobile: the same recordings as "
        "10-s clips); the same seed gives the same bytes.",
    )
    parser.add_argument("out", type=Path, help="output folder (created)")
    parser.add_argument("--size", choices=("tiny", "demo", "large"), default="demo",
                        help="tiny: 50 recordings (tests); demo: 300 train + 120 evaluate recordings of 10 s "
                        "(tau22: 3,000 + 1,200 clips of 1 s); large: 10x demo")
    parser.add_argument("--layout", choices=("tau22", "tau20"), default="tau22",
                        help="tau22: 1-s clips scene-city-location-segment-slice-device.wav (default); tau20: "
                        "10-s clips scene-city-location-segment-device.wav")
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
    summary = generate(args.out, args.size, args.seed, workers=args.workers, progress=sys.stderr.isatty(),
                       layout=args.layout)
    length = "10-s" if args.layout == "tau20" else "1-s"
    print(f"wrote {summary.clips} {length} clips ({summary.train} train, {summary.evaluate} evaluate) "
          f"to {summary.root} in {summary.seconds:.1f} s")
    return 0
