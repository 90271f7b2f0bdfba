"""On-disk log-mel cache: one memory-mapped float16 array for a whole dataset.

Layout of a cache folder (default `DATA/.dsmn_cache/`):
  manifest.json  front-end settings and their hash, clip length, frame count, row count
  index.json     filenames in row order (row i of logmels.npy is index[i])
  logmels.npy    (N, n_mels, frames) float16, written in place through np.lib.format.open_memmap
  done.npy       (N,) bool, rewritten after every chunk: an interrupted build resumes from it
  failed.json    {filename: reason} for files that could not be decoded (their rows stay zero)

Log-mels are stored raw (no deltas, no standardisation): the trainer adds spectrum correction first.

Settings mismatch: `FeatureCache.open` refuses a cache built with other front-end settings, clip length
or file list (`CacheMismatchError`); `FeatureCache.build` / `ensure_cache` rebuild it, with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from dsmn.data import Clip, Dataset
from dsmn.data.audio import decode_task as _decode
from dsmn.errors import UserError
from dsmn.features.frontend import FrontEndConfig, LogMel
from dsmn.files import atomic_path, write_text
from dsmn.threads import leftover_threads, torch_threads

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
NON_FINITE_LOGMEL = "log-mel is not finite (samples too large for the front end); skipped"
DEFAULT_DIRNAME = ".dsmn_cache"


class CacheError(UserError, RuntimeError):
    """A cache folder is missing, incomplete or unreadable."""


class CacheMismatchError(CacheError):
    """A cache exists but was built with other settings or another file list."""


def default_cache_dir(dataset: Dataset) -> Path:
    return dataset.root / DEFAULT_DIRNAME


class FeatureCache:
    """Read access to a built cache; `logmels[rows]` gives float16 (n, n_mels, frames)."""

    def __init__(self, directory: Path, manifest: dict, filenames: list[str], logmels: np.ndarray,
                 done: np.ndarray, failed: dict[str, str], processed: int = 0) -> None:
        self.directory = directory
        self.manifest = manifest
        self.filenames = filenames
        self.logmels = logmels
        self.done = done
        self._failed = failed
        self._rows = {name: i for i, name in enumerate(filenames)}
        self.processed = processed  # clips computed by the build that returned this cache

    # -- lookup -----------------------------------------------------------------------------------
    @property
    def failed(self) -> list[tuple[str, str]]:
        """(filename, reason) of every file that could not be decoded."""
        return sorted(self._failed.items())

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    @property
    def config(self) -> FrontEndConfig:
        return FrontEndConfig(**self.manifest["settings"])

    def row(self, filename: str) -> int:
        try:
            return self._rows[filename]
        except KeyError:
            raise KeyError(f"{filename} is not in the feature cache {self.directory}") from None

    def rows(self, clips: Iterable[Clip | str]) -> np.ndarray:
        """Row numbers of clips (or filenames); an error for a clip whose features are missing."""
        rows = np.fromiter((self.row(c.filename if isinstance(c, Clip) else c) for c in clips), dtype=np.int64)
        missing = rows[~self.done[rows]]
        if missing.size:
            name = self.filenames[int(missing[0])]
            reason = self._failed.get(name, "not computed yet")
            raise KeyError(f"{missing.size} clip(s) have no features in {self.directory}, e.g. {name}: {reason}")
        return rows

    def usable(self, clips: Sequence[Clip]) -> list[Clip]:
        """The clips whose features exist (drops files that failed to decode)."""
        return [c for c in clips if c.filename in self._rows and self.done[self._rows[c.filename]]]

    def __len__(self) -> int:
        return len(self.filenames)

    # -- opening and building ---------------------------------------------------------------------
    @classmethod
    def open(cls, cache_dir: str | Path, config: FrontEndConfig | None = None) -> FeatureCache:
        """Open an existing cache read-only; `config` (if given) must match the one it was built with."""
        directory = Path(cache_dir)
        manifest_path = directory / "manifest.json"
        if not manifest_path.is_file():
            raise CacheError(f"{directory}: no feature cache here (manifest.json missing); run `dsmn features`")
        manifest = json.loads(manifest_path.read_text())
        if config is not None and manifest.get("settings_hash") != config.settings_hash():
            raise CacheMismatchError(
                f"{directory}: built with other front-end settings ({_diff(manifest['settings'], asdict(config))}); "
                "rebuild it with `dsmn features` or use another --cache folder"
            )
        filenames = json.loads((directory / "index.json").read_text())
        logmels = np.load(directory / "logmels.npy", mmap_mode="r")
        done = np.load(directory / "done.npy")
        failed = json.loads((directory / "failed.json").read_text()) if (directory / "failed.json").is_file() else {}
        return cls(directory, manifest, filenames, logmels, done, failed)

    @classmethod
    def build(
        cls,
        dataset: Dataset,
        cache_dir: str | Path | None = None,
        *,
        config: FrontEndConfig | None = None,
        duration: float | None = None,
        workers: int | None = None,
        chunk_size: int = 128,
        batch_size: int = 64,
        progress: bool = True,
        on_chunk: Callable[[int], None] | None = None,
    ) -> FeatureCache:
        """Compute (or finish computing) the log-mels of every clip of `dataset`.

        Resumes an interrupted build; rebuilds (with a warning) a cache made with other settings.
        `workers` decode files in parallel threads (0: decode in the calling thread). Memory stays
        bounded by two chunks of audio whatever the dataset size.
        """
        config = config or FrontEndConfig()
        directory = Path(cache_dir) if cache_dir is not None else default_cache_dir(dataset)
        filenames = [c.filename for c in dataset.clips]
        duration = duration if duration is not None else detect_duration(dataset)
        frames = config.n_frames(round(duration * config.sample_rate))
        manifest = {
            "format": FORMAT_VERSION,
            "settings": asdict(config),
            "settings_hash": config.settings_hash(),
            "clip_seconds": duration,
            "frames": frames,
            "n_mels": config.n_mels,
            "count": len(filenames),
            "files_hash": hashlib.sha256("\n".join(filenames).encode()).hexdigest()[:16],
            "dataset_root": str(dataset.root),
        }
        _prepare(directory, manifest, filenames)
        logmels = np.lib.format.open_memmap(directory / "logmels.npy", mode="r+")
        done = np.load(directory / "done.npy")
        failed_path = directory / "failed.json"
        failed: dict[str, str] = json.loads(failed_path.read_text()) if failed_path.is_file() else {}
        todo = np.flatnonzero(~done)
        processed = 0
        if todo.size:
            processed = _compute(dataset, filenames, todo, logmels, done, failed, directory, config, duration,
                                 workers, chunk_size, batch_size, progress, on_chunk)
        del logmels
        cache = cls.open(directory, config)
        cache.processed = processed
        return cache


def ensure_cache(
    dataset: Dataset,
    cache_dir: str | Path | None = None,
    *,
    config: FrontEndConfig | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> FeatureCache:
    """The dataset's feature cache: reused when complete and current, otherwise built or finished."""
    config = config or FrontEndConfig()
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir(dataset)
    try:
        cache = FeatureCache.open(directory, config)
        if cache.complete and cache.filenames == [c.filename for c in dataset.clips]:
            return cache
    except (CacheError, OSError, ValueError, json.JSONDecodeError):
        pass
    return FeatureCache.build(dataset, directory, config=config, workers=workers, progress=progress)


