"""Quantisation-aware training settings: one definition, used by the trainer's YAML recipe (its
`qat:` section), by checkpoints (stored as a plain dict) and by `prepare_qat`."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

RECIPE_FILE = Path(__file__).resolve().parent.parent / "configs" / "dcase2023.yaml"


@dataclass
class QATConfig:
    """When and how the trainer simulates int8 deployment (values: the `qat:` section of a config).

    `start_epoch`: fake quantisation is switched on from this epoch (observers run from the start,
    so the ranges are calibrated by then); negative counts from the end (-3: the last three epochs).
    `float_until_start`: train the plain float network before `start_epoch` (faster) instead of
    preparing it at epoch 0 with fake quantisation off until then.
    `observer_momentum`: weight of the newest batch in the moving-average min/max.
    `freeze_observers_epoch` / `freeze_bn_epoch`: from these epochs the activation ranges / the
    BatchNorm running statistics stop changing (None: never).
    `stochastic_rounding`: in training, round each fake-quantised activation up or down at random
    (probability by distance) instead of to the nearest step. Off in the recipe. Meant to keep the
    network from amplifying one-step differences (by which TFLM's fixed-point kernels depart from
    the single-rounding simulation); measured, it did not, and cost accuracy (docs/edge.md): an
    experiment, not a recommendation. Evaluation and export round to nearest either way.
    """

    enabled: bool
    start_epoch: int
    float_until_start: bool
    observer_momentum: float
    freeze_observers_epoch: int | None
    freeze_bn_epoch: int | None
    stochastic_rounding: bool

    @classmethod
    def recipe(cls, **changes: Any) -> QATConfig:
        """The DCASE 2023 recipe's settings (configs/dcase2023.yaml), with `changes` applied."""
        return cls.from_dict(changes)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> QATConfig:
        """Settings from a dict (a checkpoint's); keys it lacks come from the recipe. Unknown keys
        are an error, so a typo is caught."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown QAT settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{**_recipe_section(), **values})

    def first_epoch(self, epochs: int) -> int:
        """`start_epoch` of a run of `epochs` epochs (a negative one counts from the end)."""
        return self.start_epoch if self.start_epoch >= 0 else max(0, epochs + self.start_epoch)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def _recipe_section() -> dict[str, Any]:
    import yaml

    return dict(yaml.safe_load(RECIPE_FILE.read_text(encoding="utf-8"))["qat"])
