"""`dsmn synth-irs OUT`: write a small set of plausible device impulse responses (WAV) for DIR augmentation."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth-irs",
        help="generate device impulse responses (WAV) for DIR augmentation",
        description="Write COUNT short device impulse responses (high-pass, low-pass, resonances, a housing "
        "reflection; 5-20 ms, unit energy) as 24-bit WAVs plus irs.json with their parameters; "
        "the same seed gives the same files. Use them with --set device_ir.enabled=true "
        "--set device_ir.folder=OUT.",
    )
    parser.add_argument("out", type=Path, help="output folder (created)")
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-rate", type=int, default=48000, help="sample rate of the WAVs (default 48000)")
    parser.add_argument("--force", action="store_true", help="write into a folder that already holds IRs")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsmn.data.synth.impulse_responses import synth_irs

    if args.count < 1 or args.sample_rate < 8000:
        print("dsmn synth-irs: --count must be positive and --sample-rate at least 8000", file=sys.stderr)
        return 2
    if args.out.exists() and not args.out.is_dir():
        print(f"dsmn synth-irs: {args.out} is a file, not a folder; name a folder to write the WAVs into",
              file=sys.stderr)
        return 2
    if (args.out / "irs.json").exists() and not args.force:
        print(f"dsmn synth-irs: {args.out} already holds impulse responses (irs.json); use --force",
              file=sys.stderr)
        return 2
    paths = synth_irs(args.out, args.count, args.seed, args.sample_rate)
    print(f"wrote {len(paths)} impulse responses at {args.sample_rate} Hz to {args.out}")
    return 0
