"""Run checkpoints: written atomically, holding everything a resumed run needs to continue exactly."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsmn.files import atomic_path


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """torch.save through `dsmn.files.atomic_path` (synced to disk): a kill never leaves half a file."""
    with atomic_path(path, fsync=True) as tmp:
        torch.save(payload, tmp)


def rng_state() -> dict[str, Any]:
    """Global RNG states (python, numpy, torch, CUDA), stored in every checkpoint."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def load(path: Path) -> dict[str, Any]:
    """A run checkpoint; a truncated or foreign file is a `CheckpointError` naming it."""
    from dsmn.models.checkpoint import CheckpointError, read_checkpoint

    state = read_checkpoint(path)
    missing = [k for k in ("config", "epoch", "optimizer", "scheduler", "rng", "best_val_loss") if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint of a dsmn run (no {', '.join(missing)}); "
                              "start afresh with --overwrite")
    return state
