"""The int8 deployment as a torch module whose weights are stored as int8 parameters.

`deployed_module` gives the int8 computation with weights as float buffers on their int8 grid. Here
each convolution / linear layer keeps its weight as an int8 `nn.Parameter` (and the per-channel
scale beside it as a buffer), dequantised in the forward pass. So tools that size a torch model by
its parameters and their dtypes (the DCASE 2025 submission check: sum of numel x dtype bytes; torchinfo
for MACs) see int8 weights and float32 biases, and the module computes what the int8 ONNX file computes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from dsmn.deploy.torch_model import DeployedConv, DeployedLinear, deployed_module
from dsmn.quantization.quantizers import weight_scale


def _int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid weights -> (int8 values, per-output-channel scale); exact, since the grid's scale is max|w| / 63."""
    scale = weight_scale(weight)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return torch.round(weight / scale.view(shape)).to(torch.int8), scale


class Int8Conv2d(nn.Module):
    """A convolution with int8 weights (parameter), float32 scale (buffer) and float32 bias (parameter)."""

    def __init__(self, layer: DeployedConv) -> None:
        super().__init__()
        values, scale = _int8(layer.weight)
        self.weight = nn.Parameter(values, requires_grad=False)
        self.register_buffer("scale", scale.float().view(-1, *([1] * (values.dim() - 1))))
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.float(), requires_grad=False)
        self.stride, self.padding, self.dilation = layer.stride, layer.padding, layer.dilation
        self.groups = layer.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype) * self.scale.to(x.dtype), None if self.bias is None else
                        self.bias.to(x.dtype), self.stride, self.padding, self.dilation, self.groups)


class Int8Linear(nn.Module):
    def __init__(self, layer: DeployedLinear) -> None:
        super().__init__()
        values, scale = _int8(layer.weight)
        self.weight = nn.Parameter(values, requires_grad=False)
        self.register_buffer("scale", scale.float().view(-1, 1))
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.float(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype) * self.scale.to(x.dtype), bias)


def int8_module(qat_network: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """The int8 deployment of a QAT network with int8 weight parameters (see module doc).

    Grouped 1x1 kernels stay grouped (fewest stored weights); `example` is one network input batch.
    """
    deployed = deployed_module(qat_network, quantized=True, example=example, dense_pointwise=False)
    for name, module in list(deployed.named_modules()):
        if isinstance(module, DeployedConv) and module.weight.dim() == 4:
            replacement: nn.Module = Int8Conv2d(module)
        elif isinstance(module, DeployedLinear):
            replacement = Int8Linear(module)
        else:
            continue
        parent, _, leaf = name.rpartition(".")
        (deployed.get_submodule(parent) if parent else deployed).add_module(leaf, replacement)
    deployed.recompile()
    return deployed.eval()
