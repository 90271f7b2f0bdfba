"""The int8 ONNX QDQ graph of a dsmn model as a TFLite graph, with the same quantisation.

The ONNX export already holds the deployed network in canonical form: every activation is
QuantizeLinear -> DequantizeLinear with the QAT observers' uint8 scale / zero point, weights are int8
per output channel, biases int32 on the input-scale x weight-scale grid. Each quantised activation
becomes one int8 TFLite tensor (same scale, zero point - 128: TFLite's int8 is the uint8 grid shifted),
and each float operator between a DequantizeLinear and the next QuantizeLinear becomes the TFLite
int8 operator that produces that tensor (ReLU fused where TFLite can). Layout: TFLite is channels
last, so (N, C, H, W) tensors are stored (N, H, W, C) and (N, C, L) ones (N, 1, L, C); axes,
kernels, paddings and slices are mapped accordingly, and a reshape that would reorder elements gets
a TRANSPOSE first.

Where a TFLite int8 kernel needs equal input and output parameters (pooling, slicing, reshaping,
concatenation), the result is requantised, as ONNX Runtime's QLinear kernels do internally: by an
ADD of a zero constant, not by QUANTIZE: LiteRT's XNNPACK kernels requantise in QUANTIZE with a
coarser rounding than the QAT model (measured on a trained model2: 0.3 % of a concatenation's
values one step off, an error the following blocks grew to a few % of the logits' top-1), while
their ADD lands on the QAT value (0.0015 % off, float precision).

The sigmoid of the ECA channel gates is the one operator computed in float (DEQUANTIZE -> LOGISTIC
-> QUANTIZE on the gate's C values): TFLite's int8 LOGISTIC fixes its output grid at 1/256, coarser
than the gates' QAT grid, and the one-step gate errors that requantising from it leaves on about a
third of the gates grow through the following blocks until they change the top-1 class of a trained
network on a few % of clips. In float the gate is exactly the QAT one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from dsmn.deploy.qdq import Graph as OnnxGraph
from dsmn.deploy.tflite_format import Graph, Tensor

# --io: (input type, output type). int8 logits cannot separate classes closer than one output step,
# so the default keeps the input int8 (a quarter of a float buffer) and the logits float.
IO_MODES = {"int8-float": ("int8", "float"), "int8": ("int8", "int8"), "float": ("float", "float")}
DEFAULT_IO = "int8-float"


class ConversionError(ValueError):
    """The ONNX graph contains something the TFLite writer cannot express."""


@dataclass(frozen=True)
class Quantized:
    """An int8 TFLite tensor standing for an ONNX (dequantised) float tensor of `shape` (NCHW order)."""

    index: int
    shape: tuple[int, ...]
    scale: float
    zero: int

    def same_grid(self, scale: float, zero: int) -> bool:
        """Equal as stored (float32 scale): TFLM compares the stored scales exactly."""
        return self.zero == zero and np.float32(self.scale) == np.float32(scale)


@dataclass(frozen=True)
class Constant:
    """A DequantizeLinear of an initializer: int8 weights / int32 biases with their scales."""

    values: np.ndarray
    scale: np.ndarray
    axis: int


@dataclass(frozen=True)
class FloatResult:
    """A float32 TFLite tensor: the logits, computed by a float last layer (see the module docstring)."""

    index: int
    shape: tuple[int, ...]


@dataclass
class Pending:
    """A float ONNX result not yet quantised: `emit(output)` writes the operator(s) producing the
    int8 tensor `output` once the QuantizeLinear that follows names its grid."""

    shape: tuple[int, ...]
    emit: Callable[[Quantized, str], None]
    fusable: bool = False  # ReLU can be fused into the operator
    activation: str = "NONE"
    keeps_grid: Quantized | None = None  # data movement: computes on the grid of this input


def physical(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The TFLite (channels-last) shape of an ONNX NCHW tensor."""
    if len(shape) == 4:
        n, c, h, w = shape
        return (n, h, w, c)
    if len(shape) == 3:
        n, c, length = shape
        return (n, 1, length, c)
    return tuple(shape)


