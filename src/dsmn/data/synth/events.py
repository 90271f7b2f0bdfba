"""Sound events and textures of the synthetic scenes.

Every function has the signature `(out, rng, count, level, loc)`: it adds `count` events (or one
texture when count > 0) at amplitude `level` (relative to the background bed, whose RMS is 1) into the
10-s buffer `out`. `loc` holds the location's fixed parameters (its walkers' floor, its engine, its
birds), so a place keeps its character across recordings while events differ.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dsmn.data.synth.sources import (
    CONTROL,
    SR,
    Rng,
    _freqs,
    add_at,
    bump,
    bursts,
    control_times,
    decaying,
    filtered,
    hann,
    pulse_train,
    pulse_voice,
    rms,
    shaped_noise,
    slow_envelope,
    tone,
)

Event = Callable[[np.ndarray, Rng, int, float, dict], None]


def _seconds(out: np.ndarray) -> float:
    return out.shape[0] / SR


def footsteps(out: np.ndarray, rng: Rng, count: int, level: float, loc: dict) -> None:
    """Walkers: regular steps (0.45-0.65 s apart), each walker on its own floor and loudness."""
    for _ in range(count):
        interval = loc["step_interval"] * rng.uniform(0.9, 1.1)
        steps = int(rng.integers(4, 14))
        start = rng.uniform(-2.0, _seconds(out) - 1.0)
        times = start + interval * np.arange(steps) + rng.normal(0, 0.012, steps)
        ramp = np.hanning(steps + 2)[1:-1] ** 0.5
        levels = level * rng.uniform(0.5, 1.5) * ramp * rng.uniform(0.7, 1.3, steps)
        centers = np.full(steps, loc["step_center"] * rng.uniform(0.7, 1.4))
        bursts(out, rng, times, levels, centers, 1.0, rng.uniform(0.012, 0.03))


def suitcase(out: np.ndarray, rng: Rng, count: int, level: float, loc: dict) -> None:
    """Rolling luggage: fast regular clicks (8-14 per second) for one to three seconds."""
    for _ in range(count):
        rate = rng.uniform(8.0, 14.0)
        duration = rng.uniform(1.0, 3.0)
        times = rng.uniform(-0.5, _seconds(out) - 0.5) + np.arange(0, duration, 1.0 / rate)
        levels = level * np.hanning(times.size + 2)[1:-1] * rng.uniform(0.8, 1.2, times.size)
        bursts(out, rng, times, levels, np.full(times.size, rng.uniform(300.0, 1500.0)), 0.8, 0.008, 0.05)


def rattle(out: np.ndarray, rng: Rng, count: int, level: float, loc: dict) -> None:
    """Vehicle interior rattles: random small high-pitched clicks."""
    if count <= 0:
        return
    n = rng.poisson(rng.uniform(20, 80))
    times = rng.uniform(0, _seconds(out), n)
    bursts(out, rng, times, level * rng.uniform(0.3, 1.0, n), rng.uniform(2000, 6000, n), 0.7, 0.004, 0.03)


def ticks(out: np.ndarray, rng: Rng, count: int, level: float, loc: dict) -> None:
    """Turn-indicator ticks: about 1.5 per second for several seconds (a short double click)."""
    for _ in range(count):
        period = rng.uniform(0.6, 0.75)
        times = rng.uniform(-2.0, _seconds(out) - 2.0) + period * np.arange(int(rng.integers(5, 14)))
        times = np.concatenate([times, times + 0.35 * period])
        bursts(out, rng, times, np.full(times.size, level), np.full(times.size, rng.uniform(1500, 4000)),
               0.6, 0.006, 0.03)


def clacks(out: np.ndarray, rng: Rng, count: int, level: float, loc: dict) -> None:
    """Rail joints under a moving train: pairs of thumps (the bogie), period set by the speed."""
    if count <= 0:
        return
    period = loc["rail_period"] * rng.uniform(0.7, 1.4)
    gap = rng.uniform(0.08, 0.16)
    starts = np.arange(rng.uniform(0, period), _seconds(out), period)
    starts = starts * (1 + rng.uniform(-0.1, 0.1) * starts / _seconds(out))
    times = np.concatenate([starts, starts + gap])
    center = rng.uniform(150, 500)
    levels = level * rng.uniform(0.7, 1.3, times.size)
    bursts(out, rng, times, levels, np.full(times.size, center), 1.2, rng.uniform(0.03, 0.06), 0.2)
    bursts(out, rng, times + 0.002, 0.3 * levels, np.full(times.size, 3000.0), 0.5, 0.01, 0.05)


def babble(out: np.ndarray, rng: Rng, count: int, level: float, loc: dict) -> None:
    """Near talkers: voiced syllables (pulses at each talker's pitch) in talk spurts, through a shared
    vocal-tract colouring (one filter for all talkers keeps this cheap)."""
    if count <= 0:
        return
    n = out.shape[0]
    t = control_times(n)
    freqs = _freqs(n)
    excitation = np.zeros(n)
    for _ in range(count):
        f0 = rng.uniform(95, 240) * (1 + 0.12 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 6)))
        envelope = np.zeros(n)
        position = rng.uniform(-1.0, 1.0)
        while position < _seconds(out):
            spurt_end = position + rng.uniform(0.8, 3.0)
            while position < spurt_end:
                length = round(rng.uniform(0.1, 0.25), 2)
                add_at(envelope, int(position * SR), hann(int(length * SR)) * rng.uniform(0.4, 1.0))
                position += length + rng.uniform(0.01, 0.12)
            position += rng.uniform(0.3, 2.0)
        excitation += pulse_train(f0, n, envelope) * rng.uniform(0.5, 1.2)
    db = -9 * np.log2(freqs / 300).clip(0) - 20 * np.log2(80 / freqs).clip(0)
    for formant in (rng.uniform(400, 900), rng.uniform(1000, 2200), rng.uniform(2300, 3200)):
        db += 12 * bump(freqs, formant, 0.35)
    gain = 10 ** (db / 20)
    sound = filtered(excitation, gain)
    out += level * sound / (np.sqrt(np.mean(gain**2) * 150 / SR) + 1e-9)


def crowd(out: np.ndarray, rng: Rng, count: int, level: float, loc: dict) -> None:
    """Distant crowd murmur: speech-shaped noise, gently modulated at syllabic and slower rates."""
    if count <= 0:
        return
    n = out.shape[0]
    freqs = _freqs(n)
    db = 10 * bump(freqs, rng.uniform(350, 700), 0.8) - 9 * np.log2(freqs / 500).clip(0) - 30 * np.log2(
        100 / freqs).clip(0)
    noise = shaped_noise(rng, n, db=db)
    sound = noise * slow_envelope(rng, n, rng.uniform(2.0, 4.0), 0.25) * slow_envelope(rng, n, 0.3, 0.2)
    out += level * sound / rms(sound)


def music(out: np.ndarray, rng: Rng, count: int, level: float, loc: dict) -> None:
    """Background music: chords that change every beat bar, a kick on the beat, hi-hat between."""
    if count <= 0:
        return
    beat = 60.0 / loc["tempo"]
    onsets = np.arange(rng.uniform(0, beat), _seconds(out), beat)
    bursts(out, rng, onsets, np.full(onsets.size, 1.5 * level), np.full(onsets.size, 80.0), 0.7, 0.08, 0.3)
    hats = onsets + beat / 2
    bursts(out, rng, hats, np.full(hats.size, 0.4 * level), np.full(hats.size, 8000.0), 0.5, 0.02, 0.06)
    bar = 4 * beat
    scale = loc["key"] * 2.0 ** (np.array([0, 2, 4, 5, 7, 9, 11]) / 12)
    for start in np.arange(-rng.uniform(0, bar), _seconds(out), bar):
        length = int(bar * SR)
        envelope = decaying(length, 0.01, bar * 0.8)
        root = int(rng.integers(7))
        for step in (0, 2, 4):
            f = scale[(root + step) % 7] * (2.0 if root + step >= 7 else 1.0)
            sound = tone(f, length, np.arange(1, 6), 0.6 ** np.arange(5), rng, envelope)
            add_at(out, int(start * SR), 0.35 * level * sound)


def bell_strike(rng: Rng, frequency: float, partials: np.ndarray, decay_s: float) -> np.ndarray:
    length = int(min(4 * decay_s, 2.0) * SR)
    return tone(frequency, length, partials, 0.7 ** np.arange(partials.size), rng, decaying(length, 0.002, decay_s))


def chime(out: np.ndarray, rng: Rng, count: int, level: float, loc: dict) -> None:
    """Public-address chime: two to four bell notes in a falling pattern before an announcement."""
    partials = np.array([1.0, 2.0, 3.0, 4.2])
    for _ in range(count):
        start = rng.uniform(-0.5, _seconds(out) - 0.5)
        notes = loc["chime_base"] * 2.0 ** (-np.array(loc["chime_steps"]) / 12)
        for k, f in enumerate(notes):
            add_at(out, int((start + k * loc["chime_gap"]) * SR), level * bell_strike(rng, f, partials, 0.7))


def beeps(out: np.ndarray, rng: Rng, count: int, level: float, loc: dict) -> None:
    """Door-closing beeps: a fast run of short pure tones."""
    for _ in range(count):
        f = loc["beep_freq"]
        start = rng.uniform(-0.5, _seconds(out) - 0.5)
        length = int(0.1 * SR)
        sound = tone(f, length, np.array([1.0, 2.0]), np.array([1.0, 0.3]), rng, np.hanning(length))
        for k in range(int(rng.integers(3, 9))):
            add_at(out, int((start + k * loc["beep_period"]) * SR), level * sound)


def bell(out: np.ndarray, rng: Rng, count: int, level: float, loc: dict) -> None:
    """Tram bell: ding-ding, two inharmonic strikes a fraction of a second apart."""
    partials = np.array([1.0, 2.4, 3.9, 5.4])
    for _ in range(count):
        start = rng.uniform(-0.3, _seconds(out) - 0.5)
        strike = bell_strike(rng, loc["bell_freq"], partials, 0.35)
        for k in range(int(rng.integers(2, 4))):
            add_at(out, int((start + k * rng.uniform(0.18, 0.3)) * SR), level * strike)


def birds(out: np.ndarray, rng: Rng, count: int, level: float, loc: dict) -> None:
    """Bird phrases: runs of short frequency sweeps, the species (sweep shape) fixed per location."""
    for _ in range(count):
        low, high, chirp_s, rate = loc["birds"][int(rng.integers(len(loc["birds"])))]
        start = rng.uniform(-0.5, _seconds(out) - 0.3)
        chirps = int(rng.integers(3, 12))
        length = int(chirp_s * SR)
        sweep = np.linspace(high, low, length) if rng.random() < 0.7 else np.linspace(low, high, length)
        sound = tone(sweep, length, np.array([1.0, 2.0]), np.array([1.0, 0.15]), rng, np.hanning(length))
        phrase_level = level * rng.uniform(0.4, 1.2)
        for k in range(chirps):
            add_at(out, int((start + k / rate) * SR), phrase_level * rng.uniform(0.6, 1.0) * sound)


def passby(out: np.ndarray, rng: Rng, count: int, level: float, loc: dict) -> None:
    """Vehicles passing: loudness swelling and falling (1 / distance), brighter on approach, engine
    pitch dropping (Doppler) as the vehicle passes. Vehicles share two noise textures and one engine
    colouring (each with its own envelope and pitch), so the cost does not grow with the traffic."""
    if count <= 0:
        return
    n = out.shape[0]
    freqs = _freqs(n)
    body = shaped_noise(rng, n, gain=bump(freqs, rng.uniform(300, 1200), 1.6))
    hiss = shaped_noise(rng, n, gain=bump(freqs, rng.uniform(2500, 6000), 1.0))
    body /= rms(body)
    hiss /= rms(hiss)
    pulses = np.zeros(n)
    for _ in range(count):
        center = rng.uniform(-1.0, _seconds(out) + 1.0)
        width = rng.uniform(0.3, 1.5)
        begin = max(0, int((center - 5 * width) * SR))
        end = min(n, int((center + 5 * width) * SR))
        if end - begin < SR // 10:
            continue
        t = (np.arange(begin, end) / SR - center) / width
        near = level * rng.uniform(0.5, 1.3) / (1.0 + t**2)
        out[begin:end] += near * (body[begin:end] + 0.7 * 0.5 * (1 - np.tanh(t)) * hiss[begin:end])
        f0 = rng.uniform(40, 110) * (1 + 0.06 * -np.tanh(t[::CONTROL]))
        pulses[begin:end] += pulse_train(f0, end - begin, near) * np.sqrt(f0.mean() / SR) * 6
    gain = 10 ** (-6 * np.log2(freqs / 100).clip(0) / 20)
    out += filtered(pulses, gain)


def horn(out: np.ndarray, rng: Rng, count: int, level: float, loc: dict) -> None:
    """Car horns: short buzzy harmonic tones."""
    for _ in range(count):
        length = int(rng.uniform(0.15, 0.6) * SR)
        envelope = np.minimum(1, np.minimum(np.arange(length), np.arange(length)[::-1]) / (0.01 * SR))
        sound = tone(rng.uniform(300, 500), length, np.arange(1, 10), 1 / np.arange(1, 10), rng, envelope)
        add_at(out, int(rng.uniform(0, _seconds(out)) * SR), level * sound)


def squeal(out: np.ndarray, rng: Rng, count: int, level: float, loc: dict) -> None:
    """Wheel squeal in curves: a high tone with vibrato, swelling in and out."""
    for _ in range(count):
        length = int(rng.uniform(0.3, 2.5) * SR)
        t = np.arange(length) / SR
        f = rng.uniform(2000, 8000) * (1 + 0.01 * np.sin(2 * np.pi * rng.uniform(4, 8) * t))
        envelope = np.hanning(length) ** 0.5 * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(2, 6) * t))
        sound = tone(f, length, np.array([1.0, 2.0]), np.array([1.0, 0.3]), rng, envelope)
        add_at(out, int(rng.uniform(-0.5, _seconds(out)) * SR), level * sound)


def engine(out: np.ndarray, rng: Rng, count: int, level: float, loc: dict) -> None:
    """Bus engine: harmonic hum whose speed rises through a gear and drops at the shift (or idles)."""
    if count <= 0:
        return
    n = out.shape[0]
    t = control_times(n)
    base = loc["engine_f0"]
    if rng.random() < 0.3:  # idling at a stop
        f0 = base * (1 + 0.02 * np.sin(2 * np.pi * 0.5 * t))
    else:
        gear = rng.uniform(1.5, 4.0)
        phase = (t + rng.uniform(0, gear)) % gear / gear
        f0 = base * (1 + rng.uniform(0.4, 0.9) * phase)
    freqs = _freqs(n)
    sound = pulse_voice(rng, f0, n, -5 * np.log2(freqs / 60).clip(0) + 8 * bump(freqs, loc["engine_formant"], 0.6))
    out += level * sound / rms(sound)


def whine(out: np.ndarray, rng: Rng, count: int, level: float, loc: dict) -> None:
    """Electric traction motor: a near-pure tone gliding with the train's speed."""
    if count <= 0:
        return
    n = out.shape[0]
    low, high = loc["whine_range"]
    mode = rng.integers(3)
    ramp = np.linspace(0, 1, n) ** rng.uniform(0.7, 1.5)
    if mode == 0:
        f = low + (high - low) * ramp  # accelerating
    elif mode == 1:
        f = high - (high - low) * ramp  # braking
    else:
        f = high * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * np.arange(n) / SR))
    sound = tone(f, n, np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.5, 0.25]), rng)
    out += level * sound / rms(sound)


