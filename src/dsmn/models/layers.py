"""Building blocks of the DSMN family (docs/architecture.md).

Tensors inside the networks are laid out (batch, channels, time, frequency).
"""

from __future__ import annotations

import torch
from torch import nn

from dsmn.models.depthwise import DepthwiseConv2d


class SeparableOperator(nn.Module):
    """SO(cin -> cout): grouped 1x1 projection, then the sum of a dilated depthwise convolution
    along time and one along frequency, BatchNorm, ReLU.

    The 1x1 uses groups = cout, so it costs only max(cin, cout) weights: this is what keeps the
    distillation blocks under the DCASE parameter budget.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if in_channels % out_channels:
            raise ValueError(f"in_channels {in_channels} must be a multiple of out_channels {out_channels}")
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, groups=out_channels, bias=False)
        self.time_conv = DepthwiseConv2d(out_channels, (3, 1), padding=(2, 0), dilation=(2, 1))
        self.freq_conv = DepthwiseConv2d(out_channels, (1, 3), padding=(0, 2), dilation=(1, 2))
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pointwise(x)
        return self.act(self.norm(self.time_conv(x) + self.freq_conv(x)))


class ECA(nn.Module):
    """Efficient channel attention: a 3-tap 1-D convolution across pooled channels gates each channel."""

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))  # (B, C)
        gate = torch.sigmoid(self.conv(pooled.unsqueeze(1))).squeeze(1)
        return x * gate[:, :, None, None]


class DistillationBlock(nn.Module):
    """Deep space separable distillation block: three chained separable operators whose
    intermediate features are "distilled" by cheap 1x1 projections and fused.

    `frequency_cut=True` is the split block SB: the operators see only the low half of the
    frequency axis, the high half contributes through a single 1x1 projection, and the output keeps
    F/2 bins (pooling 2 x 1). `frequency_cut=False` is the plain block PB: the operators see the whole
    input, the three branches are concatenated, and the output is pooled 2 x 2.
    `operator` builds each separable operator (cin, cout) -> module, so the DSSC variants swap it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        frequency_cut: bool,
        operator: type[nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if in_channels % 2:
            raise ValueError(f"in_channels must be even, got {in_channels}")
        make = operator or SeparableOperator
        half = in_channels // 2
        self.frequency_cut = frequency_cut
        self.op1 = make(in_channels, in_channels)
        self.op2 = make(in_channels, in_channels)
        self.op3 = make(in_channels, half)
        # SB: proj_a from the low half, proj_b from the high half; PB: proj_a from x, proj_b from op1(x)
        self.proj_a = nn.Conv2d(in_channels, half, 1)
        self.proj_b = nn.Conv2d(in_channels, half, 1)
        fused = half if frequency_cut else 3 * half
        self.attention = ECA()
        self.fuse = nn.Conv2d(fused, out_channels, 1)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.AvgPool2d((2, 1) if frequency_cut else (2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frequency_cut:
            bins = x.shape[-1] // 2
            low, high = x[..., :bins], x[..., bins:]
            distilled = self.op3(self.op2(self.op1(low)))
            out = self.proj_a(low) + self.proj_b(high) + distilled
        else:
            x1 = self.op1(x)
            x3 = self.op3(self.op2(x1))
            out = torch.cat([self.proj_a(x), self.proj_b(x1), x3], dim=1)
        out = self.act(self.norm(self.fuse(self.attention(out))))
        return self.pool(out)
