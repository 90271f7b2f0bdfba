"""The QAT network computed with the integer arithmetic of TFLite's reference kernels (TFLM, CMSIS-NN).

Why it exists: the QAT simulation (and ONNX Runtime, and LiteRT's default XNNPACK kernels) turn an
int32 accumulator into the next int8 value with one rounding: round(acc x scale). TFLite's
reference kernels, which TFLM runs and CMSIS-NN reproduces bit for bit, multiply by a 31-bit
fixed-point multiplier and then shift right, rounding twice (gemmlowp's
SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT). When the multiplier is close to one
(depthwise convolutions with BatchNorm folded in), the two differ by one step on a few % of the
values, and a trained DSMN network amplifies such steps until the top-1 class of some clips
changes. Both are exact integer programs; they are simply different ones.

`TfliteArithmetic` evaluates the QAT network's deployed form (the very network the .tflite file is
written from: same int8 weights, int32 biases and activation grids) with TFLite's integer rules for
every int8 operator the converter emits: convolutions and fully connected layers, ADD, MUL, MEAN,
REDUCE_MAX, requantisation (the inputs of CONCATENATION, and wherever a value changes grid), and the
float island of the ECA gates' sigmoid. The export checks TFLM against it, LiteRT (XNNPACK) against the plain QAT
simulation: each runtime against the QAT network in that runtime's own arithmetic.

The rules follow TFLite's kernel sources (quantization_util, integer_ops, reduce); the code is
this project's own, in torch int64 arithmetic.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from dsmn.deploy.qdq import int8_weight, int32_bias
from dsmn.deploy.torch_model import DeployedConv, DeployedLinear, QuantDequant, deployed_module
from dsmn.quantization.prepare import is_data_movement, spatial_mean
from dsmn.quantization.quantizers import ACTIVATION_QMAX, ACTIVATION_QMIN

CHUNK = 8  # clips per pass: the int64 arithmetic is memory-bound, small tensors stay in cache
ADD_LEFT_SHIFT = 20  # TFLite's int8 ADD scales both inputs by 2^20 before rescaling them


def quantize_multiplier(real: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's QuantizeMultiplier: `real` = multiplier / 2^31 x 2^shift, multiplier in [2^30, 2^31)."""
    real = np.atleast_1d(np.asarray(real, np.float64))
    mantissa, shift = np.frexp(real)
    multiplier = np.rint(mantissa * 2.0**31).astype(np.int64)
    carry = multiplier == 2**31
    multiplier[carry] //= 2
    shift = shift.astype(np.int64) + carry
    underflow = shift < -31
    multiplier[underflow], shift[underflow] = 0, 0
    return multiplier, shift


def _per_channel(values: np.ndarray, like: torch.Tensor, axis: int) -> torch.Tensor:
    view = [1] * like.dim()
    view[axis] = -1
    return torch.as_tensor(values, dtype=torch.int64).reshape(view if values.size > 1 else [1] * like.dim())


def multiply_by_quantized_multiplier(x: torch.Tensor, multiplier: np.ndarray, shift: np.ndarray,
                                     axis: int = 1) -> torch.Tensor:
    """TFLite's MultiplyByQuantizedMultiplier on int64 tensors holding int32 values: a left shift,
    a rounding doubling high multiply (half away from zero), a rounding right shift. Per-channel
    `multiplier` / `shift` run along `axis`."""
    m = _per_channel(multiplier, x, axis)
    s = _per_channel(shift, x, axis)
    shifted = (x * torch.pow(2, s.clamp(min=0))).clamp(-(2**31), 2**31 - 1)  # an int32 in TFLite
    product = shifted * m
    nudge = torch.where(product >= 0, 1 << 30, 1 - (1 << 30))
    high = torch.div(product + nudge, 1 << 31, rounding_mode="trunc")
    right = (-s).clamp(min=0)
    mask = torch.pow(2, right) - 1
    threshold = (mask >> 1) + (high < 0).long()
    return (high >> right) + ((high & mask) > threshold).long()


