"""Command-line options shared by several commands (kept free of heavy imports: `dsmn --help` loads it)."""

from __future__ import annotations

import argparse

# the forms of a checkpoint of dsmn.deploy.inference.MODEL_KINDS (qat-tflite: the QAT network in TFLite's
# fixed-point integer arithmetic, which TFLM and CMSIS-NN compute)
MODEL_KINDS = ("float", "qat", "qat-tflite", "int8", "fp32")

# the runtimes of dsmn.deploy.tflite_runtime.RUNTIMES, LiteRT first (the default)
TFLITE_RUNTIMES = ("litert", "tflm", "litert-reference")


def add_tflite_runtime_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runtime", choices=TFLITE_RUNTIMES, default="litert",
                        help=".tflite models: litert (default; XNNPACK kernels), tflm (TensorFlow Lite Micro: the "
                        "MCU kernels, slow on a PC) or litert-reference (TFLite's reference kernels: TFLM's "
                        "integer arithmetic, fast)")
