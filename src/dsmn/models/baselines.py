"""Reference baselines, trainable with the same trainer as DSMN/DSSC (multi-task, 13 outputs):

- `dcase2022_baseline`: the DCASE 2022/2023 Task 1 baseline CNN (three 7x7 convolutions, two
  max-pools, a 100-unit dense layer) on its own front end: 40 log-mel bands from 40 ms frames, 20 ms
  hop, one channel.
- `cp_mobile`: a CP-Mobile-style network at the DCASE 2024 baseline's scale (inverted-residual
  blocks, receptive field kept small by 3x3 kernels and early strides), on the DSMN log-mel (one
  channel, no deltas).

Both take (batch, channels, mel, frames) like every dsmn network and pool time globally at the end,
so clips of any length work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dsmn.labels import NUM_COARSE, NUM_SCENES
from dsmn.models.registry import register_model

# 40 ms Hann frames, 20 ms hop at 44.1 kHz (the DCASE baseline's 40 ms / 50 %), 40 bands, Slaney mel
# scale without area normalisation (as its librosa settings: htk=False, normalize_mel_bands=False).
DCASE2022_FRONTEND = {"n_fft": 2048, "win_length": 1764, "hop_length": 882, "n_mels": 40, "htk": False, "norm": None}


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int | tuple[int, int] = 1, groups: int = 1) -> nn.Sequential:
    """Convolution without bias ("same" padding for odd kernels), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DCASEBaselineCNN(nn.Module):
    """The DCASE 2022/2023 Task 1 baseline CNN on (batch, 1, 40 mel, 51 frames) for a 1-s clip.

    conv 7x7 (16) -> conv 7x7 (16) -> max-pool 5x5 -> dropout -> conv 7x7 (32) -> max-pool 4 x 100
    -> dropout -> dense 100 -> dropout -> dense. The second pool's 100-frame window spans all of the
    10 frames left of a 1-s clip (Keras "same" padding), i.e. a max over the whole time axis: it is
    implemented as exactly that, so longer clips give the same 64-value embedding. The convolutions
    carry a bias like the original Keras layers (followed by BatchNorm).
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_mels: int = 40,
        filters: tuple[int, int, int] = (16, 16, 32),
        kernel_size: int = 7,
        hidden: int = 100,
        dropout: float = 0.3,
        num_scenes: int = NUM_SCENES,
        num_coarse: int = NUM_COARSE,
    ) -> None:
        super().__init__()
        self.num_scenes = num_scenes
        self.num_coarse = num_coarse
        pad = kernel_size // 2
        f1, f2, f3 = filters

        def conv(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, kernel_size, padding=pad), nn.BatchNorm2d(cout), nn.ReLU(True))

        self.conv1 = conv(in_channels, f1)
        self.conv2 = conv(f1, f2)
        self.pool1 = nn.MaxPool2d(5)
        self.drop1 = nn.Dropout(dropout)
        self.conv3 = conv(f2, f3)
        self.pool2 = nn.MaxPool2d((4, 1))  # frequency part of the 4 x 100 pool; time is maxed globally
        self.drop2 = nn.Dropout(dropout)
        embed = f3 * (n_mels // 5 // 4)
        self.head = nn.Sequential(
            nn.Linear(embed, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_scenes + num_coarse),
        )

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.pool1(self.conv2(self.conv1(x))))
        x = self.pool2(self.conv3(x)).amax(dim=-1)  # (B, 32, 2)
        return self.drop2(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(x))


def make_divisible(value: float, divisor: int = 8) -> int:
    """`value` rounded to the nearest multiple of `divisor`, never more than 10 % below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@dataclass(frozen=True)
