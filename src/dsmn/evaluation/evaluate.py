"""Evaluate a float, QAT or exported (ONNX) model on a labelled split, the way DCASE reports it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from dsmn.data import Clip
from dsmn.deploy.data import logmel_batches, open_features, split_clips, split_name
from dsmn.deploy.inference import LoadedModel, load_for_inference
from dsmn.evaluation import metrics
from dsmn.evaluation.metrics import window_accuracy
from dsmn.features import network_input
from dsmn.labels import NUM_SCENES, SCENES
from dsmn.models import outputs
from dsmn.models.windowing import score_long_clips

__all__ = ["Evaluation", "evaluate", "load_for_inference", "scene_logits", "scene_probabilities", "score"]


@dataclass
class Evaluation:
    model: str
    kind: str
    split: str
    clips: int
    accuracy: float
    macro_accuracy: float
    log_loss: float
    per_class: list[dict] = field(default_factory=list)
    per_device: list[dict] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    checkpoint: dict | None = None  # which checkpoint of its run (dsmn.deploy.trained.checkpoint_label)
    # clips longer than 1 s (TAU 2020): how clips were scored, 1-s windows per clip, accuracy of each window alone
    long_clips: str | None = None
    windows_per_clip: int = 1
    window_accuracy: float | None = None

    def summary(self) -> dict:
        """{model, kind, split, checkpoint, summary: {clips, accuracy, macro_accuracy, log_loss[, window_accuracy
        ...]}, classes, devices}."""
        summary = {"clips": self.clips, "accuracy": self.accuracy, "macro_accuracy": self.macro_accuracy,
                   "log_loss": self.log_loss}
        if self.long_clips is not None:
            summary.update(long_clips=self.long_clips, windows_per_clip=self.windows_per_clip,
                           windows=self.clips * self.windows_per_clip, window_accuracy=self.window_accuracy)
        return {"model": self.model, "kind": self.kind, "split": self.split, "checkpoint": self.checkpoint,
                "summary": summary, "classes": self.per_class, "devices": self.per_device}


def score(probabilities: np.ndarray, targets: np.ndarray, devices: Sequence[str | None], *, model: str = "",
          kind: str = "", split: str = "") -> Evaluation:
    """DCASE metrics: overall, per class (accuracy, log loss) and per device and device group."""
    per_class = []
    class_accuracy = metrics.class_wise_accuracy(probabilities, targets)
    for c, name in enumerate(SCENES):
        mask = targets == c
        per_class.append({
            "name": name, "count": int(mask.sum()), "accuracy": float(class_accuracy[c]),
            "log_loss": metrics.log_loss(probabilities[mask], targets[mask]) if mask.any() else float("nan"),
        })
    per_device = [asdict(s) for s in metrics.score_devices(probabilities, targets, devices)]
    return Evaluation(
        model=model, kind=kind, split=split, clips=len(targets),
        accuracy=metrics.accuracy(probabilities, targets),
        macro_accuracy=metrics.macro_accuracy(probabilities, targets),
        log_loss=metrics.log_loss(probabilities, targets),
        per_class=per_class, per_device=per_device,
        confusion=metrics.confusion_matrix(probabilities, targets).tolist(),
    )


def scene_logits(loaded: LoadedModel, logmels, batch_size: int = 256) -> np.ndarray:
    """The scene logits (before softmax), one row per clip of the raw log-mel batches `logmels`."""
    rows = []
    for logmel in logmels:
        x = network_input(logmel, loaded.recipe.deltas, loaded.recipe.delta_width)
        for start in range(0, len(x), batch_size):
            rows.append(outputs.split_logits(loaded.logits(x[start : start + batch_size]))[0])
    return np.concatenate(rows) if rows else np.zeros((0, NUM_SCENES))


def scene_probabilities(loaded: LoadedModel, logmels, batch_size: int = 256) -> np.ndarray:
    """Softmax over the scene logits, one row per clip (a long clip scored as below)."""
    return clip_and_window_probabilities(loaded, logmels, batch_size)[0]


def clip_and_window_probabilities(loaded: LoadedModel, logmels, batch_size: int = 256
                                  ) -> tuple[np.ndarray, np.ndarray]:
    """Softmax over the scene logits: one row per clip (N, scenes), and per 1-s window (N, windows, scenes).

    A clip longer than the network's 1-s input is scored as the model was trained
    (`dsmn.models.windowing.score_long_clips`): the mean of its windows' probabilities, or whole.
    """
    recipe = loaded.recipe

    def probabilities(logmel: torch.Tensor) -> np.ndarray:
        x = network_input(logmel, recipe.deltas, recipe.delta_width)
        return np.concatenate([outputs.scene_probabilities(loaded.logits(x[start : start + batch_size]))
                               for start in range(0, len(x), batch_size)])

    clips, windows = [], []
    for logmel in logmels:
        clip, per_window = score_long_clips(logmel, recipe.window_frames, recipe.long_clips, probabilities)
        clips.append(clip)
        windows.append(per_window)
    if not clips:
        return np.zeros((0, NUM_SCENES)), np.zeros((0, 1, NUM_SCENES))
    return np.concatenate(clips), np.concatenate(windows)


def evaluate(
    loaded: LoadedModel, data: str | Path, split: str = "evaluate", cache_dir: str | Path | None = None,
    progress: bool = False,
) -> tuple[Evaluation, list[Clip], np.ndarray]:
    """Score `loaded` on a labelled split; also returns the clips and their probabilities."""
    dataset, clips = split_clips(data, split)
    if not clips:
        raise ValueError(f"split {split!r} of {data} is empty")
    if any(c.scene is None for c in clips):
        raise ValueError(f"split {split!r} has unlabelled clips: evaluate needs labels (use `dsmn predict`)")
    cache = open_features(dataset, loaded.recipe.frontend, cache_dir, progress=progress)
    usable = cache.usable(clips)
    batch = max(1, 256 // max(1, round(cache.logmels.shape[-1] / loaded.recipe.window_frames)))  # ~256 windows
    probabilities, windows = clip_and_window_probabilities(loaded, logmel_batches(cache, usable, batch))
    targets = np.array([c.scene_id for c in usable])
    result = score(probabilities, targets, [c.device for c in usable], model=loaded.name, kind=loaded.kind,
                   split=split_name(split))
    result.checkpoint = loaded.checkpoint
    if windows.shape[1] > 1:
        result.long_clips = loaded.recipe.long_clips
        result.windows_per_clip = int(windows.shape[1])
        result.window_accuracy = window_accuracy(windows, targets)
    return result, usable, probabilities
