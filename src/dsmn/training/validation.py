"""Validation after every epoch: DCASE metrics of the scene outputs on the validation split."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from dsmn.evaluation.metrics import accuracy, log_loss, macro_accuracy, score_devices
from dsmn.models import split_logits
from dsmn.training.data import ClipTable, LogMelRows
from dsmn.training.pipeline import network_input, to_layout


@torch.inference_mode()
def predict_probabilities(
    model: nn.Module, table: ClipTable, source: LogMelRows, *, use_deltas: bool, delta_width: int = 5,
    batch_size: int = 32, channels_last: bool = False,
) -> np.ndarray:
    """Scene probabilities (N, 10) of every clip of `table`, in table order (model in eval mode)."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(table), batch_size):
        index = np.arange(start, min(start + batch_size, len(table)))
        x = to_layout(network_input(source.gather(index), use_deltas, delta_width), channels_last)
        scene_logits, _ = split_logits(model(x))
        out.append(torch.softmax(scene_logits.float(), dim=1))  # stays on the device: no wait per batch
    model.train(was_training)
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, 10), np.float32)


def validation_metrics(probabilities: np.ndarray, table: ClipTable) -> dict[str, Any]:
    """val_loss (scene log loss: the checkpoint criterion), accuracy, macro accuracy, per device / group."""
    targets = table.scene_ids
    metrics: dict[str, Any] = {
        "val_loss": log_loss(probabilities, targets),
        "val_accuracy": accuracy(probabilities, targets),
        "val_macro_accuracy": macro_accuracy(probabilities, targets),
    }
    for score in score_devices(probabilities, targets, table.devices):
        metrics[f"val_accuracy_{score.name}"] = score.accuracy
    return metrics
