"""Switches the trainer flips on a QAT model, and the float weights inside it."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager

import torch
from torch import nn

from dsmn.models.wrappers import unwrap
from dsmn.quantization.folded import _FoldedBase
from dsmn.quantization.prepare import QUANT_PREFIX, QATGraphModule
from dsmn.quantization.quantizers import ActivationQuantizer


def is_qat(model: nn.Module) -> bool:
    return isinstance(unwrap(model), QATGraphModule)


def set_fake_quant(model: nn.Module, enabled: bool) -> None:
    """Fake quantisation of weights and activations on or off (observers keep observing either way)."""
    for module in unwrap(model).modules():
        if isinstance(module, ActivationQuantizer | _FoldedBase):
            module.fake_quant_enabled = enabled


def freeze_observers(model: nn.Module, frozen: bool = True) -> None:
    """Stop (or restart) updating the activation ranges."""
    for module in unwrap(model).modules():
        if isinstance(module, ActivationQuantizer):
            module.observer_enabled = not frozen


def freeze_batchnorm(model: nn.Module, frozen: bool = True) -> None:
    """Folded BatchNorms use (and stop updating) their running statistics in training too."""
    for module in unwrap(model).modules():
        if isinstance(module, _FoldedBase):
            module.bn_frozen = frozen


def float_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The float network's state_dict (quantiser state removed): loadable into dsmn.models.create(name)."""
    prefix = QUANT_PREFIX + "."
    return {k: v for k, v in unwrap(model).state_dict().items() if not k.startswith(prefix)}


@contextmanager
def calibrating(model: nn.Module):
    """Observers record activation ranges even in eval mode (post-training calibration)."""
    quantizers = [m for m in unwrap(model).modules() if isinstance(m, ActivationQuantizer)]
    for q in quantizers:
        q.calibrating = True
    try:
        yield model
    finally:
        for q in quantizers:
            q.calibrating = False


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor], momentum: float | None = None) -> int:
    """Run `batches` through the QAT model in eval mode, recording activation ranges; returns clips seen.

    `momentum` (e.g. 0.1 or 1.0 for a single batch) temporarily replaces the observers' momentum.
    """
    net = unwrap(model)
    was_training = net.training
    quantizers = [m for m in net.modules() if isinstance(m, ActivationQuantizer)]
    saved = [q.momentum for q in quantizers]
    if momentum is not None:
        for q in quantizers:
            q.momentum = momentum
    seen = 0
    net.eval()
    try:
        with calibrating(net):
            for batch in batches:
                net(batch)
                seen += len(batch)
    finally:
        for q, m in zip(quantizers, saved, strict=True):
            q.momentum = m
        net.train(was_training)
    return seen
