"""Metrics as DCASE Task 1 reports them, computed from class probabilities.

Accuracy, macro class-wise accuracy (the ranking metric: the mean of per-class accuracies, so a
device- or class-imbalanced split cannot hide a weak class) and multi-class log loss, overall and
per group (class, device, device group).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dsmn.labels import DEVICES, NUM_SCENES, REAL_DEVICES, SEEN_DEVICES, UNSEEN_DEVICES

LOG_LOSS_EPS = 1e-15
DEVICE_GROUPS: dict[str, tuple[str, ...]] = {"real": REAL_DEVICES, "seen": SEEN_DEVICES, "unseen": UNSEEN_DEVICES}


def accuracy(probabilities: np.ndarray, targets: np.ndarray) -> float:
    if len(targets) == 0:
        return float("nan")
    return float(np.mean(np.argmax(probabilities, axis=1) == targets))


def log_loss(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log probability of the true class (probabilities clipped and renormalised)."""
    if len(targets) == 0:
        return float("nan")
    p = np.clip(probabilities, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(targets)), targets])))


def class_wise_accuracy(probabilities: np.ndarray, targets: np.ndarray, num_classes: int = NUM_SCENES) -> np.ndarray:
    """Accuracy of each class (NaN for a class absent from `targets`)."""
    predicted = np.argmax(probabilities, axis=1)
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        mask = targets == c
        if mask.any():
            out[c] = np.mean(predicted[mask] == c)
    return out


def macro_accuracy(probabilities: np.ndarray, targets: np.ndarray, num_classes: int = NUM_SCENES) -> float:
    per_class = class_wise_accuracy(probabilities, targets, num_classes)
    return float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")


def confusion_matrix(probabilities: np.ndarray, targets: np.ndarray, num_classes: int = NUM_SCENES) -> np.ndarray:
    """Counts[true, predicted]."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (targets, np.argmax(probabilities, axis=1)), 1)
    return counts


@dataclass
class GroupScore:
    name: str
    count: int
    accuracy: float
    log_loss: float


def score_groups(
    probabilities: np.ndarray, targets: np.ndarray, groups: Sequence[str | None], names: Sequence[str]
) -> list[GroupScore]:
    """Accuracy and log loss for each named group (e.g. each device), skipping empty groups."""
    labels = np.asarray([g if g is not None else "" for g in groups])
    scores = []
    for name in names:
        mask = labels == name
        if mask.any():
            p, t = probabilities[mask], targets[mask]
            scores.append(GroupScore(name, int(mask.sum()), accuracy(p, t), log_loss(p, t)))
    return scores


def score_devices(probabilities: np.ndarray, targets: np.ndarray, devices: Sequence[str | None]) -> list[GroupScore]:
    """Per device (a, b, c, s1..s6) and per device group (real / seen / unseen)."""
    scores = score_groups(probabilities, targets, devices, DEVICES)
    labels = np.asarray([d or "" for d in devices])
    for group, members in DEVICE_GROUPS.items():
        mask = np.isin(labels, members)
        if mask.any():
            p, t = probabilities[mask], targets[mask]
            scores.append(GroupScore(group, int(mask.sum()), accuracy(p, t), log_loss(p, t)))
    return scores


def window_accuracy(windows: np.ndarray, targets: np.ndarray) -> float:
    """Share of 1-s windows (clips, windows, scenes) whose top scene is their clip's label: how well one
    second alone is classified, beside the clip accuracy of their mean."""
    return float((np.asarray(windows).argmax(axis=-1) == np.asarray(targets)[:, None]).mean())
