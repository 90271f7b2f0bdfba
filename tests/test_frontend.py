"""Front end: log-mel equals librosa on generated clips; deltas; standardisation; model input."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import torch

from dsmn.data import load_audio, load_dataset
from dsmn.features import FrontEndConfig, LogMel, deltas, network_input, standardize
from dsmn.features.logmel import cpu_block_size


def _librosa_logmel(samples: np.ndarray) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=samples, sr=44100, n_fft=4096, hop_length=1024, win_length=4096, window="hann", center=True,
        pad_mode="reflect", power=2.0, n_mels=256, htk=True, norm="slaney",
    )
    return np.log10(mel + 1e-10)


def test_matches_librosa_on_generated_clips(tiny_data: Path) -> None:
    dataset = load_dataset(tiny_data)
    evaluate = dataset.split("evaluate")
    clips = [evaluate[0], evaluate[-1], dataset.split("train")[0]]
    waves = np.stack([load_audio(dataset.path(c))[0] for c in clips])
    ours = LogMel()(torch.from_numpy(waves)).numpy()
    assert ours.shape == (3, 256, 44)
    for k, wave in enumerate(waves):
        assert np.max(np.abs(ours[k] - _librosa_logmel(wave))) < 1e-3


def test_large_batches_are_computed_in_cache_sized_blocks(tiny_data: Path) -> None:
    """A batch larger than one CPU block gives the same rows as clip-by-clip (block order kept)."""
    dataset = load_dataset(tiny_data)
    clips = dataset.split("train")[:11]
    waves = torch.from_numpy(np.stack([load_audio(dataset.path(c))[0] for c in clips]))
    assert cpu_block_size(waves, 4096, 1024) < len(clips)
    together = LogMel()(waves)
    one_by_one = torch.stack([LogMel()(w) for w in waves])
    assert together.shape == (11, 256, 44)
    assert torch.allclose(together, one_by_one, atol=1e-5)


def test_single_clip_and_float64() -> None:
    wave = torch.randn(44100, dtype=torch.float64) * 0.1
    out = LogMel()(wave)
    assert out.shape == (256, 44) and out.dtype == torch.float64
    assert np.max(np.abs(out.numpy() - _librosa_logmel(wave.numpy()))) < 1e-4


def test_silent_clip_gives_no_nan() -> None:
    logmel = LogMel()(torch.zeros(2, 44100))
    assert torch.all(logmel == -10.0)
    x = network_input(logmel)
    assert x.shape == (2, 2, 256, 44) and torch.isfinite(x).all() and torch.all(x == 0)


def test_deltas_on_a_ramp() -> None:
    ramp = torch.arange(10, dtype=torch.float32).repeat(3, 1)  # c_t = t
    d = deltas(ramp)
    assert torch.allclose(d[:, 2:-2], torch.ones(3, 6))
    # edges replicated: d_0 = (1 (c1 - c0) + 2 (c2 - c0)) / 10, d_1 = (1 (c2 - c0) + 2 (c3 - c0)) / 10
    assert torch.allclose(d[0, :2], torch.tensor([0.5, 0.8]))
    assert torch.allclose(d[0, -2:], torch.tensor([0.8, 0.5]))
    quadratic = torch.arange(12, dtype=torch.float64) ** 2
    expected = librosa.feature.delta(quadratic.numpy(), width=5, mode="nearest")
    assert np.allclose(deltas(quadratic).numpy(), expected)


def test_standardize_per_clip_and_channel() -> None:
    x = torch.randn(4, 2, 256, 44) * torch.tensor([1.0, 5.0]).view(1, 2, 1, 1) + 3.0
    y = standardize(x)
    assert torch.allclose(y.mean(dim=(-2, -1)), torch.zeros(4, 2), atol=1e-5)
    assert torch.allclose(y.std(dim=(-2, -1), unbiased=False), torch.ones(4, 2), atol=1e-4)


def test_config_hash_tracks_every_setting() -> None:
    base = FrontEndConfig()
    assert base.settings_hash() == FrontEndConfig().settings_hash()
    assert base.settings_hash() != FrontEndConfig(n_mels=128).settings_hash()
    assert base.n_frames(44100) == 44


@pytest.mark.cuda
def test_runs_on_cuda() -> None:
    wave = torch.randn(2, 44100)
    frontend = LogMel()
    cpu = frontend(wave)
    gpu = frontend.to("cuda")(wave.cuda())
    assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu, atol=1e-3)
    assert network_input(gpu).device.type == "cuda"
