"""Reading the small CSV tables of a dataset with errors that say exactly what is wrong where."""

from __future__ import annotations

import csv
import io
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

    Read with the csv module, so standard quoting works (a quoted file name may hold the separator,
    any field may be quoted, `""` is a literal quote). Returns the column names (from the header, or
    positional defaults) and the rows.
    """
    lines = _read_lines(path)
    if not lines:
        raise DatasetError(path, "file is empty; expected rows of filename, scene_label[, device]")
    first_no, first = lines[0]
    sep = max(("\t", ","), key=lambda s: (len(_fields(first, s)), s == "\t"))
    if len(_fields(first, sep)) == 1:
        sep = None
        other = _guess_separator(first)
        if other is not None and len(_fields(first, other)) > 1:
            raise DatasetError(
                path,
                f"expected comma- or tab-separated columns (filename, scene_label[, device]), found "
                f"{_SEPARATOR_NAMES[other]} as separator: {first!r}",
                first_no,
            )
    records = _records(path, sep)
    columns = ["filename", "scene_label", "device"]
    body = records
    head = [c.lower() for c in records[0][1]]
    if head and head[0] in ("filename", "file", "path"):
        aliases = {"scene": "scene_label", "label": "scene_label", "source_label": "device", "file": "filename",
                   "path": "filename"}
        columns = [aliases.get(c, c) for c in head]
        body = records[1:]
        unknown = [c for c in columns if c not in ("filename", "scene_label", "device", "identifier")]
        if unknown:
            raise DatasetError(path, f"unknown column(s) {unknown}; expected filename, scene_label[, device]",
                               first_no)
    rows: list[Row] = []
    width = None
    for number, fields in body:
        if width is None:
            width = len(fields)
            if width > 3 and body is records:
                raise DatasetError(path, f"expected at most 3 columns (filename, scene_label, device), "
                                   f"found {width}: {_line(fields, sep)!r}", number)
        if len(fields) != width or (body is not records and len(fields) != len(columns)):
            raise DatasetError(path, f"expected {width if body is records else len(columns)} fields, "
                               f"found {len(fields)}: {_line(fields, sep)!r}", number)
        rows.append((number, fields))
    if body is records:
        columns = columns[: width or 1]
    return columns, rows


def _fields(line: str, sep: str) -> list[str]:
    """One line split the csv module's way (quotes respected)."""
    try:
        return next(csv.reader([line], delimiter=sep), [""])
    except csv.Error:
        return line.split(sep)


def _records(path: Path, sep: str | None) -> list[Row]:
    """Non-empty CSV records with the line each starts on; fields stripped of surrounding blanks."""
    text = path.read_text(encoding="utf-8-sig")
    if sep is None:
        return [(number, [line.strip()]) for number, line in _read_lines(path)]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    records: list[Row] = []
    line = 1
    try:
        for fields in reader:
            if any(f.strip() for f in fields):
                records.append((line, [f.strip() for f in fields]))
            line = reader.line_num + 1
    except csv.Error as error:
        raise DatasetError(path, f"not valid CSV ({error})", reader.line_num) from None
    return records


def _line(fields: list[str], sep: str | None) -> str:
    return (sep or " ").join(fields)


def _read_lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(path, f"not a UTF-8 text file ({error.reason})") from None
    return [(i + 1, line.rstrip("\r")) for i, line in enumerate(text.split("\n")) if line.strip()]
