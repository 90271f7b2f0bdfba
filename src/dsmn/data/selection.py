"""Smaller selections of a split that stay representative."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def spread(clips: Sequence[T], limit: int | None) -> list[T]:
    """At most `limit` clips taken evenly over the list, first and last included.

    Dataset indexes list clips grouped by scene, city and device, so an even spread keeps every
    group represented (quick validation, export checks, smoke tests). None: all clips.
    """
    if limit is None or len(clips) <= limit:
        return list(clips)
    return [clips[i] for i in np.linspace(0, len(clips) - 1, limit).round().astype(int)]
