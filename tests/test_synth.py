"""Synthetic TAU-format data: layout, structure of the plan, determinism by seed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import soundfile as sf

from dsmn.cli import main as cli
from dsmn.data.synth import make_plan
from dsmn.data.synth.plan import SLICES
from dsmn.data.synth.writer import clip_name, render_recording
from dsmn.labels import DEVICES, SCENES, UNSEEN_DEVICES


def test_layout_and_audio_format(tiny_data: Path) -> None:
    for name in ("meta.csv", "split5.csv", "split10.csv", "split25.csv", "split50.csv", "split100.csv"):
        assert (tiny_data / name).is_file()
    for name in ("fold1_train.csv", "fold1_evaluate.csv", "fold1_test.csv"):
        assert (tiny_data / "evaluation_setup" / name).is_file()
    test_lines = (tiny_data / "evaluation_setup" / "fold1_test.csv").read_text().splitlines()
    evaluate_lines = (tiny_data / "evaluation_setup" / "fold1_evaluate.csv").read_text().splitlines()
    assert test_lines[0] == "filename" and test_lines[1:] == [line.split("\t")[0] for line in evaluate_lines[1:]]
    wavs = sorted((tiny_data / "audio").glob("*.wav"))
    assert len(wavs) == len((tiny_data / "meta.csv").read_text().splitlines()) - 1
    info = sf.info(str(wavs[0]))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (44100, 1, 44100, "PCM_24")


def test_same_seed_same_bytes(tiny_data: Path, tmp_path: Path) -> None:
    plan = make_plan("tiny", seed=0)
    assert plan == make_plan("tiny", seed=0)
    (tmp_path / "audio").mkdir()
    recording = next(r for r in plan.recordings if len(r.devices) > 1)
    render_recording((tmp_path, 0, recording))
    for device in recording.devices:
        for k in (0, SLICES - 1):
            name = clip_name(recording, k, device)
            assert (tmp_path / name).read_bytes() == (tiny_data / name).read_bytes()
    other = make_plan("tiny", seed=1)
    assert [r.identifier for r in other.recordings] != [r.identifier for r in plan.recordings]


def test_demo_plan_structure() -> None:
    plan = make_plan("demo", seed=0)
    clips: Counter[tuple[str, str]] = Counter()
    for recording in plan.recordings:
        for device in recording.devices:
            clips[(recording.fold, device)] += SLICES
    train = sum(n for (fold, _), n in clips.items() if fold == "train")
    evaluate = sum(n for (fold, _), n in clips.items() if fold == "evaluate")
    assert 2500 <= train <= 3500 and 1000 <= evaluate <= 1500
    assert 0.6 <= clips[("train", "a")] / train <= 0.8
    assert all(clips[("train", d)] == 0 for d in UNSEEN_DEVICES)
    assert all(clips[("evaluate", d)] > 0 for d in DEVICES)
    folds: dict[str, set[str]] = {}
    for recording in plan.recordings:
        folds.setdefault(recording.identifier, set()).add(recording.fold)
    assert all(len(f) == 1 for f in folds.values())
    assert {r.scene for r in plan.recordings} == set(SCENES)
    sizes = [len(plan.subsets[p]) for p in (5, 10, 25, 50, 100)]
    assert sizes == sorted(sizes) and sizes[-1] == sum(r.fold == "train" for r in plan.recordings)


def test_tiny_has_every_scene_and_device() -> None:
    plan = make_plan("tiny", seed=0)
    assert {r.scene for r in plan.recordings} == set(SCENES)
    assert {d for r in plan.recordings for d in r.devices} == set(DEVICES)


def test_cli_refuses_to_overwrite(tiny_data: Path, capsys) -> None:
    assert cli(["synth", str(tiny_data), "--size", "tiny"]) == 2
    assert "already holds a dataset" in capsys.readouterr().err
