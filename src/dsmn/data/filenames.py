"""TAU file names: `scene-city-location-segment[-slice]-device.wav`.

TAU22 names carry the 1-s slice (`airport-lisbon-1000-40000-0-a.wav`); TAU20 names have 10-s clips and
no slice (`airport-lisbon-1000-40000-a.wav`). The identifier (recording location) is `city-location`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from dsmn.labels import SCENE_INDEX


@dataclass(frozen=True)
class TauName:
    scene: str
    city: str
    location: str
    segment: str
    slice: int | None
    device: str

    @property
    def identifier(self) -> str:
        return f"{self.city}-{self.location}"


def parse_tau_name(filename: str) -> TauName | None:
    """Parse a TAU file name; None when the name does not follow the scheme (e.g. blind test sets)."""
    stem = PurePosixPath(filename).stem
    parts = stem.split("-")
    if len(parts) not in (5, 6) or parts[0] not in SCENE_INDEX:
        return None
    if not all(parts):
        return None
    slice_: int | None = None
    if len(parts) == 6:
        if not parts[4].isdigit():
            return None
        slice_ = int(parts[4])
    return TauName(
        scene=parts[0], city=parts[1], location=parts[2], segment=parts[3], slice=slice_, device=parts[-1]
    )


def tau_name(
    scene: str, city: str, location: str | int, segment: str | int, slice_: int | None, device: str
) -> str:
    """Build the TAU file name (without folder) for the given fields."""
    fields = [scene, city, str(location), str(segment)]
    if slice_ is not None:
        fields.append(str(slice_))
    fields.append(device)
    return "-".join(fields) + ".wav"
