"""Plausible device impulse responses (microphones, phones) for DIR augmentation demos and tests.

Real collections (MicIRP's 67 microphone IRs) cannot be downloaded everywhere, so this writes a
small, deterministic stand-in: each IR is a unit impulse through a small-device chain - a high-pass
(small membrane, 80-400 Hz), a low-pass (3.5-16 kHz), one to three resonant peaks or dips (housing
and port resonances, +-3..10 dB), sometimes a housing reflection 0.2-1.5 ms late (comb ripple) - cut
to 5-20 ms with a fade-out, at unit energy. Shorter than a 4096-sample analysis window, as real
device IRs are, which is what makes the log-mel approximation of dsmn.training.device_ir close.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from dsmn.files import atomic_path, write_text


@dataclass
class IRSpec:
    """The parameters of one synthetic device IR (written to irs.json beside the WAVs)."""

    name: str
    sample_rate: int
    length_ms: float
    highpass_hz: float
    lowpass_hz: float
    resonances: list[tuple[float, float, float]]  # (frequency Hz, gain dB, Q)
    reflection: tuple[float, float] | None  # (delay ms, gain)


def draw_spec(index: int, seed: int, sample_rate: int) -> IRSpec:
    rng = np.random.default_rng([seed, index, 0x1D])
    top = min(16000.0, 0.45 * sample_rate)
    lowpass = float(rng.uniform(3500.0, top))
    resonances = [(float(rng.uniform(800.0, 0.9 * lowpass)), float(rng.choice([-1, 1]) * rng.uniform(3, 10)),
                   float(rng.uniform(1.0, 4.0))) for _ in range(int(rng.integers(1, 4)))]
    reflection = (float(rng.uniform(0.2, 1.5)), float(rng.uniform(0.1, 0.4))) if rng.random() < 0.5 else None
    return IRSpec(f"ir_{index:03d}", sample_rate, float(rng.uniform(5.0, 20.0)), float(rng.uniform(80.0, 400.0)),
                  lowpass, resonances, reflection)


def peaking_biquad(frequency: float, gain_db: float, q: float, sample_rate: int) -> np.ndarray:
    """RBJ audio-EQ-cookbook peaking filter as one second-order section."""
    a = 10 ** (gain_db / 40)
    w = 2 * np.pi * frequency / sample_rate
    alpha = np.sin(w) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


def render(spec: IRSpec) -> np.ndarray:
    """The IR of `spec` as float32 samples at spec.sample_rate, unit energy."""
    sr = spec.sample_rate
    n = max(8, round(spec.length_ms * 1e-3 * sr))
    impulse = np.zeros(n)
    impulse[0] = 1.0
    if spec.reflection is not None:
        delay = round(spec.reflection[0] * 1e-3 * sr)
        if delay < n:
            impulse[delay] += spec.reflection[1]
    sections = [signal.butter(2, spec.highpass_hz, "highpass", fs=sr, output="sos"),
                signal.butter(4, spec.lowpass_hz, "lowpass", fs=sr, output="sos"),
                *(peaking_biquad(f, g, q, sr) for f, g, q in spec.resonances)]
    ir = signal.sosfilt(np.concatenate(sections), impulse)
    fade = round(0.3 * n)
    ir[n - fade:] *= np.cos(np.linspace(0, np.pi / 2, fade)) ** 2
    return (ir / np.sqrt(np.sum(ir**2))).astype(np.float32)


def synth_irs(out: str | Path, count: int = 12, seed: int = 0, sample_rate: int = 48000) -> list[Path]:
    """Write `count` device IRs as 24-bit WAVs `ir_000.wav` ... and their parameters in irs.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs = [draw_spec(i, seed, sample_rate) for i in range(count)]
    paths = []
    for spec in specs:
        path = out / f"{spec.name}.wav"
        with atomic_path(path) as tmp:
            sf.write(str(tmp), render(spec), sample_rate, subtype="PCM_24")  # float WAVs carry a timestamp
        paths.append(path)
    write_text(out / "irs.json", json.dumps({"seed": seed, "irs": [asdict(s) for s in specs]}, indent=2) + "\n")
    return paths
