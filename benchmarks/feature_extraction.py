"""Feature extraction speed: the cache builder against a per-file librosa loop, same files, same run.

End to end for both: decode + log-mel (SPEC section 3); the cache also writes its float16 store.

    python benchmarks/feature_extraction.py DATA [--limit 600] [--workers N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--limit", type=int, default=600, help="number of clips timed (default 600)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes of the cache builder")
    args = parser.parse_args(argv)
    full = load_dataset(args.data)
    dataset = Dataset(root=full.root, clips=full.clips[: args.limit], splits={}, layout=full.layout)
    paths = [str(dataset.path(c)) for c in dataset.clips]
    librosa_loop(paths[:3])  # warm-up (filterbank caches, lazy imports)
    with tempfile.TemporaryDirectory() as tmp:  # the same warm-up for the cache builder (torch's first calls)
        warm = Dataset(root=full.root, clips=full.clips[:3], splits={}, layout=full.layout)
        FeatureCache.build(warm, tmp, workers=args.workers, progress=False)

    start = time.perf_counter()
    reference = librosa_loop(paths)
    librosa_rate = len(paths) / (time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cache = FeatureCache.build(dataset, tmp, workers=args.workers, progress=False)
        ours_rate = len(paths) / (time.perf_counter() - start)
        error = float(np.max(np.abs(np.asarray(cache.logmels, dtype=np.float32) - reference)))
    print(f"{len(paths)} clips")
    print(f"librosa per-file loop : {librosa_rate:8.1f} clips/s")
    print(f"dsmn feature cache    : {ours_rate:8.1f} clips/s  (max |difference| {error:.4f}, float16 store)")
    print(f"speed-up              : {ours_rate / librosa_rate:8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
