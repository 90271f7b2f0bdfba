"""The training path on a CUDA GPU: QAT, both PCGrad variants, augmentations and preloaded features on
the device, `dsmn train` on CUDA and under torchrun (NCCL). Marked `cuda`: skipped without a GPU
(`pytest -m cuda` runs exactly these and the other CUDA tests of the suite)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dsmn import models
from dsmn.cli import main as cli
from dsmn.data import load_dataset
from dsmn.features import FrontEndConfig
from dsmn.training import load_config, train
from dsmn.training.augment import mixup, soft_targets, spec_augment, spectrum_correction
from dsmn.training.data import BatchReader, LogMelRows, clip_table, open_cache
from dsmn.training.pipeline import EpochRandomness, TrainingInputs, to_layout
from dsmn.training.qat import QATSchedule
from dsmn.training.step import StepSettings, train_step
from dsmn.training.trainer import build_optimizer

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")


def one_step(device: torch.device, overrides: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One recipe step of model1 (QAT) from seed 0 on a fixed batch: (step results, parameters after)."""
    config = load_config("model1", overrides)
    torch.manual_seed(0)
    float_model = models.create("model1").to(device).to(memory_format=torch.channels_last)
    qat = QATSchedule(config.qat, config.epochs)
    net = qat.prepare(float_model)
    qat.start_epoch(net, 0)
    params = [p for p in float_model.parameters() if p.requires_grad]
    optimizer = build_optimizer(config, params)
    settings = StepSettings.for_run(config, float_model, params)
    g = torch.Generator().manual_seed(1)
    x = to_layout(torch.randn(16, 2, 256, 44, generator=g), True).to(device)
    scene, coarse = soft_targets(torch.randint(0, 10, (16,), generator=g).to(device))
    net.train()
    train_step(net, x, scene, coarse, optimizer, settings)  # observers calibrate on the first batch
    results = train_step(net, x, scene, coarse, optimizer, settings)
    return torch.stack(results).cpu(), {k: v.detach().cpu() for k, v in float_model.state_dict().items()}


@pytest.mark.parametrize("pcgrad", ["full", "shared-representation"])
def test_qat_pcgrad_step_on_cuda_matches_the_cpu(pcgrad: str) -> None:
    """Fake quantisation, folded BatchNorm, both PCGrad variants and RAdam compute the CPU's step on the GPU."""
    overrides = [f"multitask.pcgrad={pcgrad}"]
    cpu_results, cpu_state = one_step(torch.device("cpu"), overrides)
    gpu_results, gpu_state = one_step(CUDA, overrides)
    assert torch.isfinite(gpu_results).all()
    assert torch.allclose(gpu_results, cpu_results, atol=2e-3), (gpu_results, cpu_results)
    for key, value in cpu_state.items():
        if value.is_floating_point():
            assert torch.allclose(gpu_state[key], value, atol=2e-4), key
    torch.manual_seed(0)
    start = models.create("model1").state_dict()
    assert any(not torch.equal(start[k], gpu_state[k]) for k in start if start[k].is_floating_point())


def test_augmentations_run_on_the_device_and_repeat_with_the_seed() -> None:
    def draw() -> tuple[torch.Tensor, ...]:
        rng = EpochRandomness.create(0, 3, 0, CUDA)
        assert rng.device.device.type == "cuda"
        logmel = torch.linspace(-3, 1, 8 * 256 * 44, device=CUDA).reshape(8, 256, 44)
        vectors = torch.linspace(-1, 1, 5 * 256, device=CUDA).reshape(5, 256)
        is_ref = torch.tensor([True, False] * 4, device=CUDA)
        corrected = spectrum_correction(logmel, is_ref, vectors, probability=1.0, host_rng=rng.host,
                                        generator=rng.device)
        x = spec_augment(corrected[:, None].repeat(1, 2, 1, 1), time_stripes=2, freq_stripes=2, max_width=1,
                         generator=rng.device)
        scene, coarse = soft_targets(torch.arange(8, device=CUDA) % 10)
        mixed, (scene_m, coarse_m) = mixup(x, (scene, coarse), lam=0.7, fraction=0.5, generator=rng.device)
        return logmel, corrected, x, mixed, scene_m, coarse_m

    logmel, corrected, x, mixed, scene_m, coarse_m = draw()
    for tensor in (corrected, x, mixed, scene_m, coarse_m):
        assert tensor.device.type == "cuda"
    assert torch.equal(corrected[1::2], logmel[1::2])  # only reference-device clips are corrected
    assert not torch.equal(corrected[0::2], logmel[0::2])
    zeroed = (x == 0).float().mean().item()
    assert 0 < zeroed < 0.1  # at most 2 x 1 stripes per axis of 44 frames / 256 bins
    assert torch.equal(mixed[4:], x[4:])  # the late-epoch half: only the first half is mixed
    assert torch.allclose(scene_m.sum(1), torch.ones(8, device=CUDA))
    assert torch.allclose(coarse_m.sum(1), torch.ones(8, device=CUDA))
    for first, again in zip((corrected, x, mixed, scene_m), draw()[1:], strict=False):
        assert torch.equal(first, again)  # a function of (seed, epoch, rank): resumable


