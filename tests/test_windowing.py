"""Clips longer than 1 s (TAU 2020's 10-s clips): window layout, 1-s window averaging, whole-clip
pooling, on every registered model and on a real 10-s recording."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dsmn import models
from dsmn.data.audio import load_audio
from dsmn.features import FrontEndConfig, LogMel, network_input
from dsmn.models.registry import frontend_input_shape
from dsmn.models.windowing import clip_frames


def recording_slices(root: Path) -> list[Path]:
    """The ten 1-s device-a slices (slice order) of the first recording of a TAU-format dataset."""
    first = sorted((root / "audio").glob("*-0-a.wav"))[0]
    prefix = first.name[: -len("-0-a.wav")]  # scene-city-location-segment
    slices = [root / "audio" / f"{prefix}-{k}-a.wav" for k in range(10)]
    assert all(path.is_file() for path in slices)
    return slices


@pytest.fixture(scope="module")
def ten_second_wav(tiny_data, tmp_path_factory) -> Path:
    """A real 10-s WAV in the TAU 2020 layout: the ten consecutive slices of one generated recording."""
    audio = [sf.read(path, dtype="float32")[0] for path in recording_slices(tiny_data)]
    path = tmp_path_factory.mktemp("tau2020") / "ten_seconds.wav"
    sf.write(path, np.concatenate(audio), 44100, subtype="PCM_24")
    return path


def ten_second_logmel(path: Path, name: str) -> torch.Tensor:
    """(1, mel, frames) log-mel of the 10-s file at the front end of model `name`."""
    samples, _ = load_audio(path, duration=None)
    config = FrontEndConfig(**models.entry(name).frontend)
    return LogMel(config)(torch.from_numpy(samples)).unsqueeze(0)


def prepare_for(name: str):
    """Raw log-mel windows -> the model's input: standardised log-mel, plus deltas when it takes them."""
    return lambda logmel: network_input(logmel, models.entry(name).deltas)


# --- window layout ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frames", "window", "hop", "expected"),
    [
        (431, 44, 44, [0, 44, 88, 132, 176, 220, 264, 308, 352, 387]),
        (440, 44, 44, list(range(0, 397, 44))),
        (44, 44, 44, [0]),
        (30, 44, 44, [0]),
        (66, 44, 22, [0, 22]),
        (67, 44, 22, [0, 22, 23]),
    ],
)
def test_window_starts_cover_the_clip(frames, window, hop, expected):
    starts = models.window_starts(frames, window, hop)
    assert starts == expected
    assert starts[-1] + min(window, frames) == frames  # the last window reaches the end


def test_window_length_follows_the_model_front_end():
    assert clip_frames(models.create("model1")) == 44
    assert clip_frames(models.create("dssc_small")) == 44
    assert clip_frames(models.create("dcase2022_baseline")) == 51


# --- every registered model on a 10-s input, both ways ---------------------------------------------


@pytest.mark.parametrize("name", models.available())
def test_ten_second_input_whole_and_windowed(name):
    torch.manual_seed(0)
    shape = frontend_input_shape(models.entry(name).frontend, models.entry(name).deltas, seconds=10.0)
    assert shape[-1] == {44: 431, 51: 501}[models.entry(name).input_shape[-1]]
    net = models.create(name).train()
    x = torch.randn(1, *shape)
    whole = models.classify_clip(net, x)
    windowed = models.classify_windows(net, x)
    for probabilities in (whole, windowed):
        assert probabilities.shape == (1, 10)
        assert torch.isfinite(probabilities).all()
        assert torch.allclose(probabilities.sum(dim=-1), torch.ones(1), atol=1e-5)
    assert net.training  # mode restored


def test_windowed_is_the_mean_of_the_window_probabilities():
    torch.manual_seed(0)
    net = models.create("dssc_small").eval()
    x = torch.randn(2, 2, 64, 431)  # 64 mel bins keep it fast: the network pools globally
    starts = models.window_starts(431, 44, 44)
    with torch.no_grad():
        each = [torch.softmax(net(x[..., s : s + 44].contiguous())[:, :10], dim=-1) for s in starts]
    expected = torch.stack(each, dim=1).mean(dim=1)
    assert torch.allclose(models.classify_windows(net, x), expected, atol=1e-6)


def test_one_second_input_is_one_window_equal_to_the_whole_pass():
    torch.manual_seed(0)
    net = models.create("model1")
    x = torch.randn(3, 2, 256, 44)
    assert torch.allclose(models.classify_windows(net, x), models.classify_clip(net, x), atol=1e-6)


@pytest.mark.parametrize("name", ["model1", "dcase2022_baseline"])
def test_real_ten_second_recording_through_each_front_end(ten_second_wav, name):
    """A real 10-s WAV: windows of the raw log-mel prepared like 1-s training clips equal
    classifying each 1-s window's own model input; the whole-clip pass also works."""
    logmel = ten_second_logmel(ten_second_wav, name)
    frames = clip_frames(models.create(name))
    assert logmel.shape == (1, models.entry(name).input_shape[1], {44: 431, 51: 501}[frames])
    torch.manual_seed(0)
    net = models.create(name).eval()
    prepare = prepare_for(name)
    windowed = models.classify_windows(net, logmel, prepare=prepare)
    starts = models.window_starts(logmel.shape[-1], frames, frames)
    assert len(starts) == 10
    clips = torch.cat([prepare(logmel[..., s : s + frames]) for s in starts])  # each 1-s window on its own
    assert clips.shape == (10, *models.entry(name).input_shape)
    with torch.no_grad():
        each = torch.softmax(net(clips)[:, :10], dim=-1)
    assert torch.allclose(windowed, each.mean(0, keepdim=True), atol=1e-5)
    whole = models.classify_clip(net, logmel, prepare=prepare)
    assert whole.shape == windowed.shape == (1, 10)
