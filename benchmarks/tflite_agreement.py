"""Trained runs exported to TFLite: how each runtime agrees with the QAT model, and what that does to
accuracy.

For every run: the int8 .tflite file (`dsmn export --format tflite`, written whatever its agreement)
is scored on the evaluate clips of --data in LiteRT (XNNPACK kernels: float requantisation, rounding
like the QAT simulation), in LiteRT with TFLite's reference kernels (`litert-reference`: the
fixed-point requantisation TFLM and CMSIS-NN use) and in TFLM itself (--tflm-clips of them: its
reference kernels are slow on a PC). Each runtime is compared with the QAT network computed in its own
arithmetic (the fixed-point runtimes with `--model-kind qat-tflite`, dsmn.deploy.tflite_arithmetic), and
the fixed-point runtimes also with the QAT simulation's rounding. Printed as one Markdown table: top-1
agreement, the largest logit difference, and the accuracy of each beside the QAT model's on the same clips.

    python benchmarks/tflite_agreement.py RUN [RUN ...] --data DIR [--tflm-clips 200] [--out table.md]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from dsmn.data import spread
from dsmn.deploy import load_trained
from dsmn.deploy.data import logmel_batches, logmel_windows, open_features, split_clips
from dsmn.deploy.onnx_export import reference_network
from dsmn.deploy.tflite_arithmetic import TfliteArithmetic
from dsmn.deploy.tflite_export import check, export_tflite


def measure(run: Path, data: Path, tflm_clips: int, max_clips: int) -> list[str]:
    trained = load_trained(run)
    dataset, clips = split_clips(data, "evaluate")
    cache = open_features(dataset, trained.frontend, progress=False)
    clips = spread(cache.usable(clips), max_clips)
    inputs = [trained.network_input(b)
              for b in logmel_windows(logmel_batches(cache, clips, 64), trained.window_frames)]
    labels = np.repeat([c.scene_id for c in clips], sum(len(b) for b in inputs) // len(clips))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.tflite"
        export_tflite(trained, path, inputs, check_labels=labels, tflm_clips=1, min_agreement=0.0)
        network, _ = reference_network(trained, "int8")
        fixed_point = TfliteArithmetic(network, inputs[0][:1])
        for runtime, limit in (("litert", None), ("litert-reference", None), ("tflm", tflm_clips)):
            c = check(path, runtime, network, inputs, limit, labels, fixed_point)
            reference = "TFLite fixed point" if c.arithmetic == "tflite" else "QAT simulation"
            rounding = c.agreement if c.qat_rounding_agreement is None else c.qat_rounding_agreement
            rows.append(f"| {run} | {runtime} | {c.clips} | {reference} | {c.agreement:.2%} | "
                        f"{c.max_logit_difference:.3g} | {rounding:.2%} | {c.accuracy:.2%} | "
                        f"{c.reference_accuracy:.2%} |")
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="QAT-trained run folders or checkpoints")
    parser.add_argument("--data", type=Path, required=True, help="dataset whose evaluate clips are scored")
    parser.add_argument("--max-clips", type=int, default=2000, help="evaluate clips scored (an even spread)")
    parser.add_argument("--tflm-clips", type=int, default=200, help="of them, scored in TFLM too")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args()
    header = ["| run | runtime | clips | QAT model computed in | top-1 agreement | max logit diff | agreement with "
              "the QAT simulation's rounding | accuracy | QAT accuracy, same clips |",
              "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    print("\n".join(header), flush=True)
    rows = [row for run in args.runs for row in measure(run, args.data, args.tflm_clips, args.max_clips)]
    if args.out:
        args.out.write_text("\n".join(header + rows) + "\n")


if __name__ == "__main__":
    main()
