"""Clips of a dataset split -> network inputs, through the feature cache (the trainer's layout)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from dsmn.data import Clip, Dataset, load_dataset
from dsmn.features import FrontEndConfig
from dsmn.features.cache import FeatureCache, default_cache_dir, ensure_cache
from dsmn.models.windowing import cut_windows

SPLIT_ALIASES = {"fold1_train": "train", "fold1_evaluate": "evaluate", "fold1_test": "test"}


def split_name(name: str) -> str:
    """`fold1_evaluate` / `evaluate` -> `evaluate` (and so on); subset names (split25) pass through."""
    return SPLIT_ALIASES.get(name, name)


def open_features(dataset: Dataset, frontend: FrontEndConfig, cache_dir: str | Path | None = None,
                  progress: bool = True) -> FeatureCache:
    """The dataset's log-mel cache for `frontend`; a non-default front end gets its own sub-folder
    keyed by its settings hash, as the trainer lays it out, so both share one cache."""
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir(dataset)
    if frontend != FrontEndConfig():
        directory = directory / f"frontend-{frontend.settings_hash()}"
    return ensure_cache(dataset, directory, config=frontend, progress=progress)


def split_clips(data: str | Path | Dataset, split: str) -> tuple[Dataset, list[Clip]]:
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    return dataset, dataset.split(split_name(split))


def logmel_batches(cache: FeatureCache, clips: Sequence[Clip], batch_size: int = 256) -> Iterator[torch.Tensor]:
    """Raw log-mels (batch, n_mels, frames) float32 of `clips`, in order."""
    rows = cache.rows(clips)
    for start in range(0, len(rows), batch_size):
        chunk = np.sort(rows[start : start + batch_size])  # memmap reads in file order ...
        order = np.argsort(np.argsort(rows[start : start + batch_size]))  # ... then back to clip order
        yield torch.from_numpy(np.asarray(cache.logmels[chunk], dtype=np.float32)[order])


def logmel_windows(batches: Iterator[torch.Tensor], window_frames: int) -> Iterator[torch.Tensor]:
    """The 1-s windows (n, n_mels, window_frames) of each batch of raw log-mels: what an exported graph,
    which takes 1-s inputs, is checked and calibrated on. 1-s clips pass through unchanged."""
    for logmel in batches:
        windows = cut_windows(logmel, window_frames)
        yield windows.reshape(-1, *windows.shape[2:])
