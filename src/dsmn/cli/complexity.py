"""`dsmn complexity`: prove a model fits the DCASE Task 1 budget."""

from __future__ import annotations

import argparse
import json

from dsmn.complexity import BYTES_PER_PARAM, format_report, measure


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "complexity",
        help="parameters, parameter memory and MACs of a model against the DCASE limits",
        description="Parameters used in the forward pass, their memory at the stored dtype, MACs for one "
        "1-second clip (torchinfo), a per-layer table and the verdict against the DCASE limits "
        "(128,000 bytes, 30,000,000 MACs).",
    )
    parser.add_argument("model", nargs="*", help="model name(s) or checkpoint(s)/run folder(s); default: all")
    parser.add_argument("--dtype", choices=sorted(BYTES_PER_PARAM), default="int8", help="stored parameter dtype")
    parser.add_argument("--check", action="store_true", help="exit 1 when a limit is exceeded")
    parser.add_argument("--json", action="store_true", help="print one JSON object per model")
    parser.add_argument("--summary", action="store_true", help="totals only, no per-layer table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsmn.models import available, load_model

    targets = args.model or available()
    exceeded = False
    reports = []
    for target in targets:
        model = load_model(target)
        report = measure(model, dtype=args.dtype, name=getattr(model, "model_name", target))
        if target not in available():
            report.model = f"{report.model} ({target})"
        reports.append(report)
        exceeded |= not report.within_limits
    if args.json:
        for report in reports:
            print(json.dumps(report.to_dict(with_layers=not args.summary)))
    elif len(reports) > 1 and not args.model:
        print(_table(reports))
    else:
        print("\n\n".join(format_report(r, with_layers=not args.summary) for r in reports))
    return 1 if args.check and exceeded else 0


def _table(reports) -> str:
    width = max(len(r.model) for r in reports) + 1
    head = f"{'model':<{width}} {'params':>9} {'bytes':>9} {'MACs':>12}  within limits"
    rows = [
        f"{r.model:<{width}} {r.params:>9,} {r.param_bytes:>9,} {r.macs:>12,}  {'yes' if r.within_limits else 'NO'}"
        for r in reports
    ]
    return "\n".join([f"DCASE complexity ({reports[0].dtype} parameters, one 1-s clip)", head, *rows])
