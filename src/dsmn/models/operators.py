"""The three separable operators of the DSSC family (docs/architecture.md), each (cin, cout) -> module.

Every operator maps (batch, cin, time, freq) to (batch, cout, time, freq) and ends in BatchNorm +
ReLU, so `DistillationBlock(..., operator=...)` takes any of them unchanged:

- SC, separable convolution: the DSMN operator (`layers.SeparableOperator`): grouped 1x1 projection,
  then the sum of a dilated depthwise convolution along time and one along frequency.
- OSC, orthonormal separable convolution: blueprint-separable (BSConv-S): a full 1x1 projection
  first, whose weight W carries the penalty ||W W^T - I||_F^2 (`regularization_loss()`), then the
  same depthwise time + frequency pair.
- SPC, separable partial convolution: a full 1x1 projection, then the depthwise pair applied to a
  fraction of the channels only (FasterNet's partial convolution); the others pass through unchanged.
  Every operator's BatchNorm directly follows a convolution (or a sum of two reading one input), so
  quantisation-aware training folds it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from dsmn.models.depthwise import DepthwiseConv2d
from dsmn.models.layers import SeparableOperator

SC = SeparableOperator


class DilatedDepthwisePair(nn.Module):
    """Sum of a dilated 3-tap depthwise convolution along time and one along frequency (no bias).

    The spatial half shared by every DSSC operator; it keeps the time x frequency size.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.time_conv = DepthwiseConv2d(channels, (3, 1), padding=(2, 0), dilation=(2, 1))
        self.freq_conv = DepthwiseConv2d(channels, (1, 3), padding=(0, 2), dilation=(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.time_conv(x) + self.freq_conv(x)


def orthonormality_penalty(weight: torch.Tensor) -> torch.Tensor:
    """||W W^T - I||_F^2 for a (cout, cin, ...) weight viewed as a cout x cin matrix.

    When cout > cin the rows cannot be orthonormal, so the smaller Gram matrix W^T W is used (its
    columns can be): the penalty is zero exactly when W is orthonormal along its shorter side.
    """
    matrix = weight.reshape(weight.shape[0], -1)
    gram = matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix
    identity = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return (gram - identity).square().sum()


class OSC(nn.Module):
    """Orthonormal separable convolution: full 1x1 projection cin->cout (orthonormality-penalised),
    then the dilated depthwise time + frequency pair, BatchNorm, ReLU.

    Projecting first (blueprint-separable order) lets every depthwise filter act on a learned mix of
    input channels; the penalty keeps that mix close to a rotation, so it neither collapses nor
    duplicates channels. The trainer adds `weight * dsmn.models.regularization_loss(model)`.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.spatial = DilatedDepthwisePair(out_channels)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def regularization_loss(self) -> torch.Tensor:
        return orthonormality_penalty(self.pointwise.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.spatial(self.pointwise(x))))


def partial_channels(channels: int, fraction: float) -> int:
    """How many of `channels` the partial convolution filters: floor(fraction * channels), at least 1."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return max(1, min(channels, int(channels * fraction)))


class SPC(nn.Module):
    """Separable partial convolution: 1x1 projection cin->cout, then the dilated depthwise time +
    frequency pair on the first k = `filtered` channels only (k = fraction x cout, at least 1), the
    other cout - k channels passed through unchanged, BatchNorm, ReLU.

    Spatial filtering costs in proportion to the filtered channels, so SPC is the cheapest operator;
    the untouched channels still mix with the filtered ones in the next operator's projection.

    The projection and the BatchNorm are held as two parts (rows [0, k) and [k, cout)): a 1x1
    projection split by output rows, and a per-channel BatchNorm split by channels, compute exactly
    what one projection and one BatchNorm over the concatenation compute, but each BatchNorm then
    directly follows the convolution it folds into for int8 (a BatchNorm after a concatenation cannot
    be folded).
    """

    def __init__(self, in_channels: int, out_channels: int, fraction: float = 0.25) -> None:
        super().__init__()
        self.fraction = fraction
        self.filtered = partial_channels(out_channels, fraction)
        passed = out_channels - self.filtered
        self.project_filtered = nn.Conv2d(in_channels, self.filtered, 1, bias=False)
        self.spatial = DilatedDepthwisePair(self.filtered)
        self.norm_filtered = nn.BatchNorm2d(self.filtered)
        self.project_passed = nn.Conv2d(in_channels, passed, 1, bias=False) if passed else None
        self.norm_passed = nn.BatchNorm2d(passed) if passed else None
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm_filtered(self.spatial(self.project_filtered(x)))
        if self.project_passed is not None:
            out = torch.cat([out, self.norm_passed(self.project_passed(x))], dim=1)
        return self.act(out)


OperatorFactory = Callable[[int, int], nn.Module]

OPERATORS: dict[str, Callable[..., nn.Module]] = {"sc": SC, "osc": OSC, "spc": SPC}


def operator_factory(name: str, **options) -> OperatorFactory:
    """(cin, cout) -> operator module for the operator `name` ("sc", "osc", "spc"), options bound.

    Options are the operator's own keywords (SPC: `fraction`); an unknown one is an error here,
    not at the first block.
    """
    try:
        cls = OPERATORS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown operator {name!r}; available: {', '.join(OPERATORS)}") from None
    if options:
        cls(2, 2, **options)  # fail early on unknown or invalid options
        return functools.partial(cls, **options)
    return cls
