"""The deployed network as a plain torch module: BatchNorm folded, constant weights, constant Q/DQ.

It is what the ONNX file computes, built from the QAT graph by swapping each quantisation module for
its frozen deployed form, so the exporter only ever sees constants (no observers, no BatchNorm,
no training branches).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import fx, nn

from dsmn.models import unwrap
from dsmn.quantization import QATConfig, prepare_qat
from dsmn.quantization.folded import FoldedConv, FoldedLinear, _FoldedBase
from dsmn.quantization.prepare import QATGraphModule, is_data_movement, returns_tuple, tensor_nodes
from dsmn.quantization.quantizers import ACTIVATION_QMAX, ACTIVATION_QMIN, ActivationQuantizer, fake_quantize_weight


class QuantDequant(nn.Module):
    """uint8 quantise-dequantise with frozen parameters (ONNX: QuantizeLinear -> DequantizeLinear)."""

    def __init__(self, scale: float, zero_point: int) -> None:
        super().__init__()
        self.scale = scale
        self.zero_point = zero_point

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, ACTIVATION_QMIN, ACTIVATION_QMAX)

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4g}, zero_point={self.zero_point}"


class DeployedConv(nn.Module):
    """A convolution with constant weight and bias (the folded, possibly int8-rounded, layer)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding, dilation, groups: int) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.function = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[weight.dim()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class DeployedLinear(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def _dense_groups(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped 1x1 kernel as the equivalent dense, block-diagonal kernel."""
    out_channels, per_group = weight.shape[:2]
    dense = weight.new_zeros(out_channels, per_group * groups, *weight.shape[2:])
    out_per_group = out_channels // groups
    for g in range(groups):
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        dense[rows, g * per_group : (g + 1) * per_group] = weight[rows]
    return dense


def _pool_as_conv(pool: nn.AvgPool2d, channels: int) -> DeployedConv | None:
    """An average pooling (no padding) as a depthwise convolution with constant weights 1 / window: the
    same value, but ONNX Runtime's int8 depthwise convolution is much faster than its int8 pooling."""
    kernel = pool.kernel_size if isinstance(pool.kernel_size, tuple) else (pool.kernel_size,) * 2
    stride = pool.stride if isinstance(pool.stride, tuple) else (pool.stride,) * 2
    padding = pool.padding if isinstance(pool.padding, tuple) else (pool.padding,) * 2
    if any(padding) or pool.ceil_mode or pool.divisor_override:
        return None
    weight = torch.full((channels, 1, *kernel), 1.0 / (kernel[0] * kernel[1]))
    return DeployedConv(weight, None, stride, (0, 0), (1, 1), channels)


def _deployed_layer(module: _FoldedBase, quantized: bool, dense_pointwise: bool) -> nn.Module:
    with torch.no_grad():
        weight, bias, attributes = module.deployed()
        if quantized:
            bias = module.quantize_bias(bias, weight)
        weight = (fake_quantize_weight(weight) if quantized else weight).detach().clone().contiguous()
        bias = None if bias is None else bias.detach().clone()
    if isinstance(module, FoldedLinear):
        return DeployedLinear(weight, bias)
    if attributes["padding_mode"] != "zeros":
        raise ValueError(f"padding mode {attributes['padding_mode']!r} is not exportable")
    groups = attributes["groups"]
    if dense_pointwise and groups > 1 and all(k == 1 for k in weight.shape[2:]):
        weight, groups = _dense_groups(weight, groups), 1  # MLAS: one small GEMM beats many tiny grouped ones
    return DeployedConv(weight, bias, attributes["stride"], attributes["padding"], attributes["dilation"], groups)


def deployed_module(
    model: nn.Module, quantized: bool = True, example: torch.Tensor | None = None, dense_pointwise: bool = False
) -> fx.GraphModule:
    """The frozen inference network of `model` (a QAT model, or a float model, which is folded first).

    `quantized`: int8 weights and uint8 Q/DQ on activations (needs observed quantisers, i.e. a
    QAT-trained or calibrated model); otherwise the folded float network. With an `example` input
    (batch >= 1) the graph is specialised to its clip shape (the batch stays free): shape arithmetic
    becomes constants and average pooling becomes a depthwise convolution, both for ONNX Runtime's sake.
    `dense_pointwise`: grouped 1x1 convolutions are stored as dense block-diagonal ones (zeros
    included): several times faster in ONNX Runtime, at the price of more stored weights.
    """
    net = unwrap(model)
    if not isinstance(net, QATGraphModule):
        if quantized:
            raise ValueError("an int8 deployment needs a QAT (or calibrated) model; got a float model")
        net = prepare_qat(net, QATConfig.recipe())
    modules = dict(net.named_modules())
    root: dict[str, object] = {}
    for node in net.graph.nodes:
        if node.op == "call_module":
            module = modules[node.target]
            if isinstance(module, ActivationQuantizer):
                if quantized and not module.observed:
                    raise ValueError(f"activation quantiser {node.target} was never calibrated")
                root[node.target] = QuantDequant(*module.qparams()) if quantized else nn.Identity()
            elif isinstance(module, FoldedConv | FoldedLinear):
                root[node.target] = _deployed_layer(module, quantized, dense_pointwise)
            else:
                root[node.target] = copy.deepcopy(module).eval()
        elif node.op == "get_attr":
            root[node.target] = getattr(net, node.target)
    deployed = fx.GraphModule(root, copy.deepcopy(net.graph), class_name="Deployed")
    if example is not None:
        _specialise(deployed, example)
    if quantized:
        _requantize_after_data_movement(deployed)
    return deployed.eval()


def _requantize_after_data_movement(module: fx.GraphModule) -> None:
    """Repeat the Q/DQ of a tensor after each slice / transpose / reshape of it.

    Numerically a no-op (the values are already on that grid), but ONNX Runtime fuses an operator
    into its int8 form only when its inputs come straight from DequantizeLinear: without this, a
    convolution or concat behind a Flatten or Unsqueeze would run in float.
    """
    graph = module.graph
    modules = dict(module.named_modules())
    tensors = tensor_nodes(graph)
    source: dict[fx.Node, str] = {}
    for node in list(graph.nodes):
        if node.op == "call_module" and isinstance(modules[node.target], QuantDequant):
            source[node] = node.target
            continue
        upstream = node.args[0] if node.args else None
        if node not in tensors or not is_data_movement(node, modules) or upstream not in source:
            continue
        source[node] = source[upstream]
        if returns_tuple(node):
            continue
        with graph.inserting_after(node):
            requantized = graph.call_module(source[node], (node,))
        node.replace_all_uses_with(requantized, delete_user_cb=lambda user, q=requantized: user is not q)
        source[requantized] = source[node]
    graph.lint()
    module.recompile()


class _Recorder(fx.Interpreter):
    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.values: dict[fx.Node, object] = {}

    def run_node(self, node: fx.Node):  # noqa: ANN201 - whatever the node computes
        value = super().run_node(node)
        self.values[node] = value
        return value


def _record(module: fx.GraphModule, example: torch.Tensor) -> dict[fx.Node, object]:
    recorder = _Recorder(module)
    with torch.no_grad():
        recorder.run(example)
    return recorder.values


def _is_shape_value(value: object) -> bool:
    if isinstance(value, int | float | bool | torch.Size):
        return True
    return isinstance(value, tuple | list) and all(isinstance(v, int | float | bool) for v in value)


def _specialise(module: fx.GraphModule, example: torch.Tensor) -> None:
    """Fix shape arithmetic that does not depend on the batch size, and turn average pools into
    depthwise convolutions (the channel count is known once shapes are)."""
    graph = module.graph
    one = _record(module, example[:1])
    two = _record(module, torch.cat([example[:1], example[:1]]))
    tensors = tensor_nodes(graph)
    for node in list(graph.nodes):
        if node in tensors or node.op not in ("call_function", "call_method") or not node.users:
            continue
        value = one.get(node)
        if not _is_shape_value(value) or value != two.get(node):
            continue  # depends on the batch size (or is not a plain number): keep it computed
        if isinstance(value, torch.Size):
            value = tuple(value)
        for user in list(node.users):
            user.args = fx.node.map_arg(user.args, lambda n, v=value, old=node: v if n is old else n)
            user.kwargs = fx.node.map_arg(user.kwargs, lambda n, v=value, old=node: v if n is old else n)
    graph.eliminate_dead_code()
    pools: dict[str, set[int]] = {}
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(module.get_submodule(node.target), nn.AvgPool2d):
            pools.setdefault(node.target, set()).add(one[node.args[0]].shape[1])
    for target, channels in pools.items():
        if len(channels) == 1:
            conv = _pool_as_conv(module.get_submodule(target), channels.pop())
            if conv is not None:
                parent, _, name = target.rpartition(".")
                module.get_submodule(parent).add_module(name, conv) if parent else module.add_module(name, conv)
    graph.lint()
    module.recompile()
