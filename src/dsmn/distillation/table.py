"""The teacher logit table: one row per clip, `filename` then the ten scene logits.

Format (what `dsmn teach` writes and what `dsmn train --teacher` reads):

    filename<TAB>airport<TAB>bus<TAB>...<TAB>tram
    audio/airport-barcelona-0-0-0-a.wav<TAB>2.31<TAB>-0.42<TAB>...

- tab- or comma-separated (decided by the header line), UTF-8;
- header: `filename` first, then the ten scene names of `dsmn.labels.SCENES` in any order;
- one row per clip in any order; filenames relative to the dataset folder (`audio/x.wav`) or bare
  (`x.wav`), matched to the training clips by path, else by base name;
- values are logits (pre-softmax scores), finite; lines starting with `#` are comments.

`dsmn teach` also writes `FILE.json` beside it: class order, members (path, model, kind), split and
dataset, so a table says where it came from. Readers of the table alone lose nothing but provenance.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dsmn.files import write_text
from dsmn.labels import SCENES

SHOWN = 5  # offending files named in an error


class TeacherFileError(ValueError):
    """A teacher table that cannot serve the training clips; the message names the file and the problem."""


@dataclass
class TeacherTable:
    """Scene logits (N, 10) in `dsmn.labels.SCENES` order, one row per filename."""

    filenames: list[str]
    logits: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)

    def for_clips(self, filenames: Sequence[str], path: str | Path = "teacher table") -> np.ndarray:
        """Rows in the order of `filenames` (training clips); refuses when any clip has no row."""
        by_name = {name: i for i, name in enumerate(self.filenames)}
        by_base: dict[str, int] = {}
        for i, name in enumerate(self.filenames):
            base = os.path.basename(name)
            by_base[base] = -1 if base in by_base else i  # -1: ambiguous base name
        index, missing = [], []
        for name in filenames:
            row = by_name.get(name)
            if row is None:
                row = by_base.get(os.path.basename(name), -1)
            if row < 0:
                missing.append(name)
            index.append(row)
        if missing:
            raise TeacherFileError(
                f"{path}: no teacher logits for {len(missing)} of {len(filenames)} training clips, first: "
                f"{', '.join(missing[:SHOWN])}")
        return self.logits[np.array(index, dtype=np.int64)]


def read_teacher_table(path: str | Path) -> TeacherTable:
    """Parse and check a teacher table (format in the module doc); TeacherFileError on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TeacherFileError(f"{path}: cannot read the teacher table ({error})") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip() and not line.startswith("#")]
    if not lines:
        raise TeacherFileError(f"{path}: empty teacher table (expected a header `filename` + the ten scenes)")
    header_number, header_line = lines[0]
    sep = "\t" if "\t" in header_line else ","
    header = [h.strip() for h in header_line.split(sep)]
    order = _class_columns(header, path)
    filenames, rows, bad = [], [], []
    for number, line in lines[1:]:
        fields = [f.strip() for f in line.split(sep)]
        if len(fields) != len(header):
            raise TeacherFileError(f"{path}, line {number}: {len(fields)} fields, the header has {len(header)} "
                                   f"(separator {'tab' if sep == chr(9) else 'comma'})")
        try:
            values = [float(fields[c]) for c in order]
        except ValueError:
            raise TeacherFileError(f"{path}, line {number}: a logit is not a number ({line[:80]!r})") from None
        if not all(math.isfinite(v) for v in values):
            bad.append(fields[0])
        filenames.append(fields[0])
        rows.append(values)
    if bad:
        raise TeacherFileError(f"{path}: non-finite logits (NaN or inf) for {len(bad)} clips, first: "
                               f"{', '.join(bad[:SHOWN])}")
    seen: set[str] = set()
    doubled = [f for f in filenames if f in seen or seen.add(f)]
    if doubled:
        raise TeacherFileError(f"{path}: clips listed twice, first: {', '.join(doubled[:SHOWN])}")
    provenance = _sidecar(path)
    if provenance.get("classes") not in (None, list(SCENES)):
        raise TeacherFileError(f"{path}.json: class order {provenance['classes']} is not dsmn's {list(SCENES)}")
    logits = np.array(rows, dtype=np.float32).reshape(len(rows), len(SCENES))
    return TeacherTable(filenames, logits, provenance)


def _class_columns(header: list[str], path: Path) -> list[int]:
    """Column index of each scene (SCENES order); the header must be `filename` + exactly the ten scenes."""
    if not header or header[0] != "filename":
        raise TeacherFileError(f"{path}: the header must start with `filename`, found {header[:1]}")
    columns = header[1:]
    unknown = [c for c in columns if c not in SCENES]
    missing = [s for s in SCENES if s not in columns]
    doubled = sorted({c for c in columns if columns.count(c) > 1})
    if unknown or missing or doubled:
        parts = [f"unknown class column(s) {', '.join(unknown)}" if unknown else "",
                 f"missing scene column(s) {', '.join(missing)}" if missing else "",
                 f"repeated column(s) {', '.join(doubled)}" if doubled else ""]
        raise TeacherFileError(f"{path}: {'; '.join(p for p in parts if p)} (expected `filename` and the ten "
                               f"scenes {', '.join(SCENES)}, in any order)")
    return [columns.index(s) + 1 for s in SCENES]


def _sidecar(path: Path) -> dict[str, Any]:
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        return json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TeacherFileError(f"{side}: unreadable provenance ({error})") from None


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_teacher_table(path: str | Path, table: TeacherTable) -> Path:
    """Write the tab-separated table and its `FILE.json` provenance, each atomically (temp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(("filename", *SCENES))]
    lines += ["\t".join((name, *(f"{v:.6g}" for v in row))) for name, row in zip(table.filenames, table.logits,
                                                                                    strict=True)]
    write_text(path, "\n".join(lines) + "\n")
    provenance = {"format": "dsmn teacher logits 1", "classes": list(SCENES), "values": "logits", **table.provenance}
    write_text(sidecar_path(path), json.dumps(provenance, indent=2) + "\n")
    return path
