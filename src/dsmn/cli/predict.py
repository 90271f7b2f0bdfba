"""`dsmn predict MODEL PATH...`: scene predictions for audio files, in the DCASE Task 1 format."""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from dsmn.cli.options import MODEL_KINDS, add_tflite_runtime_argument
from dsmn.errors import UserError


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
    parser.add_argument("--out", default="predictions.csv",
                        help="output file ('-' for stdout); written under a temporary name and renamed when complete, "
                        "never over an input or another audio file")
    parser.add_argument("--windows", action="store_true", help="also write one row per 1-s window (FILE#wK)")
    parser.add_argument("--batch-size", type=int, default=32, help="windows per network call")
    add_tflite_runtime_argument(parser)
    parser.add_argument("--model-kind", choices=MODEL_KINDS, default=None,
                        help="form of a checkpoint to run (default: qat for QAT checkpoints, else float; "
                        "qat-tflite: the QAT network in TFLite's fixed-point integer arithmetic, what TFLM "
                        "computes from the .tflite export)")
    parser.add_argument("--device-ids", type=Path, default=None,
                        help="bundles: CSV filename,device_id giving each file's recording device (else from its TAU "
                        "name, else unknown -> the general model); output gains device_id and model columns")
    parser.add_argument("--stream-seconds", type=float, default=None,
                        help="files longer than this are decoded and classified block by block, in bounded "
                        "memory (default 60)")
    parser.add_argument("--keep-going", action="store_true", help="exit 0 even when some files failed")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no notes")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsmn.deploy.bundle import is_bundle
    from dsmn.deploy.inference import load_for_inference
    from dsmn.deploy.predict import Predictor, find_audio

    files = list(find_audio(args.paths))
    if not files:
        print("dsmn predict: no audio files found", file=sys.stderr)
        return 2
    out = None if args.out == "-" else Path(args.out)
    if out is not None:
        check_output(out, [path for path, _ in files] + [args.model])  # before anything is loaded or computed
    if is_bundle(args.model):
        return run_bundle(args, files, out)
    if args.device_ids is not None:
        print("dsmn predict: --device-ids needs a device bundle (dsmn finetune / dsmn export folder)", file=sys.stderr)
        return 2

    try:
        loaded = load_for_inference(args.model, args.model_kind, runtime=args.runtime)
    except (FileNotFoundError, ValueError) as error:
        print(f"dsmn predict: {error}", file=sys.stderr)
        return 2
    streaming = {} if args.stream_seconds is None else {"stream_seconds": args.stream_seconds}
    predictor = Predictor(loaded, batch_size=max(1, args.batch_size), **streaming)
    with output(out) as handle:
        done, failed = _write(args, predictor, files, loaded.recipe.classes, handle)
    if args.out != "-" and not args.quiet:
        print(f"{done} file(s) classified, {failed} failed -> {args.out}", file=sys.stderr)
    return 1 if failed and not args.keep_going else 0


def _write(args: argparse.Namespace, predictor, files, classes, handle) -> tuple[int, int]:  # noqa: ANN001
    """Classify every file into `handle`; (files classified, files that failed)."""
    from dsmn.deploy.predict import FileFailure, header, prediction_row

    failed = done = 0
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
    return done, failed


def run_bundle(args: argparse.Namespace, files: list, out: Path | None) -> int:
    """A device bundle: each file by its device's model; rows end with its device id and model."""
    from dsmn.deploy.bundle import BundleError, load_bundle
    from dsmn.deploy.bundle_predict import BundlePredictor, device_id_of, read_device_ids
    from dsmn.deploy.predict import FileFailure, header, prediction_row
    from dsmn.labels import SCENES

    try:
        bundle = load_bundle(args.model)
        table = read_device_ids(args.device_ids) if args.device_ids is not None else None
        predictor = BundlePredictor(bundle, args.model_kind, batch_size=max(1, args.batch_size))
    except (BundleError, FileNotFoundError, ValueError) as error:
        print(f"dsmn predict: {error}", file=sys.stderr)
        return 2
    device_ids = [device_id_of(path, name, table) for path, name in files]
    failed = done = 0
    used: dict[str, int] = {}
    try:
        with output(out) as handle:
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
    if args.out != "-" and not args.quiet:
        models = ", ".join(f"{name} {count}" for name, count in used.items())
        print(f"{done} file(s) classified ({models}), {failed} failed -> {args.out}", file=sys.stderr)
    return 1 if failed and not args.keep_going else 0


class OutputError(UserError, ValueError):
    """--out names a place the predictions cannot or must not be written."""


def check_output(out: Path, inputs: list[Path]) -> None:
    """Refuse an --out that is an input, an existing audio file, a folder, or in a missing folder."""
    from dsmn.deploy.predict import AUDIO_SUFFIXES

    if out.is_dir():
        raise OutputError(f"--out {out} is a folder; name a file, e.g. {out / 'predictions.csv'}")
    if not out.parent.is_dir():
        raise OutputError(f"--out {out}: the folder {out.parent} does not exist")
    if out.exists():
        target = out.resolve()
        for path in inputs:
            if Path(path).exists() and Path(path).resolve() == target:
                raise OutputError(f"--out {out} is one of the inputs; it would be overwritten. Name another file")
        if out.suffix.lower() in AUDIO_SUFFIXES:
            raise OutputError(f"--out {out} is an existing audio file; it would be overwritten. Name another file")
    if not os.access(out.parent, os.W_OK):
        raise OutputError(f"--out {out}: the folder {out.parent} is not writable")


def output(out: Path | None) -> contextlib.AbstractContextManager:
    """Standard output, or `out` written atomically."""
    return contextlib.nullcontext(sys.stdout) if out is None else atomic_text(out)


@contextlib.contextmanager
def atomic_text(path: Path) -> Iterator[TextIO]:
    """A text file written under a temporary name and renamed over `path` only when complete
    (dsmn.files.atomic_path): an interrupted run leaves the previous file (or none), never half a table."""
    from dsmn.files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        yield handle
