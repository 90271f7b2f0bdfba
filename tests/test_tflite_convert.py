"""The ONNX -> TFLite converter on small QDQ graphs whose exact answer is known: the two places where a
trained network is most sensitive to one int8 step (the ECA gates' sigmoid and the logits)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dsmn.deploy.tflite_convert import convert
from dsmn.deploy.tflite_format import serialize

pytest.importorskip("tflite_micro")
pytest.importorskip("ai_edge_litert")

from dsmn.deploy.tflite_runtime import _litert, _tflm  # noqa: E402

IN_SCALE, IN_ZERO = 0.05, 128  # uint8 grid of the inputs (TFLite: int8 with zero point 0)


def qdq(name: str, scale: float, zero: int, source: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """QuantizeLinear -> DequantizeLinear of `source` on the uint8 grid (scale, zero): `name` is the result."""
    init = [numpy_helper.from_array(np.array(scale, np.float32), f"{name}_scale"),
            numpy_helper.from_array(np.array(zero, np.uint8), f"{name}_zero")]
    nodes = [helper.make_node("QuantizeLinear", [source, f"{name}_scale", f"{name}_zero"], [f"{name}_q"]),
             helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale", f"{name}_zero"], [name])]
    return nodes, init


def model_of(nodes, inits, inputs, outputs) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, io: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """The converted model's output in LiteRT and in TFLM for one input tensor (channels last)."""
    flat = serialize(convert(model, io, lambda name: (0.05, 0)))
    litert = _litert()(model_content=flat)
    litert.allocate_tensors()
    litert.set_tensor(litert.get_input_details()[0]["index"], x)
    litert.invoke()
    tflm = _tflm().Interpreter.from_bytes(flat)
    tflm.set_input(x, 0)
    tflm.invoke()
    return {"litert": litert.get_tensor(litert.get_output_details()[0]["index"]), "tflm": tflm.get_output(0)}


def round_half_even(values: np.ndarray) -> np.ndarray:
    return np.rint(values)  # numpy rounds halves to even, as torch's fake quantisation does


def test_sigmoid_on_a_grid_finer_than_tflites_int8_logistic_is_exact() -> None:
    """An ECA gate's sigmoid output grid comes from its QAT observer (here 1/510, finer than the 1/256
    that TFLite's int8 LOGISTIC fixes): every one of the 256 input levels must land on the same output
    level as in the QAT simulation. Through int8 LOGISTIC + requantisation about a third did not."""
    out_scale = 1 / 510
    nodes, inits = qdq("x_dq", IN_SCALE, IN_ZERO, "x")
    nodes.append(helper.make_node("Sigmoid", ["x_dq"], ["gate"]))
    more, more_inits = qdq("gate_dq", out_scale, 0, "gate")
    model = model_of(nodes + more, inits + more_inits,
                     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256, 1, 1])],
                     [helper.make_tensor_value_info("gate_dq", TensorProto.FLOAT, [1, 256, 1, 1])])
    levels = np.arange(256)
    x = ((levels - IN_ZERO) * IN_SCALE).astype(np.float32)
    expected = np.clip(round_half_even(1 / (1 + np.exp(-x.astype(np.float64))) / out_scale), 0, 255) * out_scale
    for runtime, got in run(model, "float", x.reshape(1, 1, 1, 256)).items():
        steps = np.abs(got.reshape(-1) - expected) / out_scale
        assert steps.max() < 0.5, f"{runtime}: {int((steps > 0.5).sum())} of 256 gate levels off the QAT grid"


@pytest.mark.parametrize("io", ["int8-float", "float"])
def test_logits_layer_is_exact_in_float(io: str) -> None:
    """The logits layer's output is float in the QAT network; with float logits the file computes it
    from the same int8 input, weights and int32 bias exactly, so two classes 0.001 apart stay apart."""
    rng = np.random.default_rng(0)
    hidden, classes = 16, 13
    weights = rng.integers(-127, 128, (classes, hidden)).astype(np.int8)
    weight_scale = rng.uniform(0.001, 0.003, classes).astype(np.float32)
    bias = rng.integers(-2000, 2000, classes).astype(np.int32)
    nodes, inits = qdq("h", IN_SCALE, IN_ZERO, "x")
    inits += [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(weight_scale, "w_scale"),
              numpy_helper.from_array(np.zeros(classes, np.int8), "w_zero"),
              numpy_helper.from_array(bias, "b"), numpy_helper.from_array(IN_SCALE * weight_scale, "b_scale"),
              numpy_helper.from_array(np.zeros(classes, np.int32), "b_zero")]
    nodes += [helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["w_dq"], axis=0),
              helper.make_node("DequantizeLinear", ["b", "b_scale", "b_zero"], ["b_dq"], axis=0),
              helper.make_node("Gemm", ["h", "w_dq", "b_dq"], ["logits"], transB=1)]
    model = model_of(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, hidden])],
                     [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])])
    levels = rng.integers(0, 256, hidden)
    h = (levels - IN_ZERO) * IN_SCALE
    expected = (h @ (weights.astype(np.float64) * weight_scale[:, None]).T) + bias * IN_SCALE * weight_scale
    x = (levels - IN_ZERO).astype(np.int8)[None] if io == "int8-float" else h.astype(np.float32)[None]
    for runtime, got in run(model, io, x).items():
        assert got.dtype == np.float32, runtime
        np.testing.assert_allclose(got.reshape(-1), expected, rtol=1e-5, atol=1e-5, err_msg=runtime)
