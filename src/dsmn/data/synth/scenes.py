"""The ten synthetic scenes as data: which sources each mixes, how often and how loud.

Class information lives mostly in *what happens over time* (event types, rates, rhythms, glides), not in
the average spectrum: the background bed's tilt and typical band (ventilation hum, tyre noise) depend on
the scene but overlap between scenes, its colour on the location, and every location has its own room
and equaliser. Events are frequent enough that most 1-s clips hold some. Sources are shared between
confusable scenes (metro / tram / bus, street_pedestrian / public_square, airport / shopping_mall /
metro_station) with different rates, so those pairs overlap as in real recordings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sfft

from dsmn.data.synth.events import EVENTS, location_parameters
from dsmn.data.synth.sources import (
    SR,
    Rng,
    _freqs,
    bump,
    fast_len,
    rms,
    room_response,
    shaped_noise,
    slow_envelope,
    smooth_response_db,
)

SEGMENT_SECONDS = 10
BED_LEVEL = 10 ** (-3 / 20)  # background bed and rumble, relative to the event levels below

# event -> default level range in dB relative to the background bed (RMS 1)
LEVELS_DB: dict[str, tuple[float, float]] = {
    "footsteps": (6, 18), "suitcase": (0, 10), "rattle": (-6, 4), "ticks": (4, 14), "clacks": (6, 16),
    "babble": (2, 12), "crowd": (-4, 4), "music": (0, 10), "chime": (6, 16), "beeps": (4, 14),
    "bell": (6, 16), "birds": (4, 16), "passby": (4, 16), "horn": (4, 14), "squeal": (0, 12),
    "engine": (4, 14), "whine": (0, 12), "arrival": (6, 16), "wind": (0, 10),
}


def always(p: float) -> tuple[float, float]:
    """A texture present with probability p (encoded as a negative range, see `_count`)."""
    return (-p, -p)


@dataclass(frozen=True)
class Recipe:
    events: dict[str, tuple[float, float]]  # mean count per 10 s, uniform in (lo, hi); always(p): texture
    bed_rate: tuple[float, float] = (0.05, 0.4)  # Hz of the bed's slow loudness changes
    bed_depth: tuple[float, float] = (0.1, 0.4)
    rt60: tuple[float, float] = (0.0, 0.0)
    wet: tuple[float, float] = (0.0, 0.0)
    levels: dict[str, tuple[float, float]] = field(default_factory=dict)
    # the scene's typical background: spectral tilt (dB/octave) and one band (low Hz, high Hz, min dB,
    # max dB) such as ventilation hum or tyre noise; ranges overlap between confusable scenes
    bed_tilt: tuple[float, float] = (-7.0, -2.0)
    bed_band: tuple[float, float, float, float] = (100.0, 1000.0, 0.0, 0.0)


RECIPES: dict[str, Recipe] = {
    "airport": Recipe(
        {"crowd": always(0.9), "babble": (2, 4), "footsteps": (2, 4), "suitcase": (6, 10),
         "chime": (1.5, 3), "music": always(0.15), "beeps": (0, 0.3)},
        bed_depth=(0.05, 0.25), rt60=(1.0, 2.0), wet=(0.3, 0.6),
        bed_tilt=(-5.0, -3.0), bed_band=(150, 400, 3, 8)),
    "shopping_mall": Recipe(
        {"crowd": always(0.9), "babble": (2, 4), "footsteps": (3, 6), "music": always(1.0),
         "chime": (0, 0.4), "suitcase": (0, 1)},
        bed_depth=(0.05, 0.25), rt60=(0.8, 1.6), wet=(0.3, 0.5),
        bed_tilt=(-5.0, -3.0), bed_band=(200, 600, 3, 8)),
    "metro_station": Recipe(
        {"crowd": always(0.7), "babble": (0.5, 2), "footsteps": (1, 3), "arrival": always(0.9),
         "beeps": (3, 5), "squeal": (1.5, 3), "clacks": always(0.4), "chime": (0, 0.5)},
        bed_depth=(0.1, 0.3), rt60=(1.0, 2.2), wet=(0.35, 0.6),
        bed_tilt=(-6.5, -4.0), bed_band=(60, 150, 5, 10)),
    "bus": Recipe(
        {"engine": always(1.0), "rattle": always(0.9), "ticks": (1, 2), "babble": (0.5, 2),
         "passby": (0.3, 1.2), "beeps": (0, 0.4), "horn": (0, 0.3)},
        bed_rate=(0.1, 0.5), bed_depth=(0.2, 0.5), rt60=(0.2, 0.5), wet=(0.1, 0.3),
        bed_tilt=(-7.0, -5.0), bed_band=(80, 200, 4, 9)),
    "metro": Recipe(
        {"whine": always(1.0), "clacks": always(1.0), "rattle": always(0.6), "squeal": (2, 4),
         "babble": (0.3, 1.2), "beeps": (0, 0.5), "engine": always(0.1)},
        bed_rate=(0.1, 0.5), bed_depth=(0.2, 0.5), rt60=(0.2, 0.6), wet=(0.1, 0.3),
        bed_tilt=(-7.0, -5.0), bed_band=(300, 900, 3, 8)),
    "tram": Recipe(
        {"whine": always(0.7), "clacks": always(0.7), "bell": (3, 5), "squeal": (0.5, 1.5),
         "babble": (0.5, 1.5), "rattle": always(0.6), "passby": (0.3, 1.2), "engine": always(0.15)},
        bed_rate=(0.1, 0.5), bed_depth=(0.2, 0.5), rt60=(0.2, 0.5), wet=(0.1, 0.3),
        bed_tilt=(-6.5, -4.5), bed_band=(150, 500, 3, 8)),
    "park": Recipe(
        {"birds": (7, 14), "wind": always(0.8), "passby": (0, 0.6), "babble": (0, 0.8), "footsteps": (0, 1.5)},
        bed_tilt=(-4.0, -2.0), bed_band=(2000, 6000, 2, 6)),
    "public_square": Recipe(
        {"crowd": always(0.8), "babble": (2, 4), "footsteps": (2, 5), "birds": (2, 5),
         "passby": (0.5, 2), "wind": always(0.3), "bell": (0, 0.3), "music": always(0.1)},
        rt60=(0.1, 0.4), wet=(0.05, 0.2),
        bed_tilt=(-5.0, -3.0), bed_band=(400, 1200, 3, 7)),
    "street_pedestrian": Recipe(
        {"footsteps": (6, 12), "babble": (3, 6), "crowd": always(0.4), "passby": (0.5, 2), "birds": (0, 0.5),
         "music": always(0.15), "horn": (0, 0.4)},
        rt60=(0.1, 0.5), wet=(0.05, 0.2),
        bed_tilt=(-5.0, -3.0), bed_band=(600, 2000, 2, 6)),
    "street_traffic": Recipe(
        {"passby": (6, 12), "horn": (0.5, 2), "ticks": (0, 0.4), "footsteps": (0, 1), "babble": (0, 0.5),
         "wind": always(0.2), "bell": (0, 0.2), "squeal": (0, 0.3)},
        bed_rate=(0.1, 0.5), bed_depth=(0.2, 0.5),
        bed_tilt=(-6.0, -4.0), bed_band=(500, 1500, 4, 9)),
}


@dataclass(frozen=True)
class Location:
    """A place's fixed acoustic character: bed colour, equaliser, room, and its own sources."""

    bed_db: np.ndarray  # over rfftfreq of a 10-s recording
    eq_db: np.ndarray
    rt60: float
    wet: float
    sources: dict


