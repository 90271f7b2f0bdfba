"""Training data from the feature cache: clip tables, the (seed, epoch) batch order, batched row reads.

The cache holds raw float16 log-mels, one row per clip. A batch is read as one fancy-index of the
cache (sorted rows, so a memory-mapped file is read in order), never clip by clip, and lands on the
training device as float32. Small training sets are preloaded onto the device once.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from dsmn.data import Clip, Dataset, parallel_pairs
from dsmn.features import FeatureCache, FrontEndConfig, default_cache_dir, ensure_cache


@dataclass
class ClipTable:
    """The clips of one split as arrays aligned with their cache rows."""

    clips: list[Clip]
    rows: np.ndarray  # row of each clip in the cache's log-mel array
    scene_ids: np.ndarray
    devices: list[str | None]

    def __len__(self) -> int:
        return len(self.clips)

    def device_mask(self, device: str) -> np.ndarray:
        return np.array([d == device for d in self.devices], dtype=bool)


def frontend_for(overrides: dict) -> FrontEndConfig:
    """The front end a model's registry entry asks for (unknown keys are an error)."""
    known = {f.name for f in fields(FrontEndConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"front-end override(s) {', '.join(unknown)} are not FrontEndConfig fields")
    return FrontEndConfig(**overrides)


def open_cache(dataset: Dataset, frontend: FrontEndConfig, cache_dir: str | None = None,
               progress: bool = True) -> FeatureCache:
    """The dataset's feature cache for this front end (built or finished on first use).

    A front end other than the default gets its own sub-folder keyed by its settings hash, so
    training models of different families in turn never rebuilds one cache back and forth.
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir(dataset)
    if frontend != FrontEndConfig():
        directory = directory / f"frontend-{frontend.settings_hash()}"
    return ensure_cache(dataset, directory, config=frontend, progress=progress)


def clip_table(clips: Sequence[Clip], rows: np.ndarray) -> ClipTable:
    return ClipTable(list(clips), np.asarray(rows, dtype=np.int64),
                     np.array([c.scene_id for c in clips], dtype=np.int64), [c.device for c in clips])


class LogMelRows:
    """Batched reads of cache rows as float32 tensors on the training device.

    `preload=True` copies the needed rows (float16) to the device once; otherwise each batch is one
    sorted fancy-index of the (memory-mapped) array.
    """

    def __init__(self, logmels: np.ndarray, rows: np.ndarray, device: torch.device, preload: bool) -> None:
        self.device = device
        self.rows = np.asarray(rows, dtype=np.int64)
        self.preloaded: torch.Tensor | None = None
        self.logmels = logmels
        if preload:
            block = np.ascontiguousarray(take_rows(logmels, self.rows))
            self.preloaded = torch.from_numpy(block).to(device)

    @staticmethod
    def bytes_needed(logmels: np.ndarray, count: int) -> int:
        return int(count * np.prod(logmels.shape[1:]) * logmels.dtype.itemsize)

    def gather(self, index: np.ndarray, position: torch.Tensor | None = None) -> torch.Tensor:
        """Log-mels of table entries `index` (positions in `rows`) as (B, mel, frames) float32.

        `position`: `index` already on the device (BatchReader uploads it once for all its lookups).
        """
        if self.preloaded is not None:
            picked = self.preloaded[position if position is not None else to_device(index, self.device)]
            return picked.float()
        return to_device(take_rows(self.logmels, self.rows[index]), self.device).float()


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array as a tensor on `device`, without making the host wait for the GPU.

    A plain `.to("cuda")` of pageable memory synchronises the stream: the host stops until every
    queued kernel has run, and the GPU then idles while the host queues the next step. Through pinned
    memory with `non_blocking` the copy is queued like a kernel (PyTorch's pinned-memory cache keeps
    the host buffer alive until the copy has run). On the CPU: the array itself, no copy.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def take_rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """array[rows] read in ascending row order (sequential on disk), returned in the requested order."""
    order = np.argsort(rows, kind="stable")
    block = np.asarray(array[rows[order]])
    out = np.empty_like(block)
    out[order] = block
    return out


def epoch_batches(
    count: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1, drop_last: bool = True
) -> list[np.ndarray]:
    """This process's share of every batch of an epoch: a function of (seed, epoch) alone.

    The global order is one permutation per epoch; each global batch of `batch_size` clips is dealt to
    the processes by stride (rank::world_size), so the data an epoch sees does not depend on how many
    processes share it. A short last batch is dropped, or padded from the epoch's start to divide evenly.
    """
    if batch_size % world_size:
        raise ValueError(f"batch size {batch_size} is not divisible by the {world_size} processes")
    order = np.random.default_rng([seed, epoch, 0xD5]).permutation(count)
    batches = []
    for start in range(0, count, batch_size):
        chunk = order[start:start + batch_size]
        if len(chunk) < batch_size:
            if drop_last and start > 0:
                break
            chunk = np.concatenate([chunk, order[: (-len(chunk)) % world_size]])
        batches.append(chunk[rank::world_size])
    return batches


@dataclass
class RawBatch:
    logmel: torch.Tensor  # (B, mel, frames) float32 raw log-mel
    scene_ids: torch.Tensor  # (B,) int64
    is_reference: torch.Tensor  # (B,) bool: recorded by the spectrum-correction reference device
    teacher_logits: torch.Tensor | None = None  # (B, 10) scene logits of the teacher, when distilling


class BatchReader:
    """Iterates an epoch's batches, reading each with one batched cache access.

    With `workers > 0` a background thread reads ahead (numpy releases the GIL while copying), so
    the disk read of batch k+1 overlaps the training step of batch k.
    """

    def __init__(self, table: ClipTable, source: LogMelRows, reference_device: str, workers: int = 0,
                 teacher_logits: torch.Tensor | None = None) -> None:
        """`teacher_logits` (N, 10), aligned with `table`: gathered with each batch (one index on the device)."""
        self.table = table
        self.source = source
        self.workers = workers
        device = source.device
        self.scene_ids = torch.from_numpy(table.scene_ids).to(device)
        self.is_reference = torch.from_numpy(table.device_mask(reference_device)).to(device)
        self.teacher_logits = None if teacher_logits is None else teacher_logits.to(device)

    def read(self, index: np.ndarray) -> RawBatch:
        position = to_device(index, self.source.device)  # one upload for all the lookups
        teacher = None if self.teacher_logits is None else self.teacher_logits[position]
        return RawBatch(self.source.gather(index, position), self.scene_ids[position], self.is_reference[position],
                        teacher)

    def __call__(self, batches: list[np.ndarray]) -> Iterator[RawBatch]:
        if self.workers <= 0 or len(batches) < 2:
            return (self.read(b) for b in batches)
        return _prefetch(self.read, batches, depth=max(2, self.workers))


def _prefetch(read, batches: list[np.ndarray], depth: int) -> Iterator[RawBatch]:  # noqa: ANN001
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for index in batches:
                if stop.is_set():
                    return
                ready.put(read(index))
        except BaseException as error:  # noqa: BLE001 - re-raised in the consumer
            ready.put(error)
        ready.put(None)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                ready.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.01)


def parallel_rows(table: ClipTable, reference_device: str) -> tuple[np.ndarray, np.ndarray]:
    """Cache rows of (reference, other) parallel recordings within one split."""
    position = {id(c): i for i, c in enumerate(table.clips)}
    pairs = parallel_pairs(table.clips, reference=reference_device)
    ref = np.array([table.rows[position[id(a)]] for a, _ in pairs], dtype=np.int64)
    other = np.array([table.rows[position[id(b)]] for _, b in pairs], dtype=np.int64)
    return ref, other
