"""Dataset index: TAU and generic layouts read back, splits, parallel pairs, precise errors."""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsmn.data import Clip, DatasetError, load_dataset, parallel_pairs, parse_tau_name
from dsmn.labels import SCENES, UNSEEN_DEVICES

META_HEADER = "filename\tscene_label\tidentifier\tsource_label"


def test_tau_layout_read_back(tiny_data: Path) -> None:
    dataset = load_dataset(tiny_data)
    assert dataset.layout == "tau"
    assert dataset.available_splits() == ["train", "evaluate", "test", "split5", "split10", "split25", "split50",
                                          "split100"]
    meta_lines = (tiny_data / "meta.csv").read_text().splitlines()
    assert meta_lines[0] == META_HEADER
    assert len(dataset.clips) == len(meta_lines) - 1
    train, evaluate, test = dataset.split("train"), dataset.split("evaluate"), dataset.split("test")
    assert len(train) + len(evaluate) == len(dataset.clips)
    assert [c.filename for c in test] == [c.filename for c in evaluate]
    clip = train[0]
    assert clip.filename.startswith("audio/") and dataset.path(clip).is_file()
    name = parse_tau_name(clip.filename)
    assert name is not None
    assert (clip.scene, clip.device, clip.identifier, clip.segment, clip.slice) == (
        name.scene, name.device, name.identifier, name.segment, name.slice)
    assert clip.scene_id == SCENES.index(clip.scene)
    assert {c.scene for c in train} == set(SCENES) == {c.scene for c in evaluate}


def test_locations_and_devices_by_fold(tiny_data: Path) -> None:
    dataset = load_dataset(tiny_data)
    train, evaluate = dataset.split("train"), dataset.split("evaluate")
    assert not {c.identifier for c in train} & {c.identifier for c in evaluate}
    assert not {c.device for c in train} & set(UNSEEN_DEVICES)
    assert set(UNSEEN_DEVICES) <= {c.device for c in evaluate}
    assert sum(c.device == "a" for c in train) / len(train) > 0.6


def test_subsets_nested_and_whole_recordings(tiny_data: Path) -> None:
    dataset = load_dataset(tiny_data)
    train = {c.filename for c in dataset.split("train")}
    recordings: dict[tuple, set[str]] = defaultdict(set)
    for clip in dataset.split("train"):
        recordings[(clip.identifier, clip.segment)].add(clip.filename)
    previous: set[str] = set()
    for name in ("split5", "split10", "split25", "split50", "split100"):
        members = {c.filename for c in dataset.split(name)}
        assert previous <= members <= train
        for files in recordings.values():
            assert files <= members or not files & members  # a recording is wholly in or out
        previous = members
    assert previous == train


def test_parallel_pairs(tiny_data: Path) -> None:
    dataset = load_dataset(tiny_data)
    pairs = parallel_pairs(dataset.split("train"))
    assert len(pairs) == sum(c.device != "a" for c in dataset.split("train"))
    for reference, other in pairs:
        assert reference.device == "a" and other.device != "a"
        assert (reference.identifier, reference.segment, reference.slice) == (other.identifier, other.segment,
                                                                              other.slice)


def test_parse_tau_names() -> None:
    name = parse_tau_name("audio/airport-lisbon-1000-40000-0-a.wav")
    assert name is not None and name.identifier == "lisbon-1000" and name.slice == 0 and name.device == "a"
    tau20 = parse_tau_name("audio/street_pedestrian-paris-151-4580-s2.wav")  # 10-s clips, no slice
    assert tau20 is not None and tau20.slice is None and tau20.segment == "4580" and tau20.device == "s2"
    assert parse_tau_name("audio/0.wav") is None
    assert parse_tau_name("audio/beach-lisbon-1-2-3-a.wav") is None


# -- hand-made folders with one problem each --------------------------------------------------------------

def _wav(path: Path, seconds: float = 1.0, rate: int = 44100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * rate), dtype=np.float32), rate, subtype="PCM_24")


def _tau_folder(root: Path, meta_rows: list[str], train: list[str] | None = None,
                evaluate: list[str] | None = None) -> Path:
    for row in meta_rows:
        _wav(root / row.split("\t")[0])
    (root / "meta.csv").write_text("\n".join([META_HEADER, *meta_rows]) + "\n")
    setup = root / "evaluation_setup"
    setup.mkdir(parents=True, exist_ok=True)
    (setup / "fold1_train.csv").write_text("\n".join(["filename\tscene_label", *(train or [])]) + "\n")
    (setup / "fold1_evaluate.csv").write_text("\n".join(["filename\tscene_label", *(evaluate or [])]) + "\n")
    return root


ROW_A = "audio/airport-lisbon-1000-40000-0-a.wav\tairport\tlisbon-1000\ta"
ROW_B = "audio/park-paris-2000-50000-3-b.wav\tpark\tparis-2000\tb"


def test_minimal_tau_folder(tmp_path: Path) -> None:
    root = _tau_folder(tmp_path / "d", [ROW_A, ROW_B], train=[ROW_A.split("\t")[0] + "\tairport"],
                       evaluate=[ROW_B.split("\t")[0] + "\tpark"])
    dataset = load_dataset(root)
    assert dataset.split("train") == [Clip("audio/airport-lisbon-1000-40000-0-a.wav", "airport", "a", "lisbon",
                                           "lisbon-1000", "40000", 0)]
    with pytest.raises(KeyError, match="split5"):
        dataset.split("split5")


