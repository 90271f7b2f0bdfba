"""Why int8 model1 is slower than float in ONNX Runtime on this CPU: its depthwise convolutions.

Times one 3x3 dilated depthwise convolution (model1's separable-operator kernel, batch 32,
44 x 128 positions) as ONNX Runtime runs it in int8 (QLinearConv, NHWC) and in float (Conv, NCHWc),
for several channel counts, from the session profiler (kernel time only, layout reorders listed
apart). A cost that hardly grows with the channel count means a fixed cost per output position:
model1 has only 8-24 channels at its largest resolutions, where that cost dominates.

    python benchmarks/int8_depthwise.py [--threads 2] [--channels 16 32 64] [--runs 20]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

BATCH, HEIGHT, WIDTH = 32, 44, 128


def depthwise_model(channels: int, int8: bool, kernel: tuple[int, int] = (3, 3), dilation: int = 2) -> bytes:
    """One depthwise convolution, in QDQ form (ONNX Runtime fuses it into QLinearConv) or in float."""
    pads = [dilation * (kernel[0] // 2), dilation * (kernel[1] // 2)] * 2
    rng = np.random.default_rng(0)
    weight = rng.integers(-63, 64, (channels, 1, *kernel)).astype(np.int8)
    conv = dict(group=channels, dilations=[dilation, dilation], pads=pads, kernel_shape=list(kernel))
    if int8:
        initializers = [
            numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
            numpy_helper.from_array(np.array(128, np.uint8), "zero"),
            numpy_helper.from_array(weight, "w_q"),
            numpy_helper.from_array(np.full(channels, 0.01, np.float32), "w_scale"),
            numpy_helper.from_array(np.zeros(channels, np.int8), "w_zero"),
        ]
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["x_q"]),
            helper.make_node("DequantizeLinear", ["x_q", "scale", "zero"], ["x_dq"]),
            helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=0),
            helper.make_node("Conv", ["x_dq", "w"], ["y"], **conv),
            helper.make_node("QuantizeLinear", ["y", "scale", "zero"], ["y_q"]),
            helper.make_node("DequantizeLinear", ["y_q", "scale", "zero"], ["out"]),
        ]
    else:
        initializers = [numpy_helper.from_array(weight.astype(np.float32) * 0.01, "w")]
        nodes = [helper.make_node("Conv", ["x", "w"], ["out"], **conv)]
    shape = [BATCH, channels, HEIGHT, WIDTH]
    graph = helper.make_graph(nodes, "depthwise", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def kernel_times_ms(model: bytes, channels: int, threads: int, runs: int) -> dict[str, float]:
    """Mean time per run of each operator type, from ONNX Runtime's profiler."""
    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, "profile")
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(1).standard_normal((BATCH, channels, HEIGHT, WIDTH)).astype(np.float32)
        for _ in range(3 + runs):
            session.run(None, {"x": x})
        with open(session.end_profiling()) as handle:
            events = json.load(handle)
    totals: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"]
    return {op: micros / (3 + runs) / 1000 for op, micros in totals.items()}


def _others(times: dict[str, float], main: str) -> str:
    return ", ".join(f"{op} {ms:.2f}" for op, ms in sorted(times.items()) if op != main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print(f"3x3 depthwise convolution, dilation 2, batch {BATCH}, {HEIGHT} x {WIDTH}, {args.threads} threads, "
          f"onnxruntime {ort.__version__}")
    print(f"{'channels':>8} {'int8 QLinearConv ms':>20} {'float Conv ms':>14} {'int8 / float':>13}  "
          "layout ops (int8 | float)")
    first_int8 = None
    for channels in args.channels:
        int8 = kernel_times_ms(depthwise_model(channels, True), channels, args.threads, args.runs)
        fp32 = kernel_times_ms(depthwise_model(channels, False), channels, args.threads, args.runs)
        q, f = int8.get("QLinearConv", float("nan")), fp32.get("Conv", float("nan"))
        first_int8 = first_int8 or q
        print(f"{channels:>8} {q:>20.2f} {f:>14.2f} {q / f:>12.2f}x  "
              f"{_others(int8, 'QLinearConv')} | {_others(fp32, 'Conv')}")
    print(f"int8 cost at {args.channels[-1]} channels vs {args.channels[0]}: {q / first_int8:.2f}x for "
          f"{args.channels[-1] / args.channels[0]:.0f}x the channels (a per-position cost dominates)")


if __name__ == "__main__":
    main()