def test_preloaded_features_on_the_gpu_match_the_cache(tiny_data: Path) -> None:
    dataset = load_dataset(tiny_data)
    clips = dataset.split("train")
    cache = open_cache(dataset, FrontEndConfig(), progress=False)
    table = clip_table(clips, cache.rows(clips))
    index = np.array([5, 0, 17, 3, 5])
    host = LogMelRows(cache.logmels, table.rows, torch.device("cpu"), preload=False).gather(index)
    streamed = LogMelRows(cache.logmels, table.rows, CUDA, preload=False)
    preloaded = LogMelRows(cache.logmels, table.rows, CUDA, preload=True)
    assert preloaded.preloaded is not None and preloaded.preloaded.device.type == "cuda"
    for source in (streamed, preloaded):
        gathered = source.gather(index)
        assert gathered.device.type == "cuda" and gathered.dtype == torch.float32
        assert torch.equal(gathered.cpu(), host)
    reader = BatchReader(table, preloaded, "a", workers=2)
    batches = [index, index[::-1].copy()]
    read = list(reader(batches))
    assert torch.equal(read[1].logmel.cpu(), host.flip(0))
    assert read[0].scene_ids.tolist() == table.scene_ids[index].tolist()
    config = load_config("model1", ["mixup.late_epoch=0"])
    step = TrainingInputs(config, True, None)(read[0], 0, EpochRandomness.create(0, 0, 0, CUDA))
    assert step.x.shape == (5, 2, 256, 44) and step.x.device.type == "cuda" and step.scene.device.type == "cuda"


SMALL = ["batch_size=16", "max_batches_per_epoch=4", "progress=false", "data.val_max_clips=60",
         "schedule.warmup_epochs=1", "device=cuda"]


@pytest.mark.e2e
def test_train_on_cuda_writes_a_run_that_loads_on_the_cpu(tiny_data: Path, tmp_path: Path) -> None:
    result = train(load_config("model1", [*SMALL, "epochs=2", "data.preload=always"]), tiny_data, tmp_path / "run")
    assert result.epochs_done == 2 and result.best_epoch is not None
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    assert all(v.device.type == "cpu" for v in ckpt["state_dict"].values())
    assert all(np.isfinite(row["train_loss"]) for row in result.history)
    assert ckpt["rng"]["cuda"]  # the GPU generator state travels for --resume
    model = models.load_model(tmp_path / "run" / "checkpoints" / "best.pt")
    assert model(torch.randn(2, 2, 256, 44)).shape == (2, 13)
    # the GPU-trained run exports to int8 ONNX on the CPU (the export refuses below 99 % agreement)
    onnx_file = tmp_path / "gpu_trained_int8.onnx"
    assert cli(["export", str(tmp_path / "run"), "--out", str(onnx_file), "--precision", "int8"]) == 0
    assert onnx_file.is_file()


@pytest.mark.e2e
def test_dsmn_train_under_torchrun_joins_an_nccl_group(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               "-m", "dsmn.cli.train", "--data", str(tiny_data), "--model", "model1", "--out", str(run),
               "--epochs", "1", "--device", "cuda", "--no-progress"]
    for item in SMALL:
        command += ["--set", item]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "x 1 processes (nccl)" in done.stdout
    assert (run / "checkpoints" / "best.pt").is_file()
