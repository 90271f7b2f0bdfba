"""`dsmn evaluate MODEL --data DIR`: DCASE metrics of a float, QAT or int8 model on a labelled split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="accuracy, macro class-wise accuracy and log loss per class and device",
        description="Evaluate a checkpoint / run folder (as the float network, the QAT network, or int8 / fp32 "
        "through ONNX Runtime) or an exported ONNX file on a labelled split. Writes summary.md, summary.json, "
        "per_class.csv, per_device.csv, predictions.csv and confusion.png into the output folder "
        "(default RUN/eval_SPLIT_KIND/).",
    )
    parser.add_argument("model", type=Path, help="checkpoint, run folder, exported .onnx / .tflite file, or a device "
                        "bundle (dsmn finetune / dsmn export folder): each clip scored by its device's model, beside "
                        "the general model alone")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder")
    parser.add_argument("--split", default="fold1_evaluate",
                        help="fold1_evaluate / evaluate (default), fold1_train / train, fold1_test, split25 ...")
    parser.add_argument("--runtime", choices=("litert", "tflm"), default="litert",
                        help=".tflite models: run in LiteRT (default) or TensorFlow Lite Micro "
                        "(the MCU kernels, slower)")
    parser.add_argument("--model-kind", choices=("float", "qat", "int8", "fp32"), default=None,
                        help="which form of a checkpoint to evaluate (default: qat for QAT checkpoints, else float)")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--cache", type=Path, default=None, help="feature cache folder (default DATA/.dsmn_cache)")
    parser.add_argument("--json", action="store_true", help="print the summary JSON to stdout")
    parser.set_defaults(func=run)


def _run_folder(model: Path) -> Path:
    if model.is_dir():
        return model
    folder = model.parent
    return folder.parent if folder.name == "checkpoints" else folder


def run(args: argparse.Namespace) -> int:
    from dsmn.data import DatasetError
    from dsmn.deploy.bundle import is_bundle
    from dsmn.deploy.data import split_name
    from dsmn.deploy.predict import write_predictions
    from dsmn.evaluation.evaluate import evaluate, load_for_inference
    from dsmn.evaluation.report import markdown, summary_json, write_report

    split = split_name(args.split)
    if is_bundle(args.model):
        return run_bundle(args, split)
    try:
        loaded = load_for_inference(args.model, args.model_kind, runtime=args.runtime)
    except (FileNotFoundError, ValueError) as error:
        print(f"dsmn evaluate: {error}", file=sys.stderr)
        return 2
    out = args.out or _run_folder(args.model) / f"eval_{split}_{loaded.kind}"
    try:
        result, clips, probabilities = evaluate(loaded, args.data, split, args.cache, progress=sys.stderr.isatty())
    except (DatasetError, ValueError, KeyError) as error:
        print(f"dsmn evaluate: {error}", file=sys.stderr)
        return 2
    paths = write_report(result, out)
    write_predictions(out / "predictions.csv", [c.filename for c in clips], probabilities)
    if args.json:
        print(summary_json(result))
    else:
        print(markdown(result))
        print(f"written to {out}/: {', '.join(p.name for p in paths.values())}, predictions.csv")
    return 0


def run_bundle(args: argparse.Namespace, split: str) -> int:
    """A device bundle: each clip by its device's model, and the general model alone, side by side."""
    import json

    from dsmn.data import DatasetError
    from dsmn.deploy.bundle import BundleError, load_bundle
    from dsmn.evaluation.bundle import evaluate_bundle, markdown, write_report

    try:
        bundle = load_bundle(args.model)
        result, clips, probabilities, assigned = evaluate_bundle(
            bundle, args.data, split, args.model_kind, args.cache, progress=sys.stderr.isatty())
    except (BundleError, DatasetError, FileNotFoundError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"dsmn evaluate: {message}", file=sys.stderr)
        return 2
    out = args.out or bundle.root / f"eval_{split}_{result.kind}"
    paths = write_report(result, out, clips, probabilities, assigned)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(markdown(result))
        print(f"written to {out}/: {', '.join(p.name for p in paths)}")
    return 0
