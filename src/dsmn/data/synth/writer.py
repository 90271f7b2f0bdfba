"""Render a plan to disk in TAU layout: audio/, meta.csv, evaluation_setup/ (and split*.csv for TAU22).

Two layouts of the same recordings: `tau22` (TAU Urban Acoustic Scenes 2022 Mobile) cuts every 10-s
recording into ten 1-s files `scene-city-location-segment-slice-device.wav`; `tau20` (the 2020 Mobile
set) keeps the whole 10 s in one file `scene-city-location-segment-device.wav`. The audio is the same:
a TAU20 file is the concatenation of the ten TAU22 slices of the same seed.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from dsmn.data.dataset import SUBSET_PERCENTS
from dsmn.data.filenames import tau_name
from dsmn.data.synth.devices import record
from dsmn.data.synth.plan import SLICES, Plan, Recording, make_plan
from dsmn.data.synth.scenes import make_location, render_scene_spectrum
from dsmn.data.synth.sources import SR
from dsmn.labels import DEVICES

_FULL_SCALE = 1.0 - 2.0**-23
LAYOUTS: tuple[str, ...] = ("tau22", "tau20")


@dataclass(frozen=True)
class SynthSummary:
    root: Path
    clips: int
    train: int
    evaluate: int
    seconds: float


def clip_name(recording: Recording, slice_: int | None, device: str) -> str:
    """`audio/` + the TAU file name; `slice_` None names the whole 10-s recording (TAU20)."""
    return "audio/" + tau_name(recording.scene, recording.city, recording.location, recording.segment, slice_,
                               device)


def slices(layout: str) -> tuple[int | None, ...]:
    """The files one device's recording becomes: ten 1-s slices (tau22) or the whole 10 s (tau20)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    return tuple(range(SLICES)) if layout == "tau22" else (None,)


def render_recording(args: tuple[Path, int, Recording] | tuple[Path, int, Recording, str]) -> int:
    """Write every device's files of one recording; deterministic in (seed, recording), whatever the layout."""
    root, seed, recording, layout = args if len(args) == 4 else (*args, "tau22")
    location = make_location(recording.scene, np.random.default_rng([seed, 1, recording.location_index]))
    spectrum = render_scene_spectrum(recording.scene, location, np.random.default_rng([seed, 3, recording.index]))
    for device in recording.devices:
        rng = np.random.default_rng([seed, 4, recording.index, DEVICES.index(device)])
        audio = np.clip(record(device, spectrum, SLICES * SR, rng), -1.0, _FULL_SCALE)
        for k in slices(layout):
            part = audio if k is None else audio[k * SR : (k + 1) * SR]
            # encode in memory: soundfile's close() syncs the file to disk, slow for thousands of files
            buffer = io.BytesIO()
            sf.write(buffer, part, SR, subtype="PCM_24", format="WAV")
            (root / clip_name(recording, k, device)).write_bytes(buffer.getvalue())
    return len(recording.devices) * len(slices(layout))


def generate(
    out: str | Path, size: str = "demo", seed: int = 0, workers: int | None = None, progress: bool = False,
    layout: str = "tau22",
) -> SynthSummary:
    """Write a synthetic TAU-format development set to `out` (same seed -> same bytes) in `layout`
    (`tau22`: 1-s clips; `tau20`: the same recordings as 10-s clips, see the module doc)."""
    start = time.perf_counter()
    root = Path(out)
    files_per_device = len(slices(layout))
    plan = make_plan(size, seed)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "evaluation_setup").mkdir(exist_ok=True)
    workers = workers or min(os.cpu_count() or 1, 8)
    jobs = [(root, seed, r, layout) for r in plan.recordings]
    # long recordings first would not matter: all are 10 s; chunks keep the pool busy without overhead
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results: Iterable[int] = pool.map(render_recording, jobs, chunksize=4)
            done = _progress(results, len(jobs), progress)
    else:
        done = _progress(map(render_recording, jobs), len(jobs), progress)
    write_tables(root, plan, layout)
    train = sum(len(r.devices) * files_per_device for r in plan.recordings if r.fold == "train")
    return SynthSummary(root, done, train, done - train, time.perf_counter() - start)


def _progress(results: Iterable[int], total: int, show: bool) -> int:
    if show:
        from tqdm import tqdm

        results = tqdm(results, total=total, unit="recording", desc="synth")
    return sum(results)


def write_tables(root: Path, plan: Plan, layout: str = "tau22") -> None:
    """meta.csv, fold1_{train,evaluate,test}.csv and (TAU22 only: the DCASE 2024 subsets were drawn from
    that set) the nested split{5..100}.csv, tab-separated."""
    rows = {"train": [], "evaluate": []}
    subsets: dict[int, list[str]] = {p: [] for p in SUBSET_PERCENTS}
    meta = []
    for recording in plan.recordings:
        for device in recording.devices:
            for k in slices(layout):
                name = clip_name(recording, k, device)
                meta.append(f"{name}\t{recording.scene}\t{recording.identifier}\t{device}")
                rows[recording.fold].append(f"{name}\t{recording.scene}")
                for percent, members in plan.subsets.items():
                    if recording.index in members:
                        subsets[percent].append(f"{name}\t{recording.scene}")
    _write(root / "meta.csv", "filename\tscene_label\tidentifier\tsource_label", meta)
    setup = root / "evaluation_setup"
    _write(setup / "fold1_train.csv", "filename\tscene_label", rows["train"])
    _write(setup / "fold1_evaluate.csv", "filename\tscene_label", rows["evaluate"])
    _write(setup / "fold1_test.csv", "filename", [r.split("\t")[0] for r in rows["evaluate"]])
    if layout == "tau22":
        for percent, lines in subsets.items():
            _write(root / f"split{percent}.csv", "filename\tscene_label", lines)


def _write(path: Path, header: str, lines: list[str]) -> None:
    path.write_text("\n".join([header, *sorted(lines)]) + "\n", encoding="utf-8")


