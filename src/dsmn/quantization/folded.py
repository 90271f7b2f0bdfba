"""Deployable layers simulated in training: convolutions with BatchNorm folded, int8 weights.

A `FoldedConv` computes what one int8 convolution of the deployed model computes. It can stand for
several float convolutions that read the same input and are summed (DSMN's separable operator adds
a (3, 1) dilated depthwise convolution along time and a (1, 3) one along frequency): their kernels
are placed into one common kernel (here 3 x 3 with dilation 2, a cross), which is exact in float,
and the deployed model then runs a single depthwise convolution instead of two plus an add.
A BatchNorm that follows is folded into the kernel with the standard QAT scheme.

The float modules are not owned (not registered as children): the QAT model keeps them at their
original paths, so parameter names, optimisers and state_dict keys are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dsmn.models import depthwise
from dsmn.quantization.quantizers import fake_quantize_bias, fake_quantize_weight, weight_scale

_CONV_FUNCTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_BatchNorm = nn.modules.batchnorm._BatchNorm


@dataclass(frozen=True)
class MergedGeometry:
    """Kernel size, dilation and padding of the common kernel, and where each source kernel sits in it."""

    kernel_size: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[int, ...]
    pads: tuple[tuple[int, ...], ...]  # F.pad arguments per source kernel


def merge_geometry(convs: Sequence[nn.Module]) -> MergedGeometry | None:
    """How to express the sum of `convs` (same input) as one convolution, or None if it cannot be.

    Each kernel tap reads the input at offset -padding + i * dilation; the taps of all kernels must
    fall on one common dilated grid.
    """
    first = convs[0]
    same = all(
        c.in_channels == first.in_channels
        and c.out_channels == first.out_channels
        and c.groups == first.groups
        and c.stride == first.stride
        and c.padding_mode == "zeros"
        and isinstance(c.padding, tuple)
        and type(c) is type(first)
        for c in convs
    )
    if not same:
        return None
    rank = len(first.kernel_size)
    kernel, dilation, padding = [], [], []
    starts = [[0] * rank for _ in convs]
    for d in range(rank):
        dilations = {c.dilation[d] for c in convs if c.kernel_size[d] > 1}
        if len(dilations) > 1:
            return None
        step = dilations.pop() if dilations else 1
        offsets = [(-c.padding[d], -c.padding[d] + (c.kernel_size[d] - 1) * c.dilation[d]) for c in convs]
        low = min(o[0] for o in offsets)
        high = max(o[1] for o in offsets)
        if any((o[0] - low) % step for o in offsets) or (high - low) % step:
            return None
        kernel.append((high - low) // step + 1)
        dilation.append(step)
        padding.append(-low)
        for i, o in enumerate(offsets):
            starts[i][d] = (o[0] - low) // step
    pads = []
    for c, start in zip(convs, starts, strict=True):
        pad: list[int] = []
        for d in reversed(range(rank)):  # F.pad lists the last dimension first
            pad += [start[d], kernel[d] - start[d] - c.kernel_size[d]]
        pads.append(tuple(pad))
    return MergedGeometry(tuple(kernel), tuple(dilation), tuple(padding), tuple(pads))


class _FoldedBase(nn.Module):
    """Shared switches: weight fake quantisation on/off and BatchNorm frozen (running statistics)."""

    def __init__(self, bn: _BatchNorm | None) -> None:
        super().__init__()
        self.bn = (bn,) if bn is not None else ()  # a tuple: not registered as a child
        self.fake_quant_enabled = True
        self.bn_frozen = False
        self.input_quantizer: tuple[nn.Module, ...] = ()  # the uint8 quantiser whose grid the input is on

    def quantize_bias(self, bias: torch.Tensor | None, weight: torch.Tensor) -> torch.Tensor | None:
        """`bias` on the int32 grid of the deployed layer (input scale x per-channel weight scale)."""
        if bias is None or not self.fake_quant_enabled or not self.input_quantizer:
            return bias
        quantizer = self.input_quantizer[0]
        if not (quantizer.fake_quant_enabled and quantizer.observed):
            return bias
        return fake_quantize_bias(bias, quantizer.scale, weight_scale(weight))

    @property
    def batchnorm(self) -> _BatchNorm | None:
        return self.bn[0] if self.bn else None

    def deployed_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The deployed layer's weight (on its int8 grid when fake quantisation is on) and bias, as constants."""
        with torch.no_grad():
            weight, bias, _ = self.deployed()
            bias = self.quantize_bias(bias, weight)
            return self.quantize(weight).detach().clone(), None if bias is None else bias.detach().clone()

    def quantize(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quantize_weight(weight) if self.fake_quant_enabled else weight

    def fold_factor(self) -> torch.Tensor:
        """gamma / sqrt(running_var + eps): the per-channel factor BatchNorm applies in eval."""
        bn = self.batchnorm
        factor = torch.rsqrt(bn.running_var + bn.eps)
        return factor * bn.weight if bn.weight is not None else factor

    def folded_bias(self, bias: torch.Tensor | None, factor: torch.Tensor) -> torch.Tensor:
        bn = self.batchnorm
        shifted = -bn.running_mean if bias is None else bias - bn.running_mean
        out = shifted * factor
        return out + bn.bias if bn.bias is not None else out

    def forward_folded(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, apply) -> torch.Tensor:
        """Run `apply(x, weight, bias)` with the BatchNorm folded into weight and bias.

        Training (BatchNorm not frozen): the folded weight uses the running statistics (as deployed)
        but the output is rescaled and normalised with the batch statistics, so BatchNorm keeps
        learning and training stays stable (the standard QAT fold). The fold factor is a constant
        there: scaling the weight by it and dividing the output by it cancel (up to rounding), so
        its gradient would be ~0 at the cost of a full backward pass over the output; gamma and beta
        learn through the batch normalisation itself. Otherwise (eval, frozen BN) the fold is exact.
        """
        bn = self.batchnorm
        if bn is None:
            return apply(x, self.quantize(weight), self.quantize_bias(bias, weight))
        batch_statistics = self.training and not self.bn_frozen
        factor = self.fold_factor()
        if batch_statistics:
            factor = factor.detach()
        shape = (-1,) + (1,) * (weight.dim() - 1)
        folded_weight = self.quantize(weight * factor.reshape(shape))
        if not batch_statistics:
            deployed_bias = self.quantize_bias(self.folded_bias(bias, factor), weight * factor.reshape(shape))
            return apply(x, folded_weight, deployed_bias)
        view = (1, -1) + (1,) * (x.dim() - 2)
        y = apply(x, folded_weight, None) / factor.reshape(view)
        if bias is not None:
            y = y + bias.reshape(view)
        return self.batch_norm(y)

    def batch_norm(self, y: torch.Tensor) -> torch.Tensor:
        """BatchNorm in training mode on `y`, updating the running statistics like the module would."""
        bn = self.batchnorm
        momentum = bn.momentum
        if bn.track_running_stats and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            if momentum is None:
                momentum = 1.0 / float(bn.num_batches_tracked)
        return F.batch_norm(
            y, bn.running_mean, bn.running_var, bn.weight, bn.bias, True, momentum or 0.0, bn.eps
        )

    def get_extra_state(self) -> dict[str, Any]:
        return {"fake_quant_enabled": self.fake_quant_enabled, "bn_frozen": self.bn_frozen}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.fake_quant_enabled = bool(state.get("fake_quant_enabled", True))
        self.bn_frozen = bool(state.get("bn_frozen", False))


class FoldedConv(_FoldedBase):
    """Sum of convolutions on one input (usually just one) [-> BatchNorm], as one int8 convolution."""

    def __init__(self, convs: Sequence[nn.Module], bn: _BatchNorm | None, geometry: MergedGeometry | None) -> None:
        super().__init__(bn)
        if len(convs) > 1 and geometry is None:
            raise ValueError("several convolutions need a merged geometry")
        self.convs = tuple(convs)  # not registered: the float model keeps them
        self.geometry = geometry if len(convs) > 1 else None
        first = convs[0]
        self.rank = len(first.kernel_size)

    def merged_weight(self) -> torch.Tensor:
        if self.geometry is None:
            return self.convs[0].weight
        parts = [F.pad(c.weight, pad) for c, pad in zip(self.convs, self.geometry.pads, strict=True)]
        return torch.stack(parts).sum(0) if len(parts) > 2 else parts[0] + parts[1]

    def merged_bias(self) -> torch.Tensor | None:
        biases = [c.bias for c in self.convs if c.bias is not None]
        if not biases:
            return None
        return biases[0] if len(biases) == 1 else torch.stack(biases).sum(0)

    def conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        first = self.convs[0]
        if self.geometry is None:
            return first._conv_forward(x, weight, bias)
        g = self.geometry
        if self.rank == 2:  # depthwise kernels take the faster CPU backward pass (dsmn.models.depthwise)
            return depthwise.conv2d(x, weight, bias, first.stride, g.padding, g.dilation, first.groups)
        return _CONV_FUNCTIONS[self.rank](x, weight, bias, first.stride, g.padding, g.dilation, first.groups)

    def deployed(self) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
        """Folded float weight and bias, and the convolution attributes, of the deployed layer (eval fold)."""
        weight, bias = self.merged_weight(), self.merged_bias()
        if self.batchnorm is not None:
            factor = self.fold_factor()
            weight = weight * factor.reshape((-1,) + (1,) * (weight.dim() - 1))
            bias = self.folded_bias(bias, factor)
        first = self.convs[0]
        g = self.geometry
        attributes = {
            "stride": first.stride,
            "padding": g.padding if g else first.padding,
            "dilation": g.dilation if g else first.dilation,
            "groups": first.groups,
            "padding_mode": first.padding_mode,
        }
        return weight, bias, attributes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_folded(x, self.merged_weight(), self.merged_bias(), self.conv)

    def extra_repr(self) -> str:
        kinds = "+".join(f"{type(c).__name__}{tuple(c.kernel_size)}" for c in self.convs)
        g = self.geometry
        merged = f", merged kernel {g.kernel_size} dilation {g.dilation}" if g else ""
        return f"{kinds}{merged}, batchnorm={'folded' if self.bn else 'none'}"


class FoldedLinear(_FoldedBase):
    """Linear [-> BatchNorm1d] with int8 per-output-channel weights."""

    def __init__(self, linear: nn.Linear, bn: _BatchNorm | None = None) -> None:
        super().__init__(bn)
        self.linears = (linear,)

    @property
    def linear(self) -> nn.Linear:
        return self.linears[0]

    def deployed(self) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
        weight, bias = self.linear.weight, self.linear.bias
        if self.batchnorm is not None:
            factor = self.fold_factor()
            weight = weight * factor[:, None]
            bias = self.folded_bias(bias, factor)
        return weight, bias, {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_folded(x, self.linear.weight, self.linear.bias, F.linear)

    def extra_repr(self) -> str:
        return f"{self.linear.in_features}->{self.linear.out_features}, batchnorm={'folded' if self.bn else 'none'}"