def arrival(out: np.ndarray, rng: Rng, count: int, level: float, loc: dict) -> None:
    """A train entering or leaving the station: a broad swell over several seconds, with its motor."""
    if count <= 0:
        return
    n = out.shape[0]
    t = np.arange(n) / SR
    center = rng.uniform(2, 8)
    swell = np.exp(-0.5 * ((t - center) / rng.uniform(1.0, 2.5)) ** 2)
    body = shaped_noise(rng, n, gain=bump(_freqs(n), rng.uniform(200, 800), 1.5))
    out += level * swell * body / rms(body)
    motor = np.zeros(n)
    whine(motor, rng, 1, 1.0, loc)
    out += 0.5 * level * swell * motor


def wind(out: np.ndarray, rng: Rng, count: int, level: float, loc: dict) -> None:
    """Wind: low rumbling noise in gusts of a second or two."""
    if count <= 0:
        return
    n = out.shape[0]
    noise = shaped_noise(rng, n, gain=bump(_freqs(n), rng.uniform(80, 300), 1.5))
    gusts = slow_envelope(rng, n, rng.uniform(0.3, 1.0), rng.uniform(0.6, 1.2))
    sound = noise * gusts
    out += level * sound / rms(sound)


EVENTS: dict[str, Event] = {
    "footsteps": footsteps,
    "suitcase": suitcase,
    "rattle": rattle,
    "ticks": ticks,
    "clacks": clacks,
    "babble": babble,
    "crowd": crowd,
    "music": music,
    "chime": chime,
    "beeps": beeps,
    "bell": bell,
    "birds": birds,
    "passby": passby,
    "horn": horn,
    "squeal": squeal,
    "engine": engine,
    "whine": whine,
    "arrival": arrival,
    "wind": wind,
}


