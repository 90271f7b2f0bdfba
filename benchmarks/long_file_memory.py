"""Peak memory and time of `dsmn predict` on a 1-minute and a 60-minute recording.

Long files are decoded, resampled and transformed block by block (dsmn.deploy.streaming), so the
peak resident memory should not grow with the file: the target is a 60-minute peak within 1.2x of
the 1-minute one. Each prediction runs in its own process; its peak RSS comes from the kernel
(wait4 rusage), its time is wall-clock. `--whole` adds the whole-file path for the 1-minute file.

    python benchmarks/long_file_memory.py [--model CKPT_OR_ONNX] [--minutes 1 60] [--rate 44100] [--whole]

Without --model an untrained model1 checkpoint is used (memory and time do not depend on training).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile as sf


def write_recording(path: Path, minutes: float, rate: int, channels: int) -> None:
    """Coloured noise with slow level changes, written a minute at a time (the writer stays small too)."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=rate, channels=channels, subtype="PCM_16") as out:
        for minute in range(int(np.ceil(minutes))):
            n = int(min(1.0, minutes - minute) * 60 * rate)
            noise = np.cumsum(rng.standard_normal((n, channels)), axis=0)
            noise -= np.linspace(noise[0], noise[-1], n)
            out.write((0.3 * noise / (np.abs(noise).max() + 1e-9)).astype(np.float32))


def run_predict(model: Path, audio: Path, out: Path, extra: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one `dsmn predict` process."""
    command = [sys.executable, "-c", "import sys; from dsmn.cli import main; sys.exit(main(sys.argv[1:]))",
               "predict", str(model), str(audio), "--out", str(out), "--quiet", *extra]
    start = time.perf_counter()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"dsmn predict failed on {audio}")
    return usage.ru_maxrss / 1024, seconds  # ru_maxrss is in KiB on Linux


def default_model(folder: Path) -> Path:
    import torch

    from dsmn import models
    from dsmn.features import FrontEndConfig

    torch.manual_seed(0)
    path = folder / "model1.pt"
    torch.save(models.checkpoint_dict(models.create("model1"), frontend=asdict(FrontEndConfig()), deltas=True), path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="checkpoint, run folder or .onnx (default: untrained model1)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 60.0])
    parser.add_argument("--rate", type=int, default=44100, help="sample rate of the recordings")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--whole", action="store_true", help="also the whole-file path on the shortest file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = args.model or default_model(folder)
        results = {}
        for minutes in args.minutes:
            audio = folder / f"{minutes:g}min.wav"
            write_recording(audio, minutes, args.rate, args.channels)
            results[minutes] = run_predict(model, audio, folder / "p.csv", ["--stream-seconds", "30"])
            print(f"{minutes:6g} min ({audio.stat().st_size / 1e6:7.1f} MB file): peak RSS "
                  f"{results[minutes][0]:7.1f} MB, {results[minutes][1]:7.1f} s (streamed)", flush=True)
            if args.whole and minutes == min(args.minutes):
                rss, seconds = run_predict(model, audio, folder / "p.csv", ["--stream-seconds", "1e9"])
                print(f"{minutes:6g} min: peak RSS {rss:7.1f} MB, {seconds:7.1f} s (whole file in memory)")
            audio.unlink()
        shortest, longest = min(results), max(results)
        if longest != shortest:
            ratio = results[longest][0] / results[shortest][0]
            print(f"peak RSS {longest:g} min / {shortest:g} min: {ratio:.2f} (target <= 1.2); time ratio "
                  f"{results[longest][1] / results[shortest][1]:.1f} for {longest / shortest:g}x the audio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
