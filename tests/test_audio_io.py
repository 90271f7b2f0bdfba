"""Audio decoding: formats, downmix, resampling, length fitting and precise errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsmn.data import AudioError, load_audio

RATE = 44100


def _sine(seconds: float = 1.0, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.5 * np.sin(2 * np.pi * 440 * t)
    return mono if channels == 1 else np.stack([mono, 0.5 * mono], axis=1)


@pytest.mark.parametrize(
    ("suffix", "subtype"),
    [(".wav", "PCM_16"), (".wav", "PCM_24"), (".wav", "PCM_32"), (".wav", "FLOAT"), (".flac", "PCM_24"),
     (".ogg", "VORBIS")],
)
def test_formats(tmp_path: Path, suffix: str, subtype: str) -> None:
    path = tmp_path / f"clip{suffix}"
    sf.write(path, _sine(), RATE, subtype=subtype)
    samples, warnings = load_audio(path)
    assert samples.dtype == np.float32 and samples.shape == (RATE,) and warnings == []
    tolerance = 0.05 if subtype == "VORBIS" else 1e-3
    assert np.max(np.abs(samples[1000:-1000] - _sine()[1000:-1000])) < tolerance


def test_stereo_is_downmixed(tmp_path: Path) -> None:
    sf.write(tmp_path / "s.wav", _sine(channels=2), RATE, subtype="PCM_24")
    samples, warnings = load_audio(tmp_path / "s.wav")
    assert np.allclose(samples, 0.75 * _sine(), atol=1e-4)
    assert warnings == ["downmixed 2 channels to mono"]


def test_48k_is_resampled(tmp_path: Path) -> None:
    sf.write(tmp_path / "r.wav", _sine(rate=48000), 48000, subtype="PCM_16")
    samples, warnings = load_audio(tmp_path / "r.wav")
    assert samples.shape == (RATE,) and warnings == ["resampled from 48000 Hz to 44100 Hz"]
    assert np.max(np.abs(samples[2000:-2000] - _sine()[2000:-2000])) < 1e-2


def test_length_is_fitted(tmp_path: Path) -> None:
    sf.write(tmp_path / "short.wav", _sine(0.5), RATE)
    samples, warnings = load_audio(tmp_path / "short.wav")
    assert samples.shape == (RATE,) and np.all(samples[RATE // 2 :] == 0)
    assert warnings[0].startswith("padded with 0.500 s of silence")
    sf.write(tmp_path / "long.wav", _sine(1.5), RATE)
    samples, warnings = load_audio(tmp_path / "long.wav")
    assert samples.shape == (RATE,) and warnings[0].startswith("trimmed 0.500 s")
    samples, warnings = load_audio(tmp_path / "long.wav", duration=None)
    assert samples.shape == (int(1.5 * RATE),) and warnings == []


def test_unreadable_files_name_path_and_reason(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(range(40)))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    silent = tmp_path / "zero.wav"
    sf.write(silent, np.zeros(0, dtype=np.float32), RATE)
    for path in (corrupt, empty, text):
        with pytest.raises(AudioError, match=rf"{path.name}: not a readable audio file"):
            load_audio(path)
    with pytest.raises(AudioError, match="zero.wav: contains no audio samples"):
        load_audio(silent)
    with pytest.raises(AudioError, match="missing.wav: file not found"):
        load_audio(tmp_path / "missing.wav")
    assert issubclass(AudioError, ValueError)
