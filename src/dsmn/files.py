"""Atomic file writes: every file the toolkit writes appears whole or not at all.

A write goes to a temporary name beside the target and is renamed over it at the end, so a killed
process never leaves half a checkpoint, cache index, report or model behind.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error it replaces `path`.

    The temporary name keeps the target's suffix (writers such as `np.save` and matplotlib choose
    their format by it). On an error the temporary file is removed and the target left untouched.
    `fsync` flushes the file to disk before the rename (checkpoints).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, payload: Any, **dumps: Any) -> None:
    """`json.dumps(payload, indent=2, **dumps)` written to `path` atomically."""
    write_text(path, json.dumps(payload, **{"indent": 2, **dumps}))
