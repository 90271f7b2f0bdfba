"""`dsmn teach MODEL [MODEL ...] --data DIR --out FILE`: ensemble teacher logits for distillation."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dsmn.cli.options import MODEL_KINDS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "teach",
        help="teacher logits of one or more trained models (ensemble mean) for `dsmn train --teacher`",
        description="Run trained models (run folders, checkpoints or exported ONNX files, of any family, each on "
        "its own front end) over a dataset split and write the mean of their scene logits per clip: a "
        "tab-separated table `filename` + the ten scenes, and FILE.json with the class order and the members.",
        epilog="example:\n  dsmn teach runs/t0 runs/t1 --data data/demo --out runs/teacher.tsv\n"
        "  dsmn train --data data/demo --model model1 --config demo --teacher runs/teacher.tsv --out runs/kd",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("models", nargs="+", type=Path, metavar="MODEL", help="run folder, checkpoint or .onnx file")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder")
    parser.add_argument("--out", type=Path, required=True, help="teacher table to write (.tsv)")
    parser.add_argument("--split", default="train", help="split to label (default: train)")
    parser.add_argument("--model-kind", choices=MODEL_KINDS, default=None,
                        help="form of checkpoint members (default: qat for QAT checkpoints, else float)")
    parser.add_argument("--cache", type=Path, default=None, help="feature cache folder (default DATA/.dsmn_cache)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsmn.data import DatasetError
    from dsmn.distillation import write_teacher_table
    from dsmn.distillation.teach import ensemble_logits

    resolved = {p.resolve() for p in args.models}
    if args.out.resolve() in resolved:
        print(f"dsmn teach: --out {args.out} is one of the models; choose another file", file=sys.stderr)
        return 2
    try:
        table = ensemble_logits(args.models, args.data, args.split, kind=args.model_kind, cache_dir=args.cache,
                                progress=sys.stderr.isatty())
    except (FileNotFoundError, ValueError, KeyError, DatasetError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"dsmn teach: {message}", file=sys.stderr)
        return 2
    write_teacher_table(args.out, table)
    for member in table.provenance["members"]:
        accuracy = next((v for k, v in member.items() if k.endswith("_accuracy")), None)
        shown = "" if accuracy is None else f", accuracy {accuracy:.4f}"
        print(f"  {member['model']} ({member['kind']}) {member['path']}{shown}")
    print(f"teacher logits of {len(table.filenames)} clips ({len(args.models)} members) -> {args.out}")
    return 0
