"""CPU threads that share a machine well, without environment variables the user must know.

Two things make torch collapse on a busy or oversubscribed CPU: OpenMP worker threads that spin while
they wait (measured: model1 batch-1 inference 890 ms -> 35 ms once they sleep instead), and more
busy threads than cores (decoding threads plus a full OpenMP team). `import dsmn` asks OpenMP to let
waiting threads sleep (`OMP_WAIT_POLICY=PASSIVE`, unless the user chose a policy); the setting only
takes effect when dsmn is imported before torch, so the hot paths also cap torch's threads to the
cores left over by their own decoding threads, which helps either way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def set_passive_wait() -> None:
    """Let idle OpenMP threads sleep (read once, when torch's OpenMP runtime loads)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def leftover_threads(busy: int) -> int:
    """Torch threads that fit beside `busy` other threads of this process without oversubscribing."""
    return max(1, available_cores() - busy)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a block with at most `count` torch intra-op threads (never more than it already uses)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(count, before)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