def location_parameters(rng: Rng) -> dict:
    """The fixed sources of one place: its floors, engines, birds, chimes, music."""
    return {
        "step_interval": rng.uniform(0.45, 0.65),
        "step_center": float(np.exp(rng.uniform(np.log(400), np.log(3000)))),
        "rail_period": rng.uniform(0.6, 1.6),
        "tempo": rng.uniform(95, 135),
        "key": rng.uniform(110, 260),
        "chime_base": rng.uniform(500, 1200),
        "chime_steps": sorted(rng.choice([0, 3, 4, 5, 7, 9, 12], size=int(rng.integers(2, 5)), replace=True)),
        "chime_gap": rng.uniform(0.3, 0.5),
        "beep_freq": rng.uniform(1200, 3200),
        "beep_period": rng.uniform(0.18, 0.3),
        "bell_freq": rng.uniform(700, 1600),
        "birds": [
            (rng.uniform(1800, 4000), rng.uniform(4000, 8000), rng.uniform(0.03, 0.12), rng.uniform(5, 14))
            for _ in range(int(rng.integers(1, 4)))
        ],
        "engine_f0": rng.uniform(22, 45),
        "engine_formant": rng.uniform(150, 600),
        "whine_range": (rng.uniform(120, 350), rng.uniform(500, 1400)),
    }
