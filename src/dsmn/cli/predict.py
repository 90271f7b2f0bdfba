"""`dsmn predict MODEL PATH...`: scene predictions for audio files, in the DCASE Task 1 format."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify audio files (any format, rate, channels, length) into scenes",
        description="Classify audio files with a checkpoint / run folder or an exported ONNX model (its front end "
        "is rebuilt from the file's metadata). Files are downmixed, resampled to 44.1 kHz and cut into 1-s windows "
        "(44 frames: every second, plus one window flush with the end for a leftover tail; files under 1 s are "
        "zero-padded); the clip's probabilities are the mean over its windows. Output: tab-separated "
        "`filename scene_label airport bus ... tram`. With --windows, each clip row is followed by one row per "
        "window named FILE#wK (K = 0, 1, ...; window K starts at frame 44K, about K s; the last one is flush "
        "with the end). "
        "Unreadable files are reported on stderr and skipped; the exit code is 1 when any failed, unless "
        "--keep-going.",
    )
    parser.add_argument("model", type=Path, help="checkpoint, run folder, exported .onnx / .tflite file, or a device "
                        "bundle (dsmn finetune or dsmn export folder): each file by its device's model")
    parser.add_argument("paths", nargs="+", type=Path, help="audio files or folders (searched recursively)")
    parser.add_argument("--out", default="predictions.csv", help="output file ('-' for stdout)")
    parser.add_argument("--windows", action="store_true", help="also write one row per 1-s window (FILE#wK)")
    parser.add_argument("--batch-size", type=int, default=32, help="windows per network call")
    parser.add_argument("--runtime", choices=("litert", "tflm"), default="litert",
                        help=".tflite models: run in LiteRT (default) or TensorFlow Lite Micro "
                        "(the MCU kernels, slower)")
    parser.add_argument("--model-kind", choices=("float", "qat", "int8", "fp32"), default=None,
                        help="form of a checkpoint to run (default: qat for QAT checkpoints, else float)")
    parser.add_argument("--device-ids", type=Path, default=None,
                        help="bundles: CSV filename,device_id giving each file's recording device (else from its TAU "
                        "name, else unknown -> the general model); output gains device_id and model columns")
    parser.add_argument("--keep-going", action="store_true", help="exit 0 even when some files failed")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no notes")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsmn.deploy.bundle import is_bundle
    from dsmn.deploy.inference import load_for_inference
    from dsmn.deploy.predict import FileFailure, Predictor, find_audio, header, prediction_row

    if is_bundle(args.model):
        return run_bundle(args)
    if args.device_ids is not None:
        print("dsmn predict: --device-ids needs a device bundle (dsmn finetune / dsmn export folder)", file=sys.stderr)
        return 2

    try:
        loaded = load_for_inference(args.model, args.model_kind, runtime=args.runtime)
    except (FileNotFoundError, ValueError) as error:
        print(f"dsmn predict: {error}", file=sys.stderr)
        return 2
    files = list(find_audio(args.paths))
    if not files:
        print("dsmn predict: no audio files found", file=sys.stderr)
        return 2
    predictor = Predictor(loaded, batch_size=max(1, args.batch_size))
    classes = loaded.recipe.classes
    handle = sys.stdout if args.out == "-" else open(Path(args.out), "w", newline="")  # noqa: SIM115
    failed = done = 0
    try:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header(classes))
        progress = not args.quiet and len(files) > 20 and sys.stderr.isatty()
        for result in predictor.predict(files, progress=progress):
            if isinstance(result, FileFailure):
                failed += 1
                print(f"dsmn predict: skipped {result.filename}: {result.reason}", file=sys.stderr)
                continue
            done += 1
            writer.writerow(prediction_row(result.filename, result.probabilities, classes))
            if args.windows:
                for k, window in enumerate(result.windows):
                    writer.writerow(prediction_row(f"{result.filename}#w{k}", window, classes))
            if result.notes and not args.quiet:
                print(f"dsmn predict: {result.filename}: {'; '.join(result.notes)}", file=sys.stderr)
    finally:
        if handle is not sys.stdout:
            handle.close()
    if args.out != "-" and not args.quiet:
        print(f"{done} file(s) classified, {failed} failed -> {args.out}", file=sys.stderr)
    return 1 if failed and not args.keep_going else 0


def run_bundle(args: argparse.Namespace) -> int:
    """A device bundle: each file by its device's model; rows end with its device id and model."""
    from dsmn.deploy.bundle import BundleError, load_bundle
    from dsmn.deploy.bundle_predict import BundlePredictor, device_id_of, read_device_ids
    from dsmn.deploy.predict import FileFailure, find_audio, header, prediction_row
    from dsmn.labels import SCENES

    try:
        bundle = load_bundle(args.model)
        table = read_device_ids(args.device_ids) if args.device_ids is not None else None
        predictor = BundlePredictor(bundle, args.model_kind, batch_size=max(1, args.batch_size))
    except (BundleError, FileNotFoundError, ValueError) as error:
        print(f"dsmn predict: {error}", file=sys.stderr)
        return 2
    files = list(find_audio(args.paths))
    if not files:
        print("dsmn predict: no audio files found", file=sys.stderr)
        return 2
    device_ids = [device_id_of(path, name, table) for path, name in files]
    handle = sys.stdout if args.out == "-" else open(Path(args.out), "w", newline="")  # noqa: SIM115
    failed = done = 0
    used: dict[str, int] = {}
    try:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow([*header(SCENES), "device_id", "model"])
        for result, device, model in predictor.predict(files, device_ids):
            if isinstance(result, FileFailure):
                failed += 1
                print(f"dsmn predict: skipped {result.filename}: {result.reason}", file=sys.stderr)
                continue
            done += 1
            used[model] = used.get(model, 0) + 1
            writer.writerow([*prediction_row(result.filename, result.probabilities, SCENES), device, model])
            if args.windows:
                for k, window in enumerate(result.windows):
                    writer.writerow([*prediction_row(f"{result.filename}#w{k}", window, SCENES), device, model])
    except (BundleError, ValueError) as error:
        print(f"dsmn predict: {error}", file=sys.stderr)
        return 2
    finally:
        if handle is not sys.stdout:
            handle.close()
    if args.out != "-" and not args.quiet:
        models = ", ".join(f"{name} {count}" for name, count in used.items())
        print(f"{done} file(s) classified ({models}), {failed} failed -> {args.out}", file=sys.stderr)
    return 1 if failed and not args.keep_going else 0
