"""Teacher logits of an ensemble: every member (run folder, checkpoint or ONNX file, any family) runs
over a dataset split on its own front end; the table holds the mean of their scene logits."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dsmn.deploy.data import logmel_batches, open_features, split_clips, split_name
from dsmn.deploy.inference import load_for_inference
from dsmn.distillation.table import TeacherTable
from dsmn.evaluation.evaluate import scene_logits


def ensemble_logits(
    members: Sequence[str | Path], data: str | Path, split: str = "train", *, kind: str | None = None,
    cache_dir: str | Path | None = None, progress: bool = False,
) -> TeacherTable:
    """Mean scene logits of `members` per clip of `split`, with each member's provenance and accuracy.

    Every member must produce logits for the same clips: a clip one member's feature cache cannot
    read is dropped for all (and reported), so no row is an ensemble of fewer members.
    """
    dataset, clips = split_clips(data, split)
    if not clips:
        raise ValueError(f"split {split!r} of {data} is empty")
    per_member: list[dict[str, np.ndarray]] = []
    described = []
    for member in members:
        loaded = load_for_inference(member, kind)
        cache = open_features(dataset, loaded.recipe.frontend, cache_dir, progress=progress)
        usable = cache.usable(clips)
        logits = scene_logits(loaded, logmel_batches(cache, usable))
        per_member.append(dict(zip((c.filename for c in usable), logits, strict=True)))
        labelled = [c for c in usable if c.scene is not None]
        accuracy = None
        if labelled:
            predicted = logits[[i for i, c in enumerate(usable) if c.scene is not None]].argmax(1)
            accuracy = float(np.mean(predicted == np.array([c.scene_id for c in labelled])))
        described.append({"path": str(Path(member).resolve()), "model": loaded.name, "kind": loaded.kind,
                          "clips": len(usable), f"{split_name(split)}_accuracy": accuracy})
    names = [c.filename for c in clips if all(c.filename in m for m in per_member)]
    dropped = len(clips) - len(names)
    if dropped:
        print(f"dsmn teach: {dropped} clip(s) unreadable by some member, left out of the table", file=sys.stderr)
    mean = np.mean([np.stack([m[n] for n in names]) for m in per_member], axis=0).astype(np.float32)
    provenance = {"split": split_name(split), "data": str(Path(data).resolve()), "ensemble": "mean of scene logits",
                  "members": described}
    return TeacherTable(names, mean, provenance)
