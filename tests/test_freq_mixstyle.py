"""Freq-MixStyle on real log-mels of generated TAU-format clips: band statistics mixed, time
structure kept, switchable in the config, a pure function of the run's seed (so resume is exact)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dsmn.data import load_dataset
from dsmn.features import FrontEndConfig
from dsmn.training import load_config
from dsmn.training.augment import freq_mixstyle
from dsmn.training.data import RawBatch, clip_table, open_cache, take_rows
from dsmn.training.pipeline import EpochRandomness, TrainingInputs


@pytest.fixture(scope="module")
def logmels(tiny_data: Path) -> torch.Tensor:
    dataset = load_dataset(tiny_data)
    clips = dataset.split("train")[:48]
    cache = open_cache(dataset, FrontEndConfig(), progress=False)
    table = clip_table(clips, cache.rows(clips))
    return torch.from_numpy(take_rows(cache.logmels, table.rows)).float()


def draw(logmel: torch.Tensor, p: float, seed: int = 0, alpha: float = 0.3) -> torch.Tensor:
    return freq_mixstyle(logmel, probability=p, alpha=alpha, host_rng=np.random.default_rng(seed),
                         generator=torch.Generator().manual_seed(seed))


def test_band_statistics_become_a_mix_of_two_clips(logmels: torch.Tensor) -> None:
    out = draw(logmels, p=1.0)
    mean, std = logmels.mean(2), logmels.std(2, unbiased=True)
    new_mean, new_std = out.mean(2), out.std(2, unbiased=True)
    lam = torch.from_numpy(np.random.default_rng(0).beta(0.3, 0.3, size=len(logmels)).astype(np.float32))
    generator = torch.Generator().manual_seed(0)
    torch.rand(len(logmels), generator=generator)
    partner = torch.randperm(len(logmels), generator=generator)
    expected_mean = lam[:, None] * mean + (1 - lam[:, None]) * mean[partner]
    expected_std = lam[:, None] * std + (1 - lam[:, None]) * std[partner]
    assert torch.allclose(new_mean, expected_mean, atol=1e-3)
    assert torch.allclose(new_std, expected_std, atol=1e-3, rtol=1e-3)
    # the time course of each band is only shifted and scaled: correlation with the original stays 1
    centred, centred_out = logmels - mean[..., None], out - new_mean[..., None]
    live = std.flatten() > 0.05
    corr = (centred * centred_out).sum(2).flatten()[live] / (
        centred.norm(dim=2).flatten()[live] * centred_out.norm(dim=2).flatten()[live])
    assert corr.min() > 0.999
    assert (out - logmels).abs().mean() > 0.01  # the clips were really restyled


def test_probability_picks_clips_and_zero_is_identity(logmels: torch.Tensor) -> None:
    assert torch.equal(draw(logmels, p=0.0), logmels)
    out = draw(logmels.repeat(8, 1, 1), p=0.4)
    changed = (out != logmels.repeat(8, 1, 1)).flatten(1).any(1).float().mean().item()
    assert 0.25 < changed < 0.55  # ~p of the 384 clips (a partner equal to the clip leaves it as it was)


def test_same_seed_same_batch_and_config_switch(logmels: torch.Tensor) -> None:
    assert torch.equal(draw(logmels, p=0.4, seed=5), draw(logmels, p=0.4, seed=5))
    assert not torch.equal(draw(logmels, p=0.4, seed=5), draw(logmels, p=0.4, seed=6))
    off = load_config("demo", ["specaugment.enabled=false", "mixup.enabled=false",
                               "spectrum_correction.enabled=false"])
    assert off.freq_mixstyle.enabled is False and off.freq_mixstyle.probability == pytest.approx(0.4)
    assert off.freq_mixstyle.alpha == pytest.approx(0.3)
    on = load_config("demo", ["specaugment.enabled=false", "mixup.enabled=false",
                              "spectrum_correction.enabled=false", "freq_mixstyle.enabled=true"])
    batch = RawBatch(logmels, torch.zeros(len(logmels), dtype=torch.long), torch.ones(len(logmels), dtype=torch.bool))

    def inputs(config, epoch: int) -> torch.Tensor:
        rng = EpochRandomness.create(config.seed, epoch, 0, torch.device("cpu"))
        return TrainingInputs(config, True, None)(batch, epoch, rng)[0]

    assert torch.equal(inputs(on, 3), inputs(on, 3))  # a function of (seed, epoch, rank): resume repeats it
    assert not torch.equal(inputs(on, 3), inputs(off, 3))
    assert not torch.equal(inputs(on, 3), inputs(on, 4))
    with pytest.raises(ValueError, match="freq_mixstyle"):
        load_config("demo", ["freq_mixstyle.probability=1.5"])