def physical_axis(axis: int, rank: int) -> int:
    axis %= rank
    if rank == 4:
        return (0, 3, 1, 2)[axis]
    if rank == 3:
        return (0, 3, 2)[axis]
    return axis


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _spatial(values, rank: int, fill: int) -> tuple[int, int]:
    """(H, W) of an ONNX spatial attribute; 1-D operators act along W (H = `fill`)."""
    values = list(values)
    return (fill, values[0]) if rank == 3 else (values[0], values[1])


class Converter:
    """Builds the TFLite graph while walking the ONNX nodes in order."""

    def __init__(self, model: onnx.ModelProto, io: str, output_grid: Callable[[str], tuple[float, int]]) -> None:
        if io not in IO_MODES:
            raise ValueError(f"io must be one of {', '.join(IO_MODES)}, got {io!r}")
        self.input_type, self.output_type = IO_MODES[io]
        self.output_grid = output_grid
        self.model = _batch_one(model)
        self.onnx = OnnxGraph(self.model)
        self.shapes = _shapes(self.model)
        self.graph = Graph()
        self.values: dict[str, object] = {}
        self.float_inputs = {i.name for i in self.model.graph.input}
        self.graph_outputs = {o.name for o in self.model.graph.output}

    # ------------------------------------------------------------ tensors
    def activation(self, name: str, shape: tuple[int, ...], scale: float, zero: int) -> Quantized:
        index = self.graph.add_tensor(Tensor(_short(name), physical(shape), "int8", scale=np.array([scale], np.float32),
                                             zero_point=np.array([zero], np.int64)))
        return Quantized(index, tuple(shape), float(scale), int(zero))

    def constant(self, name: str, data: np.ndarray, dtype: str, scale=None, axis: int = 0) -> int:
        quant = {}
        if scale is not None:
            scale = np.asarray(scale, np.float32).reshape(-1)
            quant = {"scale": scale, "zero_point": np.zeros(scale.size, np.int64), "axis": axis}
        return self.graph.add_tensor(Tensor(_short(name), tuple(int(s) for s in data.shape), dtype,
                                            data=np.ascontiguousarray(data, dtype=dtype), **quant))

    def int32_vector(self, name: str, values) -> int:
        return self.constant(name, np.asarray(values, np.int32), "int32")

    def requantize(self, source: Quantized, target: Quantized) -> None:
        """`target` = `source` on another grid, written as an ADD of a zero constant (see the module
        docstring: XNNPACK's int8 QUANTIZE rounds more coarsely, its ADD like the QAT model)."""
        rank = len(physical(source.shape))
        zero = self.constant(f"{self.graph.tensors[target.index].name}_zero", np.zeros((1,) * rank, np.int8), "int8",
                             scale=[source.scale])
        self.graph.add_operator("ADD", [source.index, zero], [target.index], activation="NONE")

    def on_grid(self, source: Quantized, scale: float, zero: int, name: str) -> Quantized:
        """`source` itself, or a requantised copy of it on the grid (scale, zero)."""
        if source.same_grid(scale, zero):
            return source
        target = self.activation(name, source.shape, scale, zero)
        self.requantize(source, target)
        return target

    # ------------------------------------------------------------ walking
    def convert(self) -> Graph:
        for node in self.model.graph.node:
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None:
                raise ConversionError(f"ONNX operator {node.op_type} ({node.name}) has no TFLite int8 translation")
            handler(node)
        for output in self.model.graph.output:
            value = self.values[output.name]
            if isinstance(value, FloatResult):
                if self.output_type == "int8":
                    scale, zero = self.output_grid(output.name)
                    out = self.activation(output.name + "_int8", value.shape, scale, zero)
                    self.graph.add_operator("QUANTIZE", [value.index], [out.index])
                    self.graph.outputs.append(out.index)
                else:
                    self.graph.outputs.append(value.index)
                continue
            if isinstance(value, Pending):
                scale, zero = self.output_grid(output.name)
                value = self.materialize(value, scale, zero, output.name + "_int8")
            if self.output_type == "float":
                out = self.graph.add_tensor(Tensor(output.name, physical(value.shape), "float32"))
                self.graph.add_operator("DEQUANTIZE", [value.index], [out])
                self.graph.outputs.append(out)
            else:
                self.graph.outputs.append(value.index)
        return self.graph

    def materialize(self, pending: Pending, scale: float, zero: int, name: str) -> Quantized:
        grid = pending.keeps_grid
        if grid is not None and not grid.same_grid(scale, zero):
            inner = self.activation(name + "_moved", pending.shape, grid.scale, grid.zero)
            pending.emit(inner, pending.activation)
            out = self.activation(name, pending.shape, scale, zero)
            self.requantize(inner, out)
            return out
        out = self.activation(name, pending.shape, scale, zero)
        pending.emit(out, pending.activation)
        return out

    def quantized(self, name: str) -> Quantized:
        value = self.values.get(name)
        if not isinstance(value, Quantized):
            raise ConversionError(f"tensor {name} is not quantised where an int8 operator reads it")
        return value

    def grid_of(self, node: onnx.NodeProto) -> tuple[float, int, bool]:
        scale = self.onnx.constant(node.input[1])
        zero = self.onnx.constant(node.input[2]) if len(node.input) > 2 else np.zeros(1, np.uint8)
        if scale is None or zero is None or scale.size != 1:
            raise ConversionError(f"{node.name}: activation quantisation must be per tensor with constant parameters")
        shift = 128 if zero.dtype == np.uint8 else 0
        return float(scale.reshape(-1)[0]), int(zero.reshape(-1)[0]) - shift, zero.dtype in (np.uint8, np.int8)

    # ------------------------------------------------------------ quantisation
    def op_Constant(self, node: onnx.NodeProto) -> None:
        pass

    def op_Identity(self, node: onnx.NodeProto) -> None:
        self.values[node.output[0]] = self.values.get(node.input[0])

    def op_QuantizeLinear(self, node: onnx.NodeProto) -> None:
        scale, zero, _ = self.grid_of(node)
        source = node.input[0]
        out = node.output[0]
        if source in self.float_inputs:
            self.values[out] = self.graph_input(source, scale, zero)
            return
        value = self.values.get(source)
        if isinstance(value, Quantized):
            self.values[out] = self.on_grid(value, scale, zero, out)
        elif isinstance(value, Pending):
            self.values[out] = self.materialize(value, scale, zero, out)
        else:
            raise ConversionError(f"{node.name}: nothing to quantise")

    def graph_input(self, name: str, scale: float, zero: int) -> Quantized:
        shape = self.shapes[name]
        if self.input_type == "int8":
            value = self.activation(name, shape, scale, zero)
            self.graph.inputs.append(value.index)
            return value
        index = self.graph.add_tensor(Tensor(name, physical(shape), "float32"))
        self.graph.inputs.append(index)
        value = self.activation(name + "_int8", shape, scale, zero)
        self.graph.add_operator("QUANTIZE", [index], [value.index])
        return value

    def op_DequantizeLinear(self, node: onnx.NodeProto) -> None:
        source = node.input[0]
        if source in self.onnx.initializers or self.onnx.constant(source) is not None:
            values = self.onnx.constant(source)
            scale = self.onnx.constant(node.input[1])
            axis = int(_attributes(node).get("axis", 1))
            zero = self.onnx.constant(node.input[2]) if len(node.input) > 2 else None
            if zero is not None and np.any(zero != 0):
                raise ConversionError(f"{node.name}: weights must be quantised symmetrically (zero point 0)")
            self.values[node.output[0]] = Constant(values, np.asarray(scale, np.float64).reshape(-1), axis)
            return
        value = self.values.get(source)
        if not isinstance(value, Quantized):
            raise ConversionError(f"{node.name}: dequantises something that is not an int8 activation")
        scale, zero, _ = self.grid_of(node)
        if not value.same_grid(scale, zero):
            raise ConversionError(f"{node.name}: dequantises with other parameters than it was quantised with")
        self.values[node.output[0]] = value

    # ------------------------------------------------------------ compute
    def op_Relu(self, node: onnx.NodeProto) -> None:
        value = self.values.get(node.input[0])
        if isinstance(value, Pending) and value.fusable and value.activation == "NONE":
            self.values[node.output[0]] = Pending(value.shape, value.emit, False, "RELU")
            return
        if isinstance(value, Pending):  # e.g. after CONCATENATION: compute on the ReLU's grid, then clamp
            def emit(out: Quantized, activation: str) -> None:
                inner = self.materialize(value, out.scale, out.zero, f"{node.output[0]}_in")
                self.graph.add_operator("RELU", [inner.index], [out.index])

            self.values[node.output[0]] = Pending(value.shape, emit)
            return
        source = self.quantized(node.input[0])
        self.values[node.output[0]] = Pending(
            source.shape, lambda out, act: self.graph.add_operator("RELU", [source.index], [out.index]))

    def op_Conv(self, node: onnx.NodeProto) -> None:
        source = self.quantized(node.input[0])
        weight = self.values.get(node.input[1])
        bias = self.values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if not isinstance(weight, Constant) or (bias is not None and not isinstance(bias, Constant)):
            raise ConversionError(f"{node.name}: convolution weights must be int8 constants")
        attrs = _attributes(node)
        rank = len(source.shape)
        w = weight.values
        if rank == 3:
            w = w[:, :, None, :]
        groups = int(attrs.get("group", 1))
        out_channels, per_group = w.shape[:2]
        in_channels = source.shape[1]
        kernel = w.shape[2:]
        stride = _spatial(attrs.get("strides", [1] * (rank - 2)), rank, 1)
        dilation = _spatial(attrs.get("dilations", [1] * (rank - 2)), rank, 1)
        pads = list(attrs.get("pads", [0] * (2 * (rank - 2))))
        pads = [0, pads[0], 0, pads[1]] if rank == 3 else pads  # (top, left, bottom, right)
        shape = self.shapes[node.output[0]]
        name = node.name or node.output[0]
        bias_scale = source.scale * weight.scale
        q_bias = bias.values.astype(np.int32) if bias is not None else np.zeros(out_channels, np.int32)
        depthwise = groups == in_channels and per_group == 1 and groups > 1
        if groups > 1 and not depthwise:
            w = _dense_groups(w, groups)  # TFLM has no grouped convolution: block-diagonal dense kernel

        def emit(out: Quantized, activation: str) -> None:
            x = self.pad(source, pads, kernel, stride, dilation, name)
            padding = "VALID" if x is not source or not any(pads) else "SAME"
            options = {"padding": padding, "stride_h": stride[0], "stride_w": stride[1], "activation": activation,
                       "dilation_h": dilation[0], "dilation_w": dilation[1]}
            b = self.constant(f"{name}.bias", q_bias, "int32", bias_scale, 0)
            if depthwise:
                kernel_hwo = w.reshape(out_channels, *kernel).transpose(1, 2, 0)[None]
                k = self.constant(f"{name}.weight", kernel_hwo, "int8", weight.scale, 3)
                self.graph.add_operator("DEPTHWISE_CONV_2D", [x.index, k, b], [out.index],
                                        depth_multiplier=out_channels // in_channels, **options)
            else:
                k = self.constant(f"{name}.weight", w.transpose(0, 2, 3, 1), "int8", weight.scale, 0)
                self.graph.add_operator("CONV_2D", [x.index, k, b], [out.index], **options)

        self.values[node.output[0]] = Pending(tuple(shape), emit, fusable=True)

    def pad(self, source: Quantized, pads, kernel, stride, dilation, name: str) -> Quantized:
        """`source` when TFLite's SAME / VALID padding equals the ONNX padding, else an explicit PAD."""
        if not any(pads):
            return source
        height, width = physical(source.shape)[1:3]
        same = True
        for size, k, s, d, before, after in zip((height, width), kernel, stride, dilation, pads[:2], pads[2:],
                                                 strict=True):
            effective = (k - 1) * d + 1
            onnx_out = (size + before + after - effective) // s + 1
            same_out = -(-size // s)
            total = max((same_out - 1) * s + effective - size, 0)
            same &= onnx_out == same_out and before == total // 2
        if same:
            return source
        top, left, bottom, right = pads
        padded_shape = list(source.shape)
        padded_shape[-2:] = [padded_shape[-2] + top + bottom, padded_shape[-1] + left + right] \
            if len(source.shape) == 4 else [padded_shape[-1] + left + right]
        out = self.activation(f"{name}_padded", tuple(padded_shape), source.scale, source.zero)
        paddings = self.int32_vector(f"{name}_paddings", [[0, 0], [top, bottom], [left, right], [0, 0]])
        self.graph.add_operator("PAD", [source.index, paddings], [out.index])
        return out

    def op_Gemm(self, node: onnx.NodeProto) -> None:
        source = self.quantized(node.input[0])
        weight = self.values.get(node.input[1])
        bias = self.values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        attrs = _attributes(node)
        if not isinstance(weight, Constant) or len(source.shape) != 2:
            raise ConversionError(f"{node.name}: fully connected layers need int8 weights and a (batch, n) input")
        w = weight.values if attrs.get("transB", 0) else weight.values.T
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            raise ConversionError(f"{node.name}: only plain Gemm (y = x W^T + b) is supported")
        name = node.name or node.output[0]
        q_bias = bias.values.astype(np.int32) if isinstance(bias, Constant) else np.zeros(w.shape[0], np.int32)
        bias_scale = source.scale * weight.scale
        if node.output[0] in self.graph_outputs:
            self.values[node.output[0]] = self.float_dense(source, w, weight.scale, q_bias, bias_scale, name)
            return

        def emit(out: Quantized, activation: str) -> None:
            k = self.constant(f"{name}.weight", w, "int8", weight.scale, 0)
            b = self.constant(f"{name}.bias", q_bias, "int32", bias_scale, 0)
            self.graph.add_operator("FULLY_CONNECTED", [source.index, k, b], [out.index], activation=activation)

        self.values[node.output[0]] = Pending(tuple(self.shapes[node.output[0]]), emit, fusable=True)

    def float_dense(self, source: Quantized, w: np.ndarray, w_scale: np.ndarray, q_bias: np.ndarray,
                    bias_scale: np.ndarray, name: str) -> FloatResult:
        """The last layer in float on the dequantised int8 input, weights and bias: the logits exactly
        as the QAT network computes them (an int8 output grid could not separate close classes)."""
        x = self.graph.add_tensor(Tensor(_short(f"{name}_float_in"), physical(source.shape), "float32"))
        self.graph.add_operator("DEQUANTIZE", [source.index], [x])
        weights = (w.astype(np.float64) * np.asarray(w_scale).reshape(-1, 1)).astype(np.float32)
        bias = (q_bias.astype(np.float64) * np.asarray(bias_scale).reshape(-1)).astype(np.float32)
        k = self.constant(f"{name}.weight", weights, "float32")
        b = self.constant(f"{name}.bias", bias, "float32")
        shape = (source.shape[0], weights.shape[0])
        out = self.graph.add_tensor(Tensor(_short(f"{name}_float"), shape, "float32"))
        self.graph.add_operator("FULLY_CONNECTED", [x, k, b], [out], activation="NONE")
        return FloatResult(out, shape)

    def _binary(self, node: onnx.NodeProto, kind: str) -> None:
        a, b = self.quantized(node.input[0]), self.quantized(node.input[1])
        if len(a.shape) != len(b.shape):
            raise ConversionError(f"{node.name}: operands of different rank")
        self.values[node.output[0]] = Pending(
            tuple(self.shapes[node.output[0]]),
            lambda out, act: self.graph.add_operator(kind, [a.index, b.index], [out.index], activation=act),
            fusable=True)

    def op_Add(self, node: onnx.NodeProto) -> None:
        self._binary(node, "ADD")

    def op_Mul(self, node: onnx.NodeProto) -> None:
        self._binary(node, "MUL")

    def op_Sigmoid(self, node: onnx.NodeProto) -> None:
        source = self.quantized(node.input[0])
        name = node.output[0]

        def emit(out: Quantized, activation: str) -> None:  # in float: see the module docstring
            shape = physical(source.shape)
            before = self.graph.add_tensor(Tensor(_short(f"{name}_float_in"), shape, "float32"))
            after = self.graph.add_tensor(Tensor(_short(f"{name}_float"), shape, "float32"))
            self.graph.add_operator("DEQUANTIZE", [source.index], [before])
            self.graph.add_operator("LOGISTIC", [before], [after])
            self.graph.add_operator("QUANTIZE", [after], [out.index])

        self.values[node.output[0]] = Pending(source.shape, emit)

    def _reduce(self, node: onnx.NodeProto, kind: str, axes: list[int], keepdims: bool) -> None:
        source = self.quantized(node.input[0])
        rank = len(source.shape)
        shape = tuple(self.shapes[node.output[0]])
        kept = list(source.shape)
        for axis in axes:
            kept[axis % rank] = 1
        kept = tuple(kept)
        axes_physical = sorted(physical_axis(a, rank) for a in axes)

        def emit(out: Quantized, activation: str) -> None:
            target = out
            if kept != shape:
                target = self.activation(f"{node.output[0]}_kept", kept, out.scale, out.zero)
            axes_tensor = self.int32_vector(f"{node.output[0]}_axes", axes_physical)
            self.graph.add_operator(kind, [source.index, axes_tensor], [target.index], keep_dims=True)
            if target is not out:
                self.reshape(target, out)

        keeps = source if kind == "REDUCE_MAX" else None
        self.values[node.output[0]] = Pending(shape, emit, keeps_grid=keeps)

    def op_GlobalAveragePool(self, node: onnx.NodeProto) -> None:
        rank = len(self.shapes[node.input[0]])
        self._reduce(node, "MEAN", list(range(2, rank)), True)

    def op_ReduceMean(self, node: onnx.NodeProto) -> None:
        self._reduce_attrs(node, "MEAN")

    def op_ReduceMax(self, node: onnx.NodeProto) -> None:
        self._reduce_attrs(node, "REDUCE_MAX")

    def _reduce_attrs(self, node: onnx.NodeProto, kind: str) -> None:
        attrs = _attributes(node)
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1:
            axes = self.onnx.constant(node.input[1]).tolist()
        if axes is None:
            raise ConversionError(f"{node.name}: reduction over all axes is not supported")
        self._reduce(node, kind, list(axes), bool(attrs.get("keepdims", 1)))

    def op_MaxPool(self, node: onnx.NodeProto) -> None:
        source = self.quantized(node.input[0])
        attrs = _attributes(node)
        if len(source.shape) != 4 or attrs.get("ceil_mode", 0):
            raise ConversionError(f"{node.name}: only 2-D max pooling without ceil_mode is supported")
        kernel = tuple(attrs["kernel_shape"])
        stride = tuple(attrs.get("strides", [1, 1]))
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise ConversionError(f"{node.name}: dilated max pooling is not supported")
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        name = node.name or node.output[0]

        def emit(out: Quantized, activation: str) -> None:
            x = self.pad(source, pads, kernel, stride, (1, 1), name)
            padding = "VALID" if x is not source or not any(pads) else "SAME"
            self.graph.add_operator("MAX_POOL_2D", [x.index], [out.index], padding=padding, stride_h=stride[0],
                                    stride_w=stride[1], filter_h=kernel[0], filter_w=kernel[1], activation=activation)

        self.values[node.output[0]] = Pending(tuple(self.shapes[node.output[0]]), emit, fusable=True,
                                              keeps_grid=source)

    def op_Concat(self, node: onnx.NodeProto) -> None:
        sources = [self.quantized(name) for name in node.input]
        rank = len(sources[0].shape)
        axis = physical_axis(int(_attributes(node)["axis"]), rank)

        def emit(out: Quantized, activation: str) -> None:
            inputs = [self.on_grid(s, out.scale, out.zero, f"{node.output[0]}_in{i}").index
                      for i, s in enumerate(sources)]
            self.graph.add_operator("CONCATENATION", inputs, [out.index], axis=axis, activation="NONE")

        # TFLM's CONCATENATION has no fused activation: a ReLU after it stays a RELU operator
        self.values[node.output[0]] = Pending(tuple(self.shapes[node.output[0]]), emit)

    # ------------------------------------------------------------ data movement
    def op_Slice(self, node: onnx.NodeProto) -> None:
        source = self.quantized(node.input[0])
        rank = len(source.shape)
        starts, ends = self.onnx.constant(node.input[1]), self.onnx.constant(node.input[2])
        axes = self.onnx.constant(node.input[3]) if len(node.input) > 3 and node.input[3] else np.arange(len(starts))
        steps = self.onnx.constant(node.input[4]) if len(node.input) > 4 and node.input[4] else np.ones(len(starts))
        begin = [0] * 4
        end = list(physical(source.shape))
        stride = [1] * 4
        for start, stop, axis, step in zip(starts, ends, axes, steps, strict=True):
            size = source.shape[int(axis) % rank]
            start, stop, step = int(start), int(stop), int(step)
            if step < 1:
                raise ConversionError(f"{node.name}: negative slice steps are not supported")
            start = min(max(start + size if start < 0 else start, 0), size)
            stop = min(max(stop + size if stop < 0 else stop, 0), size)
            p = physical_axis(int(axis), rank)
            begin[p], end[p], stride[p] = start, stop, step
        n = len(physical(source.shape))
        begin, end, stride = begin[:n], end[:n], stride[:n]
        name = node.name or node.output[0]

        def emit(out: Quantized, activation: str) -> None:
            inputs = [source.index, self.int32_vector(f"{name}_begin", begin),
                      self.int32_vector(f"{name}_end", end), self.int32_vector(f"{name}_strides", stride)]
            self.graph.add_operator("STRIDED_SLICE", inputs, [out.index], begin_mask=0, end_mask=0)

        self.values[node.output[0]] = Pending(tuple(self.shapes[node.output[0]]), emit, keeps_grid=source)

    def _reshape_node(self, node: onnx.NodeProto) -> None:
        value = self.values.get(node.input[0])
        shape = tuple(self.shapes[node.output[0]])
        if isinstance(value, Pending) and getattr(value.emit, "reshape_of", None) is not None:
            source = value.emit.reshape_of  # a chain of reshapes is one reshape
        else:
            source = self.quantized(node.input[0])

        def emit(out: Quantized, activation: str) -> None:
            self.reshape(source, out)

        emit.reshape_of = source
        self.values[node.output[0]] = Pending(shape, emit, keeps_grid=source)

    op_Flatten = op_Squeeze = op_Unsqueeze = op_Reshape = _reshape_node

    def reshape(self, source: Quantized, out: Quantized) -> None:
        """RESHAPE `source` to `out` (same grid). TFLite reshapes the stored (channels-last) order, ONNX
        the NCHW order: where they differ, TRANSPOSE to NCHW order before and / or back after."""
        name = self.graph.tensors[out.index].name
        if np.array_equal(storage_order(source.shape), storage_order(out.shape)):
            self._reshape_op(source.index, out.index, physical(out.shape), name)
            return
        if not np.array_equal(storage_order(source.shape), np.arange(int(np.prod(source.shape)))):
            source = self._transposed(source, _NCHW_SOURCE, f"{name}_nchw")
        if np.array_equal(storage_order(out.shape), np.arange(int(np.prod(out.shape)))):
            self._reshape_op(source.index, out.index, physical(out.shape), name)
            return
        nchw = out.shape if len(out.shape) == 4 else (out.shape[0], out.shape[1], 1, out.shape[2])
        inner = self.graph.add_tensor(Tensor(f"{name}_nchw_out", tuple(nchw), "int8",
                                             scale=np.array([out.scale], np.float32),
                                             zero_point=np.array([out.zero], np.int64)))
        self._reshape_op(source.index, inner, nchw, name + "_inner")
        self.graph.add_operator("TRANSPOSE", [inner, self.int32_vector(f"{name}_perm", (0, 2, 3, 1))], [out.index])

    def _reshape_op(self, source: int, out: int, shape, name: str) -> None:
        self.graph.add_operator("RESHAPE", [source, self.int32_vector(f"{name}_shape", shape)], [out])

    def _transposed(self, source: Quantized, perm: tuple[int, ...], name: str) -> Quantized:
        """The stored tensor of `source` in NCHW order (as a 4-D tensor)."""
        stored = physical(source.shape)
        shape = tuple(stored[p] for p in perm)
        index = self.graph.add_tensor(Tensor(name, shape, "int8", scale=np.array([source.scale], np.float32),
                                             zero_point=np.array([source.zero], np.int64)))
        self.graph.add_operator("TRANSPOSE", [source.index, self.int32_vector(f"{name}_perm", perm)], [index])
        return Quantized(index, source.shape, source.scale, source.zero)


_NCHW_SOURCE = (0, 3, 1, 2)  # channels-last storage -> NCHW order


def storage_order(shape: tuple[int, ...]) -> np.ndarray:
    """The NCHW (row-major) indices of a tensor's elements in the order TFLite stores them."""
    index = np.arange(int(np.prod(shape))).reshape(shape)
    if len(shape) == 4:
        index = index.transpose(0, 2, 3, 1)
    elif len(shape) == 3:
        index = index[:, :, None, :].transpose(0, 2, 3, 1)
    return index.reshape(-1)


def _short(name: str) -> str:
    """A tensor name without the ONNX exporter's boilerplate (names cost flash)."""
    for noise in ("/QuantizeLinear_output_0", "/DequantizeLinear_output_0", "_output_0"):
        name = name.replace(noise, "")
    return name.strip("/")


def _dense_groups(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped kernel (O, I/g, kh, kw) as the equivalent dense, block-diagonal one."""
    out_channels, per_group = weight.shape[:2]
    dense = np.zeros((out_channels, per_group * groups, *weight.shape[2:]), weight.dtype)
    step = out_channels // groups
    for g in range(groups):
        dense[g * step : (g + 1) * step, g * per_group : (g + 1) * per_group] = weight[g * step : (g + 1) * step]
    return dense


def _batch_one(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with the batch dimension fixed to 1 (microcontrollers classify one clip at a time)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    return model


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = tuple(d.dim_value for d in dims)
    return shapes


def convert(model: onnx.ModelProto, io: str, output_grid: Callable[[str], tuple[float, int]]) -> Graph:
    """The TFLite graph of the int8 QDQ ONNX `model` (batch 1). `output_grid(name)` gives the int8
    (scale, zero point) of a graph output the ONNX model leaves in float (the logits)."""
    return Converter(model, io, output_grid).convert()