def detect_duration(dataset: Dataset) -> float:
    """Clip length of the dataset, from the first readable file (1 s for TAU22, 10 s for TAU20)."""
    for clip in dataset.clips[:20]:
        try:
            info = sf.info(str(dataset.path(clip)))
        except Exception:  # unreadable files are reported by the build itself
            continue
        if info.frames > 0:
            return round(info.frames / info.samplerate, 2)
    return 1.0


def _prepare(directory: Path, manifest: dict, filenames: list[str]) -> None:
    """Create the cache files, or keep them when they match `manifest` (resume), else start over."""
    manifest_path = directory / "manifest.json"
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            old = {}
        same = all(old.get(k) == manifest[k] for k in ("format", "settings_hash", "clip_seconds", "frames",
                                                          "count", "files_hash"))
        if same and (directory / "logmels.npy").is_file() and (directory / "done.npy").is_file():
            return
        reason = ("other front-end settings: " + _diff(old.get("settings", {}), manifest["settings"])
                  if old.get("settings_hash") != manifest["settings_hash"] else "another file list or clip length")
        message = f"feature cache {directory} was built with {reason}; rebuilding it"
        warnings.warn(message, stacklevel=3)
        log.warning(message)
        for name in ("logmels.npy", "done.npy", "failed.json", "index.json", "manifest.json"):
            (directory / name).unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    shape = (manifest["count"], manifest["n_mels"], manifest["frames"])
    free = shutil.disk_usage(directory).free
    need = int(np.prod(shape)) * 2
    if need > free:
        raise CacheError(f"{directory}: the cache needs {need / 1e9:.1f} GB, only {free / 1e9:.1f} GB free")
    array = np.lib.format.open_memmap(directory / "logmels.npy", mode="w+", dtype=np.float16, shape=shape)
    del array
    _save_atomic(directory / "done.npy", np.zeros(manifest["count"], dtype=bool))
    (directory / "index.json").write_text(json.dumps(filenames))
    (directory / "failed.json").write_text("{}")
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))  # last: marks a usable cache


