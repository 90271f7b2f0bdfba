"""Per-epoch schedules of the recipe: the learning rate and the share of each batch that mixup mixes."""

from __future__ import annotations

import math
from typing import Any

import torch

from dsmn.training.config import MixupConfig, ScheduleConfig


def learning_rate(epoch: int, *, epochs: int, base_lr: float, schedule: ScheduleConfig) -> float:
    """Learning rate of epoch `epoch` (0-based).

    Epochs 0 .. warmup-1 rise linearly from `warmup_lr` (epoch 0) towards `base_lr`; epoch `warmup`
    runs at `base_lr` and a half cosine brings the last epoch (epochs - 1) down to `min_lr` exactly.
    """
    warmup = schedule.warmup_epochs
    if epoch < warmup:
        return schedule.warmup_lr + (base_lr - schedule.warmup_lr) * epoch / warmup
    span = max(1, epochs - 1 - warmup)
    progress = min(1.0, (epoch - warmup) / span)
    return schedule.min_lr + 0.5 * (base_lr - schedule.min_lr) * (1.0 + math.cos(math.pi * progress))


class EpochLR:
    """Sets the optimiser's learning rate at the start of every epoch (state: the epoch it last set)."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, epochs: int, base_lr: float,
                 schedule: ScheduleConfig) -> None:
        self.optimizer = optimizer
        self.epochs = epochs
        self.base_lr = base_lr
        self.schedule = schedule
        self.epoch = -1

    def lr(self, epoch: int) -> float:
        return learning_rate(epoch, epochs=self.epochs, base_lr=self.base_lr, schedule=self.schedule)

    def start_epoch(self, epoch: int) -> float:
        value = self.lr(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = value
        self.epoch = epoch
        return value

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "epochs": self.epochs, "base_lr": self.base_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])


def mixup_fraction(epoch: int, mixup: MixupConfig) -> float:
    """Share of the batch that mixup mixes this epoch (0 when mixup is off)."""
    if not mixup.enabled:
        return 0.0
    return 1.0 if epoch < mixup.late_epoch else mixup.late_fraction
