"""Model checkpoints: the toolkit's own format, and resolution of a name-or-path argument.

A dsmn checkpoint is a dict {"format": "dsmn", "model_name", "model_kwargs", "state_dict", ...}; the
trainer adds its own entries (optimiser, metrics, quantisation state) beside these.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsmn.errors import UserError
from dsmn.models.original import load_original
from dsmn.models.registry import available, create

CHECKPOINT_FORMAT = "dsmn"


class CheckpointError(UserError, ValueError):
    """A file that is not a usable checkpoint (unreadable, truncated, or holding something else)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint at the path given (or no best.pt / last.pt in a run folder)."""


def checkpoint_dict(model: nn.Module, **extra: Any) -> dict[str, Any]:
    """The float model as a dsmn checkpoint dict (extra entries are stored alongside)."""
    name = getattr(model, "model_name", None)
    if name is None:
        raise ValueError("model has no model_name: build it with dsmn.models.create")
    return {
        "format": CHECKPOINT_FORMAT,
        "model_name": name,
        "model_kwargs": dict(getattr(model, "model_kwargs", {})),
        "state_dict": model.state_dict(),
        **extra,
    }


def model_from_checkpoint(checkpoint: Mapping[str, Any]) -> nn.Module:
    """Rebuild the float network of a dsmn checkpoint dict, or of a state_dict in the authors' layout."""
    if checkpoint.get("format") == CHECKPOINT_FORMAT:
        model = create(checkpoint["model_name"], **checkpoint.get("model_kwargs", {}))
        try:
            model.load_state_dict(checkpoint["state_dict"])
        except (KeyError, RuntimeError) as error:
            raise CheckpointError(f"its weights do not fit {checkpoint['model_name']} "
                                  f"({str(error).splitlines()[0][:200]})") from None
        return model
    try:
        return load_original(checkpoint)
    except (KeyError, RuntimeError, ValueError, TypeError) as error:
        raise CheckpointError(f"neither a dsmn checkpoint nor a state_dict of the authors' networks "
                              f"({str(error).splitlines()[0][:200]})") from None


RUN_CHECKPOINTS = ("best.pt", "checkpoints/best.pt", "last.pt", "checkpoints/last.pt")


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or a run folder's best checkpoint (lowest validation loss), else
    its last one; FileNotFoundError naming the path when there is none."""
    path = Path(path)
    if path.is_dir():
        for candidate in RUN_CHECKPOINTS:
            if (path / candidate).is_file():
                return path / candidate
        raise CheckpointNotFoundError(f"{path}: no best.pt or last.pt checkpoint in this run folder")
    if not path.is_file():
        raise CheckpointNotFoundError(f"{path}: no such checkpoint or run folder")
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of a file or run folder (see `find_checkpoint`); CheckpointError naming
    the file when it is not a readable dsmn or PyTorch checkpoint."""
    path = find_checkpoint(path)
    if path.suffix.lower() == ".onnx":
        raise CheckpointError(f"{path}: an exported ONNX model, not a checkpoint; give the checkpoint or run "
                              "folder it was exported from (or `dsmn predict` / `dsmn evaluate` the .onnx)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means an unreadable file
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, truncated or another kind of file "
                              f"({reason})") from None
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise CheckpointError(f"{path}: holds a {type(checkpoint).__name__}, not a checkpoint (a dict with the "
                              "network's weights)")
    return checkpoint


def load_model(name_or_path: str | Path) -> nn.Module:
    """A registered model name -> a fresh network; a checkpoint file or run folder -> the trained one."""
    if isinstance(name_or_path, str) and name_or_path in available():
        return create(name_or_path)
    path = Path(name_or_path)
    if not path.exists():
        raise CheckpointNotFoundError(f"{name_or_path!r} is neither a model name ({', '.join(available())}) nor a file")
    checkpoint = read_checkpoint(path)
    try:
        return model_from_checkpoint(checkpoint)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
