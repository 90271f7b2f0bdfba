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
        "1-second clip (torchinfo) and for one 10-second clip (TAU 2020) classified by its 1-s windows, "
        "a per-layer table and the verdict against the DCASE limits "
        "(128,000 bytes, 30,000,000 MACs). For a .tflite file: flash, the TFLM tensor arena (measured), "
        "peak activation memory per layer and the operators (needs dsmn[edge] for the arena).",
    )
    parser.add_argument("model", nargs="*", help="model name(s), checkpoint(s)/run folder(s) or .tflite file(s), or "
                        "one device bundle (each device's model on its own); default: all registered models")
    parser.add_argument("--dtype", choices=sorted(BYTES_PER_PARAM), default="int8", help="stored parameter dtype")
    parser.add_argument("--check", action="store_true", help="exit 1 when a limit is exceeded")
    parser.add_argument("--json", action="store_true", help="print one JSON object per model")
    parser.add_argument("--summary", action="store_true", help="totals only, no per-layer table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsmn.deploy.bundle import is_bundle
    from dsmn.models import available, load_model

    if len(args.model) == 1 and is_bundle(args.model[0]):
        return run_bundle(args)
    targets = args.model or available()
    if any(str(t).endswith(".tflite") for t in targets):
        return _tflite(targets, args)
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
    head = f"{'model':<{width}} {'params':>9} {'bytes':>9} {'MACs 1 s':>12} {'MACs 10 s':>13}  within limits"
    rows = [
        f"{r.model:<{width}} {r.params:>9,} {r.param_bytes:>9,} {r.macs:>12,} {r.macs_10s:>13,}  "
        f"{'yes' if r.within_limits else 'NO'}"
        for r in reports
    ]
    title = (f"DCASE complexity ({reports[0].dtype} parameters; MACs per 1-s clip, and per 10-s clip classified "
             "by its 1-s windows)")
    return "\n".join([title, head, *rows])


def run_bundle(args: argparse.Namespace) -> int:
    """Per device of a bundle: its model's parameters, bytes and MACs; --check: every one within budget."""
    import sys

    from dsmn.complexity import MAX_MACS, MAX_PARAM_BYTES
    from dsmn.deploy.bundle import BundleError, check_complexity, load_bundle, model_complexity, submission_complexity

    try:
        bundle = load_bundle(args.model[0])
        per_model = model_complexity(bundle)
    except (BundleError, ValueError, FileNotFoundError) as error:
        print(f"dsmn complexity: {error}", file=sys.stderr)
        return 2
    over = check_complexity(per_model)
    devices = bundle.device_models()
    if args.json:
        print(json.dumps({"bundle": str(bundle.root), "models": per_model, "devices": devices,
                          "within_limits": not over, **submission_complexity(bundle, per_model)}))
    else:
        print(f"bundle {bundle.root}: DCASE limits {MAX_PARAM_BYTES:,} parameter bytes, {MAX_MACS:,} MACs per model")
        print(f"{'device':<8} {'model':<8} {'dtype':<5} {'params':>9} {'bytes':>9} {'MACs':>12}  within limits")
        for device, name in devices.items():
            f = per_model[name]
            print(f"{device:<8} {name:<8} {f['dtype']:<5} {f['params']:>9,} {f['param_bytes']:>9,} {f['macs']:>12,}  "
                  f"{'yes' if f['within_limits'] else 'NO'}")
        if over:
            print(f"over the budget: {', '.join(over)}")
    return 1 if args.check and over else 0


def _tflite(targets: list[str], args: argparse.Namespace) -> int:
    """Memory report of .tflite files (a mix with model names is refused: the figures differ in kind)."""
    import sys
    from pathlib import Path

    from dsmn.deploy.tflite_export import with_reference
    from dsmn.deploy.tflite_runtime import memory_report

    if not all(str(t).endswith(".tflite") for t in targets):
        print("dsmn complexity: give either .tflite files or models, not both", file=sys.stderr)
        return 2
    reports = []
    for target in targets:
        if not Path(target).is_file():
            print(f"dsmn complexity: {target}: no such file", file=sys.stderr)
            return 2
        try:
            reports.append(with_reference(memory_report(target)))
        except ValueError as error:
            print(f"dsmn complexity: {target}: {error}", file=sys.stderr)
            return 2
    if args.json:
        for report in reports:
            print(json.dumps(report.to_dict()))
    else:
        print("\n\n".join(f"{r.path}\n{r.format(with_layers=not args.summary)}" for r in reports))
    return 0
