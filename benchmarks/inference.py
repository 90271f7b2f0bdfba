"""Inference speed on the CPU: float torch vs float ONNX vs int8 ONNX, model1..model4, side by side.

Batch-32 throughput (clips/s) and batch-1 latency (median and 99th percentile). Models are randomly
initialised (speed does not depend on the weights), their int8 observers calibrated on random inputs,
and exported through the same code as `dsmn export`. Measurements are interleaved (every engine gets
a turn in every round) so that a noisy, shared machine slows all of them alike; compare the ratios.

    python benchmarks/inference.py [--threads 2] [--rounds 5] [--models model1 model2] [--compact] [--raw]

`--raw` adds the int8 graph without `dsmn.deploy.layout`'s rewrites, to measure them.

OMP_WAIT_POLICY defaults to PASSIVE here: with OpenMP's spin-waiting, torch on a machine whose cores
are shared with other processes runs up to 25x slower (batch-1 latency 890 ms instead of 35 ms,
measured), which would say nothing about the model. ORT sessions likewise run without spinning.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import torch

from dsmn import models
from dsmn.deploy.onnx_export import to_onnx
from dsmn.deploy.runtime import INT8_OPERATORS, create_session, optimized_operators
from dsmn.quantization import calibrate, prepare_qat


def _timed(fn, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


AUTHORS_INT8_MODEL1 = 77.0  # clips/s of the authors' int8 model1 on 2 CPU cores (docs/benchmarks.md, reference figures)


def engines(name: str, folder: Path, threads: int, compact: bool, raw: bool = False) -> dict[str, callable]:
    """name -> fn(batch as numpy) for the three engines of one model."""
    torch.manual_seed(0)
    float_model = models.create(name).eval()
    shape = models.entry(name).input_shape
    qat = prepare_qat(float_model)
    calibrate(qat, [torch.randn(32, *shape)], momentum=1.0)
    qat.eval()
    sessions = {}
    for precision in ("fp32", "int8", "int8 raw") if raw else ("fp32", "int8"):
        path = folder / f"{name}-{precision.replace(' ', '-')}.onnx"
        graph = to_onnx(qat, (2, *shape), quantized=precision != "fp32", compact=compact,
                        runtime_layout=precision != "int8 raw")
        onnx.save(graph, str(path))
        sessions[precision] = create_session(path, threads)
        if precision == "int8":
            executed = optimized_operators(path, threads)
            int8 = sum(v for k, v in executed.items() if k in INT8_OPERATORS)
            print(f"  {name}: int8 graph runs {int8} int8 kernels; other operators: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(executed.items()) if k not in INT8_OPERATORS))
    torch_model = float_model.to(memory_format=torch.channels_last)

    def run_torch(x: np.ndarray) -> None:
        with torch.inference_mode():
            torch_model(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))

    def session_runner(session):
        input_name = session.get_inputs()[0].name
        return lambda x: session.run(None, {input_name: x})

    runners = {"torch fp32": run_torch, "onnx fp32": session_runner(sessions["fp32"]),
               "onnx int8": session_runner(sessions["int8"])}
    if raw:
        runners["int8 raw"] = session_runner(sessions["int8 raw"])
    return runners


def measure(name: str, threads: int, rounds: int, compact: bool, raw: bool) -> dict[str, dict[str, float]]:
    shape = models.entry(name).input_shape
    batch = np.random.default_rng(0).standard_normal((32, *shape)).astype(np.float32)
    one = batch[:1].copy()
    with tempfile.TemporaryDirectory() as folder:
        runners = engines(name, Path(folder), threads, compact, raw)
        throughput, latency = defaultdict(list), defaultdict(list)
        for fn in runners.values():  # warm-up
            fn(batch)
            fn(one)
        for _ in range(rounds):
            for engine, fn in runners.items():
                fn(batch)  # untimed: the previous engine left the caches and thread pools cold
                throughput[engine] += [32 / t for t in _timed(lambda fn=fn: fn(batch), 10)]
                fn(one)
                latency[engine] += [t * 1e3 for t in _timed(lambda fn=fn: fn(one), 20)]
    return {
        engine: {
            "clips_per_s": statistics.median(throughput[engine]),
            "latency_ms": statistics.median(latency[engine]),
            "latency_p99_ms": float(np.percentile(latency[engine], 99)),
        }
        for engine in runners
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=["model1", "model2", "model3", "model4"])
    parser.add_argument("--compact", action="store_true", help="export grouped 1x1 convolutions grouped")
    parser.add_argument("--raw", action="store_true",
                        help="also time the int8 graph without dsmn.deploy.layout's rewrites ('int8 raw')")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    print(f"CPU inference, {args.threads} threads, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    results = {name: measure(name, args.threads, args.rounds, args.compact, args.raw) for name in args.models}
    print(f"\n{'model':<8} {'engine':<11} {'b32 clips/s':>12} {'vs torch':>9} {'b1 median ms':>13} {'b1 p99 ms':>10}")
    for name, engines_ in results.items():
        base = engines_["torch fp32"]["clips_per_s"]
        for engine, r in engines_.items():
            print(f"{name:<8} {engine:<11} {r['clips_per_s']:>12.1f} {r['clips_per_s'] / base:>8.2f}x"
                  f" {r['latency_ms']:>13.2f} {r['latency_p99_ms']:>10.2f}")
        int8, fp32 = engines_["onnx int8"]["clips_per_s"], engines_["onnx fp32"]["clips_per_s"]
        print(f"{name:<8} int8 / fp32 ONNX throughput: {int8 / fp32:.2f}x")
        if args.raw:
            print(f"{name:<8} int8 with / without layout rewrites: {int8 / engines_['int8 raw']['clips_per_s']:.2f}x")
        if name == "model1":
            print(f"{name:<8} int8 vs the authors' int8 model1 ({AUTHORS_INT8_MODEL1:.0f} clips/s): "
                  f"{int8 / AUTHORS_INT8_MODEL1:.1f}x (target 8x)")


if __name__ == "__main__":
    main()
