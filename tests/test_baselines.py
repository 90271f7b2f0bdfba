"""Reference baselines: the DCASE 2022/2023 CNN on its own front end, CP-Mobile on the DSMN log-mel."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dsmn import models
from dsmn.complexity import clip_input_shape, measure
from dsmn.data.audio import load_audio
from dsmn.features import FrontEndConfig, LogMel, standardize
from dsmn.models.baselines import InvertedResidual, make_divisible
from tests.test_windowing import recording_slices

# (params, MACs per 1-s clip) measured with dsmn.complexity on each model's own input
EXPECTED = {
    "dcase2022_baseline": (46_421, 29_271_941),
    "cp_mobile": (61_466, 27_326_362),
}
INPUT_SHAPES = {"dcase2022_baseline": (1, 40, 51), "cp_mobile": (1, 256, 44)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_complexity_on_the_models_own_input(name):
    net = models.create(name)
    assert models.entry(name).family == "baseline"
    assert models.entry(name).input_shape == INPUT_SHAPES[name]
    assert clip_input_shape(net) == (1, *INPUT_SHAPES[name])
    report = measure(net)
    assert (report.params, report.macs) == EXPECTED[name]
    assert report.within_limits


def test_scale_matches_the_published_baselines():
    """DCASE 2022 baseline: 46.5 k params, 29.23 M MACs; DCASE 2024 baseline: 61 k params, 29 M MACs."""
    (p22, m22), (p24, m24) = EXPECTED["dcase2022_baseline"], EXPECTED["cp_mobile"]
    assert abs(p22 - 46_512) < 0.01 * 46_512 and abs(m22 - 29_234_920) < 0.01 * 29_234_920
    assert abs(p24 - 61_148) < 0.02 * 61_148 and 25e6 < m24 <= 30e6


def test_dsmn_models_are_still_measured_on_the_dsmn_input():
    assert clip_input_shape(models.create("model1")) == (1, 2, 256, 44)
    assert clip_input_shape(nn.Conv2d(2, 2, 1)) == (1, 2, 256, 44)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_forward_shapes(name):
    net = models.create(name).eval()
    out = net(torch.randn(3, *INPUT_SHAPES[name]))
    assert out.shape == (3, 13)
    scenes, coarse = models.split_logits(out)
    assert scenes.shape == (3, 10) and coarse.shape == (3, 3)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_channels_last_gives_the_same_outputs(name):
    torch.manual_seed(0)
    net = models.create(name).eval()
    x = torch.randn(4, *INPUT_SHAPES[name])
    with torch.no_grad():
        ref = net(x)
        out = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-5)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_few_training_steps_fit_a_fixed_batch(name):
    """Gradients reach every layer: a few optimiser steps lower the multi-task loss on one batch.

    CP-Mobile pools globally, so 64 mel bins (instead of 256) keep this fast.
    """
    torch.manual_seed(0)
    net = models.create(name, dropout=0.0) if name == "dcase2022_baseline" else models.create(name)
    net.train()
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    shape = (1, 64, 44) if name == "cp_mobile" else INPUT_SHAPES[name]
    x = torch.randn(4, *shape)
    scenes, coarse = torch.randint(0, 10, (4,)), torch.randint(0, 3, (4,))

    def loss() -> torch.Tensor:
        s, c = models.split_logits(net(x))
        return nn.functional.cross_entropy(s, scenes) + nn.functional.cross_entropy(c, coarse)

    first = loss()
    for _ in range(5):
        optimiser.zero_grad()
        value = loss()
        value.backward()
        optimiser.step()
    assert loss().item() < first.item()
    assert all(p.grad is not None for p in net.parameters())


def test_dcase_baseline_front_end_on_a_real_clip(tiny_data):
    """The registry's front-end overrides turn a real 1-s WAV into the 1 x 40 x 51 input the CNN takes."""
    wav = recording_slices(tiny_data)[0]
    samples, _ = load_audio(wav)
    config = FrontEndConfig(**models.entry("dcase2022_baseline").frontend)
    assert (config.win_length, config.hop_length, config.n_mels) == (1764, 882, 40)  # 40 ms, 20 ms at 44.1 kHz
    logmel = LogMel(config)(torch.from_numpy(samples).unsqueeze(0))
    x = standardize(logmel).unsqueeze(1)
    assert x.shape == (1, *INPUT_SHAPES["dcase2022_baseline"])
    net = models.create("dcase2022_baseline").eval()
    assert torch.isfinite(net(x)).all()


def test_dcase_baseline_pools_like_the_keras_model():
    """After max-pool 5x5 a 1-s clip has 8 x 10 cells; the 4 x 100 pool leaves 2 x 1 (a max over all
    10 frames), so the dense layer sees 32 x 2 = 64 values; a 10-s clip gives the same 64."""
    net = models.create("dcase2022_baseline").eval()
    seen = []
    net.pool1.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[-2:])))
    assert net.embedding(torch.randn(2, 1, 40, 51)).shape == (2, 64)
    assert seen == [(8, 10)]
    assert net.embedding(torch.randn(1, 1, 40, 501)).shape == (1, 64)
    x = torch.randn(1, 32, 8, 10)
    reference = nn.functional.max_pool2d(x, (4, 10))  # the Keras 4 x 100 "same" window on 10 frames
    assert torch.equal(net.pool2(x).amax(dim=-1, keepdim=True), reference)


def test_cp_mobile_layout():
    net = models.create("cp_mobile")
    assert net.config.stage_channels() == [32, 56, 104]
    blocks = list(net.blocks)
    assert len(blocks) == 6 and all(isinstance(b, InvertedResidual) for b in blocks)
    # identity shortcut where the shape is kept, none where the width changes
    assert [b.shortcut is not None for b in blocks] == [True, True, True, False, True, False]
    seen = []
    net.blocks.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[1:])))
    net.eval()(torch.randn(1, 1, 256, 44))
    assert seen == [(104, 32, 11)]


@pytest.mark.parametrize(("value", "expected"), [(8, 8), (57.6, 56), (103.68, 104), (67.2, 64), (117.6, 120), (3, 8)])
def test_make_divisible(value, expected):
    assert make_divisible(value) == expected
