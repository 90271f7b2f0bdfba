"""Data-parallel training on the CPU (gloo): PCGrad across processes equals PCGrad on the whole batch
(with and without distillation), and `dsmn train` runs under torchrun with two processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from dsmn.training.augment import coarse_matrix, soft_targets
from dsmn.training.distributed import Distributed, exit_worker, teardown
from dsmn.training.step import StepSettings, train_step


def tiny_net() -> nn.Module:
    """A two-layer multi-task network without BatchNorm (so shards see identical statistics)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 13))


def global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    scene, coarse = soft_targets(torch.randint(0, 10, (8,), generator=g))
    return torch.randn(8, 6, generator=g), scene, coarse


def teacher_batch() -> torch.Tensor:
    """Teacher probabilities (T = 2) of the global batch."""
    return torch.softmax(torch.randn(8, 10, generator=torch.Generator().manual_seed(2)) / 2, dim=1)


def one_step(model: nn.Module, x, scene, coarse, mode: str, context: Distributed, teacher=None) -> None:  # noqa: ANN001
    """`mode`: multitask[:merge][-kd] (-kd: with a distillation term from `teacher`)."""
    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=0.5)
    multitask, _, merge = mode.removesuffix("-kd").partition(":")
    settings = StepSettings(multitask, "full", params, merge=merge or "per-tensor", dist=context, kd_lambda=0.3)
    kd = (teacher, teacher @ coarse_matrix()) if mode.endswith("-kd") else None
    train_step(context.wrap(model), x, scene, coarse, optimizer, settings, teacher=kd)


MODES = ("pcgrad:per-tensor", "pcgrad:per-element", "sum", "pcgrad:per-tensor-kd", "sum-kd")


def worker(rank: int, store: str, out: str) -> None:
    """One process of the pair. It ends as a torchrun worker of `dsmn train` does (dsmn.training.distributed):
    barrier, destroy the group, leave without interpreter shutdown. Returning normally instead let the
    gloo threads that DDP keeps alive past destroy_process_group run into the interpreter's shutdown,
    where they could abort the process on a busy machine ("terminate called without an active exception")."""
    context = Distributed(rank, 2)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        x, scene, coarse = global_batch()
        for mode in MODES:
            model = tiny_net()
            one_step(model, x[rank::2], scene[rank::2], coarse[rank::2], mode, context, teacher_batch()[rank::2])
            torch.save(model.state_dict(), f"{out}.{mode}.{rank}")
    except BaseException:
        teardown(context, clean=False)
        raise
    teardown(context)
    exit_worker(0)


def test_two_processes_take_the_step_of_the_whole_batch(tmp_path: Path) -> None:
    """PCGrad with either merge rule (autograd.grad + one manual all-reduce) and `sum` (DDP's hooks)
    all equal one process."""
    torch.multiprocessing.spawn(worker, args=(str(tmp_path / "store"), str(tmp_path / "w")), nprocs=2)
    x, scene, coarse = global_batch()
    for mode in MODES:
        shards = [torch.load(tmp_path / f"w.{mode}.{r}") for r in (0, 1)]
        single = tiny_net()
        one_step(single, x, scene, coarse, mode, Distributed(), teacher_batch())
        for key, value in single.state_dict().items():
            assert torch.equal(shards[0][key], shards[1][key])  # the processes stay in lockstep
            assert torch.allclose(shards[0][key], value, atol=1e-6), (mode, key)
        assert not torch.equal(single.state_dict()["0.weight"], tiny_net().state_dict()["0.weight"])
    # the two merge rules differ on the last layer only (its rows each serve one task)
    rules = [torch.load(tmp_path / f"w.pcgrad:{rule}.0") for rule in ("per-tensor", "per-element")]
    assert torch.equal(rules[0]["0.weight"], rules[1]["0.weight"])
    assert not torch.allclose(rules[0]["2.weight"], rules[1]["2.weight"])
    for mode in ("pcgrad:per-tensor", "sum"):  # the distillation term changes the step
        plain, distilled = (torch.load(tmp_path / f"w.{m}.0") for m in (mode, f"{mode}-kd"))
        assert not torch.equal(plain["2.weight"], distilled["2.weight"])


@pytest.mark.e2e
def test_dsmn_train_under_torchrun_with_two_gloo_processes(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "dsmn.cli.train",
               "--data", str(tiny_data), "--model", "model1", "--out", str(run), "--epochs", "1",
               "--batch-size", "8", "--device", "cpu", "--threads", "1", "--no-progress", "--subset", "split25",
               "--set", "max_batches_per_epoch=2", "--set", "data.val_max_clips=40"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "x 2 processes" in done.stdout and "training clips (split25)" in done.stdout
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 0 and "qat_state_dict" in ckpt
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 2  # header + one epoch, written once (rank 0 only)
