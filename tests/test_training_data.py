"""Training data: batch order as a function of (seed, epoch), sharding, batched cache reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dsmn.data import load_dataset
from dsmn.features import FrontEndConfig, network_input
from dsmn.training.data import BatchReader, LogMelRows, clip_table, epoch_batches, open_cache, take_rows
from dsmn.training.pipeline import to_layout


def test_batch_order_is_a_function_of_seed_and_epoch() -> None:
    a = epoch_batches(100, 32, seed=1, epoch=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, epoch_batches(100, 32, seed=1, epoch=3), strict=True))
    assert not np.array_equal(a[0], epoch_batches(100, 32, seed=1, epoch=4)[0])
    assert not np.array_equal(a[0], epoch_batches(100, 32, seed=2, epoch=3)[0])
    assert [len(b) for b in a] == [32, 32, 32]  # short last batch dropped
    kept = epoch_batches(100, 32, seed=1, epoch=3, drop_last=False)
    assert sorted(np.concatenate(kept).tolist()) == list(range(100))


def test_processes_share_each_global_batch() -> None:
    single = epoch_batches(100, 32, seed=0, epoch=0)
    ranks = [epoch_batches(100, 32, seed=0, epoch=0, rank=r, world_size=2) for r in (0, 1)]
    for k, whole in enumerate(single):
        parts = [ranks[0][k], ranks[1][k]]
        assert [len(p) for p in parts] == [16, 16]
        assert sorted(np.concatenate(parts).tolist()) == sorted(whole.tolist())
    padded = epoch_batches(33, 32, seed=0, epoch=0, rank=1, world_size=2, drop_last=False)
    assert [len(b) for b in padded] == [16, 1]  # the last clip plus one from the epoch's start, dealt out
    with pytest.raises(ValueError, match="divisible"):
        epoch_batches(100, 31, seed=0, epoch=0, world_size=2)


def test_take_rows_keeps_the_requested_order() -> None:
    array = np.arange(20).reshape(10, 2)
    rows = np.array([7, 2, 9, 2])
    assert np.array_equal(take_rows(array, rows), array[rows])


def test_batched_reads_from_the_cache_match_the_rows(tiny_data: Path) -> None:
    dataset = load_dataset(tiny_data)
    clips = dataset.split("evaluate")
    cache = open_cache(dataset, FrontEndConfig(), progress=False)
    table = clip_table(clips, cache.rows(clips))
    batches = epoch_batches(len(table), 16, seed=0, epoch=0)
    for preload in (False, True):
        source = LogMelRows(cache.logmels, table.rows, torch.device("cpu"), preload)
        for workers in (0, 2):
            reader = BatchReader(table, source, "a", workers=workers)
            for index, batch in zip(batches, reader(batches), strict=True):
                expected = torch.from_numpy(cache.logmels[table.rows[index]].astype(np.float32))
                assert torch.equal(batch.logmel, expected)
                assert batch.scene_ids.tolist() == table.scene_ids[index].tolist()
                assert batch.is_reference.tolist() == [table.devices[i] == "a" for i in index]


def test_network_input_shapes_and_the_channels_last_layout() -> None:
    logmel = torch.randn(3, 256, 44)
    assert network_input(logmel, True).shape == (3, 2, 256, 44)
    assert network_input(logmel, False).shape == (3, 1, 256, 44)
    x = network_input(logmel, True)
    fast = to_layout(x, True)
    assert torch.equal(fast, x) and fast.transpose(2, 3).is_contiguous(memory_format=torch.channels_last)
