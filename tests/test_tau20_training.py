"""Training and evaluation on 10-s clips (TAU 2020 layout): random 1-s windows, exact resume,
spectrum correction from the parallel 10-s recordings, clip and window accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dsmn import models
from dsmn.cli import main as cli
from dsmn.deploy import load_trained
from dsmn.deploy.data import logmel_batches, open_features, split_clips
from dsmn.features import FrontEndConfig, network_input
from dsmn.training import load_config, train
from dsmn.training import trainer as trainer_module
from dsmn.training.augment import correction_vectors, random_windows
from dsmn.training.data import RawBatch
from dsmn.training.distributed import setup
from dsmn.training.pipeline import EpochRandomness, TrainingInputs

# the recipe (QAT, PCGrad, mixup, spectrum correction, SpecAugment) cut to two batches of 8 windows
SMALL = ["batch_size=8", "max_batches_per_epoch=2", "progress=false", "threads=2", "schedule.warmup_epochs=1"]


def test_random_windows_are_seeded_contiguous_seconds() -> None:
    frames = torch.arange(431.0).expand(6, 4, 431)  # each value is its frame index
    first = random_windows(frames, 44, torch.Generator().manual_seed(1))
    again = random_windows(frames, 44, torch.Generator().manual_seed(1))
    other = random_windows(frames, 44, torch.Generator().manual_seed(2))
    assert first.shape == (6, 4, 44) and torch.equal(first, again) and not torch.equal(first, other)
    starts = first[:, 0, 0]
    assert torch.equal(first, (starts[:, None, None] + torch.arange(44.0)).expand_as(first))
    assert len(set(starts.tolist())) > 1
    assert starts.min() >= 0 and starts.max() <= 431 - 44
    assert torch.equal(random_windows(frames[..., :44], 44), frames[..., :44])  # a 1-s clip stays whole


def test_each_epoch_draws_other_windows_the_same_way_every_time() -> None:
    config = load_config("model1", ["specaugment.enabled=false", "mixup.enabled=false"])
    inputs = TrainingInputs(config, True, None, window_frames=44)
    batch = RawBatch(torch.randn(4, 256, 431), torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.bool))
    cpu = torch.device("cpu")
    x0 = inputs(batch, 0, EpochRandomness.create(0, 0, 0, cpu)).x
    x0_again = inputs(batch, 0, EpochRandomness.create(0, 0, 0, cpu)).x
    x1 = inputs(batch, 1, EpochRandomness.create(0, 1, 0, cpu)).x
    assert x0.shape == (4, 2, 256, 44) and torch.equal(x0, x0_again) and not torch.equal(x0, x1)


def test_spectrum_correction_uses_the_parallel_10s_recordings(tiny_tau20: Path) -> None:
    config = load_config("model1", ["progress=false"])
    data = trainer_module.load_training_data(config, tiny_tau20, setup("cpu"))
    assert data.describe["clip_frames"] == 431 and data.describe["window_frames"] == 44
    assert data.describe["long_clips"] == "windows" and data.inputs.window_frames == 44
    pairs = [(a, b) for a in data.train_table.clips for b in data.train_table.clips
             if a.device == "a" and b.device != "a" and a.recording == b.recording]
    assert data.describe["correction_vectors"] == len(pairs) == 10  # one per parallel recording of train
    dataset, _ = split_clips(tiny_tau20, "train")
    cache = open_features(dataset, FrontEndConfig(), progress=False)
    ref = np.asarray(cache.logmels[cache.rows([a for a, _ in pairs])], dtype=np.float32)
    other = np.asarray(cache.logmels[cache.rows([b for _, b in pairs])], dtype=np.float32)
    assert ref.shape[-1] == 431  # the whole 10 s, not one second
    expected = np.sort(correction_vectors(ref, other), axis=0)
    np.testing.assert_allclose(np.sort(data.inputs.correction.numpy(), axis=0), expected, atol=1e-5)


@pytest.fixture(scope="module")
def tau20_run(tiny_tau20: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("tau20run") / "model1"
    train(load_config("model1", [*SMALL, "epochs=2"]), tiny_tau20, run)
    return run


@pytest.mark.e2e
def test_windows_training_resumes_exactly(tiny_tau20: Path, tau20_run: Path, tmp_path: Path, monkeypatch) -> None:
    shapes = []
    real_step = trainer_module.train_step

    def spy(model, x, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        shapes.append(tuple(x.shape))
        return real_step(model, x, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", spy)
    train(load_config("model1", [*SMALL, "epochs=1"]), tiny_tau20, tmp_path / "split")
    train(load_config("model1", [*SMALL, "epochs=2"]), tiny_tau20, tmp_path / "split", resume=True,
          overrides={"epochs": 2})
    assert shapes == [(8, 2, 256, 44)] * 4  # 1-s windows of the 10-s clips

    def weights(run: Path) -> dict:
        return torch.load(run / "checkpoints" / "last.pt", weights_only=False)["qat_state_dict"]

    whole, split = weights(tau20_run), weights(tmp_path / "split")
    assert all(torch.equal(split[k], v) for k, v in whole.items() if isinstance(v, torch.Tensor))
    history = json.loads((tau20_run / "metrics.json").read_text())["epochs"]
    assert all(0.0 <= row["val_window_accuracy"] <= 1.0 for row in history)


@pytest.mark.e2e
def test_evaluate_scores_clips_by_their_windows(tiny_tau20: Path, tau20_run: Path, tmp_path: Path,
                                                capsys) -> None:
    assert cli(["evaluate", str(tau20_run), "--data", str(tiny_tau20), "--model-kind", "qat", "--json",
                "--out", str(tmp_path / "eval")]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert (summary["clips"], summary["windows_per_clip"], summary["windows"]) == (20, 10, 200)
    assert summary["long_clips"] == "windows" and 0.0 <= summary["window_accuracy"] <= 1.0
    assert "1-s window accuracy" in (tmp_path / "eval" / "summary.md").read_text()

    # the same clip probabilities from the model's own windowing helper on the cached 10-s log-mels
    trained = load_trained(tau20_run)
    dataset, clips = split_clips(tiny_tau20, "evaluate")
    cache = open_features(dataset, trained.frontend, progress=False)
    logmel = next(logmel_batches(cache, clips, batch_size=len(clips)))
    expected = models.classify_windows(trained.model, logmel, prepare=lambda w: network_input(w, True))
    rows = [line.split("\t") for line in (tmp_path / "eval" / "predictions.csv").read_text().splitlines()[1:]]
    got = np.array([[float(v) for v in row[2:]] for row in rows])
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)
    windows = (expected.argmax(1).numpy() == np.array([c.scene_id for c in clips])).mean()
    assert summary["accuracy"] == pytest.approx(windows)


@pytest.mark.e2e
def test_whole_clip_mode_trains_and_scores_whole_clips(tiny_tau20: Path, tmp_path: Path, monkeypatch,
                                                       capsys) -> None:
    shapes = []
    real_step = trainer_module.train_step
    monkeypatch.setattr(trainer_module, "train_step",
                        lambda model, x, *a, **k: shapes.append(tuple(x.shape)) or real_step(model, x, *a, **k))
    run = tmp_path / "whole"
    train(load_config("model1", [*SMALL, "epochs=1", "max_batches_per_epoch=1", "data.long_clips=whole"]),
          tiny_tau20, run)
    assert shapes == [(8, 2, 256, 431)]
    capsys.readouterr()
    assert cli(["evaluate", str(run), "--data", str(tiny_tau20), "--json", "--out", str(tmp_path / "e")]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["long_clips"] == "whole" and summary["windows"] == 200
    history = json.loads((run / "metrics.json").read_text())["epochs"]
    assert history[0]["val_accuracy"] == pytest.approx(summary["accuracy"])
