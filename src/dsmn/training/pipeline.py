"""From a raw log-mel batch to the network's input and soft targets, in the recipe's order.

[a random 1-s window of a long clip] -> device IR response or spectrum correction (raw log-mel,
device-a clips) -> Freq-MixStyle (raw log-mel) -> deltas + per-clip standardisation -> SpecAugment
-> mixup (features, both soft targets and the teacher's probabilities, one lambda per batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from dsmn.features import network_input
from dsmn.training.augment import (
    coarse_matrix,
    freq_mixstyle,
    mixup,
    random_windows,
    soft_targets,
    spec_augment,
    spectrum_correction,
)
from dsmn.training.config import TrainConfig
from dsmn.training.data import RawBatch
from dsmn.training.schedule import mixup_fraction


@dataclass
class EpochRandomness:
    """The data path's random sources for one epoch of one process, derived from (seed, epoch, rank)."""

    host: np.random.Generator
    device: torch.Generator

    @classmethod
    def create(cls, seed: int, epoch: int, rank: int, device: torch.device) -> EpochRandomness:
        sequence = np.random.SeedSequence([seed, epoch, rank, 0xA06])
        generator = torch.Generator(device=device)
        generator.manual_seed(int(sequence.generate_state(1, np.uint64)[0] >> 1))
        return cls(np.random.default_rng(sequence), generator)


class StepInputs(NamedTuple):
    """What one training step consumes: the network input and its targets."""

    x: torch.Tensor
    scene: torch.Tensor  # (B, 10) soft label targets
    coarse: torch.Tensor  # (B, 3)
    teacher: tuple[torch.Tensor, torch.Tensor] | None = None  # teacher probabilities at T: (B, 10), (B, 3)


class TrainingInputs:
    """Applies the recipe's augmentations to raw batches; every part switchable by the config."""

    def __init__(self, config: TrainConfig, use_deltas: bool, correction: torch.Tensor | None,
                 device_responses: torch.Tensor | None = None, window_frames: int | None = None) -> None:
        self.config = config
        self.window_frames = window_frames  # set: crop one random window per long clip (TAU 2020 windows mode)
        self.use_deltas = use_deltas
        self.correction = correction  # (pairs, mel) device responses, or None
        self.device_responses = device_responses  # (IRs, mel) log-mel responses of device IRs, or None
        self.channels_last = config.channels_last

    def __call__(self, batch: RawBatch, epoch: int, rng: EpochRandomness) -> StepInputs:
        c = self.config
        logmel = batch.logmel
        if self.window_frames is not None:
            logmel = random_windows(logmel, self.window_frames, rng.device)
        ir_applied = False
        if c.device_ir.enabled and self.device_responses is not None:  # its own coin, before the correction's
            shifted = spectrum_correction(logmel, batch.is_reference, self.device_responses,
                                          probability=c.device_ir.probability, host_rng=rng.host, generator=rng.device)
            ir_applied, logmel = shifted is not logmel, shifted
        if (c.spectrum_correction.enabled and self.correction is not None and not ir_applied
                and not (c.device_ir.enabled and c.device_ir.replace_correction)):
            logmel = spectrum_correction(logmel, batch.is_reference, self.correction,
                                         probability=c.spectrum_correction.probability, host_rng=rng.host,
                                         generator=rng.device)
        if c.freq_mixstyle.enabled:
            logmel = freq_mixstyle(logmel, probability=c.freq_mixstyle.probability, alpha=c.freq_mixstyle.alpha,
                                   host_rng=rng.host, generator=rng.device)
        x = network_input(logmel, self.use_deltas, c.delta_width)
        if c.specaugment.enabled:
            x = spec_augment(x, time_stripes=c.specaugment.time_stripes, freq_stripes=c.specaugment.freq_stripes,
                             max_width=c.specaugment.max_width, generator=rng.device)
        targets = soft_targets(batch.scene_ids)
        if batch.teacher_logits is not None:  # probabilities, so that mixup mixes them like the labels
            targets = (*targets, torch.softmax(batch.teacher_logits.float() / c.distillation.temperature, dim=1))
        fraction = mixup_fraction(epoch, c.mixup)
        if fraction > 0:
            lam = float(rng.host.beta(c.mixup.alpha, c.mixup.alpha))
            x, targets = mixup(x, targets, lam=lam, fraction=fraction, generator=rng.device)
        teacher = None
        if batch.teacher_logits is not None:  # the coarse task's teacher: scene probabilities summed per group
            teacher = (targets[2], targets[2] @ coarse_matrix(targets[2].device))
        return StepInputs(to_layout(x, self.channels_last), targets[0], targets[1], teacher)


def to_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """The input in the memory layout the network runs fastest on.

    The DSMN networks transpose (B, C, mel, T) to (B, C, T, mel) first; storing the input time-major
    with channels innermost makes that transposed view channels-last without a copy.
    """
    if not channels_last:
        return x
    return x.permute(0, 3, 2, 1).contiguous().permute(0, 3, 2, 1)
