"""Float inference throughput of every DSMN model on the CPU: batch-1 latency and batch-32 clips/s,
contiguous and channels-last memory format, measured side by side in one run.

    python benchmarks/float_inference.py [--threads 2] [--seconds 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dsmn import models


def _time_calls(fn, seconds: float, min_calls: int = 5) -> list[float]:
    fn()  # warm-up (allocations, kernel selection)
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < min_calls:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def measure(name: str, channels_last: bool, seconds: float) -> tuple[float, float]:
    """(median batch-1 latency in ms, batch-32 clips/s)."""
    net = models.create(name).eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    one = torch.randn(1, 2, 256, 44).contiguous(memory_format=fmt)
    batch = torch.randn(32, 2, 256, 44).contiguous(memory_format=fmt)
    with torch.inference_mode():
        latency = statistics.median(_time_calls(lambda: net(one), seconds)) * 1e3
        throughput = 32 / statistics.median(_time_calls(lambda: net(batch), seconds))
    return latency, throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0, help="timing budget per measurement")
    parser.add_argument("--models", nargs="*", default=models.available("dsmn"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"float inference, CPU, {args.threads} threads, torch {torch.__version__}")
    print(f"{'model':<8} {'layout':<14} {'b1 latency ms':>14} {'b32 clips/s':>12} {'ratio vs contiguous':>20}")
    for name in args.models:
        base = None
        for channels_last in (False, True):
            latency, throughput = measure(name, channels_last, args.seconds)
            base = base or throughput
            layout = "channels-last" if channels_last else "contiguous"
            print(f"{name:<8} {layout:<14} {latency:>14.2f} {throughput:>12.1f} {throughput / base:>19.2f}x")


if __name__ == "__main__":
    main()
