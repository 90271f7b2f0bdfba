"""`dsmn synth --layout tau20`: the TAU Urban Acoustic Scenes 2020 Mobile development layout.

The layout is checked by a reader written here from the dataset's description alone (csv module and a
regular expression on the file names), independent of dsmn.data, and then by dsmn's own loader.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsmn.cli import main as cli
from dsmn.data import load_dataset
from dsmn.data.synth import make_plan
from dsmn.data.synth.writer import clip_name, render_recording

SCENES = ("airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
          "street_pedestrian", "street_traffic", "tram")
NAME = re.compile(r"^audio/(?P<scene>[a-z_]+)-(?P<city>[a-z]+)-(?P<location>\d+)-(?P<segment>\d+)"
                  r"-(?P<device>a|b|c|s[1-6])\.wav$")
UNSEEN = {"s4", "s5", "s6"}


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    return rows[0], rows[1:]


def read_tau20(root: Path) -> dict:
    """meta.csv and the three fold1 files, every file name parsed by the TAU20 pattern."""
    header, meta = read_table(root / "meta.csv")
    assert header == ["filename", "scene_label", "identifier", "source_label"]
    clips = {}
    for filename, scene, identifier, device in meta:
        match = NAME.match(filename)
        assert match, f"not a TAU20 name: {filename}"
        assert match["scene"] == scene and scene in SCENES
        assert identifier == f"{match['city']}-{match['location']}" and device == match["device"]
        clips[filename] = match.groupdict()
    folds = {}
    for fold, columns in (("train", ["filename", "scene_label"]), ("evaluate", ["filename", "scene_label"]),
                          ("test", ["filename"])):
        header, rows = read_table(root / "evaluation_setup" / f"fold1_{fold}.csv")
        assert header == columns
        for row in rows:
            assert len(row) == len(columns) and row[0] in clips
            if len(row) > 1:
                assert row[1] == clips[row[0]]["scene"]
        folds[fold] = [row[0] for row in rows]
    return {"clips": clips, "folds": folds}


def test_independent_reader_finds_the_tau20_layout(tiny_tau20: Path) -> None:
    data = read_tau20(tiny_tau20)
    clips, folds = data["clips"], data["folds"]
    assert not (tiny_tau20 / "split25.csv").exists()  # the DCASE 2024 subsets belong to TAU22
    assert sorted(p.name for p in (tiny_tau20 / "audio").iterdir()) == sorted(n[6:] for n in clips)
    assert folds["test"] == folds["evaluate"] and set(folds["train"]) | set(folds["evaluate"]) == set(clips)
    assert not set(folds["train"]) & set(folds["evaluate"])

    devices = {fold: {clips[f]["device"] for f in names} for fold, names in folds.items()}
    assert devices["train"] <= {"a", "b", "c", "s1", "s2", "s3"} and "a" in devices["train"]
    assert devices["evaluate"] == {"a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"}  # s4-s6: unseen
    assert {clips[f]["scene"] for f in folds["train"]} == set(SCENES)

    # parallel recordings: one segment, several devices, device a among them in train
    recorders = defaultdict(set)
    for c in clips.values():
        recorders[(c["scene"], c["city"], c["location"], c["segment"])].add(c["device"])
    train_segments = {tuple(clips[f][k] for k in ("scene", "city", "location", "segment")) for f in folds["train"]}
    assert sum(1 for s in train_segments if "a" in recorders[s] and len(recorders[s]) > 1) >= len(SCENES)

    locations = {fold: {(clips[f]["city"], clips[f]["location"]) for f in names} for fold, names in folds.items()}
    assert not locations["train"] & locations["evaluate"]

    info = sf.info(str(tiny_tau20 / folds["evaluate"][0]))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (44100, 1, 441000, "PCM_24")


def test_scenes_evolve_within_a_clip(tiny_tau20: Path) -> None:
    """Events come and go: the ten 1-s windows of a clip differ in level, not only by noise."""
    spreads = []
    for path in sorted((tiny_tau20 / "audio").glob("*-a.wav"))[:10]:
        audio, rate = sf.read(str(path))
        levels = [10 * np.log10(np.mean(audio[k * rate:(k + 1) * rate] ** 2)) for k in range(10)]
        spreads.append(max(levels) - min(levels))
    assert np.median(spreads) > 3.0  # dB between the loudest and the quietest second


def test_same_recordings_as_tau22_and_deterministic(tiny_tau20: Path, tiny_data: Path, tmp_path: Path) -> None:
    """One generator: a TAU20 file holds the ten TAU22 slices of the same seed; same seed, same bytes."""
    plan = make_plan("tiny", seed=0)
    recording = next(r for r in plan.recordings if len(r.devices) > 1)
    device = recording.devices[-1]
    whole, _ = sf.read(str(tiny_tau20 / clip_name(recording, None, device)), dtype="int32")
    parts = [sf.read(str(tiny_data / clip_name(recording, k, device)), dtype="int32")[0] for k in range(10)]
    np.testing.assert_array_equal(whole, np.concatenate(parts))

    (tmp_path / "audio").mkdir()
    render_recording((tmp_path, 0, recording, "tau20"))
    for d in recording.devices:
        name = clip_name(recording, None, d)
        assert (tmp_path / name).read_bytes() == (tiny_tau20 / name).read_bytes()


def test_dsmn_reads_it_and_the_cli_refuses_an_unknown_layout(tiny_tau20: Path, tmp_path: Path, capsys) -> None:
    dataset = load_dataset(tiny_tau20)
    assert len(dataset.split("train")) == 30 and len(dataset.split("evaluate")) == 20
    assert all(c.slice is None and c.segment and c.identifier for c in dataset.clips)
    with pytest.raises(SystemExit) as error:
        cli(["synth", str(tmp_path / "x"), "--layout", "tau21"])
    assert error.value.code == 2
    assert "tau21" in capsys.readouterr().err
