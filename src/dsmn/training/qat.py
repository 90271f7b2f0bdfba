"""Quantisation-aware training as the trainer uses it: when to prepare, which switches each epoch.

Two ways to reach the first QAT epoch (config `qat.float_until_start`):
- false (faithful, the recipe): the network is prepared at epoch 0, observers calibrate from the
  first batch and fake quantisation is on from `start_epoch` (0 in the recipe: QAT from the start);
- true (faster): the plain float network trains until `start_epoch` and is prepared then; its
  observers initialise on the first QAT batch. The QAT network shares the float parameters, so the
  optimiser and its state carry over unchanged.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from dsmn.quantization import QATConfig


class QATSchedule:
    def __init__(self, settings: QATConfig, epochs: int) -> None:
        """`settings`: the config's `qat` section; `epochs`: the run's length (resolves a negative
        start_epoch). `config` is None without QAT, else the settings with the start resolved."""
        self.config = None
        if settings.enabled:
            self.config = dataclasses.replace(settings, start_epoch=settings.first_epoch(epochs))

    @property
    def enabled(self) -> bool:
        return self.config is not None

    @property
    def first_epoch(self) -> int | None:
        """The first epoch that trains the fake-quantised network (None without QAT)."""
        return self.config.start_epoch if self.config is not None else None

    def prepared_by(self, epoch: int) -> bool:
        """Whether the network trains as a QAT network in `epoch`."""
        if not self.enabled:
            return False
        return not self.config.float_until_start or epoch >= self.config.start_epoch

    def prepare(self, model: nn.Module) -> nn.Module:
        from dsmn.quantization import prepare_qat

        return prepare_qat(model, self.config)

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        """Fake quantisation, observers and BatchNorm as this epoch wants them (idempotent)."""
        if not self.enabled or not self.prepared_by(epoch):
            return
        from dsmn.quantization import freeze_batchnorm, freeze_observers, set_fake_quant

        c = self.config
        set_fake_quant(model, epoch >= c.start_epoch)
        freeze_observers(model, c.freeze_observers_epoch is not None and epoch >= c.freeze_observers_epoch)
        freeze_batchnorm(model, c.freeze_bn_epoch is not None and epoch >= c.freeze_bn_epoch)
