"""Quantisation-aware training settings, stored in checkpoints as a plain dict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class QATConfig:
    """When and how the trainer simulates int8 deployment.

    `start_epoch`: fake quantisation is switched on from this epoch (observers run from the start,
    so the ranges are calibrated by then). `freeze_observers_epoch` / `freeze_bn_epoch`: from these
    epochs the activation ranges / the BatchNorm running statistics stop changing (None: never).
    `observer_momentum`: weight of the newest batch in the moving-average min/max.
    """

    enabled: bool = True
    start_epoch: int = 0
    observer_momentum: float = 0.01
    freeze_observers_epoch: int | None = None
    freeze_bn_epoch: int | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> QATConfig:
        """Build from a dict (unknown keys are an error, so a typo in a YAML config is caught)."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown QAT settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
