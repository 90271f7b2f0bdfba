"""Batch augmentations of the recipe, as functions on tensors (they run wherever the batch lives).

Randomness comes in explicitly: a numpy Generator for per-batch host decisions (the spectrum
correction coin, the mixup lambda) and a torch Generator on the batch's device for per-clip draws,
so the data path is a pure function of (seed, epoch, step) and a resumed run repeats it exactly.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from dsmn.labels import NUM_COARSE, NUM_SCENES, SCENE_TO_COARSE_ID
from dsmn.training.data import to_device


def correction_vectors(reference: np.ndarray, other: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Device responses from parallel log-mels (pairs, mel, frames) of device a and another device.

    Per pair and mel bin: d = log10(mean_t 10^other) - log10(mean_t 10^reference), i.e. the ratio of
    the two devices' mean mel power, in the log10 units of the log-mel. Returns float32 (pairs, mel).
    """
    if reference.shape != other.shape:
        raise ValueError(f"parallel log-mels differ in shape: {reference.shape} vs {other.shape}")
    out = np.empty(reference.shape[:2], dtype=np.float32)
    for start in range(0, len(reference), chunk):
        stop = start + chunk
        out[start:stop] = _log10_mean_power(other[start:stop]) - _log10_mean_power(reference[start:stop])
    return out


def _log10_mean_power(logmel: np.ndarray) -> np.ndarray:
    """log10(mean over time of 10^logmel), computed without overflow (max subtracted first)."""
    values = np.asarray(logmel, dtype=np.float64)
    peak = values.max(axis=-1, keepdims=True)
    return (np.log10(np.mean(np.power(10.0, values - peak), axis=-1, keepdims=True)) + peak)[..., 0]


def spectrum_correction(
    logmel: torch.Tensor,
    is_reference: torch.Tensor,
    vectors: torch.Tensor,
    *,
    probability: float,
    host_rng: np.random.Generator,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """With `probability` (one draw per batch), add a randomly drawn stored device response to the
    log-mel of every reference-device clip. Gated on the device ids, never on the features.

    logmel (B, mel, T) raw log10 mel power; is_reference (B,) bool; vectors (P, mel).
    """
    if len(vectors) == 0 or host_rng.random() >= probability:
        return logmel
    draws = torch.randint(len(vectors), (logmel.shape[0],), generator=generator, device=vectors.device)
    shift = vectors[draws] * is_reference.to(vectors.dtype)[:, None]
    return logmel + shift[:, :, None].to(logmel.dtype)


def stripe_mask(
    batch: int, length: int, stripes: int, max_width: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """(batch, length) bool: `stripes` stripes per row, widths uniform in {0..max_width}, positions uniform."""
    if stripes == 0 or max_width == 0:
        return torch.zeros(batch, length, dtype=torch.bool, device=device)
    widths = torch.randint(0, max_width + 1, (batch, stripes, 1), generator=generator, device=device)
    room = (length - widths + 1).clamp_min(1)
    starts = (torch.rand(batch, stripes, 1, generator=generator, device=device) * room).long()
    index = torch.arange(length, device=device)
    inside = (index >= starts) & (index < starts + widths)
    return inside.any(dim=1)


def spec_augment(
    x: torch.Tensor, *, time_stripes: int, freq_stripes: int, max_width: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero random time and frequency stripes of every clip of x (B, C, mel, T), all channels alike."""
    batch, _, mels, frames = x.shape
    time = stripe_mask(batch, frames, time_stripes, max_width, generator, x.device)
    freq = stripe_mask(batch, mels, freq_stripes, max_width, generator, x.device)
    return x.masked_fill(freq[:, None, :, None] | time[:, None, None, :], 0.0)


def soft_targets(scene_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot 10-scene targets and the 3-coarse targets they imply (SCENE_TO_COARSE_ID)."""
    scene = torch.nn.functional.one_hot(scene_ids, NUM_SCENES).float()
    return scene, scene @ coarse_matrix(scene.device)


def coarse_matrix(device: torch.device | str = "cpu") -> torch.Tensor:
    """(10, 3) 0/1 matrix: scene targets @ M = coarse targets (soft targets stay soft).

    Built once per device and reused (read-only): building it from a Python list every step would be
    a blocking host-to-GPU copy per step.
    """
    return _coarse_matrix(str(torch.device(device)))


@functools.cache
def _coarse_matrix(device: str) -> torch.Tensor:
    coarse_ids = torch.tensor(SCENE_TO_COARSE_ID, device=device)
    return torch.nn.functional.one_hot(coarse_ids, NUM_COARSE).float()


def mixup(
    x: torch.Tensor,
    targets: tuple[torch.Tensor, ...],
    *,
    lam: float,
    fraction: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Mix the first round(fraction * B) clips (and all their targets) with random partners of the batch,
    x_i <- lam x_i + (1 - lam) x_perm(i), with one lambda for the whole batch."""
    count = round(fraction * x.shape[0])
    if count == 0:
        return x, targets
    partner = torch.randperm(x.shape[0], generator=generator, device=x.device)[:count]

    def mix(t: torch.Tensor) -> torch.Tensor:
        mixed = lam * t[:count] + (1.0 - lam) * t[partner]
        return mixed if count == t.shape[0] else torch.cat([mixed, t[count:]])

    return mix(x), tuple(mix(t) for t in targets)


def freq_mixstyle(
    logmel: torch.Tensor,
    *,
    probability: float,
    alpha: float,
    host_rng: np.random.Generator,
    generator: torch.Generator | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Freq-MixStyle (Schmid et al. 2022) on raw log-mels (B, mel, T).

    Each clip, independently with `probability`, is normalised per mel band (mean and std over
    time) and re-scaled with a mix of its own band statistics and those of a random partner clip of
    the batch, mixed with a weight lam ~ Beta(alpha, alpha) drawn per clip. The band statistics
    carry the recording device's frequency response, so mixing them invents new "devices" while
    the time structure (the scene) stays. Statistics are constants (no gradient flows through them).
    """
    batch = logmel.shape[0]
    if batch < 2 or probability <= 0:
        return logmel
    lam = to_device(host_rng.beta(alpha, alpha, size=batch).astype(np.float32), logmel.device)
    chosen = torch.rand(batch, generator=generator, device=logmel.device) < probability
    partner = torch.randperm(batch, generator=generator, device=logmel.device)
    mean = logmel.mean(dim=2, keepdim=True)
    std = (logmel.var(dim=2, keepdim=True) + eps).sqrt()
    weight = lam.to(logmel.dtype)[:, None, None]
    mixed_mean = weight * mean + (1 - weight) * mean[partner]
    mixed_std = weight * std + (1 - weight) * std[partner]
    restyled = (logmel - mean) / std * mixed_std + mixed_mean
    return torch.where(chosen[:, None, None], restyled, logmel)


def random_windows(logmel: torch.Tensor, frames: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One window of `frames` frames per clip of (B, mel, T), at a position drawn uniformly per clip:
    how a network trained on 1-s inputs sees a new second of every 10-s clip each epoch."""
    batch, mels, total = logmel.shape
    if total <= frames:
        return logmel
    starts = torch.randint(0, total - frames + 1, (batch, 1), generator=generator, device=logmel.device)
    index = (starts + torch.arange(frames, device=logmel.device))[:, None, :].expand(batch, mels, frames)
    return logmel.gather(2, index)