def test_bad_label_names_file_and_line(tmp_path: Path) -> None:
    root = _tau_folder(tmp_path / "d", [ROW_A, ROW_B.replace("\tpark\t", "\tbeach\t")])
    with pytest.raises(DatasetError, match=r"meta\.csv, line 3: unknown scene label 'beach'"):
        load_dataset(root)


def test_wrong_separator(tmp_path: Path) -> None:
    root = _tau_folder(tmp_path / "d", [ROW_A])
    (root / "meta.csv").write_text(META_HEADER.replace("\t", ",") + "\n" + ROW_A.replace("\t", ",") + "\n")
    with pytest.raises(DatasetError, match=r"meta\.csv, line 1: expected tab-separated .* found comma"):
        load_dataset(root)
    (root / "meta.csv").write_text(META_HEADER + "\n" + ROW_A.replace("\t", ";") + "\n")
    with pytest.raises(DatasetError, match=r"line 2: expected 4 tab-separated fields, found 1 .*semicolon"):
        load_dataset(root)


def test_wrong_columns(tmp_path: Path) -> None:
    root = _tau_folder(tmp_path / "d", [ROW_A])
    (root / "evaluation_setup" / "fold1_train.csv").write_text("file\tlabel\n")
    with pytest.raises(DatasetError, match=r"fold1_train\.csv, line 1: expected header"):
        load_dataset(root)


def test_doubled_audio_prefix(tmp_path: Path) -> None:
    root = _tau_folder(tmp_path / "d", [ROW_A], train=["audio/audio/airport-lisbon-1000-40000-0-a.wav\tairport"])
    with pytest.raises(DatasetError, match=r"fold1_train\.csv, line 2: .*doubled 'audio/' prefix"):
        load_dataset(root)


def test_root_given_as_audio_folder(tmp_path: Path) -> None:
    root = _tau_folder(tmp_path / "d", [ROW_A])
    with pytest.raises(DatasetError, match="audio/ folder of a TAU dataset; pass its parent"):
        load_dataset(root / "audio")


def test_audio_folder_nested_twice(tmp_path: Path) -> None:
    root = _tau_folder(tmp_path / "d", [ROW_A])
    nested = root / "audio" / "audio"
    nested.mkdir()
    for wav in (root / "audio").glob("*.wav"):
        shutil.move(wav, nested / wav.name)
    with pytest.raises(DatasetError, match=r"meta\.csv, line 2: .*nested twice"):
        load_dataset(root)


def test_missing_audio_file(tmp_path: Path) -> None:
    root = _tau_folder(tmp_path / "d", [ROW_A, ROW_B])
    (root / "audio" / "park-paris-2000-50000-3-b.wav").unlink()
    with pytest.raises(DatasetError, match=r"meta\.csv, line 3: audio file audio/park-paris-2000-50000-3-b\.wav "
                                           "not found"):
        load_dataset(root)
    assert len(load_dataset(root, check_files=False).clips) == 2


def test_shared_location_refused(tmp_path: Path) -> None:
    other = "audio/airport-lisbon-1000-40010-0-a.wav"
    root = _tau_folder(tmp_path / "d", [ROW_A, f"{other}\tairport\tlisbon-1000\ta"],
                       train=[ROW_A.split("\t")[0] + "\tairport"], evaluate=[f"{other}\tairport"])
    with pytest.raises(DatasetError, match="lisbon-1000 appear in both train and evaluate"):
        load_dataset(root)


def test_generic_csv(tmp_path: Path) -> None:
    root = tmp_path / "g"
    rows = []
    for k in range(40):
        scene = SCENES[k % 10]
        _wav(root / "clips" / f"rec{k}.wav")
        rows.append(f"clips/rec{k}.wav,{scene},phone{k % 3}")
    (root / "labels.csv").write_text("filename,scene_label,device\n" + "\n".join(rows) + "\n")
    dataset = load_dataset(root)
    assert dataset.layout == "generic" and len(dataset.clips) == 40
    assert dataset.clips[0] == Clip("clips/rec0.wav", "airport", "phone0")
    train, evaluate = dataset.split("train"), dataset.split("evaluate")
    assert len(train) + len(evaluate) == 40 and evaluate and train
    (root / "labels.csv").write_text("filename;scene_label\nclips/rec0.wav;airport\n")
    with pytest.raises(DatasetError, match=r"labels\.csv, line 1: .*found semicolon"):
        load_dataset(root)
    (root / "labels.csv").write_text("clips/rec0.wav\tairport\nclips/rec1.wav\tlibrary\n")
    with pytest.raises(DatasetError, match=r"labels\.csv, line 2: unknown scene label 'library'"):
        load_dataset(root)


def test_generic_folders(tmp_path: Path) -> None:
    root = tmp_path / "f"
    for scene in ("park", "tram"):
        for k in range(3):
            _wav(root / scene / f"{k}.flac")
    dataset = load_dataset(root)
    assert sorted({c.scene for c in dataset.clips}) == ["park", "tram"] and len(dataset.clips) == 6
    _wav(root / "garden" / "0.wav")
    with pytest.raises(DatasetError, match="garden: unknown scene label 'garden'"):
        load_dataset(root)


def test_unlabelled_folder_is_a_test_set(tmp_path: Path) -> None:
    for k in range(3):
        _wav(tmp_path / "u" / f"{k}.wav")
    dataset = load_dataset(tmp_path / "u")
    assert dataset.available_splits() == ["test"] and all(c.scene is None for c in dataset.split("test"))
