"""TAU Urban Acoustic Scenes development folders (2020 and 2022 Mobile, and the DCASE 2024 subsets)."""

from __future__ import annotations

from pathlib import Path

from dsmn.data.clip import Clip
from dsmn.data.dataset import (
    SUBSET_PERCENTS,
    Dataset,
    check_disjoint_locations,
    check_filename,
    check_files_exist,
    check_scene,
)
from dsmn.data.errors import DatasetError
from dsmn.data.filenames import parse_tau_name
from dsmn.data.tables import read_tau_table

META_HEADER = ("filename", "scene_label", "identifier", "source_label")
FOLD_HEADERS = {
    "train": ("filename", "scene_label"),
    "evaluate": ("filename", "scene_label"),
    "test": ("filename",),
}
SUBSET_HEADER = ("filename", "scene_label")


def is_tau_folder(root: Path) -> bool:
    """A TAU folder has evaluation_setup/, or a meta.csv whose header names the TAU columns."""
    if (root / "evaluation_setup").is_dir():
        return True
    meta = root / "meta.csv"
    if not meta.is_file():
        return False
    with meta.open(encoding="utf-8-sig", errors="replace") as handle:
        first = handle.readline()
    return "identifier" in first and "source_label" in first


def _clip_from_name(filename: str, scene: str | None, identifier: str | None, device: str | None) -> Clip:
    name = parse_tau_name(filename)
    if name is None:
        return Clip(filename=filename, scene=scene, device=device, identifier=identifier)
    return Clip(
        filename=filename,
        scene=scene,
        device=device or name.device,
        city=name.city,
        identifier=identifier or name.identifier,
        segment=name.segment,
        slice=name.slice,
    )


def load_tau(root: Path, *, check_files: bool = True) -> Dataset:
    """Index a TAU development folder; errors name the CSV file and line of any problem."""
    sources: list[tuple[Clip, Path, int | None]] = []
    by_name: dict[str, Clip] = {}
    clips: list[Clip] = []

    meta = root / "meta.csv"
    if meta.is_file():
        for line, (filename, scene, identifier, device) in read_tau_table(meta, META_HEADER):
            filename = check_filename(filename, meta, line)
            clip = _clip_from_name(filename, check_scene(scene, meta, line), identifier or None, device or None)
            if filename in by_name:
                raise DatasetError(meta, f"{filename} listed twice", line)
            by_name[filename] = clip
            clips.append(clip)
            sources.append((clip, meta, line))

    splits: dict[str, list[Clip]] = {}
    setup = root / "evaluation_setup"
    for split, header in FOLD_HEADERS.items():
        path = setup / f"fold1_{split}.csv"
        if path.is_file():
            splits[split] = _read_split(path, header, by_name, clips, sources)
    for percent in SUBSET_PERCENTS:
        for path in (root / f"split{percent}.csv", setup / f"split{percent}.csv"):
            if path.is_file():
                splits[f"split{percent}"] = _read_split(path, SUBSET_HEADER, by_name, clips, sources)
                break

    if not clips:
        raise DatasetError(root, "no clips found: expected meta.csv or evaluation_setup/fold1_*.csv")
    if check_files:
        check_files_exist(root, sources)
    dataset = Dataset(root=root, clips=clips, splits=splits, layout="tau")
    check_disjoint_locations(dataset, setup / "fold1_evaluate.csv")
    return dataset


def _read_split(
    path: Path,
    header: tuple[str, ...],
    by_name: dict[str, Clip],
    clips: list[Clip],
    sources: list[tuple[Clip, Path, int | None]],
) -> list[Clip]:
    """Clips of one split file; unknown to meta.csv -> added to the index (test sets may lack meta)."""
    result: list[Clip] = []
    for line, fields in read_tau_table(path, header):
        filename = check_filename(fields[0], path, line)
        scene = check_scene(fields[1], path, line) if len(fields) > 1 else None
        clip = by_name.get(filename)
        if clip is None:
            clip = _clip_from_name(filename, scene, None, None)
            by_name[filename] = clip
            clips.append(clip)
            sources.append((clip, path, line))
        elif scene is not None and clip.scene != scene:
            raise DatasetError(path, f"{filename} labelled {scene!r} here but {clip.scene!r} in meta.csv", line)
        result.append(clip)
    return result
