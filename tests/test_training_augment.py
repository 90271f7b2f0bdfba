"""Augmentations: spectrum correction from real parallel recordings (generated TAU-format data),
SpecAugment stripes, mixup and the soft coarse targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dsmn.data import load_dataset
from dsmn.features import FrontEndConfig
from dsmn.labels import SCENE_TO_COARSE_ID
from dsmn.training.augment import correction_vectors, mixup, soft_targets, spec_augment, spectrum_correction
from dsmn.training.data import clip_table, open_cache, parallel_rows, take_rows


@pytest.fixture(scope="module")
def train_table(tiny_data: Path):
    dataset = load_dataset(tiny_data)
    clips = dataset.split("train")
    cache = open_cache(dataset, FrontEndConfig(), progress=False)
    return clip_table(clips, cache.rows(clips)), cache


def test_correction_vectors_come_from_real_parallel_recordings(train_table) -> None:
    table, cache = train_table
    ref_rows, other_rows = parallel_rows(table, "a")
    assert len(ref_rows) == int(np.sum([d != "a" for d in table.devices]))  # every non-a clip pairs with a
    by_row = {int(r): c for r, c in zip(table.rows, table.clips, strict=True)}
    for a_row, other_row in zip(ref_rows, other_rows, strict=True):
        a, other = by_row[int(a_row)], by_row[int(other_row)]
        assert a.device == "a" and other.device != "a"
        assert a.recording == other.recording and a.scene == other.scene
    vectors = correction_vectors(take_rows(cache.logmels, ref_rows), take_rows(cache.logmels, other_rows))
    assert vectors.shape == (len(ref_rows), 256) and np.isfinite(vectors).all()
    # the recipe's formula (docs/recipe.md) on one pair, computed directly in float64
    a_power = np.mean(10.0 ** cache.logmels[ref_rows[0]].astype(np.float64), axis=1)
    o_power = np.mean(10.0 ** cache.logmels[other_rows[0]].astype(np.float64), axis=1)
    assert np.allclose(vectors[0], np.log10(o_power) - np.log10(a_power), atol=1e-4)
    assert np.abs(vectors).mean() > 0.01  # the devices really differ


def test_spectrum_correction_touches_only_device_a_clips(train_table) -> None:
    table, cache = train_table
    ref_rows, other_rows = parallel_rows(table, "a")
    vectors = torch.from_numpy(correction_vectors(take_rows(cache.logmels, ref_rows),
                                                  take_rows(cache.logmels, other_rows)))
    index = np.arange(0, len(table), 7)
    logmel = torch.from_numpy(take_rows(cache.logmels, table.rows[index])).float()
    is_a = torch.from_numpy(table.device_mask("a")[index])
    assert 0 < int(is_a.sum()) < len(index)
    rng = np.random.default_rng(0)
    out = spectrum_correction(logmel, is_a, vectors, probability=1.0, host_rng=rng,
                              generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[~is_a], logmel[~is_a])
    shifts = (out[is_a] - logmel[is_a])[:, :, 0]  # the same shift on every frame
    assert torch.allclose(out[is_a] - logmel[is_a], shifts[:, :, None].expand_as(logmel[is_a]), atol=1e-5)
    for shift in shifts:  # each is one of the stored device responses
        assert torch.min((vectors - shift).abs().amax(dim=1)) < 1e-4
    unchanged = spectrum_correction(logmel, is_a, vectors, probability=0.0, host_rng=rng)
    assert torch.equal(unchanged, logmel)


def test_spectrum_correction_fires_with_its_probability_per_batch() -> None:
    logmel = torch.zeros(4, 8, 3)
    is_a = torch.tensor([True, False, True, False])
    vectors = torch.ones(5, 8)
    rng = np.random.default_rng(1)
    fired = [bool(spectrum_correction(logmel, is_a, vectors, probability=12 / 13, host_rng=rng).any())
             for _ in range(2000)]
    assert np.mean(fired) == pytest.approx(12 / 13, abs=0.02)


def test_specaugment_zeroes_at_most_two_stripes_of_width_zero_or_one() -> None:
    x = torch.ones(400, 2, 256, 44)
    out = spec_augment(x, time_stripes=2, freq_stripes=2, max_width=1, generator=torch.Generator().manual_seed(0))
    zero_frames = (out == 0).all(dim=2).all(dim=1)  # (B, T): frames zeroed in every bin and channel
    zero_bins = (out == 0).all(dim=3).all(dim=1)  # (B, mel)
    for zeros in (zero_frames, zero_bins):
        counts = zeros.sum(dim=1)
        assert counts.max() <= 2 and set(counts.tolist()) == {0, 1, 2}
    # everything zeroed lies on a zeroed frame or bin, both channels alike
    covered = zero_frames[:, None, None, :] | zero_bins[:, None, :, None]
    assert torch.equal(out == 0, covered.expand_as(out))
    wider = spec_augment(x, time_stripes=1, freq_stripes=0, max_width=3, generator=torch.Generator().manual_seed(0))
    assert set((wider == 0).all(dim=2).all(dim=1).sum(dim=1).tolist()) == {0, 1, 2, 3}


def test_mixup_mixes_features_and_both_targets_with_one_lambda() -> None:
    ids = torch.arange(8) % 10
    scene, coarse = soft_targets(ids)
    x = torch.arange(8, dtype=torch.float32)[:, None].expand(8, 5).clone()
    g = torch.Generator().manual_seed(3)
    mixed_x, (mixed_scene, mixed_coarse) = mixup(x, (scene, coarse), lam=0.7, fraction=1.0, generator=g)
    partner = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(mixed_x[:, 0], 0.7 * x[:, 0] + 0.3 * x[partner, 0])
    assert torch.allclose(mixed_scene, 0.7 * scene + 0.3 * scene[partner])
    assert torch.allclose(mixed_coarse, mixed_scene @ coarse_of_scene())  # coarse stays consistent
    assert torch.allclose(mixed_scene.sum(1), torch.ones(8))
    half_x, (half_scene, _) = mixup(x, (scene, coarse), lam=0.7, fraction=0.5, generator=g)
    assert torch.equal(half_x[4:], x[4:]) and torch.equal(half_scene[4:], scene[4:])
    assert not torch.equal(half_x[:4], x[:4])


def coarse_of_scene() -> torch.Tensor:
    matrix = torch.zeros(10, 3)
    for scene, coarse in enumerate(SCENE_TO_COARSE_ID):
        matrix[scene, coarse] = 1
    return matrix


def test_soft_targets_follow_scene_to_coarse_id() -> None:
    scene, coarse = soft_targets(torch.arange(10))
    assert torch.equal(scene, torch.eye(10))
    assert coarse.argmax(1).tolist() == list(SCENE_TO_COARSE_ID)
