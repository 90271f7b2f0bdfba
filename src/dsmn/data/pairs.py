"""Parallel recordings: the same moment recorded by device a and by another device.

Spectrum correction (device augmentation) learns each device's response from exactly these pairs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from dsmn.data.clip import Clip

REFERENCE_DEVICE = "a"


def parallel_pairs(clips: Iterable[Clip], reference: str = REFERENCE_DEVICE) -> list[tuple[Clip, Clip]]:
    """(reference-device clip, other-device clip) for every recording that both captured.

    Clips without location/segment/device information are ignored. Order follows the input.
    """
    groups: dict[tuple, list[Clip]] = defaultdict(list)
    for clip in clips:
        if clip.identifier is None or clip.segment is None or clip.device is None:
            continue
        groups[clip.recording].append(clip)
    pairs: list[tuple[Clip, Clip]] = []
    for members in groups.values():
        refs = [c for c in members if c.device == reference]
        if not refs:
            continue
        pairs.extend((refs[0], c) for c in members if c.device != reference)
    return pairs