def make_location(scene: str, rng: Rng) -> Location:
    freqs = _freqs(SEGMENT_SECONDS * SR)
    recipe = RECIPES[scene]
    bed = smooth_response_db(rng, freqs, bumps=3, spread_db=3.0, tilt_db_oct=rng.uniform(*recipe.bed_tilt))
    low, high, gain_low, gain_high = recipe.bed_band
    bed += rng.uniform(gain_low, gain_high) * bump(freqs, float(np.exp(rng.uniform(np.log(low), np.log(high)))), 1.0)
    bed -= 40 * np.log2(30.0 / freqs).clip(0)
    eq = smooth_response_db(rng, freqs, bumps=4, spread_db=2.5, tilt_db_oct=rng.normal(0.0, 1.0))
    return Location(bed, eq, rng.uniform(*recipe.rt60), rng.uniform(*recipe.wet), location_parameters(rng))


def _count(rng: Rng, rate: tuple[float, float]) -> int:
    if rate[0] < 0:
        return int(rng.random() < -rate[0])
    return int(rng.poisson(rng.uniform(*rate)))


def render_scene(scene: str, location: Location, rng: Rng) -> np.ndarray:
    """10 s of the scene at `location` (RMS normalised to a random level around -26 dBFS)."""
    spectrum = render_scene_spectrum(scene, location, rng)
    return sfft.irfft(spectrum, fast_len(SEGMENT_SECONDS * SR))[: SEGMENT_SECONDS * SR]


def render_scene_spectrum(scene: str, location: Location, rng: Rng) -> np.ndarray:
    """Spectrum (rfft at `fast_len` of 10 s) of the scene: devices filter it without another transform."""
    recipe = RECIPES[scene]
    n = SEGMENT_SECONDS * SR
    bed = shaped_noise(rng, n, db=location.bed_db)
    envelope = slow_envelope(rng, n, rng.uniform(*recipe.bed_rate), rng.uniform(*recipe.bed_depth))
    out = BED_LEVEL * bed / rms(bed) * envelope
    rumble = shaped_noise(rng, n, gain=bump(_freqs(n), rng.uniform(40, 120), 1.0))
    out += BED_LEVEL * 10 ** (rng.uniform(-10, 6) / 20) * rumble / rms(rumble) * slow_envelope(rng, n, 0.2, 0.3)
    for name, rate in recipe.events.items():
        count = _count(rng, rate)
        if count:
            low, high = recipe.levels.get(name, LEVELS_DB[name])
            EVENTS[name](out, rng, count, 10 ** (rng.uniform(low, high) / 20), location.sources)
    response = (10 ** (location.eq_db / 20)).astype(np.float32)
    room = room_response(rng, n, location.rt60, location.wet)
    m = fast_len(n)
    spectrum = sfft.rfft(out.astype(np.float32), m) * (response if room is None else response * room)
    energy = 2 * np.sum(np.abs(spectrum) ** 2) - np.abs(spectrum[0]) ** 2 - np.abs(spectrum[-1]) ** 2
    return spectrum * np.float32(10 ** (rng.uniform(-34, -20) / 20) / (np.sqrt(energy / m / n) + 1e-12))
