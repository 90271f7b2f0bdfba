"""Validation after every epoch: DCASE metrics of the scene outputs on the validation split.

Clips longer than the network's 1-s input (TAU 2020: 10 s) are scored as `dsmn evaluate` scores
them (`dsmn.models.windowing.score_long_clips`): by their windows' mean probabilities, or whole; the
1-s window accuracy is reported beside the clip accuracy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from dsmn.evaluation.metrics import accuracy, log_loss, macro_accuracy, score_devices, window_accuracy
from dsmn.features import network_input
from dsmn.models import scene_probabilities
from dsmn.models.windowing import score_long_clips
from dsmn.training.data import ClipTable, LogMelRows
from dsmn.training.pipeline import to_layout


@torch.inference_mode()
def predict_probabilities(
    model: nn.Module, table: ClipTable, source: LogMelRows, *, use_deltas: bool, delta_width: int = 5,
    batch_size: int = 32, channels_last: bool = False, window_frames: int | None = None,
    long_clips: str = "windows",
) -> tuple[np.ndarray, np.ndarray]:
    """Scene probabilities of every clip of `table` (N, 10) and of its 1-s windows (N, windows, 10), in
    table order (model in eval mode). Without `window_frames` every clip is one window."""
    was_training = model.training
    model.eval()

    def probabilities(logmel: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, len(logmel), batch_size):  # small batches: CPU activations stay in cache
            x = to_layout(network_input(logmel[start:start + batch_size], use_deltas, delta_width), channels_last)
            out.append(scene_probabilities(model(x)))  # stays on the device: no wait per batch
        return torch.cat(out)

    clips, windows = [], []
    for start in range(0, len(table), batch_size):
        logmel = source.gather(np.arange(start, min(start + batch_size, len(table))))
        clip, per_window = score_long_clips(logmel, window_frames or logmel.shape[-1], long_clips, probabilities)
        clips.append(clip)
        windows.append(per_window)
    model.train(was_training)
    if not clips:
        return np.zeros((0, 10), np.float32), np.zeros((0, 1, 10), np.float32)
    return torch.cat(clips).cpu().numpy(), torch.cat(windows).cpu().numpy()  # one wait for the device, at the end


def validation_metrics(probabilities: np.ndarray, table: ClipTable,
                       windows: np.ndarray | None = None) -> dict[str, Any]:
    """val_loss (scene log loss: the checkpoint criterion), accuracy, macro accuracy, per device / group;
    for clips of several windows also val_window_accuracy (every 1-s window scored on its own)."""
    targets = table.scene_ids
    metrics: dict[str, Any] = {
        "val_loss": log_loss(probabilities, targets),
        "val_accuracy": accuracy(probabilities, targets),
        "val_macro_accuracy": macro_accuracy(probabilities, targets),
    }
    if windows is not None and windows.shape[1] > 1:
        metrics["val_window_accuracy"] = window_accuracy(windows, targets)
    for score in score_devices(probabilities, targets, table.devices):
        metrics[f"val_accuracy_{score.name}"] = score.accuracy
    return metrics

