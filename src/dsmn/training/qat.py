"""Quantisation-aware training as the trainer uses it: when to prepare, which switches each epoch.

Two ways to reach `start_epoch` (config `qat.float_until_start`):
- false (faithful, default): the network is prepared at epoch 0, observers calibrate from the first
  batch and fake quantisation is on from `start_epoch` (0 in the recipe: QAT from the start);
- true (faster): the plain float network trains until `start_epoch` and is prepared then; its
  observers initialise on the first QAT batch. The QAT network shares the float parameters, so the
  optimiser and its state carry over unchanged.
"""

from __future__ import annotations

from torch import nn

from dsmn.training.config import QATSectionConfig


class QATSchedule:
    def __init__(self, section: QATSectionConfig) -> None:
        self.section = section
        self.config = None
        if section.enabled:
            from dsmn.quantization import QATConfig

            self.config = QATConfig.from_dict({"enabled": True, "start_epoch": section.start_epoch, **section.options})

    @property
    def enabled(self) -> bool:
        return self.config is not None

    def prepared_by(self, epoch: int) -> bool:
        """Whether the network trains as a QAT network in `epoch`."""
        if not self.enabled:
            return False
        return not self.section.float_until_start or epoch >= self.section.start_epoch

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
