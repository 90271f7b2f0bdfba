"""Data-parallel training under torchrun: process group, device per process, gradient averaging.

How gradients are synchronised:
- `multitask: sum | off` use DistributedDataParallel as usual: one loss.backward(), DDP's hooks
  all-reduce the gradients while the backward pass runs.
- PCGrad needs each task's gradient on its own, so the forward runs under `ddp.no_sync()` (DDP's
  reducer stays idle) and the task gradients are taken with torch.autograd.grad, which never fires
  DDP's hooks. The trainer then averages them across processes itself, flattened into one buffer
  (one all-reduce per step) BEFORE the projection, so every process projects the same global-batch
  gradients and applies the same update: PCGrad on N processes equals PCGrad on the whole batch.
DDP still broadcasts BatchNorm running statistics and observer buffers from rank 0 at every forward.
A run started by torchrun joins a process group even with one process (`--nproc_per_node 1`), so a
one-GPU launch takes the same NCCL/DDP path as a multi-GPU one (with identical results: the mean of one).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from dsmn.errors import UserError


class DeviceError(UserError, RuntimeError):
    """A device that this machine does not have."""


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # the process group's backend (nccl | gloo) when one was joined

    @property
    def enabled(self) -> bool:
        """Several processes, or a process group of one (torchrun --nproc_per_node 1)."""
        return self.world_size > 1 or self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def average_(self, tensor: torch.Tensor) -> torch.Tensor:
        """In-place mean over processes (no-op in a single process)."""
        if self.enabled:
            dist.all_reduce(tensor)
            tensor /= self.world_size
        return tensor

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_object(self, value: object) -> object:
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model as trained: DDP around it when several processes share the work."""
        if not self.enabled:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)  # buffers follow rank 0

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager:
        no_sync = getattr(model, "no_sync", None)
        return no_sync() if no_sync is not None else contextlib.nullcontext()


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto`: the GPU of this process when CUDA is available, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} requested but CUDA is not available on this machine "
                              "(use --device cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} GPU(s)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def launched_by_torchrun() -> bool:
    """torchrun (torch.distributed.run) sets these for every process it starts, even for one."""
    return all(key in os.environ for key in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"))


def setup(device_name: str = "auto") -> Distributed:
    """Join the torchrun process group (NCCL on GPUs, gloo on the CPU) when torchrun started this process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(device_name, local_rank)
    backend = None
    if world_size > 1 or launched_by_torchrun():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend, rank=rank, world_size=world_size)
        backend = dist.get_backend()
    return Distributed(rank, world_size, local_rank, device, backend)


def teardown(context: Distributed, clean: bool = True) -> None:
    """Leave the process group in an order that cannot race.

    `clean` (the run ended normally): every process first meets the others at a barrier, so none
    closes its gloo connections while another still sends on them. A process that stops with an
    error skips the barrier (the others may never reach it). DistributedDataParallel keeps a reference
    to the group that outlives `destroy_process_group`, so gloo's threads and sockets stay alive until
    the process exits; `exit_worker` ends a torchrun worker without the interpreter shutdown in which
    such threads can abort the process ("terminate called without an active exception").
    """
    if not (context.enabled and dist.is_initialized()):
        return
    if clean:
        dist.barrier()
    dist.destroy_process_group()


def exit_worker(code: int) -> None:
    """End a process of a distributed run once its work is saved and its group destroyed: flush the
    standard streams and leave without interpreter shutdown (see `teardown`)."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

