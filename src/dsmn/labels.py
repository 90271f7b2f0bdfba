"""Scene classes and the auxiliary indoor / outdoor / transportation task.

The class order is part of every file format the toolkit writes (predictions, ONNX metadata):
index = class id, alphabetical, as DCASE Task 1 defines it.
"""

from __future__ import annotations

SCENES: tuple[str, ...] = (
    "airport",
    "bus",
    "metro",
    "metro_station",
    "park",
    "public_square",
    "shopping_mall",
    "street_pedestrian",
    "street_traffic",
    "tram",
)
COARSE: tuple[str, ...] = ("indoor", "outdoor", "transportation")

SCENE_TO_COARSE: dict[str, str] = {
    "airport": "indoor",
    "metro_station": "indoor",
    "shopping_mall": "indoor",
    "park": "outdoor",
    "public_square": "outdoor",
    "street_pedestrian": "outdoor",
    "street_traffic": "outdoor",
    "bus": "transportation",
    "metro": "transportation",
    "tram": "transportation",
}

NUM_SCENES = len(SCENES)
NUM_COARSE = len(COARSE)
NUM_OUTPUTS = NUM_SCENES + NUM_COARSE

SCENE_INDEX: dict[str, int] = {name: i for i, name in enumerate(SCENES)}
COARSE_INDEX: dict[str, int] = {name: i for i, name in enumerate(COARSE)}
# coarse class id of each scene id, in scene order
SCENE_TO_COARSE_ID: tuple[int, ...] = tuple(COARSE_INDEX[SCENE_TO_COARSE[s]] for s in SCENES)

DEVICES: tuple[str, ...] = ("a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6")
REAL_DEVICES: tuple[str, ...] = ("a", "b", "c")
SEEN_DEVICES: tuple[str, ...] = ("a", "b", "c", "s1", "s2", "s3")
UNSEEN_DEVICES: tuple[str, ...] = ("s4", "s5", "s6")


def scene_id(label: str) -> int:
    """Class id of a scene label; a clear error for anything outside the ten scenes."""
    try:
        return SCENE_INDEX[label]
    except KeyError:
        raise ValueError(f"unknown scene label {label!r}; expected one of {', '.join(SCENES)}") from None