@dataclass(frozen=True)
class Grid:
    """An activation's uint8 grid (TFLite stores the same grid as int8 with zero point - 128)."""

    scale: float  # float32 value, as stored
    zero: int

    def levels(self, value: torch.Tensor) -> torch.Tensor:
        """q - zero point of the values of `value` (which lie on this grid), as int64."""
        return torch.round(value.double() / self.scale).long()

    def value(self, levels: torch.Tensor, lower: int = ACTIVATION_QMIN) -> torch.Tensor:
        """The dequantised float32 values of `levels` (q - zero point), clamped like an int8 output."""
        q = (levels + self.zero).clamp(lower, ACTIVATION_QMAX)
        return ((q - self.zero).double() * self.scale).float()


def add_levels(a: torch.Tensor, grid_a: Grid, b: torch.Tensor, grid_b: Grid, out: Grid) -> torch.Tensor:
    """TFLite's int8 ADD: both inputs scaled by 2^20 and onto a common scale, summed, rescaled (three
    roundings, the first two far below one output step)."""
    twice_max = 2.0 * max(np.float64(grid_a.scale), np.float64(grid_b.scale))
    total = sum(multiply_by_quantized_multiplier(levels * (1 << ADD_LEFT_SHIFT),
                                                 *quantize_multiplier(np.float64(grid.scale) / twice_max))
                for levels, grid in ((a, grid_a), (b, grid_b)))
    real = twice_max / ((1 << ADD_LEFT_SHIFT) * np.float64(out.scale))
    return multiply_by_quantized_multiplier(total, *quantize_multiplier(real))


def requantize_levels(levels: torch.Tensor, source: Grid, target: Grid) -> torch.Tensor:
    """An int8 tensor moved onto another grid. The converter writes that as an ADD of a zero constant
    (dsmn.deploy.tflite_convert: XNNPACK's QUANTIZE rounds coarsely), so it is an ADD here too."""
    if source == target:
        return levels
    return add_levels(levels, source, torch.zeros_like(levels), source, target)


def _is_call(node: fx.Node, functions: set, methods: set) -> bool:
    return (node.op == "call_function" and node.target in functions) or (
        node.op == "call_method" and node.target in methods)


_ADD = ({operator.add, torch.add, operator.iadd}, {"add", "add_"})
_MUL = ({operator.mul, torch.mul, operator.imul}, {"mul", "mul_"})
_RELU = ({F.relu, torch.relu, torch.relu_}, {"relu", "relu_"})
_SIGMOID = ({torch.sigmoid, F.sigmoid}, {"sigmoid", "sigmoid_"})
_MEAN = ({spatial_mean, F.adaptive_avg_pool2d, torch.mean}, {"mean"})
_CAT = ({torch.cat, torch.concat}, {"cat"})
_MAX = ({torch.amax}, {"amax"})  # REDUCE_MAX: exact on its input's grid, then requantised


