"""ONNX graph surgery: store the weights of quantised layers as int8 (and biases as int32).

The torch exporter writes the deployed layers with float weights that already lie on their int8
grid. Here each such Conv / Gemm whose input comes from DequantizeLinear gets an int8 weight
initializer with per-output-channel scales behind a DequantizeLinear, and an int32 bias
(scale = input scale x weight scale), the canonical QDQ form: the file stores one byte per weight,
and ONNX Runtime fuses each group into QLinearConv / QGemm with exactly our quantisation.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dsmn.quantization.quantizers import MIN_SCALE, WEIGHT_QMAX, WEIGHT_QMIN


class Graph:
    """An ONNX graph with lookups by tensor name (initializers, producers)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.initializers = {i.name: i for i in self.graph.initializer}
        self.producers = {o: n for n in self.graph.node for o in n.output}

    def constant(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producers.get(name)
        if node is not None and node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    return numpy_helper.to_array(attribute.t)
        return None

    def initializer_behind(self, name: str) -> onnx.TensorProto | None:
        """The initializer `name` is, directly or through Identity nodes (the exporter shares equal constants)."""
        while name not in self.initializers:
            node = self.producers.get(name)
            if node is None or node.op_type != "Identity":
                return None
            name = node.input[0]
        return self.initializers[name]

    def add_initializer(self, array: np.ndarray, name: str) -> str:
        tensor = numpy_helper.from_array(array, name)
        self.graph.initializer.append(tensor)
        self.initializers[name] = tensor
        return name

    def users(self, name: str) -> list[onnx.NodeProto]:
        return [n for n in self.graph.node if name in n.input]


def _weight_axis(node: onnx.NodeProto) -> int:
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 0  # Conv: (out, in/groups, *kernel)


def int8_weight(weight: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The stored int8 weight and its float32 scales, one per index of `axis` (symmetric, 7-bit grid)."""
    moved = np.moveaxis(weight, axis, 0)
    scale = np.maximum(np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1) / WEIGHT_QMAX, MIN_SCALE)
    scale = scale.astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    return np.clip(np.rint(weight / scale.reshape(shape)), WEIGHT_QMIN, WEIGHT_QMAX).astype(np.int8), scale


def int32_bias(bias: np.ndarray, input_scale: float, weight_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stored int32 bias and its float32 scales (input scale x weight scale per output channel)."""
    bias_scale = (float(input_scale) * weight_scale.astype(np.float64)).astype(np.float32)
    levels = np.clip(np.rint(bias.astype(np.float64) / bias_scale), -(2**31), 2**31 - 1)
    return levels.astype(np.int32), bias_scale


def quantize_initializers(model: onnx.ModelProto) -> int:
    """Rewrite float weights of DQ-fed Conv / Gemm nodes as int8 + DequantizeLinear; returns the count."""
    g = Graph(model)
    rewritten = 0
    new_nodes: list[tuple[int, onnx.NodeProto]] = []
    for index, node in enumerate(g.graph.node):
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2:
            continue
        source = g.producers.get(node.input[0])
        weight = g.initializer_behind(node.input[1])
        if source is None or source.op_type != "DequantizeLinear" or weight is None:
            continue
        if weight.data_type != onnx.TensorProto.FLOAT:
            continue
        input_scale = g.constant(source.input[1])
        if input_scale is None or input_scale.size != 1:
            continue
        w = numpy_helper.to_array(weight).astype(np.float32)
        axis = _weight_axis(node)
        q, scale = int8_weight(w, axis)
        base = f"{node.name or node.output[0]}.weight"
        q_name = g.add_initializer(q, f"{base}_quantized")
        s_name = g.add_initializer(scale, f"{base}_scale")
        z_name = g.add_initializer(np.zeros_like(scale, dtype=np.int8), f"{base}_zero_point")
        dq_name = f"{base}_dequantized"
        new_nodes.append((index, helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [dq_name],
                                                  name=f"{base}_DequantizeLinear", axis=axis)))
        node.input[1] = dq_name
        bias = g.initializer_behind(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if bias is not None:
            b = numpy_helper.to_array(bias).astype(np.float64)
            if b.ndim == 1 and b.shape[0] == scale.shape[0]:
                q_bias, bias_scale = int32_bias(b, float(input_scale.reshape(-1)[0]), scale)
                bias_base = f"{node.name or node.output[0]}.bias"
                qb = g.add_initializer(q_bias, f"{bias_base}_quantized")
                sb = g.add_initializer(bias_scale, f"{bias_base}_scale")
                zb = g.add_initializer(np.zeros_like(q_bias), f"{bias_base}_zero_point")
                dq_bias = helper.make_node("DequantizeLinear", [qb, sb, zb], [f"{bias_base}_dequantized"],
                                           name=f"{bias_base}_DequantizeLinear", axis=0)
                new_nodes.append((index, dq_bias))
                node.input[2] = f"{bias_base}_dequantized"
        rewritten += 1
    for offset, (index, dq) in enumerate(new_nodes):  # keep topological order: each DQ before its consumer
        g.graph.node.insert(index + offset, dq)
    remove_unused(g.graph)
    return rewritten


def remove_unused(graph: onnx.GraphProto) -> None:
    """Drop nodes and initializers nothing reads any more (the Identity copies of shared weights, the
    weights a rewrite replaced)."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for n in graph.node for name in n.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for n in graph.node for name in n.input} | outputs
    for initializer in list(graph.initializer):
        if initializer.name not in used:
            graph.initializer.remove(initializer)
