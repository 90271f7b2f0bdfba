"""Per-epoch schedules of the recipe: the learning rate and the share of each batch that mixup mixes."""

from __future__ import annotations

import math
from typing import Any

import torch

from dsmn.training.config import MixupConfig, ScheduleConfig, TrainConfig


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


def schedule_notes(config: TrainConfig) -> list[str]:
    """Banner lines on the epoch-counted settings: what an `epochs` override scaled, and any that
    does not fit the run (a warm-up that never ends, a switch that never comes)."""
    notes = []
    scaled = dict(config.scaled_settings)
    if scaled and not _still_scaled(config, scaled):  # a record inherited by a config built on this one
        scaled = {}
    if scaled:
        was, now = scaled.pop("epochs", ["?", config.epochs])
        changes = ", ".join(f"{key} {old} -> {new}" for key, (old, new) in scaled.items())
        notes.append(f"schedule scaled from the config's {was} epochs to {now}: {changes} "
                     "(pin one with --set KEY=VALUE, or --set schedule.scale_with_epochs=false)")
    epochs = config.epochs
    if config.schedule.warmup_epochs >= epochs:
        notes.append(f"warning: schedule.warmup_epochs={config.schedule.warmup_epochs} >= epochs={epochs}: the "
                     "run never leaves warm-up (the learning rate stays below optimizer.lr, no cosine decay)")
    if config.mixup.enabled and config.mixup.late_fraction != 1.0 and config.mixup.late_epoch >= epochs:
        notes.append(f"warning: mixup.late_epoch={config.mixup.late_epoch} >= epochs={epochs}: mixup mixes the "
                     "whole batch in every epoch (the switch to half the batch never comes)")
    if config.qat.enabled and config.qat_start_epoch >= epochs:
        notes.append(f"warning: qat.start_epoch={config.qat_start_epoch} >= epochs={epochs}: fake quantisation "
                     "never starts, so no epoch qualifies for best.pt")
    return notes


def _still_scaled(config: TrainConfig, scaled: dict[str, list]) -> bool:
    """Whether a `scaled_settings` record describes this config (same epochs, same values)."""
    values = config.to_dict()
    for key, (_, now) in scaled.items():
        node: object = values if key != "epochs" else {"epochs": config.epochs}
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node != now:
            return False
    return True
