"""Teacher networks for knowledge distillation: large, not bound by the DCASE budget.

`cp_mobile_wide` is the CP-Mobile design of `dsmn.models.baselines` scaled up about 28x in
parameters (1.7 M) and 9x in MACs: wider stages (96-192-384), a larger expansion, frequency
strides at the start of each stage to keep the compute trainable. It reads the DSMN log-mel (one
channel) like `cp_mobile`, so it shares the student's feature cache. `dsmn complexity` shows it over
the budget: it exists to produce teacher logits (`dsmn teach`), never to be deployed.
"""

from __future__ import annotations

from dsmn.models.baselines import CPMobile, CPMobileConfig
from dsmn.models.registry import register_model

WIDE_CP_MOBILE = {
    "base_channels": 96,
    "channels_multiplier": 2.0,
    "expansion_rate": 3.0,
    "blocks_per_stage": (2, 2, 2),
    "block_strides": ((2, 1), (1, 1), (2, 1), (1, 1), (2, 1), (1, 1)),
}


@register_model(
    family="teacher",
    description="teacher (over budget): wide CP-Mobile, stem 24-96, inverted residuals 96x2, 192x2, 384x2 with "
    "expansion 3, 1x1 classifier to 13; DSMN log-mel 256 x 44, 1 channel",
    deltas=False,
)
def cp_mobile_wide(**overrides) -> CPMobile:
    return CPMobile(CPMobileConfig(**{**WIDE_CP_MOBILE, **overrides}))
