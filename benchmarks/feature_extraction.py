"""Feature extraction speed: the cache builder against a per-file librosa loop, same files, same run.

End to end for both: decode + log-mel (docs/architecture.md); the cache also writes its float16 store.
Measured twice: on the machine as it is, then while another process keeps one core busy (a shared machine), to show the
cache builder keeps its lead there without any environment variable set by hand.

    python benchmarks/feature_extraction.py DATA [--limit 600] [--workers N] [--no-busy]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import librosa
import numpy as np

from dsmn.data import Dataset, load_dataset
from dsmn.features import FeatureCache


def librosa_loop(paths: list[str]) -> np.ndarray:
    out = []
    for path in paths:
        y, sr = librosa.load(path, sr=44100, mono=True)
        mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=4096, hop_length=1024, win_length=4096,
                                             center=True, pad_mode="reflect", power=2.0, n_mels=256, htk=True,
                                             norm="slaney")
        out.append(np.log10(mel + 1e-10))
    return np.stack(out)


@contextlib.contextmanager
def one_core_busy() -> Iterator[None]:
    """Another process spinning on one core for the duration (what a shared machine looks like)."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        burner.kill()
        burner.wait()


def measure(dataset: Dataset, paths: list[str], workers: int | None) -> tuple[float, float, float]:
    """(librosa clips/s, cache clips/s, max |difference|) on the same files."""
    start = time.perf_counter()
    reference = librosa_loop(paths)
    librosa_rate = len(paths) / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cache = FeatureCache.build(dataset, tmp, workers=workers, progress=False)
        ours_rate = len(paths) / (time.perf_counter() - start)
        error = float(np.max(np.abs(np.asarray(cache.logmels, dtype=np.float32) - reference)))
    return librosa_rate, ours_rate, error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--limit", type=int, default=600, help="number of clips timed (default 600)")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads of the cache builder")
    parser.add_argument("--no-busy", action="store_true", help="skip the run with one core kept busy")
    args = parser.parse_args(argv)
    full = load_dataset(args.data)
    dataset = Dataset(root=full.root, clips=full.clips[: args.limit], splits={}, layout=full.layout)
    paths = [str(dataset.path(c)) for c in dataset.clips]
    librosa_loop(paths[:3])  # warm-up (filterbank caches, lazy imports)
    with tempfile.TemporaryDirectory() as tmp:  # the same warm-up for the cache builder (torch's first calls)
        warm = Dataset(root=full.root, clips=full.clips[:3], splits={}, layout=full.layout)
        FeatureCache.build(warm, tmp, workers=args.workers, progress=False)

    print(f"{len(paths)} clips")
    speedups = {}
    for label, condition in (("idle", contextlib.nullcontext()), ("one core busy", one_core_busy())):
        if label != "idle" and args.no_busy:
            continue
        with condition:
            librosa_rate, ours_rate, error = measure(dataset, paths, args.workers)
        speedups[label] = ours_rate / librosa_rate
        print(f"[{label}] librosa per-file loop : {librosa_rate:8.1f} clips/s")
        print(f"[{label}] dsmn feature cache    : {ours_rate:8.1f} clips/s  (max |difference| {error:.4f}, "
              "float16 store)")
        print(f"[{label}] speed-up              : {speedups[label]:8.1f}x")
    if len(speedups) == 2:
        print(f"speed-up with one core busy / idle: {speedups['one core busy'] / speedups['idle']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
