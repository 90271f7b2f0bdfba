"""Long recordings in bounded memory: decode, resample and log-mel block by block.

A one-hour field recording is 635 MB of float32 samples and a 2.5 GB complex spectrogram when
handled in one piece. Here soundfile reads blocks, soxr resamples them with a streaming resampler,
and the STFT frames are computed from a rolling buffer that keeps only the n_fft - hop samples two
blocks share; the log-mel windows leave as soon as they are complete. The frames equal the
whole-file front end's (`dsmn.features.LogMel` with `center` padding at the file's two ends), so
streamed and whole-file predictions agree to float rounding (tested).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from dsmn.data.audio import check_samples
from dsmn.data.errors import AudioError
from dsmn.features import FrontEndConfig, LogMel
from dsmn.features.cache import NON_FINITE_LOGMEL
from dsmn.features.logmel import mel_log, power_spectrogram
from dsmn.models.windowing import window_starts


def file_seconds(path: str | Path) -> float:
    """Duration of an audio file from its header (0.0 when the header is unreadable)."""
    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - the decoder reports unreadable files with their reason
        return 0.0
    return info.frames / info.samplerate if info.samplerate else 0.0


def stream_samples(path: str | Path, sample_rate: int, block_seconds: float = 10.0,
                   notes: list[str] | None = None) -> Iterator[np.ndarray]:
    """Mono float32 blocks at `sample_rate`: downmixed and resampled as `dsmn.data.load_audio` does."""
    try:
        info = sf.info(str(path))
        blocks = sf.blocks(str(path), blocksize=max(1, round(block_seconds * info.samplerate)), dtype="float32",
                           always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise AudioError(path, f"not a readable audio file ({str(error).splitlines()[0][:200]})") from None
    if notes is not None:
        if info.channels > 1:
            notes.append(f"downmixed {info.channels} channels to mono")
        if info.samplerate != sample_rate:
            notes.append(f"resampled from {info.samplerate} Hz to {sample_rate} Hz")
    resampler = (soxr.ResampleStream(info.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
                 if info.samplerate != sample_rate else None)
    for block in blocks:
        check_samples(block, path)
        mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        yield mono if resampler is None else resampler.resample_chunk(mono, last=False)
    if resampler is not None:
        yield resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


class StreamingLogMel:
    """Log-mel windows of one long file, produced while the file is read (see the module doc)."""

    def __init__(self, frontend: FrontEndConfig, window_frames: int, window_batch: int = 256) -> None:
        self.config = frontend
        self.logmel = LogMel(frontend)
        self.window_frames = window_frames
        self.window_batch = window_batch
        self.half = frontend.n_fft // 2 if frontend.center else 0

    def windows(self, samples: Iterator[np.ndarray], path: str | Path) -> Iterator[tuple[torch.Tensor, list[int]]]:
        """(windows, n_mels, frames) log-mels and their first frames, in order, a batch at a time."""
        c = self.config
        hop, n_fft = c.hop_length, c.n_fft
        padded = np.zeros(0, dtype=np.float32)  # the centre-padded signal from sample `base` on
        base = next_frame = total = 0
        started = False
        mels: list[torch.Tensor] = []  # computed log-mel frames from frame `mel_base` on
        mel_base = emitted = 0
        for block in samples:
            total += len(block)
            padded = np.concatenate([padded, block])
            if not started:
                if len(padded) <= self.half:
                    continue
                padded, started = np.concatenate([self._pad(padded, left=True), padded]), True
            last = (base + len(padded) - n_fft) // hop  # the last frame the buffer holds whole
            if last >= next_frame:
                mels.append(self._frames(padded[next_frame * hop - base : last * hop + n_fft - base], path))
                next_frame = last + 1
                # samples before the next frame's start are no longer needed (but the right end's padding
                # reflects the last half + 1 samples: those always stay)
                keep = max(0, min(next_frame * hop - base, len(padded) - self.half - 1))
                padded, base = padded[keep:], base + keep
            mels, mel_base, out = self._complete(mels, mel_base, emitted, next_frame, final=None)
            for batch in out:
                emitted += len(batch[1])
                yield batch
        if total < self.half + 1:
            raise AudioError(path, "too short to stream")  # the caller pads such files whole instead
        padded = np.concatenate([padded, self._pad(padded, left=False)])
        frames = c.n_frames(total)
        if frames > next_frame:
            mels.append(self._frames(padded[next_frame * hop - base : (frames - 1) * hop + n_fft - base], path))
        mels, mel_base, out = self._complete(mels, mel_base, emitted, frames, final=frames)
        yield from out

    def _pad(self, signal: np.ndarray, left: bool) -> np.ndarray:
        """The `center` padding of one end, as torch.stft pads (reflect or zeros)."""
        if not self.half:
            return np.zeros(0, dtype=np.float32)
        if self.config.pad_mode != "reflect":
            return np.zeros(self.half, dtype=np.float32)
        return signal[1 : self.half + 1][::-1].copy() if left else signal[-self.half - 1 : -1][::-1].copy()

    def _frames(self, segment: np.ndarray, path: str | Path) -> torch.Tensor:
        c = self.config
        with torch.no_grad():
            power = power_spectrogram(torch.from_numpy(np.ascontiguousarray(segment))[None], self.logmel.window,
                                      n_fft=c.n_fft, hop_length=c.hop_length, center=False)
            out = mel_log(power, self.logmel.filterbank, c.log_offset)[0]
        if not torch.isfinite(out).all():
            raise AudioError(path, NON_FINITE_LOGMEL)
        return out

    def _complete(self, mels: list[torch.Tensor], mel_base: int, emitted: int, computed: int,
                  final: int | None) -> tuple[list[torch.Tensor], int, list[tuple[torch.Tensor, list[int]]]]:
        """Windows whose frames are all computed: every `width` frames, and at the end (`final` = the
        file's frame count) the ones `window_starts` adds; keeps only the frames later windows need."""
        width = self.window_frames
        if final is None:
            starts = list(range(emitted * width, computed - width + 1, width))
        else:
            starts = window_starts(final, width, width)[emitted:]
        if not starts:
            return mels, mel_base, []
        block = torch.cat(mels, dim=1) if len(mels) > 1 else mels[0]
        windows = [block[:, s - mel_base : s - mel_base + width] for s in starts]
        out = [(torch.stack(windows[i : i + self.window_batch]), starts[i : i + self.window_batch])
               for i in range(0, len(windows), self.window_batch)]
        # later windows start at the next regular start, or (the final one) within the last `width` frames
        drop = min(starts[-1] + width, max(mel_base, computed - width)) - mel_base
        return [block[:, drop:]], mel_base + drop, out
