"""`dsmn evaluate MODEL --data DIR`: DCASE metrics of a float, QAT or int8 model on a labelled split."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dsmn.cli.options import MODEL_KINDS, add_tflite_runtime_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="accuracy, macro class-wise accuracy and log loss per class and device",
        description="Evaluate a checkpoint / run folder (as the float network, the QAT network, or int8 / fp32 "
        "through ONNX Runtime) or an exported ONNX file on a labelled split. Writes summary.md, summary.json, "
        "per_class.csv, per_device.csv, predictions.csv and confusion.png into the output folder "
        "(default RUN/eval_SPLIT_KIND/). A run folder is scored twice: its selected checkpoint (best.pt, lowest "
        "validation loss) and its last epoch (last.pt, into OUT/last_epoch/); every table names its checkpoint.",
    )
    parser.add_argument("model", type=Path, help="checkpoint, run folder, exported .onnx / .tflite file, or a device "
                        "bundle (dsmn finetune / dsmn export folder): each clip scored by its device's model, beside "
                        "the general model alone")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder")
    parser.add_argument("--split", default="fold1_evaluate",
                        help="fold1_evaluate / evaluate (default), fold1_train / train, fold1_test, split25 ...")
    add_tflite_runtime_argument(parser)
    parser.add_argument("--model-kind", choices=MODEL_KINDS, default=None,
                        help="which form of a checkpoint to evaluate (default: qat for QAT checkpoints, else float; "
                        "qat-tflite: the QAT network in TFLite's fixed-point integer arithmetic, what TFLM "
                        "computes from the .tflite export)")
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
    from dsmn.evaluation.evaluate import load_for_inference
    from dsmn.evaluation.report import comparison_markdown, markdown, summary_json

    split = split_name(args.split)
    if is_bundle(args.model):
        return run_bundle(args, split)
    try:
        loaded = load_for_inference(args.model, args.model_kind, runtime=args.runtime)
        last = _last_epoch(args.model, loaded)
        loaded_last = load_for_inference(last, args.model_kind, runtime=args.runtime) if last is not None else None
    except (FileNotFoundError, ValueError) as error:
        print(f"dsmn evaluate: {error}", file=sys.stderr)
        return 2
    out = args.out or _run_folder(args.model) / f"eval_{split}_{loaded.kind}"
    try:
        result = _evaluate_into(loaded, args, split, out)
        last_result = None
        if loaded_last is not None:
            last_result = _evaluate_into(loaded_last, args, split, out / "last_epoch")
    except (DatasetError, ValueError, KeyError) as error:
        print(f"dsmn evaluate: {error}", file=sys.stderr)
        return 2
    if args.json:
        text = summary_json(result)
        if last_result is not None:  # the selected checkpoint's summary, then the last epoch's beside it
            data = json.loads(text)
            data["last_epoch"] = json.loads(summary_json(last_result))
            text = json.dumps(data, indent=2)
        print(text)
    else:
        print(markdown(result))
        if last_result is not None:
            print(comparison_markdown([result, last_result]))
        print(f"written to {out}/" + (" and its last_epoch/" if last_result is not None else ""))
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


def _last_epoch(model: Path, loaded) -> Path | None:  # noqa: ANN001 - a LoadedModel
    """A run folder's last.pt when the folder's selected checkpoint is another file."""
    if not model.is_dir() or loaded.trained is None:
        return None
    for candidate in (model / "checkpoints" / "last.pt", model / "last.pt"):
        if candidate.is_file() and candidate.resolve() != loaded.trained.path.resolve():
            return candidate
    return None


def _evaluate_into(loaded, args: argparse.Namespace, split: str, out: Path):  # noqa: ANN001, ANN202
    from dsmn.deploy.predict import write_predictions
    from dsmn.evaluation.evaluate import evaluate
    from dsmn.evaluation.report import write_report

    result, clips, probabilities = evaluate(loaded, args.data, split, args.cache, progress=sys.stderr.isatty())
    write_report(result, out)
    write_predictions(out / "predictions.csv", [c.filename for c in clips], probabilities)
    return result