def _compute(dataset, filenames, todo, logmels, done, failed, directory, config, duration, workers, chunk_size,
             batch_size, progress, on_chunk) -> int:
    from tqdm import tqdm

    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    frontend = LogMel(config)
    chunk_size = max(8, round(chunk_size / max(1.0, duration)))  # ~chunk_size seconds of audio in memory
    chunks = [todo[i : i + chunk_size] for i in range(0, todo.size, chunk_size)]

    def tasks(chunk: np.ndarray) -> list[tuple[int, str, int, float]]:
        return [(int(i), str(dataset.path(filenames[i])), config.sample_rate, duration) for i in chunk]

    # Threads, not processes: libsndfile, soxr and numpy release the GIL while they decode, and the
    # samples stay in this process (a process pool pickles every clip through a pipe: measured 40 %
    # slower on 2 cores). The next chunk decodes while this one is transformed.
    executor = ThreadPoolExecutor(workers, thread_name_prefix="dsmn-decode") if workers > 0 else None

    def submit(chunk: np.ndarray) -> list[Future]:
        return [executor.submit(_decode, task) for task in tasks(chunk)]

    processed = 0
    bar = tqdm(total=int(todo.size), unit="clip", desc="log-mel", disable=not progress)
    # decoding threads and torch's OpenMP team share the cores: together never more than there are
    threads = contextlib.ExitStack()
    if workers > 0:
        threads.enter_context(torch_threads(leftover_threads(workers)))
    try:
        pending = submit(chunks[0]) if executor else []
        for k, chunk in enumerate(chunks):
            results = [f.result() for f in pending] if executor else [_decode(t) for t in tasks(chunk)]
            if executor and k + 1 < len(chunks):
                pending = submit(chunks[k + 1])
            good = [(i, samples) for i, samples, _, error in results if error is None]
            for i, _, notes, error in results:
                name = filenames[i]
                if error is not None:
                    failed[name] = error
                    log.warning("%s: %s", name, error)
                else:
                    failed.pop(name, None)
                    for note in notes:
                        log.info("%s: %s", name, note)
            for start in range(0, len(good), batch_size):
                batch = good[start : start + batch_size]
                rows = np.array([i for i, _ in batch])
                waves = torch.from_numpy(np.stack([s for _, s in batch]))
                with torch.inference_mode():
                    features = frontend(waves).numpy().astype(np.float16)
                finite = np.isfinite(features).all(axis=(1, 2))
                for i in rows[~finite]:  # e.g. huge float samples: a NaN row would poison training
                    failed[filenames[i]] = NON_FINITE_LOGMEL
                    log.warning("%s: %s", filenames[i], NON_FINITE_LOGMEL)
                rows, features = rows[finite], features[finite]
                order = np.argsort(rows)
                logmels[rows[order]] = features[order]
                done[rows] = True
                processed += len(rows)
            logmels.flush()
            _save_atomic(directory / "done.npy", done)
            write_text(directory / "failed.json", json.dumps(failed, indent=0, sort_keys=True))
            bar.update(len(chunk))
            if on_chunk is not None:
                on_chunk(processed)
    finally:
        threads.close()
        bar.close()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    return processed


def _save_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def _diff(old: dict, new: dict) -> str:
    changed = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(changed) or "unknown difference"
