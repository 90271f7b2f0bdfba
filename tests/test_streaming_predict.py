"""Long recordings are predicted window by window in bounded memory, with the whole-file path's results."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from dsmn import models
from dsmn.data import load_audio
from dsmn.deploy.inference import load_for_inference
from dsmn.deploy.predict import FileFailure, Predictor
from dsmn.deploy.streaming import StreamingLogMel, stream_samples
from dsmn.features import FrontEndConfig


@pytest.fixture(scope="module")
def model(tmp_path_factory):  # noqa: ANN201
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("stream") / "model1.pt"
    torch.save(models.checkpoint_dict(models.create("model1"), frontend=asdict(FrontEndConfig()), deltas=True), path)
    return load_for_inference(path)


@pytest.fixture(scope="module")
def recordings(tiny_data: Path, tmp_path_factory) -> dict[str, Path]:
    """Real scene audio: 12.3 s at 44.1 kHz, and 12.7 s of stereo at 48 kHz (downmixed and resampled)."""
    folder = tmp_path_factory.mktemp("long")
    clips = sorted((tiny_data / "audio").glob("*.wav"))[:13]
    signal = np.concatenate([sf.read(str(p), dtype="float32")[0] for p in clips])
    sf.write(folder / "mono.wav", signal[: int(12.3 * 44100)], 44100, subtype="PCM_24")
    stereo = np.stack([signal, signal[::-1]], axis=1)[: int(12.7 * 44100)]
    sf.write(folder / "stereo48k.wav", soxr.resample(stereo, 44100, 48000), 48000, subtype="FLOAT")
    return {"mono": folder / "mono.wav", "stereo48k": folder / "stereo48k.wav"}


@pytest.mark.parametrize("name", ["mono", "stereo48k"])
@pytest.mark.parametrize("block_seconds", [0.05, 1.3, 10.0])
def test_streamed_prediction_equals_the_whole_file_one(model, recordings, name: str, block_seconds: float) -> None:
    path = recordings[name]
    whole = next(Predictor(model, stream_seconds=float("inf")).predict([(path, name)]))
    streamed = Predictor(model, stream_seconds=0, block_seconds=block_seconds).predict_streamed(path, name)
    assert streamed.window_starts_s == whole.window_starts_s and streamed.notes == whole.notes
    np.testing.assert_allclose(streamed.windows, whole.windows, rtol=0, atol=1e-6)
    assert np.argmax(streamed.probabilities) == np.argmax(whole.probabilities)


def test_streamed_log_mels_equal_the_front_end(model, recordings) -> None:
    predictor = Predictor(model)
    samples, _ = load_audio(recordings["stereo48k"], 44100, duration=None)
    expected, starts = predictor.windows(samples)
    streamer = StreamingLogMel(model.recipe.frontend, predictor.window_frames, window_batch=5)
    parts = list(streamer.windows(stream_samples(recordings["stereo48k"], 44100, 0.7), "x"))
    assert len(parts) >= 10 and max(len(p[1]) for p in parts) <= 5  # windows leave while the file is read
    assert sum((p[1] for p in parts), []) == starts
    torch.testing.assert_close(torch.cat([p[0] for p in parts]), expected, rtol=0, atol=1e-5)


def test_long_files_take_the_streamed_path_and_a_bad_block_fails_the_file(model, recordings, tmp_path) -> None:
    samples = sf.read(str(recordings["mono"]), dtype="float32")[0]
    samples[-1000] = 1e20  # in the last block: the file fails as a whole, nothing half-classified is kept
    sf.write(tmp_path / "late_glitch.wav", samples, 44100, subtype="FLOAT")
    predictor = Predictor(model, stream_seconds=5.0, block_seconds=1.0)
    streamed = {r.filename: r for r in predictor.predict([(recordings["mono"], "ok"), (tmp_path / "late_glitch.wav",
                                                                                      "bad")])}
    assert isinstance(streamed["bad"], FileFailure) and "samples reach 1e+20" in streamed["bad"].reason
    assert streamed["ok"].windows.shape == (13, 10)
