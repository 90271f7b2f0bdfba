"""`dsmn features DATA`: compute (or finish) the log-mel cache of a dataset."""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "features",
        help="compute the log-mel feature cache of a dataset",
        description="Decode every clip (downmix, resample, pad/trim), compute its log-mel and store it in a "
        "memory-mapped cache. An interrupted run continues where it stopped; a cache built with other "
        "front-end settings is rebuilt with a warning. Unreadable files are listed and skipped; the exit "
        "code is 1 when any failed, unless --keep-going.",
    )
    parser.add_argument("data", type=Path, help="dataset folder (TAU layout or generic)")
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default DATA/.dsmn_cache)")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (0: decode in the main thread)")
    parser.add_argument("--chunk-size", type=int, default=128, help="seconds of audio decoded ahead per chunk")
    parser.add_argument("--duration", type=float, default=None,
                        help="clip length in seconds (default: that of the first file)")
    parser.add_argument("--keep-going", action="store_true", help="exit 0 even when some files failed")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsmn.data import DatasetError, load_dataset
    from dsmn.features import FeatureCache

    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    try:
        dataset = load_dataset(args.data)
    except DatasetError as error:
        print(f"dsmn features: {error}", file=sys.stderr)
        return 2
    notes: Counter[str] = Counter()

    class _Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno == logging.INFO:
                text = record.getMessage().split(": ", 1)[-1]
                notes[text.split(" ")[0]] += 1

    logger = logging.getLogger("dsmn.features.cache")
    handler = _Count(logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        cache = FeatureCache.build(dataset, args.cache, workers=args.workers, chunk_size=args.chunk_size,
                                   duration=args.duration, progress=not args.quiet)
    finally:
        logger.removeHandler(handler)
    print(f"{cache.directory}: {len(cache)} clips, {cache.processed} computed now, "
          f"{int(cache.done.sum())} available, log-mel shape {tuple(cache.logmels.shape[1:])}")
    if notes:
        print("repaired: " + ", ".join(f"{n} {kind}" for kind, n in sorted(notes.items())))
    if cache.failed:
        print(f"{len(cache.failed)} file(s) could not be read and were skipped:", file=sys.stderr)
        for name, reason in cache.failed[:50]:
            print(f"  {name}: {reason}", file=sys.stderr)
        if len(cache.failed) > 50:
            print(f"  ... and {len(cache.failed) - 50} more (see {cache.directory / 'failed.json'})", file=sys.stderr)
        return 0 if args.keep_going else 1
    return 0
