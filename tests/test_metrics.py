"""DCASE metrics on hand-checked cases."""

from __future__ import annotations

import math

import numpy as np

from dsmn.evaluation.metrics import (
    accuracy,
    class_wise_accuracy,
    confusion_matrix,
    log_loss,
    macro_accuracy,
    score_devices,
)


def _onehot_probs(predicted, num_classes=10, confidence=0.91):
    p = np.full((len(predicted), num_classes), (1 - confidence) / (num_classes - 1))
    p[np.arange(len(predicted)), predicted] = confidence
    return p


def test_macro_accuracy_weights_classes_equally():
    # class 0: 8 clips all right; class 1: 2 clips, one right -> accuracy 0.9, macro 0.75
    targets = np.array([0] * 8 + [1, 1])
    predicted = np.array([0] * 8 + [1, 0])
    p = _onehot_probs(predicted)
    assert math.isclose(accuracy(p, targets), 0.9)
    assert math.isclose(macro_accuracy(p, targets), 0.75)
    assert np.isnan(class_wise_accuracy(p, targets)[5])
    assert confusion_matrix(p, targets)[1, 0] == 1


def test_log_loss_of_confident_right_and_wrong_answers():
    p = _onehot_probs(np.array([3, 4]), confidence=0.5)
    assert math.isclose(log_loss(p, np.array([3, 3])), (-math.log(0.5) - math.log(0.5 / 9)) / 2, rel_tol=1e-9)
    assert np.isfinite(log_loss(np.eye(10)[[1]], np.array([2])))  # zero probability is clipped


def test_device_groups():
    targets = np.array([0, 0, 1, 1])
    p = _onehot_probs(np.array([0, 1, 1, 1]))
    scores = {s.name: s for s in score_devices(p, targets, ["a", "s4", "s5", "b"])}
    assert scores["a"].accuracy == 1.0 and scores["s4"].accuracy == 0.0
    assert scores["unseen"].count == 2 and scores["unseen"].accuracy == 0.5
    assert scores["real"].count == 2 and "c" not in scores
