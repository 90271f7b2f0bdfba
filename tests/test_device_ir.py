"""Device impulse responses: `dsmn synth-irs`, banks from IR WAVs at 16 and 48 kHz, the log-mel
approximation of convolution measured on real generated clips, and DIR in the training pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.signal import fftconvolve

from dsmn.cli import main as cli
from dsmn.data.audio import load_audio
from dsmn.features import FrontEndConfig
from dsmn.features.frontend import LogMel
from dsmn.training import load_config, train
from dsmn.training.data import RawBatch
from dsmn.training.device_ir import ir_bank, ir_files, ir_response, load_ir
from dsmn.training.pipeline import EpochRandomness, TrainingInputs


@pytest.fixture(scope="module")
def ir_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("irs")
    for rate in (16000, 48000):
        assert cli(["synth-irs", str(root / str(rate)), "--count", "6", "--sample-rate", str(rate)]) == 0
    return {rate: root / str(rate) for rate in (16000, 48000)}


def test_synth_irs_is_deterministic_short_and_refuses_to_overwrite(ir_folders, tmp_path: Path, capsys) -> None:
    import soundfile as sf

    again = tmp_path / "again"
    assert cli(["synth-irs", str(again), "--count", "6", "--sample-rate", "48000"]) == 0
    for a, b in zip(ir_files(ir_folders[48000]), ir_files(again), strict=True):
        assert a.read_bytes() == b.read_bytes()
    other = tmp_path / "other"
    assert cli(["synth-irs", str(other), "--count", "6", "--seed", "1"]) == 0
    assert ir_files(other)[0].read_bytes() != ir_files(again)[0].read_bytes()
    for rate, folder in ir_folders.items():
        for path in ir_files(folder):
            ir, sr = sf.read(str(path))
            assert sr == rate and len(ir) <= 0.02 * rate and np.sum(ir**2) == pytest.approx(1.0, rel=1e-4)
    assert cli(["synth-irs", str(again)]) == 2 and "already holds" in capsys.readouterr().err
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    assert cli(["synth-irs", str(a_file)]) == 2 and "is a file" in capsys.readouterr().err
    assert a_file.read_text() == "keep me"


def test_banks_from_16_and_48_khz_wavs(ir_folders, tmp_path: Path) -> None:
    for folder in ir_folders.values():
        bank = ir_bank(folder)
        assert bank.shape == (6, 256) and np.isfinite(bank).all()
        assert bank.std(axis=1).min() > 0.1  # band-pass and resonances: far from flat
    # the 16 kHz IRs carry nothing above 8 kHz: their top bands lie far below the 48 kHz ones
    assert ir_bank(ir_folders[16000])[:, -20:].max() < ir_bank(ir_folders[48000])[:, -20:].max() - 1
    with pytest.raises(FileNotFoundError, match="no impulse responses"):
        ir_bank(tmp_path)
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    with pytest.raises(ValueError, match="broken.wav"):
        ir_bank(tmp_path)


def test_log_mel_response_approximates_convolution_on_real_clips(tiny_data: Path, ir_folders) -> None:
    """log-mel(clip * IR) against log-mel(clip) + response, on the bins within 60 dB of the peak in both the
    clip and the convolved clip (bins the IR pushes below that carry no information either way)."""
    wavs = sorted((tiny_data / "audio").glob("*.wav"))[::40][:8]
    clips = np.stack([load_audio(w)[0] for w in wavs])
    logmel = LogMel(FrontEndConfig())
    x = logmel(torch.from_numpy(clips)).numpy()
    peak_live = x > x.max(axis=(1, 2), keepdims=True) - 6
    report = {}
    for rate, folder in ir_folders.items():
        errors, ignored = [], []
        for path in ir_files(folder):
            ir = load_ir(path, 44100)
            convolved = np.stack([fftconvolve(c, ir)[: len(c)] for c in clips]).astype(np.float32)
            y = logmel(torch.from_numpy(convolved)).numpy()
            live = peak_live & (y > y.max(axis=(1, 2), keepdims=True) - 6)
            errors.append(np.abs(y - (x + ir_response(ir)[:, None]))[live])
            ignored.append(np.abs(y - x)[live])
        error, without = np.concatenate(errors), np.concatenate(ignored)
        report[rate] = (error.mean(), np.percentile(error, 95), without.mean())
        print(f"{rate} Hz IRs: mean abs error {10 * error.mean():.2f} dB, 95th percentile "
              f"{10 * np.percentile(error, 95):.2f} dB; ignoring the IR: {10 * without.mean():.2f} dB")
        assert error.mean() < 0.12 and error.mean() < 0.1 * without.mean()
        assert np.percentile(error, 95) < 0.4
    assert set(report) == {16000, 48000}


def test_dir_joins_or_replaces_spectrum_correction(ir_folders, monkeypatch) -> None:
    import dsmn.training.pipeline as pipeline

    bank = torch.from_numpy(ir_bank(ir_folders[48000]))
    correction = torch.full((3, 256), 7.0)  # recognisable stand-in vectors
    logmel = torch.randn(16, 256, 44, generator=torch.Generator().manual_seed(0))
    is_a = torch.arange(16) % 2 == 0
    batch = RawBatch(logmel, torch.zeros(16, dtype=torch.long), is_a)
    base = ["mixup.enabled=false", "specaugment.enabled=false", "spectrum_correction.probability=1"]

    def shift(items: list[str], epoch: int) -> torch.Tensor:
        config = load_config("demo", [*base, *items])
        inputs = TrainingInputs(config, False, correction, bank)
        captured = {}
        monkeypatch.setattr(pipeline, "network_input", lambda lm, *a: captured.setdefault("x", lm)[:, None])
        inputs(batch, epoch, EpochRandomness.create(0, epoch, 0, torch.device("cpu")))
        return (captured["x"] - logmel)[:, :, 0]  # the raw log-mel shift the device augmentations added

    folder = f"device_ir.folder={ir_folders[48000]}"
    seen = {"ir": 0, "correction": 0}
    for epoch in range(12):
        s = shift(["device_ir.enabled=true", folder, "device_ir.probability=0.5"], epoch)
        assert torch.equal(s[~is_a], torch.zeros_like(s[~is_a]))  # only reference-device clips
        kind = "correction" if torch.allclose(s[is_a], torch.full_like(s[is_a], 7.0)) else "ir"
        if kind == "ir":
            assert all(any(torch.allclose(row, b, atol=1e-5) for b in bank) for row in s[is_a])
        seen[kind] += 1
        replaced = shift(["device_ir.enabled=true", folder, "device_ir.probability=0.5",
                          "device_ir.replace_correction=true"], epoch)
        assert not torch.allclose(replaced[is_a], torch.full_like(replaced[is_a], 7.0))
    assert seen["ir"] > 0 and seen["correction"] > 0  # joined: both banks in use, each batch one of them
    assert torch.allclose(shift([], 0)[is_a], torch.full((8, 256), 7.0))  # DIR off: the recipe as before


@pytest.mark.e2e
def test_training_with_dir_and_freq_mixstyle(tiny_data: Path, ir_folders, tmp_path: Path) -> None:
    items = ["batch_size=8", "max_batches_per_epoch=2", "progress=false", "threads=2", "data.val_max_clips=20",
             "epochs=1", "device_ir.enabled=true", f"device_ir.folder={ir_folders[16000]}",
             "freq_mixstyle.enabled=true"]
    result = train(load_config("demo", items), tiny_data, tmp_path / "dir")
    assert np.isfinite(result.history[0]["train_loss"])
    with pytest.raises(ValueError, match="device_ir.enabled needs device_ir.folder"):
        load_config("demo", ["device_ir.enabled=true"])
