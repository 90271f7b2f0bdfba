"""Sound sources of the synthetic scenes: shaped noise, tones, transients, voices, vehicles, birds.

Each generator adds into a float64 buffer in place (`out`), vectorised with numpy; spectral shapes are
Gaussian bumps and tilts over log-frequency so every source can be re-coloured per location and event.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import fft as sfft
from scipy import signal

SR = 44100
Rng = np.random.Generator


def fast_len(n: int) -> int:
    """FFT length >= n with small prime factors (arbitrary lengths can be 3x slower)."""
    return sfft.next_fast_len(n, real=True)


@functools.lru_cache(maxsize=16)
def _freqs(n: int, sr: int = SR) -> np.ndarray:
    """Frequencies of the rfft bins used for a signal of n samples (computed at `fast_len(n)`)."""
    f = np.fft.rfftfreq(fast_len(n), 1.0 / sr)
    f[0] = f[1] if n > 1 else 1.0
    return f


def filtered(x: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Filtering (circular, at the FFT length) by a response over `_freqs(len(x))`."""
    n = x.shape[-1]
    m = fast_len(n)
    gain = gain.astype(np.complex64 if np.iscomplexobj(gain) else np.float32, copy=False)
    spectrum = sfft.rfft(x.astype(np.float32, copy=False), m) * gain
    return sfft.irfft(spectrum, m)[..., :n].astype(np.float64)


_LOG2: dict[tuple[int, float], np.ndarray] = {}


def _log2_freqs(freqs: np.ndarray) -> np.ndarray:
    """log2 of a frequency grid, cached: the same few grids are used thousands of times."""
    key = (freqs.shape[0], float(freqs[-1]))
    if key not in _LOG2:
        _LOG2[key] = np.log2(freqs).astype(np.float32)
    return _LOG2[key]


def bump(freqs: np.ndarray, center: float | np.ndarray, width_oct: float) -> np.ndarray:
    """Gaussian band over log2 frequency, peak 1 at `center`."""
    if freqs.ndim == 1 and np.ndim(center) == 0:
        z = (_log2_freqs(freqs) - np.float32(np.log2(center))) * np.float32(1.0 / width_oct)
        return np.exp(np.float32(-0.5) * z * z)
    return np.exp(-0.5 * (np.log2(freqs / center) / width_oct) ** 2)


def smooth_response_db(rng: Rng, freqs: np.ndarray, bumps: int, spread_db: float, tilt_db_oct: float) -> np.ndarray:
    """A random smooth frequency response in dB: a tilt plus a few bumps and dips (rooms, mics)."""
    db = tilt_db_oct * np.log2(freqs / 1000.0)
    for _ in range(bumps):
        center = float(np.exp(rng.uniform(np.log(60.0), np.log(16000.0))))
        db += rng.normal(0.0, spread_db) * bump(freqs, center, rng.uniform(0.3, 1.2))
    return db


