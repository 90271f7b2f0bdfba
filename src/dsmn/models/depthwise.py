"""Depthwise convolutions with a faster CPU backward pass (same values, same parameters).

oneDNN's backward pass of a dilated depthwise convolution is slow on the CPU: for model1's largest
DSMN layer (batch 32, 16 channels, 44 x 128, 3 x 3 kernel, dilation 2) it takes ~19 ms, 15x its
forward pass, and the input-gradient half alone ~12 ms (measured). For a stride-1 "same"
convolution the input gradient is itself a depthwise convolution of the output gradient with the
kernel flipped, which oneDNN runs at forward speed (~1.5 ms). `depthwise_conv2d` computes it that
way and leaves the weight gradient to aten. Everything else (GPU, inference, tracing, export) takes
the plain `F.conv2d` path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class _DepthwiseConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, padding: tuple[int, int],
                dilation: tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dilation = padding, dilation
        return F.conv2d(x, weight, None, 1, padding, dilation, weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        x, weight = ctx.saved_tensors
        groups = weight.shape[0]
        grad_input = grad_weight = None
        if ctx.needs_input_grad[0]:  # the transposed "same" convolution = convolution with the flipped kernel
            grad_input = F.conv2d(grad, weight.flip(-2, -1), None, 1, ctx.padding, ctx.dilation, groups)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], list(ctx.padding), list(ctx.dilation), False, [0, 0], groups,
                [False, True, False])[1]
        return grad_input, grad_weight, None, None


def uses_fast_backward(x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int], padding: Sequence[int] | str,
                       dilation: Sequence[int], groups: int) -> bool:
    """True where `depthwise_conv2d` applies: CPU training of a stride-1, same-size, depthwise 2-D conv."""
    if x.device.type != "cpu" or x.dim() != 4 or not torch.is_grad_enabled():
        return False
    if not (x.requires_grad or weight.requires_grad) or torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    if isinstance(padding, str) or groups != weight.shape[0] or weight.shape[1] != 1 or x.shape[1] != groups:
        return False
    kernel = weight.shape[-2:]
    return (tuple(stride) == (1, 1) and max(kernel) > 1
            and all(p == d * (k - 1) // 2 and k % 2 == 1 for p, d, k in zip(padding, dilation, kernel, strict=True)))


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Sequence[int],
           padding: Sequence[int] | str, dilation: Sequence[int], groups: int) -> torch.Tensor:
    """`F.conv2d`, with the faster backward pass where `uses_fast_backward` says it applies."""
    if uses_fast_backward(x, weight, stride, padding, dilation, groups):
        out = _DepthwiseConv2d.apply(x, weight, tuple(padding), tuple(dilation))
        return out if bias is None else out + bias.view(1, -1, 1, 1)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


class DepthwiseConv2d(nn.Conv2d):
    """`nn.Conv2d` (depthwise: groups = channels) whose CPU training uses the faster backward pass.

    Same parameters and state_dict as nn.Conv2d; QAT preparation treats it as a convolution.
    """

    def __init__(self, channels: int, kernel_size: int | tuple[int, int], *, padding: int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, bias: bool = False) -> None:
        super().__init__(channels, channels, kernel_size, padding=padding, dilation=dilation, groups=channels,
                         bias=bias)

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            return super()._conv_forward(x, weight, bias)
        return conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
