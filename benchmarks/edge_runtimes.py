"""Edge runtimes: per-clip latency in TensorFlow Lite Micro and LiteRT beside ONNX Runtime int8, and
the memory a microcontroller needs (flash, TFLM arena, peak activations), model1..model4 and the
DCASE 2022 baseline.

Models are randomly initialised and their int8 observers calibrated on random inputs (neither speed
nor memory depends on the weights), then written by the same code as `dsmn export --format tflite`
and `dsmn export` (int8 ONNX). Latency is one clip per call, one thread in every runtime (as on a
microcontroller); the runtimes take turns in every round, so a busy machine slows them alike:
compare the ratios. TFLM on a PC runs its portable reference kernels (no CMSIS-NN), so its
latency here says nothing about a Cortex-M; its arena and operator list are what the board needs.

    python benchmarks/edge_runtimes.py [--rounds 3] [--models model1 dcase2022_baseline] [--json out.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from dsmn import models
from dsmn.deploy.onnx_export import to_onnx
from dsmn.deploy.runtime import create_session
from dsmn.deploy.tflite_export import registry_tflite
from dsmn.deploy.tflite_runtime import TfliteClassifier, memory_report
from dsmn.quantization import calibrate, prepare_qat

RUNTIMES = ("onnx int8", "litert", "tflm")
CALLS = {"onnx int8": 20, "litert": 20, "tflm": 3}  # per round (TFLM's reference kernels are slow on a PC)


def build(name: str, folder: Path) -> tuple[dict, dict]:
    """(runner per runtime, memory report) of one model."""
    shape = models.entry(name).input_shape
    path = registry_tflite(name, folder / f"{name}.tflite")
    torch.manual_seed(0)
    qat = prepare_qat(models.create(name).eval())
    calibrate(qat, [torch.randn(32, *shape)], momentum=1.0)
    onnx_path = folder / f"{name}.onnx"
    onnx.save(to_onnx(qat.eval(), (1, *shape), quantized=True), str(onnx_path))
    session = create_session(onnx_path, threads=1)
    input_name = session.get_inputs()[0].name
    clip = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    tflm, litert = TfliteClassifier(path, "tflm"), TfliteClassifier(path, "litert")
    x = tflm.quantize_input(clip[0])
    runners = {"onnx int8": lambda: session.run(None, {input_name: clip}),
               "litert": lambda: litert.invoke(x), "tflm": lambda: tflm.invoke(x)}
    return runners, memory_report(path)


def measure(name: str, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        runners, memory = build(name, Path(folder))
        times: dict[str, list[float]] = {r: [] for r in RUNTIMES}
        for fn in runners.values():
            fn()  # warm-up
        for _ in range(rounds):
            for runtime, fn in runners.items():
                for _ in range(CALLS[runtime]):
                    start = time.perf_counter()
                    fn()
                    times[runtime].append(time.perf_counter() - start)
    latency = {r: statistics.median(t) * 1e3 for r, t in times.items()}
    return {"latency_ms": latency, "flash_bytes": memory.flash_bytes, "arena_bytes": memory.arena_bytes,
            "peak_activation_bytes": memory.peak_activation_bytes, "operators": memory.operators,
            "operator_notes": memory.operator_notes()}


def table(results: dict) -> str:
    rows = ["| model | flash (bytes) | TFLM arena (bytes) | peak activations (bytes) | ONNX Runtime int8 (ms) "
            "| LiteRT / ORT | TFLM (PC) / ORT |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        ms = r["latency_ms"]
        rows.append(f"| {name} | {r['flash_bytes']:,} | {r['arena_bytes']:,} | {r['peak_activation_bytes']:,} | "
                    f"{ms['onnx int8']:.2f} | {ms['litert'] / ms['onnx int8']:.2f}x | "
                    f"{ms['tflm'] / ms['onnx int8']:.0f}x |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=["model1", "model2", "model3", "model4", "dcase2022_baseline"])
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for name in args.models:
        results[name] = measure(name, args.rounds)
        print(f"{name}: {json.dumps(results[name]['latency_ms'])}", flush=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