def shaped_noise(rng: Rng, n: int, gain: np.ndarray | None = None, db: np.ndarray | None = None) -> np.ndarray:
    """Gaussian noise of length n coloured by an amplitude (`gain`) or dB response over `_freqs(n)`.

    Drawn directly as a random spectrum (one inverse FFT instead of two transforms).
    """
    m = fast_len(n)
    spectrum = rng.standard_normal(2 * (m // 2 + 1), dtype=np.float32).view(np.complex64)
    if db is not None:
        gain = 10.0 ** (db / 20.0)
    if gain is not None:
        spectrum *= gain.astype(np.float32, copy=False)
    return sfft.irfft(spectrum, m)[:n].astype(np.float64)


def slow_envelope(rng: Rng, n: int, rate_hz: float, depth: float, sr: int = SR) -> np.ndarray:
    """Positive smooth random modulation (mean about 1), fluctuating at about `rate_hz`."""
    knots = max(4, int(n / sr * rate_hz * 2) + 4)
    values = rng.standard_normal(knots)
    step = 100  # control rate: 441 Hz is plenty for loudness changes
    coarse = np.interp(np.linspace(0, knots - 3, -(-n // step)), np.arange(knots), values)
    return np.repeat(np.exp(depth * coarse), step)[:n]


def add_at(out: np.ndarray, start: int, sound: np.ndarray) -> None:
    """Add `sound` into `out` from sample `start`, cropped at both ends."""
    begin, end = max(start, 0), min(start + sound.shape[0], out.shape[0])
    if end > begin:
        out[begin:end] += sound[begin - start : end - start]


def bursts(
    out: np.ndarray,
    rng: Rng,
    times: np.ndarray,
    levels: np.ndarray,
    centers: np.ndarray,
    width_oct: float,
    decay_s: float,
    length_s: float = 0.12,
) -> None:
    """Band-limited noise transients (steps, clacks, clicks): sharp attack, exponential decay."""
    if times.size == 0:
        return
    length = int(length_s * SR)
    k = np.arange(length) / SR
    envelope = (1.0 - np.exp(-k / 0.0015)) * np.exp(-k / decay_s)
    freqs = _freqs(length)
    shaped = filtered(rng.standard_normal((times.size, length)), bump(freqs[None, :], centers[:, None], width_oct))
    shaped *= envelope
    shaped /= np.sqrt((shaped**2).mean(axis=1, keepdims=True)) + 1e-12
    for t, level, sound in zip(times, levels, shaped, strict=True):
        add_at(out, int(t * SR), level * sound)


def tone(
    frequency: np.ndarray | float,
    length: int,
    partials: np.ndarray,
    amplitudes: np.ndarray,
    rng: Rng,
    envelope: np.ndarray | None = None,
) -> np.ndarray:
    """Sum of partials of a (possibly gliding) fundamental, phase-continuous; partials above 20 kHz drop."""
    f = np.broadcast_to(np.asarray(frequency, dtype=np.float64), (length,))
    cycles = np.cumsum(f) / SR
    top = float(f.max())
    sound = np.zeros(length, dtype=np.float32)
    for ratio, amp in zip(partials, amplitudes, strict=True):
        if ratio * top < 20000:
            # wrap the phase in float64 before going to float32 so long tones keep their pitch
            phase = ((ratio * cycles + rng.uniform(0, 1)) % 1.0).astype(np.float32)
            sound += np.float32(amp) * np.sin(np.float32(2 * np.pi) * phase)
    return sound if envelope is None else sound * envelope


def decaying(length: int, attack_s: float, decay_s: float) -> np.ndarray:
    k = np.arange(length) / SR
    return (1.0 - np.exp(-k / attack_s)) * np.exp(-k / decay_s)


def rms(x: np.ndarray) -> float:
    # einsum, not np.dot: BLAS threads spinning in every worker process cost more than the sum itself
    return float(np.sqrt(np.einsum("i,i->", x, x) / max(x.shape[0], 1)) + 1e-12)


@functools.lru_cache(maxsize=512)
def hann(length: int) -> np.ndarray:
    """Cached Hann window (read-only): events reuse a few hundred lengths thousands of times."""
    window = np.hanning(length)
    window.flags.writeable = False
    return window


def room_response(rng: Rng, n: int, rt60: float, wet: float) -> np.ndarray | None:
    """Frequency response (complex, over `_freqs(n)`) of dry + diffuse reverberation with `rt60`.

    Applied circularly over the 10-s recording: the tail that wraps to the start stands in for the
    reverberation of sound before the recording began. None when the place is dry.
    """
    if rt60 <= 0.05 or wet <= 0:
        return None
    length = int(min(rt60, 2.5) * SR)
    k = np.arange(length) / SR
    ir = rng.standard_normal(length) * np.exp(-6.9 * k / rt60)
    ir = signal.lfilter([0.6], [1.0, -0.4], ir)  # air absorption: dull the tail a little
    ir /= np.sqrt(np.sum(ir**2))
    return (1.0 - wet) + wet * sfft.rfft(ir.astype(np.float32), fast_len(n))


CONTROL = 100  # samples per control-rate step (441 Hz): pitch and loudness contours


def control_times(n: int) -> np.ndarray:
    """Times in seconds of the control-rate points of a signal of n samples."""
    return np.arange(-(-n // CONTROL)) * CONTROL / SR


def pulse_positions(f0: np.ndarray, n: int) -> np.ndarray:
    """Sample positions of one impulse per period of a fundamental given at control rate."""
    cycles = np.concatenate([[0.0], np.cumsum(f0) * CONTROL / SR])
    samples = np.arange(cycles.shape[0]) * CONTROL
    positions = np.interp(np.arange(1, int(cycles[-1]) + 1), cycles, samples).astype(np.int64)
    return positions[positions < n]


def pulse_train(f0: np.ndarray, n: int, weight: np.ndarray | None = None) -> np.ndarray:
    """Impulses at the periods of f0 (control rate), scaled by the full-rate `weight` if given."""
    pulses = np.zeros(n)
    positions = pulse_positions(f0, n)
    pulses[positions] = 1.0 if weight is None else weight[positions]
    return pulses


def pulse_voice(rng: Rng, f0: np.ndarray, n: int, db: np.ndarray) -> np.ndarray:
    """Harmonic source: a pulse train at f0 (control rate), coloured by a dB response (one FFT)."""
    return filtered(pulse_train(f0, n), 10.0 ** (db / 20.0))
