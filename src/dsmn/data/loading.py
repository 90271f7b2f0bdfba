"""`load_dataset`: one entry point that recognises the folder's layout."""

from __future__ import annotations

from pathlib import Path

from dsmn.data.dataset import Dataset, check_root
from dsmn.data.generic import load_generic
from dsmn.data.tau import is_tau_folder, load_tau


def load_dataset(root: str | Path, *, check_files: bool = True) -> Dataset:
    """Index a TAU development folder (2020 / 2022 Mobile) or a generic labelled folder.

    `check_files` verifies that every listed audio file exists (one directory listing, cheap even for
    the 230k files of TAU22); turn it off to index a folder whose audio is still being copied.
    """
    root = Path(root).expanduser().resolve()
    check_root(root)
    if is_tau_folder(root):
        return load_tau(root, check_files=check_files)
    return load_generic(root, check_files=check_files)
