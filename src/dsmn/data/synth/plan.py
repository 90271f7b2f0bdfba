"""What a synthetic TAU-format dataset contains: locations, 10-s recordings, devices and splits.

The plan is decided up front from the seed alone, so the audio of each recording can be rendered
in any worker process and in any order and the output stays identical byte for byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dsmn.data.dataset import SUBSET_PERCENTS
from dsmn.labels import SCENES, UNSEEN_DEVICES

CITIES: tuple[str, ...] = (
    "amsterdam", "barcelona", "helsinki", "lisbon", "london", "lyon",
    "madrid", "milan", "paris", "prague", "stockholm", "vienna",
)
PARALLEL_DEVICES: tuple[str, ...] = ("b", "c", "s1", "s2", "s3")  # recorded next to device a in train
EVAL_DEVICES: tuple[str, ...] = ("a", "b", "c", "s1", "s2", "s3", *UNSEEN_DEVICES)
SLICES = 10  # 1-s clips per 10-s recording


@dataclass(frozen=True)
class SizeSpec:
    """Per scene: training recordings (all by device a, some also by one other device), evaluate
    recordings (each by `eval_devices` devices, balanced over all nine) and location counts."""

    train_segments: int
    train_parallel: int
    eval_segments: int
    eval_devices: int
    train_locations: int
    eval_locations: int


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec(2, 1, 1, 2, 2, 1),
    "demo": SizeSpec(21, 9, 6, 2, 12, 4),
    "large": SizeSpec(210, 90, 60, 2, 60, 20),
}


@dataclass(frozen=True)
class Recording:
    """One 10-s recording at one location, captured by one or more devices in parallel."""

    index: int  # position in the plan; with the seed it determines the audio
    scene: str
    city: str
    location: int
    location_index: int  # seeds the location's fixed acoustic character
    segment: int
    devices: tuple[str, ...]
    fold: str  # "train" or "evaluate"

    @property
    def identifier(self) -> str:
        return f"{self.city}-{self.location}"


@dataclass(frozen=True)
class Plan:
    seed: int
    size: str
    recordings: tuple[Recording, ...]
    subsets: dict[int, frozenset[int]]  # percent -> recording indices (train only, nested)


def make_plan(size: str = "demo", seed: int = 0) -> Plan:
    """Lay out locations, recordings, devices and the nested training subsets."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
    spec = SIZES[size]
    rng = np.random.default_rng([seed, 7])
    recordings: list[Recording] = []
    next_location = 0
    segment_ids = rng.permutation(np.arange(1000, 1000 + 100 * _total_segments(spec)))
    parallel_cycle = int(rng.integers(len(PARALLEL_DEVICES)))
    eval_cycle = list(rng.permutation(len(EVAL_DEVICES)))
    eval_position = 0
    for scene in SCENES:
        for fold, n_locations, n_segments in (
            ("train", spec.train_locations, spec.train_segments),
            ("evaluate", spec.eval_locations, spec.eval_segments),
        ):
            locations = []
            for _ in range(n_locations):
                city = CITIES[int(rng.integers(len(CITIES)))]
                locations.append((city, 100 * (next_location + 1) + int(rng.integers(100)), next_location))
                next_location += 1
            parallel = set(rng.choice(n_segments, size=spec.train_parallel, replace=False)) if fold == "train" \
                else set()
            for k in range(n_segments):
                city, location, location_index = locations[k % n_locations]
                if fold == "train":
                    devices: tuple[str, ...] = ("a",)
                    if k in parallel:
                        devices += (PARALLEL_DEVICES[parallel_cycle % len(PARALLEL_DEVICES)],)
                        parallel_cycle += 1
                else:
                    chosen: list[str] = []
                    while len(chosen) < spec.eval_devices:
                        device = EVAL_DEVICES[eval_cycle[eval_position % len(EVAL_DEVICES)]]
                        eval_position += 1
                        if device not in chosen:
                            chosen.append(device)
                    devices = tuple(sorted(chosen, key=EVAL_DEVICES.index))
                segment = int(segment_ids[len(recordings)]) * 10
                recordings.append(Recording(len(recordings), scene, city, location, location_index, segment,
                                            devices, fold))
    return Plan(seed, size, tuple(recordings), _subsets(recordings, rng))


def _total_segments(spec: SizeSpec) -> int:
    return len(SCENES) * (spec.train_segments + spec.eval_segments)


def _subsets(recordings: list[Recording], rng: np.random.Generator) -> dict[int, frozenset[int]]:
    """Nested DCASE 2024-style subsets of train: per scene, a random order of recordings and its first
    p % (at least one), so a recording is wholly in or out and each subset contains the smaller ones."""
    chosen: dict[int, set[int]] = {p: set() for p in SUBSET_PERCENTS}
    for scene in SCENES:
        train = [r.index for r in recordings if r.scene == scene and r.fold == "train"]
        order = [train[i] for i in rng.permutation(len(train))]
        for percent in SUBSET_PERCENTS:
            count = max(1, math.ceil(len(order) * percent / 100 - 1e-9))
            chosen[percent].update(order[:count])
    return {p: frozenset(s) for p, s in chosen.items()}
