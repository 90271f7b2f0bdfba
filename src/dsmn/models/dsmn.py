"""The DSMN networks of the DCASE 2023 system (docs/architecture.md): one class, four settings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dsmn.labels import NUM_COARSE, NUM_SCENES
from dsmn.models.layers import DistillationBlock, SeparableOperator
from dsmn.models.registry import register_model


@dataclass(frozen=True)
class DSMNConfig:
    """A DSMN variant as data: block kinds ("split" or "plain"), output widths, head width."""

    blocks: tuple[str, ...]
    channels: tuple[int, ...]
    hidden: int
    stem_channels: int = 16
    in_channels: int = 2
    embed_from: int = 1  # blocks[embed_from:] feed the multi-scale embedding
    dropout: float = 0.3
    num_scenes: int = NUM_SCENES
    num_coarse: int = NUM_COARSE


DSMN_VARIANTS: dict[str, DSMNConfig] = {
    "model1": DSMNConfig(("split",) * 5, (24, 32, 64, 64, 64), hidden=100),
    "model2": DSMNConfig(("split",) + ("plain",) * 4, (24, 32, 64, 64, 64), hidden=100),
    "model3": DSMNConfig(("plain",) * 5, (24, 32, 64, 64, 64), hidden=100),
    "model4": DSMNConfig(("split",) * 5, (24, 128, 128, 128, 128), hidden=64),
}


class DSMN(nn.Module):
    """Stem 1x1 -> five distillation blocks -> multi-scale pooled embedding -> MLP head.

    Input: (batch, 2, mel, frames) (log-mel and its deltas). Output: (batch, num_scenes +
    num_coarse) logits; `split_logits` separates the 10 scene logits from the 3 coarse ones.
    Any number of frames works (global pooling); 1-s clips give 44 frames.
    """

    def __init__(self, config: DSMNConfig, operator: type[nn.Module] = SeparableOperator) -> None:
        super().__init__()
        if len(config.blocks) != len(config.channels):
            raise ValueError("blocks and channels must have the same length")
        self.config = config
        self.num_scenes = config.num_scenes
        self.num_coarse = config.num_coarse
        self.stem = nn.Conv2d(config.in_channels, config.stem_channels, 1)
        widths = (config.stem_channels, *config.channels)
        self.blocks = nn.ModuleList(
            DistillationBlock(cin, cout, frequency_cut=kind == "split", operator=operator)
            for kind, cin, cout in zip(config.blocks, widths[:-1], widths[1:], strict=True)
        )
        embed = sum(config.channels[config.embed_from :])
        self.head = nn.Sequential(
            nn.Linear(embed, config.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.num_scenes + config.num_coarse),
        )

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-scale embedding: pooled outputs of blocks[embed_from:], concatenated."""
        x = self.stem(x.transpose(2, 3))  # (B, C, mel, T) -> (B, C, T, mel)
        pooled = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= self.config.embed_from:
                pooled.append(x.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(x))


def build_dsmn(name: str, **overrides) -> DSMN:
    """The DSMN variant `name` of DSMN_VARIANTS; overrides are DSMNConfig fields (e.g. dropout)."""
    return DSMN(DSMNConfig(**{**DSMN_VARIANTS[name].__dict__, **overrides}))


def describe(name: str) -> str:
    """One line for `dsmn complexity` and the registry: block kinds and widths, head widths."""
    config = DSMN_VARIANTS[name]
    pairs = zip(config.blocks, config.channels, strict=True)
    kinds = ", ".join(f"{'SB' if kind == 'split' else 'PB'}{width}" for kind, width in pairs)
    embed = sum(config.channels[config.embed_from :])
    return f"DSMN [{kinds}] head {embed}-{config.hidden}-{config.num_scenes + config.num_coarse}"


# --- the registered networks (registration order is the listing order) --------------------------


@register_model(family="dsmn", description=describe("model1"))
def model1(**overrides) -> DSMN:
    """DSMN model1: five split blocks, the DCASE 2023 submission's main system."""
    return build_dsmn("model1", **overrides)


@register_model(family="dsmn", description=describe("model2"))
def model2(**overrides) -> DSMN:
    """DSMN model2: one split block, then four plain blocks."""
    return build_dsmn("model2", **overrides)


@register_model(family="dsmn", description=describe("model3"))
def model3(**overrides) -> DSMN:
    """DSMN model3: five plain blocks."""
    return build_dsmn("model3", **overrides)


@register_model(family="dsmn", description=describe("model4"))
def model4(**overrides) -> DSMN:
    """DSMN model4: five split blocks, wider (128 channels), 64-unit hidden layer."""
    return build_dsmn("model4", **overrides)
