"""Reading the small CSV tables of a dataset with errors that say exactly what is wrong where."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dsmn.data.errors import DatasetError

Row = tuple[int, list[str]]  # (1-based line number, fields)

_SEPARATOR_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", " ": "space"}


def _guess_separator(line: str) -> str | None:
    for sep in ("\t", ",", ";"):
        if sep in line:
            return sep
    return " " if " " in line.strip() else None


def read_tau_table(path: Path, header: Sequence[str]) -> list[Row]:
    """Read a tab-separated TAU table whose first line must be exactly `header`.

    TAU files are tab-separated; a comma- or semicolon-separated copy (e.g. re-saved by a spreadsheet)
    is refused with a message naming the separator found, rather than misread as one-column data.
    """
    lines = _read_lines(path)
    if not lines:
        raise DatasetError(path, "file is empty; expected a header line " + "\\t".join(header))
    first_no, first = lines[0]
    found = first.split("\t")
    if len(header) > 1 and len(found) == 1:
        sep = _guess_separator(first)
        if sep is not None and sep != "\t":
            raise DatasetError(
                path,
                f"expected tab-separated columns ({', '.join(header)}), found {_SEPARATOR_NAMES[sep]} "
                f"as separator: {first!r}",
                first_no,
            )
    if [f.strip() for f in found] != list(header):
        raise DatasetError(path, f"expected header {chr(9).join(header)!r}, found {first!r}", first_no)
    rows: list[Row] = []
    for number, line in lines[1:]:
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) != len(header):
            sep = _guess_separator(line)
            hint = f" (separator looks like {_SEPARATOR_NAMES[sep]})" if sep not in (None, "\t") else ""
            raise DatasetError(
                path, f"expected {len(header)} tab-separated fields, found {len(fields)}{hint}: {line!r}", number
            )
        rows.append((number, fields))
    return rows


def read_generic_table(path: Path) -> tuple[list[str], list[Row]]:
    """Read `filename, scene_label[, device]` rows, comma- or tab-separated, header optional.

    Returns the column names (from the header, or positional defaults) and the rows.
    """
    lines = _read_lines(path)
    if not lines:
        raise DatasetError(path, "file is empty; expected rows of filename, scene_label[, device]")
    first_no, first = lines[0]
    sep = "\t" if "\t" in first else "," if "," in first else None
    if sep is None:
        other = _guess_separator(first)
        if other is not None:
            raise DatasetError(
                path,
                f"expected comma- or tab-separated columns (filename, scene_label[, device]), found "
                f"{_SEPARATOR_NAMES[other]} as separator: {first!r}",
                first_no,
            )
    split = (lambda s: [f.strip() for f in s.split(sep)]) if sep else (lambda s: [s.strip()])
    columns = ["filename", "scene_label", "device"]
    body = lines
    head = [c.lower() for c in split(first)]
    if head and head[0] in ("filename", "file", "path"):
        aliases = {"scene": "scene_label", "label": "scene_label", "source_label": "device", "file": "filename",
                   "path": "filename"}
        columns = [aliases.get(c, c) for c in head]
        body = lines[1:]
        unknown = [c for c in columns if c not in ("filename", "scene_label", "device", "identifier")]
        if unknown:
            raise DatasetError(path, f"unknown column(s) {unknown}; expected filename, scene_label[, device]",
                               first_no)
    rows: list[Row] = []
    width = None
    for number, line in body:
        fields = split(line)
        if width is None:
            width = len(fields)
            if width > 3 and body is lines:
                raise DatasetError(path, f"expected at most 3 columns (filename, scene_label, device), "
                                   f"found {width}: {line!r}", number)
        if len(fields) != width or (body is not lines and len(fields) != len(columns)):
            raise DatasetError(path, f"expected {width if body is lines else len(columns)} fields, "
                               f"found {len(fields)}: {line!r}", number)
        rows.append((number, fields))
    if body is lines:
        columns = columns[: width or 1]
    return columns, rows


def _read_lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(path, f"not a UTF-8 text file ({error.reason})") from None
    return [(i + 1, line.rstrip("\r")) for i, line in enumerate(text.split("\n")) if line.strip()]
