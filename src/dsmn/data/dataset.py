"""The dataset index: all clips of a folder and its named splits, independent of the folder's layout."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dsmn.data.clip import Clip
from dsmn.data.errors import DatasetError, SplitError
from dsmn.labels import SCENE_INDEX, SCENES

# fold1 of the TAU development sets, then the DCASE 2024 training subsets (nested, subsets of train)
FOLD_SPLITS: tuple[str, ...] = ("train", "evaluate", "test")
SUBSET_PERCENTS: tuple[int, ...] = (5, 10, 25, 50, 100)
SUBSET_SPLITS: tuple[str, ...] = tuple(f"split{p}" for p in SUBSET_PERCENTS)
AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".ogg")


@dataclass
class Dataset:
    """Clips of one dataset folder; `filename`s are relative to `root`."""

    root: Path
    clips: list[Clip]
    splits: dict[str, list[Clip]] = field(default_factory=dict)
    layout: str = "tau"

    def split(self, name: str) -> list[Clip]:
        """Clips of a named split (`train`, `evaluate`, `test`, `split5` .. `split100`)."""
        try:
            return self.splits[name]
        except KeyError:
            raise SplitError(
                self.root, f"no split {name!r}; available: {', '.join(self.available_splits()) or 'none'}"
            ) from None

    def available_splits(self) -> list[str]:
        order = {name: i for i, name in enumerate(FOLD_SPLITS + SUBSET_SPLITS)}
        return sorted(self.splits, key=lambda n: (order.get(n, len(order)), n))

    def path(self, clip: Clip | str) -> Path:
        """Absolute path of a clip's audio file."""
        return self.root / (clip.filename if isinstance(clip, Clip) else clip)

    def __len__(self) -> int:
        return len(self.clips)


def check_filename(filename: str, where: Path, line: int | None) -> str:
    """Validate a dataset-relative path as found in a CSV; returns it in POSIX form."""
    if not filename:
        raise DatasetError(where, "empty filename", line)
    posix = filename.replace("\\", "/")
    pure = PurePosixPath(posix)
    if pure.is_absolute():
        raise DatasetError(where, f"{filename!r} is an absolute path; expected a path relative to the "
                           "dataset root (e.g. audio/x.wav)", line)
    parts = pure.parts
    if len(parts) >= 2 and parts[0] == "audio" and parts[1] == "audio":
        raise DatasetError(where, f"{filename!r} has a doubled 'audio/' prefix; expected audio/{pure.name}", line)
    return posix


def check_scene(label: str, where: Path, line: int | None) -> str:
    if label not in SCENE_INDEX:
        raise DatasetError(where, f"unknown scene label {label!r}; expected one of {', '.join(SCENES)}", line)
    return label


def check_root(root: Path) -> None:
    """Refuse a root that is the audio/ folder of a TAU set (a common slip) or that does not exist."""
    if not root.is_dir():
        raise DatasetError(root, "dataset folder not found")
    parent = root.parent
    if root.name == "audio" and ((parent / "meta.csv").is_file() or (parent / "evaluation_setup").is_dir()):
        raise DatasetError(root, f"this is the audio/ folder of a TAU dataset; pass its parent folder {parent}")


def check_files_exist(root: Path, clips: Iterable[tuple[Clip, Path, int | None]]) -> None:
    """Every listed clip has its audio file; the error names the first missing one and how many."""
    listing: dict[Path, set[str]] = {}

    def exists(rel: str) -> bool:
        folder = (root / rel).parent
        if folder not in listing:
            try:
                listing[folder] = {e.name for e in os.scandir(folder)}
            except (FileNotFoundError, NotADirectoryError):
                listing[folder] = set()
        return PurePosixPath(rel).name in listing[folder]

    missing = [(clip, where, line) for clip, where, line in clips if not exists(clip.filename)]
    if not missing:
        return
    clip, where, line = missing[0]
    more = f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""
    doubled = root / "audio" / clip.filename
    if doubled.is_file():
        raise DatasetError(where, f"audio file {clip.filename} not found, but {doubled} exists: the audio "
                           f"folder is nested twice (audio/audio/); move its files up one level{more}", line)
    raise DatasetError(where, f"audio file {clip.filename} not found under {root}{more}", line)


def check_disjoint_locations(dataset: Dataset, where: Path) -> None:
    """Train and evaluate must never share a recording location, or evaluation measures memorisation."""
    if "train" not in dataset.splits or "evaluate" not in dataset.splits:
        return
    train = {c.identifier for c in dataset.splits["train"] if c.identifier}
    shared = sorted(train & {c.identifier for c in dataset.splits["evaluate"] if c.identifier})
    if shared:
        listed = ", ".join(shared[:5]) + (f" and {len(shared) - 5} more" if len(shared) > 5 else "")
        raise DatasetError(where, f"location(s) {listed} appear in both train and evaluate")
