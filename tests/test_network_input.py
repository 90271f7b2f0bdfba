"""One network input: the deployed path (audio file -> `dsmn predict`) and the training path
(feature cache -> the trainer's input pipeline, validation) build the same input for the same clip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dsmn.deploy.data import open_features, split_clips
from dsmn.deploy.inference import load_for_inference
from dsmn.deploy.predict import Predictor
from dsmn.features import FrontEndConfig, network_input
from dsmn.training import load_config
from dsmn.training.data import RawBatch
from dsmn.training.pipeline import EpochRandomness, TrainingInputs
from tests.test_export import make_run

CLIPS = 6


@pytest.fixture(scope="module")
def deployed_inputs(tiny_data, tmp_path_factory) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(clip names, raw log-mels, network inputs) as `dsmn predict` computes them from the audio files."""
    run = make_run(tiny_data, tmp_path_factory.mktemp("input_run"), batches=1)
    loaded = load_for_inference(run, "float")
    seen: list[torch.Tensor] = []

    def recording_logits(x: torch.Tensor) -> np.ndarray:
        seen.append(x.clone())
        return loaded.logits(x)

    predictor = Predictor(dataclasses.replace(loaded, logits=recording_logits))
    _, clips = split_clips(tiny_data, "evaluate")
    clips = clips[:CLIPS]
    raw = []
    for clip in clips:
        from dsmn.data import load_audio

        samples, _ = load_audio(tiny_data / clip.filename, duration=None)
        logmels, starts = predictor.windows(samples)
        assert starts == [0]  # a 1-s clip is one window
        raw.append(logmels[0])
    results = list(predictor.predict([(tiny_data / c.filename, c.filename) for c in clips]))
    assert all(hasattr(r, "probabilities") for r in results)
    return [c.filename for c in clips], torch.stack(raw), torch.cat(seen)


def training_inputs(logmel: torch.Tensor) -> torch.Tensor:
    """The trainer's pipeline on a raw batch with the random augmentations switched off."""
    config = load_config("model1", ["spectrum_correction.enabled=false", "specaugment.enabled=false",
                                    "mixup.enabled=false"])
    pipeline = TrainingInputs(config, use_deltas=True, correction=None)
    batch = RawBatch(logmel, torch.zeros(len(logmel), dtype=torch.long), torch.zeros(len(logmel), dtype=torch.bool))
    return pipeline(batch, 0, EpochRandomness.create(0, 0, 0, torch.device("cpu"))).x


def test_deployed_and_training_paths_build_identical_inputs(deployed_inputs) -> None:
    _, raw, deployed = deployed_inputs
    assert deployed.shape == (CLIPS, 2, 256, 44)
    assert torch.equal(training_inputs(raw), deployed)  # bit for bit, whatever the memory layout
    assert torch.equal(network_input(raw, True, 5), deployed)  # validation and evaluation call this directly


def test_cached_log_mels_give_the_deployed_input_up_to_float16_storage(tiny_data, deployed_inputs) -> None:
    """The cache stores log-mels as float16: the trained-on input differs from the deployed one only by
    that rounding (log10 values of magnitude < ~12: float16 steps of at most ~0.008)."""
    names, raw, deployed = deployed_inputs
    dataset, clips = split_clips(tiny_data, "evaluate")
    cache = open_features(dataset, FrontEndConfig(), progress=False)
    by_name = {c.filename: c for c in clips}
    rows = cache.rows([by_name[n] for n in names])
    cached = torch.from_numpy(np.asarray(cache.logmels[rows], dtype=np.float32))
    assert torch.equal(cached, raw.half().float())  # the cache holds exactly the deployed log-mel, rounded
    assert (training_inputs(cached) - deployed).abs().max() < 0.02


def test_one_clip_alone_or_in_a_batch_gets_the_same_input(deployed_inputs) -> None:
    _, raw, deployed = deployed_inputs
    assert torch.equal(network_input(raw[2]), deployed[2:3])
    assert network_input(raw, use_deltas=False).shape == (CLIPS, 1, 256, 44)


def test_the_deployment_package_exports_the_same_function() -> None:
    from dsmn import deploy, features

    assert deploy.network_input is features.network_input
