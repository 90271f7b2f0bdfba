"""Scene probabilities for clips of any length (TAU 2020's 10-s clips): by 1-s windows or whole.

The networks are trained on 1-s clips, so the toolkit classifies a longer clip by cutting it into
1-s windows, classifying each like a training clip and averaging the scene probabilities
(`classify_windows`). Every network also pools time globally, so the whole clip can go through in
one pass (`classify_clip`): cheaper, but the network then sees statistics (standardisation over
10 s, 10x longer pooling) it was never trained on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from dsmn.labels import NUM_SCENES
from dsmn.models.outputs import scene_probabilities
from dsmn.models.registry import available, entry

DEFAULT_CLIP_FRAMES = 44  # DSMN front end: a 1-s clip gives 44 frames
LONG_CLIP_MODES = ("windows", "whole")  # how a clip longer than 1 s is trained on and scored
Probabilities = np.ndarray | torch.Tensor


def clip_frames(model: nn.Module) -> int:
    """Frames of one 1-s clip at `model`'s front end (its registry entry), 44 when unregistered."""
    name = getattr(model, "model_name", None)
    if name is not None and name in available():
        return entry(name).input_shape[-1]
    return DEFAULT_CLIP_FRAMES


def window_starts(total_frames: int, window_frames: int, hop_frames: int) -> list[int]:
    """First frame of every window: every `hop_frames`, plus one window flush with the end when the
    hops leave a tail uncovered (431 frames, 44/44 -> 0, 44, ..., 352 and 387). A clip shorter than
    one window is a single window: itself."""
    if window_frames < 1 or hop_frames < 1:
        raise ValueError("window_frames and hop_frames must be positive")
    if total_frames <= window_frames:
        return [0]
    starts = list(range(0, total_frames - window_frames + 1, hop_frames))
    if starts[-1] + window_frames < total_frames:
        starts.append(total_frames - window_frames)
    return starts


def _scene_probabilities(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    return scene_probabilities(model(inputs), getattr(model, "num_scenes", NUM_SCENES))


def _inference(model: nn.Module, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Run fn in eval mode without gradients, restoring the model's mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return fn()
    finally:
        model.train(was_training)


def classify_clip(
    model: nn.Module, inputs: torch.Tensor, prepare: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """(batch, num_scenes) scene probabilities of whole clips in one pass (global pooling)."""
    batch = prepare(inputs) if prepare is not None else inputs
    return _inference(model, lambda: _scene_probabilities(model, batch))


def classify_windows(
    model: nn.Module,
    inputs: torch.Tensor,
    window_frames: int | None = None,
    hop_frames: int | None = None,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """(batch, num_scenes) scene probabilities averaged over the 1-s windows of each clip.

    `inputs` is (batch, ..., frames); windows are cut along the last axis. Without `prepare` they
    are model inputs (batch, channels, mel, frames) and each window goes in as it is. With `prepare`
    they can be raw log-mels (batch, mel, frames) and `prepare` turns a batch of windows into model
    input (e.g. `dsmn.features.network_input`): then every window is standardised, and gets its deltas,
    exactly like a 1-s training clip. `window_frames` and `hop_frames` default to the frames of one
    1-s clip at the model's front end (44 for DSMN/DSSC, 51 for the DCASE baseline CNN).
    """
    window = window_frames or clip_frames(model)
    hop = hop_frames or window
    starts = window_starts(inputs.shape[-1], window, hop)
    windows = torch.stack([inputs[..., s : s + window] for s in starts], dim=1)  # (B, W, ..., window)
    flat = windows.reshape(-1, *windows.shape[2:])
    if prepare is not None:
        flat = prepare(flat)
    probabilities = _inference(model, lambda: _scene_probabilities(model, flat))
    return probabilities.reshape(inputs.shape[0], len(starts), -1).mean(dim=1)


def cut_windows(logmel: torch.Tensor, window_frames: int) -> torch.Tensor:
    """(batch, mel, frames) -> (batch, windows, mel, window_frames): the non-overlapping 1-s windows of
    `window_starts` (a 10-s clip of 431 frames gives 10 windows of 44)."""
    starts = window_starts(logmel.shape[-1], window_frames, window_frames)
    if len(starts) == 1 and logmel.shape[-1] <= window_frames:
        return logmel.unsqueeze(1)
    return torch.stack([logmel[..., s : s + window_frames] for s in starts], dim=1)


def score_long_clips(
    logmel: torch.Tensor, window_frames: int, mode: str, probabilities: Callable[[torch.Tensor], Probabilities]
) -> tuple[Probabilities, Probabilities]:
    """Scene probabilities of whole clips (batch, scenes) and of their 1-s windows (batch, windows, scenes).

    `probabilities` maps raw log-mels (n, mel, frames) to scene probabilities (n, scenes), as a numpy
    array or a tensor (returned in the same kind): the caller builds the network input and runs its
    model. `mode` "windows": a clip's probabilities are the mean of its windows' (the model saw 1-s
    windows in training); "whole": one pass over the whole clip (the model was trained on whole
    clips). A clip of one window is that window either way.
    """
    if mode not in LONG_CLIP_MODES:
        raise ValueError(f"long-clip mode must be one of {', '.join(LONG_CLIP_MODES)}, got {mode!r}")
    windows = cut_windows(logmel, window_frames)
    batch, count = windows.shape[:2]
    per_window = probabilities(windows.reshape(batch * count, *windows.shape[2:])).reshape(batch, count, -1)
    if count == 1 or mode == "windows":
        return per_window.mean(1), per_window
    return probabilities(logmel), per_window