class _Interpreter(fx.Interpreter):
    """Runs the deployed graph; every quantised activation is recomputed with TFLite's integer rules
    from the int8 values of the operator's inputs."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.modules = dict(module.named_modules())
        self.grids: dict[fx.Node, Grid] = {}
        self.float_rounded: set[str] = set()  # operators without an integer rule (rounded like QAT)
        self.keep_operands_alive()

    def keep_operands_alive(self) -> None:
        """Free each value after its last reader, counting as readers the quantisers whose integer rule
        reads the operator before them (through a ReLU) and that operator's inputs."""
        last_reader: dict[fx.Node, fx.Node] = {}
        for node in self.graph.nodes:  # in execution order: the last assignment wins
            for value in node.all_input_nodes:
                last_reader[value] = node
            if isinstance(self.modules.get(node.target) if node.op == "call_module" else None, QuantDequant):
                producer = node.args[0]
                read = [producer]
                if self.is_relu(producer):
                    producer = producer.args[0]
                    read.append(producer)
                for value in [*read, *producer.all_input_nodes]:
                    last_reader[value] = node
        self.user_to_last_uses = {}
        for value, reader in last_reader.items():
            self.user_to_last_uses.setdefault(reader, []).append(value)

    def run_node(self, node: fx.Node):  # noqa: ANN201 - whatever the node computes
        module = self.modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, QuantDequant):
            grid = Grid(float(np.float32(module.scale)), int(module.zero_point))
            self.grids[node] = grid
            result = self.integer_result(node.args[0], grid)
            return super().run_node(node) if result is None else result
        value = super().run_node(node)
        if node.args and isinstance(node.args[0], fx.Node) and node.args[0] in self.grids \
                and is_data_movement(node, self.modules):
            self.grids[node] = self.grids[node.args[0]]
        return value

    # ------------------------------------------------------------ one quantised activation
    def integer_result(self, producer: fx.Node, out: Grid) -> torch.Tensor | None:
        lower = ACTIVATION_QMIN
        if self.is_relu(producer):
            lower, producer = out.zero, producer.args[0]  # a fused ReLU clamps at the zero point
        keeps_grid = _is_call(producer, *_MAX) and producer.args[0] in self.grids
        if producer in self.grids or keeps_grid:  # requantisation (or the same grid: nothing)
            source = self.grids[producer.args[0] if keeps_grid else producer]
            return out.value(requantize_levels(source.levels(self.env[producer]), source, out), lower)
        module = self.modules.get(producer.target) if producer.op == "call_module" else None
        if isinstance(module, DeployedConv | DeployedLinear):
            levels = self.weighted(producer, module, out)
        elif _is_call(producer, *_ADD):
            levels = self.add(producer, out)
        elif _is_call(producer, *_MUL):
            levels = self.mul(producer, out)
        elif _is_call(producer, *_MEAN):
            levels = self.mean(producer, out)
        elif _is_call(producer, *_CAT):
            levels = self.cat(producer, out)
        elif _is_call(producer, *_SIGMOID):
            levels = self.sigmoid(producer, out)
        else:
            levels = None
        if levels is None and self.reads_graph_input(producer):
            # the features as the caller quantises them for the int8 input: round(x / scale), half to
            # even, divided in float32 (dsmn.deploy.tflite_runtime; the C recipe in docs/edge.md)
            levels = torch.round(self.env[producer].float() / np.float32(out.scale)).long()
        if levels is None:
            self.float_rounded.add(str(producer.target))
            return None
        return out.value(levels, lower)

    def is_relu(self, node: fx.Node) -> bool:
        module = self.modules.get(node.target) if node.op == "call_module" else None
        return isinstance(module, nn.ReLU) or _is_call(node, *_RELU)

    def reads_graph_input(self, node: fx.Node) -> bool:
        """The model input's own quantisation (the caller quantises the features for an int8 input)."""
        while node.op != "placeholder":
            if not is_data_movement(node, self.modules) or not node.args:
                return False
            node = node.args[0]
        return True

    def operands(self, node: fx.Node) -> list[tuple[torch.Tensor, Grid]] | None:
        args = [a for a in node.args if isinstance(a, fx.Node)]
        if len(args) != len(node.args) or any(a not in self.grids for a in args):
            return None
        return [(self.grids[a].levels(self.env[a]), self.grids[a]) for a in args]

    # ------------------------------------------------------------ operators
    def weighted(self, node: fx.Node, layer: DeployedConv | DeployedLinear, out: Grid) -> torch.Tensor | None:
        """CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED: exact int32 accumulator, int32 bias, then
        a per-channel fixed-point multiplier."""
        operands = self.operands(node)
        if operands is None:
            return None
        (x, grid), = operands
        weight, weight_scale = int8_weight(layer.weight.detach().cpu().numpy().astype(np.float32))
        # integer products summed in float are exact while every partial sum stays below 2^24 (float32)
        terms = int(np.prod(weight.shape[1:]))
        exact = torch.float32 if terms * 255 * 128 < 2**24 else torch.float64
        w = torch.from_numpy(weight).to(exact)
        if isinstance(layer, DeployedLinear):
            acc = F.linear(x.to(exact), w)
        else:
            acc = layer.function(x.to(exact), w, None, layer.stride, layer.padding, layer.dilation, layer.groups)
        acc = torch.round(acc).long()
        if layer.bias is not None:
            bias, _ = int32_bias(layer.bias.detach().cpu().numpy(), grid.scale, weight_scale)
            acc = acc + _per_channel(bias.astype(np.int64), acc, 1)
        real = np.float64(grid.scale) * weight_scale.astype(np.float64) / np.float64(out.scale)
        return multiply_by_quantized_multiplier(acc, *quantize_multiplier(real))

    def add(self, node: fx.Node, out: Grid) -> torch.Tensor | None:
        operands = self.operands(node)
        if operands is None or len(operands) != 2:
            return None
        (a, ga), (b, gb) = operands
        return add_levels(a, ga, b, gb, out)

    def mul(self, node: fx.Node, out: Grid) -> torch.Tensor | None:
        """MUL: the product of the two inputs' levels, rescaled once."""
        operands = self.operands(node)
        if operands is None or len(operands) != 2:
            return None
        (a, ga), (b, gb) = operands
        real = np.float64(ga.scale) * np.float64(gb.scale) / np.float64(out.scale)
        return multiply_by_quantized_multiplier(a * b, *quantize_multiplier(real))

    def mean(self, node: fx.Node, out: Grid) -> torch.Tensor | None:
        """MEAN over the spatial axes: the sum of levels times input/output scale divided by the count,
        folded into one fixed-point multiplier as TFLM's QuantizedMeanOrSum does (or, when input
        and output grids are equal, an integer division of the int8 sum)."""
        source = node.args[0]
        if not isinstance(source, fx.Node) or source not in self.grids:
            return None
        grid = self.grids[source]
        x = grid.levels(self.env[source])
        if not (x.dim() == 4 and self.env[node].shape[2:] == (1, 1)):
            return None
        count = x.shape[2] * x.shape[3]
        total = x.sum(dim=(2, 3), keepdim=True)
        if grid == out:  # integer mean of the stored int8 values, truncated toward zero
            stored = total + (grid.zero - 128) * count
            return torch.div(stored, count, rounding_mode="trunc") - (out.zero - 128)
        multiplier, shift = quantize_multiplier(np.float64(grid.scale) / np.float64(out.scale))
        bits = min(count.bit_length() - 1, 32, 31 + int(shift[0]))
        multiplier = (multiplier << bits) // count
        return multiply_by_quantized_multiplier(total, multiplier, shift - bits)

    def cat(self, node: fx.Node, out: Grid) -> torch.Tensor | None:
        """CONCATENATION: each input requantised onto the output grid, then joined."""
        tensors = node.args[0]
        if not isinstance(tensors, list | tuple) or not all(t in self.grids for t in tensors):
            return None
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        parts = [requantize_levels(self.grids[t].levels(self.env[t]), self.grids[t], out) for t in tensors]
        return torch.cat(parts, dim=dim)

    def sigmoid(self, node: fx.Node, out: Grid) -> torch.Tensor | None:
        """DEQUANTIZE -> float LOGISTIC -> QUANTIZE (division by the scale, rounding half away from zero)."""
        operands = self.operands(node)
        if operands is None:
            return None
        (x, grid), = operands
        y = torch.sigmoid(x.float() * np.float32(grid.scale))
        ratio = (y / np.float32(out.scale)).double()  # divided in float32, rounded exactly in float64
        return (torch.sign(ratio) * torch.floor(ratio.abs() + 0.5)).long()


class TfliteArithmetic(nn.Module):
    """The int8 network computed as TFLite's reference kernels compute it (see the module docstring).

    `float_rounded` names the operators that had no integer rule and were rounded like the QAT
    simulation (empty for the registered networks)."""

    def __init__(self, network: nn.Module, example: torch.Tensor) -> None:
        super().__init__()
        self.deployed = deployed_module(network, quantized=True, example=example.cpu(), dense_pointwise=False)
        self.float_rounded: set[str] = set()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        results = []
        for start in range(0, len(x), CHUNK):
            interpreter = _Interpreter(self.deployed)
            results.append(interpreter.run(x[start : start + CHUNK].cpu().float()))
            self.float_rounded |= interpreter.float_rounded
        return torch.cat(results) if results else torch.zeros((0, 0))
