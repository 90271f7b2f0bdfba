"""The recipe's per-epoch schedules: learning rate (warm-up + cosine) and the mixup share."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dsmn.training import load_config
from dsmn.training.config import ScheduleConfig
from dsmn.training.schedule import EpochLR, learning_rate, mixup_fraction

RECIPE = ScheduleConfig(warmup_epochs=5, warmup_lr=5e-5, min_lr=1e-6, scale_with_epochs=True)


def lr(epoch: int) -> float:
    return learning_rate(epoch, epochs=100, base_lr=1e-3, schedule=RECIPE)


def test_warm_up_starts_at_5e_5_and_rises_linearly_to_the_peak() -> None:
    assert lr(0) == pytest.approx(5e-5)
    steps = np.diff([lr(e) for e in range(6)])
    assert np.allclose(steps, (1e-3 - 5e-5) / 5)
    assert lr(5) == pytest.approx(1e-3)


def test_cosine_decays_to_1e_6_at_the_last_epoch() -> None:
    values = [lr(e) for e in range(5, 100)]
    assert np.all(np.diff(values) < 0)
    assert lr(99) == pytest.approx(1e-6)
    midpoint = 5 + (99 - 5) / 2  # halfway through the cosine: halfway between peak and floor
    assert learning_rate(int(midpoint), epochs=100, base_lr=1e-3, schedule=RECIPE) == pytest.approx(
        1e-6 + 0.5 * (1e-3 - 1e-6), rel=1e-6)


def test_epoch_lr_sets_every_group_and_round_trips_its_state() -> None:
    optimizer = torch.optim.RAdam([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    schedule = EpochLR(optimizer, epochs=100, base_lr=1e-3, schedule=RECIPE)
    assert schedule.start_epoch(0) == pytest.approx(5e-5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-5)
    schedule.start_epoch(42)
    other = EpochLR(optimizer, epochs=100, base_lr=1e-3, schedule=RECIPE)
    other.load_state_dict(schedule.state_dict())
    assert other.epoch == 42


def test_mixup_mixes_the_whole_batch_before_epoch_60_then_half() -> None:
    recipe = load_config("dcase2023").mixup
    assert [mixup_fraction(e, recipe) for e in (0, 59, 60, 99)] == [1.0, 1.0, 0.5, 0.5]
    assert mixup_fraction(0, dataclasses.replace(recipe, enabled=False)) == 0.0
