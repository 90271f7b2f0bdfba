"""The DSSC networks (arXiv 2405.03567; docs/architecture.md): DSMN's five-block layout with every block a
split block (high/low frequency cut) and the separable operator swapped, one operator per network.

The paper's widths are not public: the widths below are this project's reconstructions, chosen so
that Large lands near the reported 0.11 M parameters and all three fit the DCASE budget at int8.
A DSSC network is a `DSMN` built with another operator: the variants are data, not classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from dsmn.models.dsmn import DSMN, DSMNConfig
from dsmn.models.operators import operator_factory
from dsmn.models.registry import register_model


@dataclass(frozen=True)
class DSSCVariant:
    """One DSSC network as data: which operator (with its options) and the DSMN layout around it."""

    operator: str
    config: DSMNConfig
    operator_options: dict = field(default_factory=dict)


def _split_blocks(channels: tuple[int, ...], hidden: int, stem_channels: int = 16) -> DSMNConfig:
    return DSMNConfig(("split",) * len(channels), channels, hidden=hidden, stem_channels=stem_channels)


DSSC_VARIANTS: dict[str, DSSCVariant] = {
    # Large: OSC, the heaviest operator (full orthonormal projections), widest blocks, ~0.11 M params.
    "dssc_large": DSSCVariant("osc", _split_blocks((32, 48, 64, 96, 112), hidden=100)),
    # Middle: SC, the DSMN operator (grouped projections), DSMN-like widths one step wider.
    "dssc_middle": DSSCVariant("sc", _split_blocks((24, 48, 64, 96, 96), hidden=100)),
    # Small: SPC, spatial filtering on 1/4 of the channels, narrow stem and blocks.
    "dssc_small": DSSCVariant("spc", _split_blocks((16, 24, 32, 48, 48), hidden=64, stem_channels=8),
                              {"fraction": 0.25}),
}

_CONFIG_FIELDS = {f.name for f in fields(DSMNConfig)}


def build_dssc(variant: DSSCVariant, **overrides) -> DSMN:
    """The network of `variant`; overrides are DSMNConfig fields (e.g. dropout) or operator options
    (e.g. fraction for SPC)."""
    config_overrides = {k: v for k, v in overrides.items() if k in _CONFIG_FIELDS}
    operator_options = {**variant.operator_options, **{k: v for k, v in overrides.items() if k not in _CONFIG_FIELDS}}
    config = DSMNConfig(**{**variant.config.__dict__, **config_overrides})
    model = DSMN(config, operator=operator_factory(variant.operator, **operator_options))
    model.operator_name = variant.operator
    return model


def describe(name: str) -> str:
    """One line for `dsmn complexity` and the registry: operator, stem, block widths, head widths."""
    variant = DSSC_VARIANTS[name]
    config = variant.config
    options = "".join(f" {k}={v}" for k, v in variant.operator_options.items())
    embed = sum(config.channels[config.embed_from :])
    widths = ", ".join(str(c) for c in config.channels)
    return (
        f"DSSC {variant.operator.upper()}{options} stem {config.stem_channels}, SB x{len(config.channels)} "
        f"[{widths}] head {embed}-{config.hidden}-{config.num_scenes + config.num_coarse} (reconstructed widths)"
    )


# --- the registered networks (registration order is the listing order) --------------------------


@register_model(family="dssc", description=describe("dssc_large"))
def dssc_large(**overrides) -> DSMN:
    """DSSC Large: the OSC operator (orthonormal projections), widest blocks."""
    return build_dssc(DSSC_VARIANTS["dssc_large"], **overrides)


@register_model(family="dssc", description=describe("dssc_middle"))
def dssc_middle(**overrides) -> DSMN:
    """DSSC Middle: the SC operator (DSMN's separable operator), DSMN-like widths."""
    return build_dssc(DSSC_VARIANTS["dssc_middle"], **overrides)


@register_model(family="dssc", description=describe("dssc_small"))
def dssc_small(**overrides) -> DSMN:
    """DSSC Small: the SPC operator (spatial filtering on a quarter of the channels), narrow widths."""
    return build_dssc(DSSC_VARIANTS["dssc_small"], **overrides)
