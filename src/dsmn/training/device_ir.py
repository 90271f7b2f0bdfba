"""Device impulse responses (DIR) as log-mel device responses.

The feature cache holds log-mels, so a device IR h is applied in that domain: the response of a band
is the IR's mel-band power gain r_m = log10(sum_f W[m, f] |H(f)|^2 / sum_f W[m, f]), added to every
frame of the clip's log10 mel power. For an IR much shorter than the analysis window (4096 samples,
93 ms at 44.1 kHz; device IRs last a few ms) the short-time spectrum of the convolved clip is the
clip's spectrum times H(f) frame by frame, and where |H|^2 is smooth across a mel band the band power
is multiplied by its mean gain: log-mel(x * h) ~ log-mel(x) + r. The error grows with the IR's length
(frame edges) and with gain varying inside a band (narrow resonances in the wide high bands).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from dsmn.features import FrontEndConfig
from dsmn.features.logmel import mel_filterbank

IR_SUFFIXES = (".wav", ".flac")


RESPONSE_FLOOR = -6.0  # log10 power gain: bands the IR attenuates by more than 60 dB stay at -60 dB


def ir_response(ir: np.ndarray, frontend: FrontEndConfig = FrontEndConfig()) -> np.ndarray:
    """(n_mels,) log10 mel-band power gain of an IR sampled at frontend.sample_rate.

    Empty bands (no filterbank weight) get 0: they hold no energy in any clip. Gains are floored at
    -60 dB (a 16 kHz IR has no response above 8 kHz at all; real recordings keep a noise floor)."""
    if len(ir) > frontend.n_fft:
        ir = ir[: frontend.n_fft]
    power = np.abs(np.fft.rfft(np.asarray(ir, np.float64), n=frontend.n_fft)) ** 2
    weights = mel_filterbank(frontend.sample_rate, frontend.n_fft, frontend.n_mels, htk=frontend.htk,
                             norm=frontend.norm, fmin=frontend.fmin, fmax=frontend.fmax).numpy().astype(np.float64)
    total = weights.sum(axis=1)
    gain = np.divide(weights @ power, total, out=np.ones_like(total), where=total > 0)
    return np.maximum(np.log10(np.maximum(gain, 1e-30)), RESPONSE_FLOOR).astype(np.float32)


def ir_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"device_ir.folder {folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IR_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"device_ir.folder {folder}: no impulse responses (.wav or .flac files) in it")
    return files


def load_ir(path: str | Path, sample_rate: int, floor_db: float = -120.0) -> np.ndarray:
    """An IR file as float64 samples at `sample_rate` (soxr), mono (channels averaged).

    The IR is zero-padded before resampling: an IR that starts at full level on its first sample
    would otherwise lose the resampling filter's pre-ringing and gain energy above the original
    Nyquist frequency. The result is trimmed to where it lies within `floor_db` of its peak.
    """
    try:
        data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise ValueError(f"device_ir.folder: {path}: not a readable audio file ({error})") from None
    ir = data.mean(axis=1)
    if len(ir) == 0 or not np.all(np.isfinite(ir)) or not np.any(ir):
        raise ValueError(f"device_ir.folder: {path}: empty, silent or non-finite impulse response")
    if rate != sample_rate:
        pad = np.zeros(256)
        ir = soxr.resample(np.concatenate([pad, ir, pad]), rate, sample_rate, quality="VHQ")
    keep = np.flatnonzero(np.abs(ir) >= np.abs(ir).max() * 10 ** (floor_db / 20))
    return ir[keep[0]: keep[-1] + 1]


def ir_bank(folder: str | Path, frontend: FrontEndConfig = FrontEndConfig()) -> np.ndarray:
    """(IRs, n_mels) log-mel responses of every IR file of `folder` (any sample rate: resampled with
    soxr to the front end's; multi-channel: downmixed). A file that cannot be read is an error."""
    responses = []
    for path in ir_files(folder):
        ir = load_ir(path, frontend.sample_rate)
        if len(ir) > frontend.n_fft // 2:
            warnings.warn(f"{path}: impulse response of {len(ir)} samples is not much shorter than the "
                          f"{frontend.n_fft}-sample window; its log-mel response is a rough approximation",
                          stacklevel=2)
        responses.append(ir_response(ir, frontend))
    return np.stack(responses)
