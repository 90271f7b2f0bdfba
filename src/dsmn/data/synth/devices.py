"""Recording devices as signal chains: frequency response, gain, dynamics, noise floor.

The responses are fixed per device name (not per dataset seed), as a real phone's microphone is:
spectrum correction can then learn them from the parallel recordings. s4..s6 are harsher (narrower band,
stronger colouring, higher noise floors) and only appear in evaluate / test, as unseen devices. Their
compression stays within the training devices' range: the gap they open is mostly spectral, the part
a device augmentation such as spectrum correction can learn to bridge.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft

from dsmn.data.synth.sources import SR, Rng, _freqs, bump, fast_len, shaped_noise, smooth_response_db


@dataclass(frozen=True)
class Device:
    highpass_hz: float
    lowpass_hz: float
    peaks: tuple[tuple[float, float, float], ...]  # (center Hz, gain dB, width octaves)
    random_spread_db: float  # a fixed random ripple on top (seeded by the device name)
    noise_dbfs: float
    drive: float  # tanh soft-clipping drive; 0 = linear
    gain_db: float


DEVICES: dict[str, Device] = {
    "a": Device(20, 20000, (), 0.5, -90, 0.0, 0.0),
    "b": Device(120, 16000, ((3000, 3, 0.8),), 1.5, -78, 1.5, -2.0),
    "c": Device(200, 11000, ((1000, 4, 0.7), (6000, -3, 0.5)), 2.0, -72, 2.5, 1.0),
    "s1": Device(80, 14000, ((500, -3, 1.0),), 3.0, -80, 0.0, 0.0),
    "s2": Device(150, 18000, ((2500, 4, 0.6),), 3.0, -76, 1.0, -3.0),
    "s3": Device(60, 9000, ((250, 3, 1.0),), 3.0, -74, 2.0, 2.0),
    "s4": Device(300, 8000, ((1500, 5, 0.5), (4000, -4, 0.4)), 3.0, -68, 1.5, 0.0),
    "s5": Device(250, 7000, ((800, -4, 0.6), (2500, 5, 0.5)), 3.0, -70, 1.0, -4.0),
    "s6": Device(400, 11000, ((300, 4, 0.6), (6000, 4, 0.5)), 3.0, -70, 2.0, 0.0),
}


@functools.lru_cache(maxsize=32)
def response_gain(name: str, n: int) -> np.ndarray:
    """Amplitude response over `_freqs(n)` (cached: the same few devices filter every recording)."""
    return (10 ** (response_db(name, _freqs(n, SR)) / 20)).astype(np.float32)


def response_db(name: str, freqs: np.ndarray) -> np.ndarray:
    """The device's magnitude response in dB over `freqs` (deterministic by device name)."""
    device = DEVICES[name]
    db = -10 * np.log10(1 + (device.highpass_hz / freqs) ** 4) - 10 * np.log10(1 + (freqs / device.lowpass_hz) ** 8)
    for center, gain, width in device.peaks:
        db += gain * bump(freqs, center, width)
    ripple_rng = np.random.default_rng(zlib.crc32(name.encode()))
    return db + smooth_response_db(ripple_rng, freqs, bumps=5, spread_db=device.random_spread_db, tilt_db_oct=0.0)


@functools.lru_cache(maxsize=16)
def _noise_bank(name: str, n: int) -> np.ndarray:
    """Two recordings' worth of the device's self-noise (unit RMS); each recording reads a random
    stretch of it, which saves a transform per clip."""
    rng = np.random.default_rng(zlib.crc32(f"noise-{name}".encode()))
    noise = shaped_noise(rng, 2 * n, gain=1 / np.sqrt(_freqs(2 * n, SR) / 1000).clip(0.3, 10))
    return (noise / np.sqrt(np.mean(noise**2))).astype(np.float32)


def record(name: str, spectrum: np.ndarray, n: int, rng: Rng) -> np.ndarray:
    """The scene (its spectrum at `fast_len(n)`) as captured by device `name`: filtered, amplified,
    compressed, plus the device's noise floor."""
    device = DEVICES[name]
    m = fast_len(n)
    y = sfft.irfft(spectrum * response_gain(name, n), m)[:n].astype(np.float64)
    y *= 10 ** ((device.gain_db + rng.uniform(-2, 2)) / 20)
    if device.drive > 0:
        y = np.tanh(device.drive * y * 4) / (device.drive * 4)
    start = int(rng.integers(n))
    y += _noise_bank(name, n)[start : start + n] * 10 ** (device.noise_dbfs / 20)
    return y
