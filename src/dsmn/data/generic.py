"""Datasets that are not in TAU layout: a label CSV, or one sub-folder per scene.

Such folders have no official split, so train / evaluate are drawn deterministically by location
(identifier from a TAU-style name or column, else the file itself): about 30 % of locations go to
evaluate, never sharing a location with train. `test` is every labelled evaluate clip, or every clip
when the folder has no labels at all (a folder of files to classify).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from dsmn.data.clip import Clip
from dsmn.data.dataset import (
    AUDIO_SUFFIXES,
    Dataset,
    check_disjoint_locations,
    check_filename,
    check_files_exist,
    check_scene,
)
from dsmn.data.errors import DatasetError
from dsmn.data.filenames import parse_tau_name
from dsmn.data.tables import read_generic_table
from dsmn.labels import SCENE_INDEX

EVALUATE_PERCENT = 30
LABEL_FILES = ("meta.csv", "labels.csv")


def load_generic(root: Path, *, check_files: bool = True) -> Dataset:
    table = _find_table(root)
    sources = _clips_from_table(table) if table is not None else _clips_from_folders(root)
    if not sources:
        raise DatasetError(root, f"no audio files ({', '.join(AUDIO_SUFFIXES)}) and no label CSV found")
    if check_files and table is not None:
        check_files_exist(root, sources)
    clips = [clip for clip, _, _ in sources]
    dataset = Dataset(root=root, clips=clips, splits=_splits(clips), layout="generic")
    check_disjoint_locations(dataset, table or root)
    return dataset


def _find_table(root: Path) -> Path | None:
    tables = sorted(p for p in root.glob("*.csv") if not p.name.startswith("split"))
    for name in LABEL_FILES:
        if (root / name).is_file():
            return root / name
    if len(tables) > 1:
        raise DatasetError(root, f"several CSV files ({', '.join(p.name for p in tables)}); name the label "
                           f"file {LABEL_FILES[1]}")
    return tables[0] if tables else None


def _clip(filename: str, scene: str | None, device: str | None, identifier: str | None) -> Clip:
    name = parse_tau_name(filename)
    if name is None:
        return Clip(filename=filename, scene=scene, device=device, identifier=identifier)
    return Clip(filename=filename, scene=scene, device=device or name.device, city=name.city,
                identifier=identifier or name.identifier, segment=name.segment, slice=name.slice)


def _clips_from_table(path: Path) -> list[tuple[Clip, Path, int | None]]:
    columns, rows = read_generic_table(path)
    index = {name: i for i, name in enumerate(columns)}
    result = []
    for line, fields in rows:
        filename = check_filename(fields[index["filename"]], path, line)
        scene = fields[index["scene_label"]] if "scene_label" in index else ""
        scene = check_scene(scene, path, line) if scene else None
        device = fields[index["device"]] or None if "device" in index else None
        identifier = fields[index["identifier"]] or None if "identifier" in index else None
        result.append((_clip(filename, scene, device, identifier), path, line))
    return result


def _clips_from_folders(root: Path) -> list[tuple[Clip, Path, int | None]]:
    result = []
    loose = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    for path in loose:
        result.append((_clip(path.name, None, None, None), path, None))
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            continue
        if folder.name not in SCENE_INDEX:
            check_scene(folder.name, folder, None)
        for path in files:
            result.append((_clip(path.relative_to(root).as_posix(), folder.name, None, None), path, None))
    return result


def _in_evaluate(clip: Clip) -> bool:
    group = clip.identifier or clip.filename
    return int(hashlib.sha1(group.encode()).hexdigest(), 16) % 100 < EVALUATE_PERCENT


def _splits(clips: list[Clip]) -> dict[str, list[Clip]]:
    labelled = [c for c in clips if c.scene is not None]
    if not labelled:
        return {"test": list(clips)}
    evaluate = [c for c in labelled if _in_evaluate(c)]
    return {"train": [c for c in labelled if not _in_evaluate(c)], "evaluate": evaluate, "test": evaluate}
