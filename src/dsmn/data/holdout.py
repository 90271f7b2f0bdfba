"""A validation split held out from the training locations, for checkpoint selection.

Selecting the checkpoint on fold1_evaluate (the authors' recipe) and then reporting fold1_evaluate
accuracy scores the selection on its own test data. Holding out a few recording locations per
scene of the training split instead keeps the evaluate split untouched: every clip of a held-out
location (all its devices, segments and slices) leaves training, so validation never hears a place
the network trained on, just as evaluate does not. The choice is deterministic and independent of
the training seed: per scene, locations ordered by a hash of their name, the first ones held out.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

from dsmn.data.clip import Clip


class HoldoutError(ValueError):
    """The training clips cannot give a held-out validation split (no locations, or too few)."""


def holdout_locations(clips: Sequence[Clip], per_scene: int) -> set[tuple[str, str]]:
    """(scene, location) pairs to hold out: `per_scene` per scene, at most all but one of its locations."""
    if per_scene < 1:
        raise HoldoutError(f"data.holdout_locations must be at least 1, got {per_scene}")
    unlabelled = [c.filename for c in clips if c.identifier is None or c.scene is None]
    if unlabelled:
        raise HoldoutError(f"{len(unlabelled)} training clips (e.g. {unlabelled[0]}) have no recording location or "
                           "scene: a held-out validation split needs the TAU location identifiers; "
                           "use data.validation=evaluate")
    locations: dict[str, set[str]] = defaultdict(set)
    for clip in clips:
        locations[clip.scene].add(clip.identifier)
    held: set[tuple[str, str]] = set()
    for scene, names in sorted(locations.items()):
        if len(names) < 2:
            raise HoldoutError(f"scene {scene} has {len(names)} training location(s): at least 2 are needed to "
                               "hold one out for validation; use data.validation=evaluate")
        ranked = sorted(names, key=lambda name: hashlib.sha256(f"{scene}/{name}".encode()).hexdigest())
        held.update((scene, name) for name in ranked[: min(per_scene, len(names) - 1)])
    return held


def split_holdout(clips: Sequence[Clip], per_scene: int) -> tuple[list[Clip], list[Clip]]:
    """(training clips, held-out validation clips): every clip of a held-out location goes to validation."""
    held = holdout_locations(clips, per_scene)
    train = [c for c in clips if (c.scene, c.identifier) not in held]
    validation = [c for c in clips if (c.scene, c.identifier) in held]
    return train, validation


def describe_validation(data: dict) -> str:
    """How a run chose its validation clips, from its config's `data` section (as saved in checkpoints)."""
    if data.get("validation") == "holdout":
        split = data.get("subset") or data.get("train_split") or "train"
        return f"{data.get('holdout_locations', 2)} held-out {split} locations per scene"
    split = data.get("val_split") or "evaluate"
    return f"fold1_{split}" if split in ("train", "evaluate", "test") else split