class CPMobileConfig:
    """CP-Mobile-style network as data. Strides are (frequency, time), one pair per block."""

    in_channels: int = 1
    base_channels: int = 32
    channels_multiplier: float = 1.8
    expansion_rate: float = 2.1
    blocks_per_stage: tuple[int, ...] = (3, 2, 1)
    block_strides: tuple[tuple[int, int], ...] = ((1, 1), (1, 1), (1, 1), (2, 1), (1, 1), (1, 1))
    stem_strides: tuple[tuple[int, int], tuple[int, int]] = ((2, 2), (2, 2))
    num_scenes: int = NUM_SCENES
    num_coarse: int = NUM_COARSE

    def stage_channels(self) -> list[int]:
        stages = range(len(self.blocks_per_stage))
        return [make_divisible(self.base_channels * self.channels_multiplier**i) for i in stages]


class InvertedResidual(nn.Module):
    """1x1 expansion -> depthwise 3x3 (strided) -> 1x1 projection (linear), ReLU after the sum.

    The shortcut is the identity when shape is kept, an average pool when only the size shrinks,
    and absent when the width changes (as in CP-Mobile, no extra weights for shortcuts).
    """

    def __init__(self, cin: int, cout: int, expanded: int, stride: tuple[int, int]) -> None:
        super().__init__()
        self.expand = conv_bn_relu(cin, expanded, 1)
        self.depthwise = conv_bn_relu(expanded, expanded, 3, stride=stride, groups=expanded)
        self.project = nn.Sequential(nn.Conv2d(expanded, cout, 1, bias=False), nn.BatchNorm2d(cout))
        if cin != cout:
            self.shortcut: nn.Module | None = None
        elif stride == (1, 1):
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.act(out)


class CPMobile(nn.Module):
    """Two strided 3x3 stem convolutions, three stages of inverted-residual blocks, then a 1x1
    convolution to the outputs, BatchNorm and global average pooling (CP-Mobile's classifier).

    Input (batch, 1, 256 mel, frames): the DSMN log-mel without deltas.
    """

    def __init__(self, config: CPMobileConfig | None = None) -> None:
        super().__init__()
        config = config or CPMobileConfig()
        if len(config.block_strides) != sum(config.blocks_per_stage):
            raise ValueError("block_strides needs one (frequency, time) stride per block")
        self.config = config
        self.num_scenes = config.num_scenes
        self.num_coarse = config.num_coarse
        widths = config.stage_channels()
        first = widths[0]
        self.stem = nn.Sequential(
            conv_bn_relu(config.in_channels, make_divisible(first / 4), 3, stride=config.stem_strides[0]),
            conv_bn_relu(make_divisible(first / 4), first, 3, stride=config.stem_strides[1]),
        )
        blocks = []
        cin = first
        strides = iter(config.block_strides)
        for width, count in zip(widths, config.blocks_per_stage, strict=True):
            for _ in range(count):
                expanded = make_divisible(cin * config.expansion_rate)
                blocks.append(InvertedResidual(cin, width, expanded, tuple(next(strides))))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        outputs = config.num_scenes + config.num_coarse
        self.classifier = nn.Sequential(nn.Conv2d(cin, outputs, 1, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.classifier(self.blocks(self.stem(x)))
        return x.mean(dim=(2, 3))


@register_model(
    family="baseline",
    description="DCASE 2022/2023 baseline CNN: conv7x7 16-16-32, max-pools 5x5 and 4x100, dense 100-13; "
    "40 log-mel bands, 40 ms frames, 20 ms hop, 1 channel",
    frontend=DCASE2022_FRONTEND,
    deltas=False,
)
def dcase2022_baseline(**overrides) -> DCASEBaselineCNN:
    return DCASEBaselineCNN(**overrides)


@register_model(
    family="baseline",
    description="CP-Mobile-style (DCASE 2024 baseline scale): stem 8-32, inverted residuals 32x3, 56x2, 104x1, "
    "1x1 classifier to 13; DSMN log-mel 256 x 44, 1 channel",
    deltas=False,
)
def cp_mobile(**overrides) -> CPMobile:
    return CPMobile(CPMobileConfig(**overrides))
