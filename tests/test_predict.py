"""dsmn predict: any audio file in, DCASE Task 1 rows out; bad files reported, not fatal."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsmn.cli import main
from dsmn.labels import SCENES
from tests.test_export import make_run


@pytest.fixture(scope="module")
def onnx_model(tiny_data, tmp_path_factory) -> Path:
    run = make_run(tiny_data, tmp_path_factory.mktemp("predict_run"))
    path = run / "model.onnx"
    assert main(["export", str(run), "--out", str(path), "--data", str(tiny_data), "--check-clips", "50"]) == 0
    return path


@pytest.fixture(scope="module")
def audio_folder(tiny_data, tmp_path_factory) -> Path:
    """Real scene audio from the tiny set, rewritten in many formats, rates, channel counts and lengths."""
    folder = tmp_path_factory.mktemp("audio")
    clips = sorted((tiny_data / "audio").glob("*.wav"))[:12]
    signal = np.concatenate([sf.read(str(p), dtype="float32")[0] for p in clips[:10]])  # 10 s of scenes
    one = signal[:44100]
    sf.write(folder / "pcm16.wav", one, 44100, subtype="PCM_16")
    sf.write(folder / "pcm24.wav", one, 44100, subtype="PCM_24")
    sf.write(folder / "pcm32.wav", one, 44100, subtype="PCM_32")
    sf.write(folder / "float.wav", one, 44100, subtype="FLOAT")
    sf.write(folder / "lossless.flac", one, 44100)
    sf.write(folder / "lossy.ogg", one, 44100)
    stereo = np.stack([signal[:44100 * 2], signal[44100:44100 * 3]], axis=1)
    import soxr

    sf.write(folder / "stereo48k.wav", soxr.resample(stereo, 44100, 48000), 48000, subtype="PCM_24")
    sf.write(folder / "ten_seconds.wav", signal, 44100, subtype="PCM_24")
    sf.write(folder / "short.wav", one[:13000], 44100)
    sf.write(folder / "silence.wav", np.zeros(44100, dtype=np.float32), 44100)
    nested = folder / "more" / "deeper"
    nested.mkdir(parents=True)
    sf.write(nested / "nested.wav", signal[44100:88200], 22050)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.txt").write_text("not audio, and not picked up from a folder")
    return folder


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open() as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    return rows[0], rows[1:]


def test_predicts_every_readable_file_and_reports_the_bad_ones(onnx_model, audio_folder, tmp_path, capsys) -> None:
    out = tmp_path / "predictions.csv"
    code = main(["predict", str(onnx_model), str(audio_folder), "--out", str(out), "--windows"])
    err = capsys.readouterr().err
    assert code == 1  # two files failed
    assert "corrupt.wav" in err and "empty.wav" in err and "notes.txt" not in err
    head, rows = _read(out)
    assert head == ["filename", "scene_label", *SCENES]
    clips = {r[0]: r for r in rows if "#w" not in r[0]}
    name = audio_folder.name
    assert set(clips) == {f"{name}/{f}" for f in (
        "pcm16.wav", "pcm24.wav", "pcm32.wav", "float.wav", "lossless.flac", "lossy.ogg", "stereo48k.wav",
        "ten_seconds.wav", "short.wav", "silence.wav", "more/deeper/nested.wav")}
    for row in rows:
        p = np.array(row[2:], dtype=float)
        assert np.isfinite(p).all() and abs(p.sum() - 1) < 1e-4
        assert row[1] == SCENES[int(np.argmax(p))]
    windows = [r[0] for r in rows if r[0].startswith(f"{name}/ten_seconds.wav#w")]
    assert len(windows) == 10  # 431 frames: 9 windows every 44 frames + one flush with the end
    # the clip is the mean of its windows
    window_mean = np.mean([np.array(r[2:], dtype=float) for r in rows if r[0] in windows], axis=0)
    np.testing.assert_allclose(np.array(clips[f"{name}/ten_seconds.wav"][2:], dtype=float), window_mean, atol=2e-6)
    # bit depth and lossless containers do not change the decision
    reference = np.array(clips[f"{name}/float.wav"][2:], dtype=float)
    for other in ("pcm24.wav", "pcm32.wav", "lossless.flac"):
        np.testing.assert_allclose(np.array(clips[f"{name}/{other}"][2:], dtype=float), reference, atol=1e-3)


def test_keep_going_and_single_files(onnx_model, audio_folder, tmp_path, capsys) -> None:
    out = tmp_path / "p.csv"
    files = [str(audio_folder / "pcm16.wav"), str(audio_folder / "corrupt.wav")]
    assert main(["predict", str(onnx_model), *files, "--out", str(out), "--keep-going"]) == 0
    assert "corrupt.wav" in capsys.readouterr().err
    _, rows = _read(out)
    assert [r[0] for r in rows] == [str(audio_folder / "pcm16.wav")]
    assert main(["predict", str(onnx_model), str(audio_folder / "notes.txt"), "--out", str(out)]) == 1


def test_checkpoint_and_exported_model_agree_on_dataset_clips(onnx_model, tiny_data, tmp_path) -> None:
    files = sorted((tiny_data / "audio").glob("*.wav"))[:40]
    results = {}
    for kind, model in (("onnx", onnx_model), ("qat", onnx_model.parent)):
        out = tmp_path / f"{kind}.csv"
        assert main(["predict", str(model), *map(str, files), "--out", str(out), "--batch-size", "16"]) == 0
        results[kind] = _read(out)[1]
    agree = np.mean([a[1] == b[1] for a, b in zip(results["onnx"], results["qat"], strict=True)])
    assert agree >= 0.95
