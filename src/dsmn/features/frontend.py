"""The DSMN front end as configuration plus a small module (torchaudio-style transform)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch
from torch import nn

from dsmn.features import logmel as F


@dataclass(frozen=True)
class FrontEndConfig:
    """The log-mel settings (docs/architecture.md). Any change alters the features, so caches key on
    `settings_hash()`."""

    sample_rate: int = 44100
    n_fft: int = 4096
    win_length: int = 4096
    hop_length: int = 1024
    n_mels: int = 256
    htk: bool = True
    norm: str | None = "slaney"
    fmin: float = 0.0
    fmax: float | None = None
    log_offset: float = 1e-10
    center: bool = True
    pad_mode: str = "reflect"

    def settings_hash(self) -> str:
        """Short stable hash of every setting, stored in cache manifests."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def n_frames(self, n_samples: int) -> int:
        """Frames of a clip of `n_samples` samples (44 for 1 s at the defaults)."""
        return F.n_frames(n_samples, self.n_fft, self.hop_length, self.center)


class LogMel(nn.Module):
    """Waveforms (batch, samples) or (samples,) -> log10 mel power (batch, n_mels, frames).

    The window and filterbank are buffers, so `.to(device)` moves them and the computation runs
    wherever the input lives (CPU or CUDA).
    """

    def __init__(self, config: FrontEndConfig | None = None) -> None:
        super().__init__()
        self.config = config or FrontEndConfig()
        c = self.config
        self.register_buffer("window", torch.hann_window(c.win_length), persistent=False)
        fb = F.mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, htk=c.htk, norm=c.norm, fmin=c.fmin, fmax=c.fmax)
        self.register_buffer("filterbank", fb, persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        c = self.config
        return F.log_mel(
            waveform, self.filterbank, self.window, n_fft=c.n_fft, hop_length=c.hop_length,
            center=c.center, pad_mode=c.pad_mode, log_offset=c.log_offset,
        )


class ModelInput(nn.Module):
    """Log-mel (batch, n_mels, frames) -> standardised [log-mel, deltas] (batch, 2, n_mels, frames)."""

    def __init__(self, delta_width: int = 5) -> None:
        super().__init__()
        self.delta_width = delta_width

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return F.network_input(logmel, True, self.delta_width)
