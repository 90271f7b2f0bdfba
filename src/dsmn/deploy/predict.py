"""Scene prediction for audio files of any format, rate, channel count and length.

Each file is decoded to mono 44.1 kHz (the data path's `load_audio`), turned into a log-mel with the
model's front end, and cut into 1-s windows (44 frames) as `dsmn.models.windowing` does: every 44
frames, plus one window flush with the end when a tail is left over (so no window is padded); a file
shorter than 1 s is zero-padded to 1 s. Each window is classified like a training clip; the clip's
scene probabilities are the mean over its windows (a model trained on whole long clips, TrainConfig
`data.long_clips: whole`, classifies the whole file in one pass instead; its windows are still listed).
Output: the DCASE Task 1 format, tab-separated `filename scene_label airport bus ... tram`.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from dsmn.data import AudioError, load_audio
from dsmn.deploy.inference import LoadedModel
from dsmn.deploy.streaming import StreamingLogMel, file_seconds, stream_samples
from dsmn.features import LogMel, network_input
from dsmn.features.cache import NON_FINITE_LOGMEL
from dsmn.files import atomic_path
from dsmn.labels import SCENES
from dsmn.models import outputs
from dsmn.models.windowing import window_starts

STREAM_SECONDS = 60.0  # files longer than this are decoded and transformed block by block
AUDIO_SUFFIXES = frozenset({"." + f.lower() for f in sf.available_formats()} | {".wav", ".flac", ".ogg", ".mp3",
                                                                                 ".aif", ".aiff", ".opus"})


@dataclass
class FilePrediction:
    filename: str
    probabilities: np.ndarray  # (scenes,) mean over windows
    windows: np.ndarray  # (windows, scenes)
    window_starts_s: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class FileFailure:
    filename: str
    reason: str


def find_audio(paths: Iterable[str | Path]) -> Iterator[tuple[Path, str]]:
    """(path, name to report) for each file argument, and for each audio file under folder arguments
    (recursive, sorted; names relative to the folder's parent, e.g. `audio/x.wav`). Files named
    explicitly are always tried, whatever their suffix."""
    for path in map(Path, paths):
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES):
                if not any(part.startswith(".") for part in found.relative_to(path).parts):
                    yield found, str(found.relative_to(path.parent))
        else:
            yield path, str(path)


class Predictor:
    """Classifies audio files with a loaded model (torch or ONNX), batching windows across files."""

    def __init__(self, model: LoadedModel, batch_size: int = 32, stream_seconds: float = STREAM_SECONDS,
                 block_seconds: float = 10.0) -> None:
        self.model = model
        self.batch_size = batch_size
        self.recipe = model.recipe
        self.logmel = LogMel(self.recipe.frontend)
        self.window_frames = self.recipe.frontend.n_frames(self.recipe.frontend.sample_rate)
        self.stream_seconds = stream_seconds  # longer files are streamed (dsmn.deploy.streaming)
        self.block_seconds = block_seconds

    def windows(self, samples: np.ndarray) -> tuple[torch.Tensor, list[int]]:
        """(windows, n_mels, frames) raw log-mels of one decoded file, and each window's first frame."""
        rate = self.recipe.frontend.sample_rate
        if len(samples) < rate:
            samples = np.concatenate([samples, np.zeros(rate - len(samples), dtype=np.float32)])
        with torch.no_grad():
            logmel = self.logmel(torch.from_numpy(samples))
        starts = window_starts(logmel.shape[-1], self.window_frames, self.window_frames)
        return torch.stack([logmel[:, s : s + self.window_frames] for s in starts]), starts

    def scene_probabilities(self, logmels: torch.Tensor) -> np.ndarray:
        x = network_input(logmels, self.recipe.deltas, self.recipe.delta_width)
        out = [outputs.scene_probabilities(self.model.logits(x[i : i + self.batch_size]))
               for i in range(0, len(x), self.batch_size)]
        return np.concatenate(out)

    def predict(
        self, files: Sequence[tuple[Path, str]], progress: bool = False
    ) -> Iterator[FilePrediction | FileFailure]:
        """Results in file order; windows of several files share a batch."""
        from tqdm import tqdm

        pending: list[tuple[str, torch.Tensor, list[int], list[str], torch.Tensor | None]] = []
        pending_windows = 0
        bar = tqdm(files, desc="predicting", unit="file", disable=not progress, file=sys.stderr)
        for path, name in bar:
            if file_seconds(path) > self.stream_seconds:
                yield from self._flush(pending)
                pending, pending_windows = [], 0
                yield self.predict_streamed(path, name)
                continue
            try:
                samples, notes = load_audio(path, self.recipe.frontend.sample_rate, duration=None)
                if len(samples) < self.recipe.frontend.sample_rate:
                    notes.append(f"padded to 1 s (file is {len(samples) / self.recipe.frontend.sample_rate:.3f} s)")
                logmels, starts = self.windows(samples)
                if not torch.isfinite(logmels).all():
                    raise AudioError(path, NON_FINITE_LOGMEL)
                whole = self.whole(samples) if self.recipe.long_clips == "whole" and len(starts) > 1 else None
            except AudioError as error:
                yield FileFailure(name, error.reason)
                continue
            except Exception as error:  # noqa: BLE001 - one odd file must not stop a folder of thousands
                yield FileFailure(name, f"{type(error).__name__}: {error}")
                continue
            pending.append((name, logmels, starts, notes, whole))
            pending_windows += len(logmels)
            if pending_windows >= self.batch_size:
                yield from self._flush(pending)
                pending, pending_windows = [], 0
        yield from self._flush(pending)

    def predict_streamed(self, path: Path, name: str) -> FilePrediction | FileFailure:
        """One long file in bounded memory: its windows are classified as they are computed."""
        rate = self.recipe.frontend.sample_rate
        notes: list[str] = []
        streamer = StreamingLogMel(self.recipe.frontend, self.window_frames, window_batch=max(self.batch_size, 64))
        parts, starts = [], []
        try:
            for logmels, first_frames in streamer.windows(stream_samples(path, rate, self.block_seconds, notes), path):
                parts.append(self.scene_probabilities(logmels))
                starts += first_frames
        except AudioError as error:
            return FileFailure(name, error.reason)
        except Exception as error:  # noqa: BLE001 - one odd file must not stop a folder of thousands
            return FileFailure(name, f"{type(error).__name__}: {error}")
        windows = np.concatenate(parts)
        hop_s = self.recipe.frontend.hop_length / rate
        return FilePrediction(name, windows.mean(axis=0), windows, [s * hop_s for s in starts], notes)

    def whole(self, samples: np.ndarray) -> torch.Tensor:
        """(1, n_mels, frames) raw log-mel of a whole file, for models trained on whole long clips."""
        with torch.no_grad():
            return self.logmel(torch.from_numpy(samples))[None]

    def _flush(self, pending: list[tuple[str, torch.Tensor, list[int], list[str], torch.Tensor | None]]
               ) -> Iterator[FilePrediction]:
        if not pending:
            return
        probabilities = self.scene_probabilities(torch.cat([p[1] for p in pending]))
        offset = 0
        hop_s = self.recipe.frontend.hop_length / self.recipe.frontend.sample_rate
        for name, logmels, starts, notes, whole in pending:
            windows = probabilities[offset : offset + len(logmels)]
            offset += len(logmels)
            clip = windows.mean(axis=0) if whole is None else self.scene_probabilities(whole)[0]
            yield FilePrediction(name, clip, windows, [s * hop_s for s in starts], notes)


def header(classes: Sequence[str] = SCENES) -> list[str]:
    return ["filename", "scene_label", *classes]


def prediction_row(filename: str, probabilities: np.ndarray, classes: Sequence[str] = SCENES) -> list[str]:
    return [filename, classes[int(np.argmax(probabilities))], *(f"{p:.6f}" for p in probabilities)]


def write_predictions(path: str | Path | io.TextIOBase, filenames: Sequence[str], probabilities: np.ndarray,
                      classes: Sequence[str] = SCENES) -> None:
    """DCASE Task 1 output: tab-separated, one row per clip (a file is written atomically)."""
    if isinstance(path, io.TextIOBase):
        _write_rows(path, filenames, probabilities, classes)
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        _write_rows(handle, filenames, probabilities, classes)


def _write_rows(handle: io.TextIOBase, filenames: Sequence[str], probabilities: np.ndarray,
                classes: Sequence[str]) -> None:
    writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
    writer.writerow(header(classes))
    for name, p in zip(filenames, probabilities, strict=True):
        writer.writerow(prediction_row(name, p, classes))
