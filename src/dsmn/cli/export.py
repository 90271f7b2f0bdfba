"""`dsmn export RUN_OR_CHECKPOINT --out model.onnx`: an ONNX (or int8 .tflite) model for deployment,
checked on real clips."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from dsmn.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a trained model to ONNX (int8 QDQ or fp32) or int8 TFLite, checked on real clips",
        description="Write an ONNX model of the trained network (BatchNorm folded; int8: quantised weights and "
        "activations from the QAT model, run by ONNX Runtime as QLinearConv etc.; fp32: the folded float "
        "network), with a dynamic batch dimension. The front end stays outside the model; its settings and "
        "the class order are stored in the file's metadata. The export is checked on real clips (top-1 "
        "agreement with the torch model must reach 99%%) and reports parameter memory and MACs. "
        "--format tflite writes a fully int8 .tflite file for TensorFlow Lite Micro and LiteRT (dsmn[edge]), "
        "checked in both runtimes, and reports flash, the TFLM tensor arena and peak activation memory.",
    )
    parser.add_argument("model", type=Path, help="checkpoint file or run folder (best.pt, else last.pt), or a device "
                        "bundle (dsmn finetune): one ONNX file per device model, each checked on its device's clips")
    parser.add_argument("--out", type=Path, default=None,
                        help="output file (default: RUN/model-PRECISION.onnx, or RUN/model-int8.tflite); "
                        "for a bundle the output folder (required)")
    parser.add_argument("--format", choices=("onnx", "tflite"), default="onnx", help="file format (default onnx)")
    parser.add_argument("--precision", choices=("int8", "fp32"), default="int8", help="ONNX only; TFLite is int8")
    parser.add_argument("--io", choices=("int8-float", "int8", "float"), default="int8-float",
                        help="TFLite input and output types: int8-float (default) takes the int8 features the "
                        "firmware quantises and returns float logits; int8 also quantises the logits (classes "
                        "closer than one output step then tie); float takes and returns float32")
    parser.add_argument("--c-array", action="store_true",
                        help="TFLite: also write model_data.h / model_data.cc (model bytes, arena size, front-end "
                        "constants) next to the .tflite file")
    parser.add_argument("--tflm-clips", type=int, default=200,
                        help="TFLite: clips checked in TFLM (its reference kernels are slow on a PC; "
                        "LiteRT checks all)")
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset whose clips check the export (default: the training data the checkpoint names)")
    parser.add_argument("--split", default="evaluate", help="split of --data to check on (default: evaluate)")
    parser.add_argument("--check-clips", type=int, default=2000, help="at most this many clips are checked")
    parser.add_argument("--cache", type=Path, default=None, help="feature cache folder (default DATA/.dsmn_cache)")
    parser.add_argument("--compact", action="store_true",
                        help="store grouped 1x1 convolutions grouped (fewest bytes) instead of dense (fastest)")
    parser.add_argument("--no-check", action="store_true", help="skip the check on real clips (not recommended)")
    parser.add_argument("--min-agreement", type=float, default=0.99,
                        help="top-1 agreement with the trained model (in each runtime's own integer arithmetic) "
                        "below which nothing is written (default 0.99); lower it only knowingly")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def _recorded_data(checkpoint: dict) -> Path | None:
    """The training data folder a checkpoint names (dsmn train records it), if it still exists."""
    config = checkpoint.get("config") or {}
    for value in (checkpoint.get("data"), checkpoint.get("data_root"), (config.get("data") or {}).get("root")):
        if isinstance(value, str | Path) and Path(value).is_dir():
            return Path(value)
    return None


def _recorded_cache(checkpoint: dict) -> Path | None:
    """The feature cache folder the run was trained with, when it was not the default one."""
    value = ((checkpoint.get("config") or {}).get("data") or {}).get("cache_dir")
    return Path(value) if isinstance(value, str) and Path(value).is_dir() else None


def run(args: argparse.Namespace) -> int:
    from dsmn.deploy.bundle import is_bundle

    if is_bundle(args.model):
        return run_bundle(args)

    from dsmn.data import spread
    from dsmn.deploy import ExportCheckError, export_onnx, load_trained
    from dsmn.deploy.data import logmel_batches, logmel_windows, open_features, split_clips

    if not 0.0 < args.min_agreement <= 1.0:
        raise UserError(f"--min-agreement {args.min_agreement}: must be a fraction in (0, 1]")
    trained = load_trained(args.model)
    tflite = args.format == "tflite"
    if tflite and args.precision != "int8":
        print("dsmn export: --format tflite is int8 only (drop --precision fp32)", file=sys.stderr)
        return 2
    if tflite and args.no_check:
        print("dsmn export: a TFLite export always reads clips (they set the logits' int8 range): drop --no-check",
              file=sys.stderr)
        return 2
    name = "model-int8.tflite" if tflite else f"model-{args.precision}.onnx"
    folder = trained.path.parent.parent if trained.path.parent.name == "checkpoints" else trained.path.parent
    out = args.out or folder / name
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; name the file to write")
    if out.exists() and out.resolve() == trained.path.resolve():
        raise UserError(f"--out {out} is the checkpoint being exported; name another file")
    suffix = Path(name).suffix
    if out.exists() and out.suffix.lower() != suffix:  # a dataset file, a recording, a checkpoint: never replaced
        raise UserError(f"--out {out} exists and is not a {suffix} file; refusing to overwrite it")
    check = calibration = labels = None
    data = args.data or _recorded_data(trained.checkpoint)
    if data is None and not args.no_check:
        print(f"dsmn export: {trained.path} records no training data that still exists: pass --data DIR "
              "(or --no-check)", file=sys.stderr)
        return 2
    if data is not None and not args.no_check:
        dataset, clips = split_clips(data, args.split)
        cache_dir = args.cache or (_recorded_cache(trained.checkpoint) if args.data is None else None)
        cache = open_features(dataset, trained.frontend, cache_dir, progress=sys.stderr.isatty())
        clips = spread(cache.usable(clips), args.check_clips)
        # 1-s windows: the graph's input (a 10-s clip of TAU 2020 gives ten)
        windows = logmel_windows(logmel_batches(cache, clips, 64), trained.window_frames)
        check = [trained.network_input(b) for b in windows]
        per_clip = sum(len(b) for b in check) // max(len(clips), 1)  # windows per clip: 1, or 10 for TAU 2020
        labels = np.repeat([c.scene_id for c in clips], per_clip)
        if not trained.is_qat and args.precision == "int8":  # TFLite too
            _, train_clips = split_clips(dataset, "train")
            train_clips = spread(cache.usable(train_clips), 2000)
            windows = logmel_windows(logmel_batches(cache, train_clips, 64), trained.window_frames)
            calibration = [trained.network_input(b) for b in windows]
    if tflite:
        return _export_tflite(trained, out, args, check, calibration, labels)
    try:
        report = export_onnx(trained, out, args.precision, check_inputs=check, calibration=calibration,
                             compact=args.compact, min_agreement=args.min_agreement)
    except ExportCheckError as error:
        print(f"dsmn export: FAILED: {error}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"dsmn export: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0


def run_bundle(args: argparse.Namespace) -> int:
    """A device bundle: one checked ONNX file per model, a manifest and complexity.json in --out."""
    from dsmn.data import DatasetError
    from dsmn.deploy import ExportCheckError
    from dsmn.deploy.bundle import BundleError, load_bundle
    from dsmn.deploy.bundle_export import export_bundle

    if args.format != "onnx":
        print("dsmn export: a device bundle exports to ONNX only; export each run with --format tflite",
              file=sys.stderr)
        return 2
    if args.out is None:
        print("dsmn export: exporting a bundle needs --out DIR (the folder for its ONNX files)", file=sys.stderr)
        return 2
    try:
        bundle = load_bundle(args.model)
        exported, reports = export_bundle(
            bundle, args.out, precision=args.precision, data=args.data, split=args.split,
            check_clips=args.check_clips, cache_dir=args.cache, compact=args.compact, check=not args.no_check)
    except ExportCheckError as error:
        print(f"dsmn export: FAILED: {error}", file=sys.stderr)
        return 1
    except (BundleError, DatasetError, FileNotFoundError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"dsmn export: {message}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"bundle": str(exported.root), "devices": exported.device_models(), "models": reports},
                         indent=2))
    else:
        print(f"exported bundle {exported.root}: {len(exported.models)} ONNX model(s), manifest.json, complexity.json")
    return 0


def _export_tflite(trained, out: Path, args: argparse.Namespace, check, calibration, labels) -> int:
    from dsmn.deploy import ExportCheckError
    from dsmn.deploy.tflite_export import export_tflite

    try:
        report = export_tflite(trained, out, check, io=args.io, calibration=calibration, tflm_clips=args.tflm_clips,
                               min_agreement=args.min_agreement, check_labels=labels)
        written = []
        if args.c_array:
            from dsmn.deploy.c_array import write_c_array

            written = write_c_array(out, report.memory.arena_bytes)
    except ExportCheckError as error:
        print(f"dsmn export: FAILED: {error}", file=sys.stderr)
        return 1
    except (ValueError, ImportError) as error:
        print(f"dsmn export: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**report.to_dict(), "c_array": [str(p) for p in written]}, indent=2))
    else:
        print(report.format())
        for path in written:
            print(f"  wrote {path}")
    return 0
