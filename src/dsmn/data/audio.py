"""Decoding audio files into the clips the front end expects: mono float32 at 44.1 kHz.

Deviations that can be repaired (stereo, another sample rate, a clip slightly too short or long) are
repaired and reported as warnings, so a dataset with a few odd files still trains; files that cannot
be decoded raise `AudioError`, which names the file and the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from dsmn.data.errors import AudioError

SAMPLE_RATE = 44100
# Decoded samples lie in [-1, 1] for integer formats; float formats may exceed full scale a little
# (overs kept by float recorders and editors), but not by 60 dB: no converter produces that, and
# such samples (1e20 in a corrupt float WAV) overflow the power spectrum into inf / NaN log-mels.
MAX_ABS_SAMPLE = 1000.0


def load_audio(
    path: str | Path, sample_rate: int = SAMPLE_RATE, duration: float | None = 1.0
) -> tuple[np.ndarray, list[str]]:
    """Mono float32 samples at `sample_rate`, padded / trimmed to `duration` seconds when given.

    Returns (samples, warnings). `duration=None` keeps the file's length (prediction on any file).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file not found")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise AudioError(path, f"not a readable audio file ({_short(error)})") from None
    warnings: list[str] = []
    if data.shape[0] == 0:
        raise AudioError(path, "contains no audio samples")
    check_samples(data, path)
    if data.shape[1] > 1:
        warnings.append(f"downmixed {data.shape[1]} channels to mono")
    samples = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if rate != sample_rate:
        warnings.append(f"resampled from {rate} Hz to {sample_rate} Hz")
        samples = soxr.resample(samples, rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
    if duration is not None:
        samples = fit_length(samples, round(duration * sample_rate), sample_rate, warnings)
    return np.ascontiguousarray(samples, dtype=np.float32), warnings


def check_samples(data: np.ndarray, path: str | Path) -> None:
    """`AudioError` for samples that are NaN / infinite or beyond the decoded format's range."""
    if data.size == 0:
        return
    peak = float(np.max(np.abs(data)))  # NaN propagates through max, inf stays inf
    if not np.isfinite(peak):
        raise AudioError(path, "contains NaN or infinite samples")
    if peak > MAX_ABS_SAMPLE:
        raise AudioError(path, f"samples reach {peak:.3g}, far beyond full scale (1.0; at most "
                         f"{MAX_ABS_SAMPLE:g} is accepted): a corrupt or mis-scaled float file")


def decode_task(task: tuple[int, str, int, float | None]) -> tuple[int, np.ndarray | None, list[str], str | None]:
    """(index, path, rate, duration) -> (index, samples or None, warnings, error reason or None).

    For worker processes: lives here, away from torch, so a spawned decoder starts in a fraction of a
    second; never raises, so one bad file cannot stop a build of 230k files.
    """
    index, path, sample_rate, duration = task
    try:
        samples, notes = load_audio(path, sample_rate, duration)
    except AudioError as error:
        return index, None, [], error.reason
    except Exception as error:  # a decoder bug: report it with the file rather than abort
        return index, None, [], f"{type(error).__name__}: {error}"
    return index, samples, notes, None


def fit_length(samples: np.ndarray, length: int, sample_rate: int, warnings: list[str]) -> np.ndarray:
    """Zero-pad or trim to `length` samples, noting the change in `warnings`."""
    have = samples.shape[0]
    if have == length:
        return samples
    if have < length:
        warnings.append(f"padded with {(length - have) / sample_rate:.3f} s of silence (clip was "
                        f"{have / sample_rate:.3f} s)")
        return np.concatenate([samples, np.zeros(length - have, dtype=samples.dtype)])
    warnings.append(f"trimmed {(have - length) / sample_rate:.3f} s (clip was {have / sample_rate:.3f} s)")
    return samples[:length]


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:200]
