"""Errors of the data path: each names the file (and line) and the problem."""

from __future__ import annotations

from pathlib import Path

from dsmn.errors import UserError


class DatasetError(UserError, ValueError):
    """A dataset folder or one of its CSV files is not what the toolkit can read."""

    def __init__(self, where: str | Path, problem: str, line: int | None = None) -> None:
        self.where = str(where)
        self.line = line
        self.problem = problem
        location = f"{where}, line {line}" if line is not None else str(where)
        super().__init__(f"{location}: {problem}")


class AudioError(UserError, ValueError):
    """An audio file cannot be decoded into a usable clip (corrupt, empty, not audio)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class SplitError(DatasetError, KeyError):
    """A split name the dataset does not have (a KeyError too, for code that looks splits up)."""

    def __str__(self) -> str:
        return DatasetError.__str__(self)
