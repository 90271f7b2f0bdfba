"""Bad inputs are reported and skipped or refused with one line, never silently used (docs/reliability.md)."""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dsmn import models
from dsmn.cli import main
from dsmn.data import AudioError, load_audio, load_dataset
from dsmn.features import FeatureCache, FrontEndConfig

RNG = np.random.default_rng(0)
NOISE = (0.1 * RNG.standard_normal(44100)).astype(np.float32)


def huge(path: Path) -> Path:
    """A float WAV that decodes fine but holds a few finite samples of 1e20 (the poisoned file)."""
    samples = NOISE.copy()
    samples[[100, 20000, 30000]] = 1e20
    sf.write(path, samples, 44100, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A float model1 checkpoint in the toolkit's format (untrained: prediction mechanics only)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model1.pt"
    torch.save(models.checkpoint_dict(models.create("model1"), frontend=asdict(FrontEndConfig()), deltas=True), path)
    return path


def test_huge_or_non_finite_samples_are_refused_at_decoding(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="samples reach 1e"):
        load_audio(huge(tmp_path / "huge.wav"))
    samples = NOISE.copy()
    samples[5] = np.inf
    sf.write(tmp_path / "inf.wav", samples, 44100, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(tmp_path / "inf.wav")
    over = NOISE * 20  # float overs (peaks of ~8 over full scale) are legal in float files and kept
    sf.write(tmp_path / "overs.wav", over, 44100, subtype="FLOAT")
    assert np.abs(load_audio(tmp_path / "overs.wav")[0]).max() > 1.0


def test_feature_cache_skips_and_reports_the_poisoned_file(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    (root / "park").mkdir(parents=True)
    sf.write(root / "park" / "good.wav", NOISE, 44100, subtype="PCM_24")
    huge(root / "park" / "huge.wav")
    assert main(["features", str(root), "--workers", "0", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "park/huge.wav: samples reach 1e+20" in err
    cache = FeatureCache.open(root / ".dsmn_cache")
    assert [name for name, _ in cache.failed] == ["park/huge.wav"]
    assert [c.filename for c in cache.usable(load_dataset(root).clips)] == ["park/good.wav"]
    assert np.isfinite(np.asarray(cache.logmels, dtype=np.float32)).all()


def test_non_finite_log_mel_rows_are_not_stored(tmp_path: Path, monkeypatch) -> None:
    """A log-mel that is not finite (whatever the cause) is reported like a corrupt file, never cached."""
    from dsmn.features import cache as cache_module

    root = tmp_path / "data"
    (root / "park").mkdir(parents=True)
    for name in ("a.wav", "b.wav"):
        sf.write(root / "park" / name, NOISE, 44100, subtype="PCM_24")
    real = cache_module.LogMel.forward

    def poisoned(self, waves: torch.Tensor) -> torch.Tensor:
        out = real(self, waves)
        out[0, 3, 5] = float("nan")
        return out

    monkeypatch.setattr(cache_module.LogMel, "forward", poisoned)
    cache = FeatureCache.build(load_dataset(root), root / "c", workers=0, progress=False)
    assert [name for name, _ in cache.failed] == ["park/a.wav"] and "log-mel is not finite" in cache.failed[0][1]
    assert cache.done.tolist() == [False, True]


def test_predict_skips_the_poisoned_file_instead_of_writing_nan(checkpoint: Path, tmp_path: Path, capsys) -> None:
    sf.write(tmp_path / "good.wav", NOISE, 44100)
    out = tmp_path / "p.csv"
    code = main(["predict", str(checkpoint), str(tmp_path / "good.wav"), str(huge(tmp_path / "huge.wav")),
                 "--out", str(out)])
    assert code == 1
    assert "skipped" in capsys.readouterr().err
    rows = list(csv.reader(out.open(), delimiter="\t"))[1:]
    assert [r[0] for r in rows] == [str(tmp_path / "good.wav")]
    assert all(np.isfinite(float(v)) for v in rows[0][2:])


# --- dsmn predict --out (item: never destroy an input) ---------------------------------------------

def test_predict_refuses_out_equal_to_an_input_before_doing_anything(tmp_path: Path, capsys) -> None:
    wav = tmp_path / "recording.wav"
    sf.write(wav, NOISE, 44100)
    before = wav.read_bytes()
    # the model does not even exist: the --out check comes before anything is loaded or computed
    assert main(["predict", str(tmp_path / "no-model.pt"), str(wav), "--out", str(wav)]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert wav.read_bytes() == before
    # the same file reached through a folder argument and another spelling of the path
    assert main(["predict", "x.pt", str(tmp_path), "--out", str(tmp_path / "." / "recording.wav")]) == 2
    assert wav.read_bytes() == before
    other = tmp_path / "other.flac"
    sf.write(other, NOISE, 44100)
    assert main(["predict", "x.pt", str(wav), "--out", str(other)]) == 2
    assert "existing audio file" in capsys.readouterr().err


@pytest.mark.parametrize(("out", "message"), [("missing/p.csv", "does not exist"), (".", "is a folder")])
def test_predict_checks_out_first(tmp_path: Path, capsys, out: str, message: str, monkeypatch) -> None:
    wav = tmp_path / "a.wav"
    sf.write(wav, NOISE, 44100)
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "no-model.pt", str(wav), "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_predict_output_is_written_atomically(checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    """An interrupted prediction leaves the previous output (here: none), never half a table."""
    from dsmn.deploy import predict as predict_module

    sf.write(tmp_path / "a.wav", NOISE, 44100)
    out = tmp_path / "p.csv"
    out.write_text("previous\n")

    def interrupted(self, files, progress=False):  # noqa: ANN001, ANN202
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(predict_module.Predictor, "predict", interrupted)
    assert main(["predict", str(checkpoint), str(tmp_path / "a.wav"), "--out", str(out)]) == 2
    assert out.read_text() == "previous\n" and sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "p.csv"]


# --- one line and exit 2 instead of a traceback ------------------------------------------------------

def _one_line_error(capsys, argv: list[str], expected: str) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err + captured.out
    assert len(err.splitlines()) == 1, err
    assert expected in err, err


@pytest.mark.parametrize(("extra", "expected"), [
    (["--set", "epochs=abc"], "epochs: expected a whole number, got 'abc'"),
    (["--set", "batch_size=abc"], "batch_size: expected a whole number"),
    (["--set", "mixup.alpha=-1"], "mixup.alpha: -1.0 is out of range"),
    (["--set", "seed=1.5"], "seed: expected a whole number, got 1.5"),
    (["--set", "noequals"], "'noequals' is not of the form key.sub=value"),
    (["--set", "optimizer.name=foo"], "optimizer.name: 'foo' is not one of"),
    (["--set", "mixup.enabled=maybe"], "mixup.enabled: expected true or false, got 'maybe'"),
    (["--lr", "-1"], "optimizer.lr: -1.0 is out of range"),
    (["--model", "model9"], "unknown model 'model9'"),
    (["--epochs", "3", "--set", "qat.start_epoch=3"], "QAT would never start"),
    (["--config", "no-such-config"], "config 'no-such-config' not found"),
])
def test_train_setting_errors_are_one_line(tmp_path: Path, capsys, extra: list[str], expected: str) -> None:
    _one_line_error(capsys, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), *extra], expected)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_on_cuda_without_cuda(tmp_path: Path, capsys) -> None:
    _one_line_error(capsys, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--device", "cuda"],
                    "CUDA is not available")


def test_truncated_last_checkpoint_is_named(checkpoint: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    data = checkpoint.read_bytes()
    (run / "checkpoints" / "last.pt").write_bytes(data[: len(data) // 2])
    _one_line_error(capsys, ["train", "--data", str(tmp_path), "--out", str(run), "--resume"],
                    f"{run / 'checkpoints' / 'last.pt'}: not a readable PyTorch checkpoint")
    (run / "checkpoints" / "last.pt").write_bytes(data)  # a model checkpoint, not a run's
    _one_line_error(capsys, ["train", "--data", str(tmp_path), "--out", str(run), "--resume"],
                    "not a training checkpoint")


def test_ctrl_c_during_training_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    import dsmn.training

    def interrupted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise KeyboardInterrupt

    monkeypatch.setattr(dsmn.training, "train", interrupted)
    _one_line_error(capsys, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "r")],
                    "interrupted; no epoch had finished")
    with pytest.raises(KeyboardInterrupt):  # --debug keeps the traceback
        main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--debug"])


def _bad_files(tmp_path: Path, checkpoint: Path) -> dict[str, Path]:
    bare = tmp_path / "bare.pt"
    torch.save(torch.zeros(3), bare)
    data = checkpoint.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 3])
    (tmp_path / "random.bin").write_bytes(np.random.default_rng(1).bytes(3000))
    other = tmp_path / "other.pt"
    torch.save({"epoch": 3, "weights": [1, 2]}, other)
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07")
    (tmp_path / "empty").mkdir()
    return {"bare": bare, "truncated": tmp_path / "truncated.pt", "random": tmp_path / "random.bin",
            "other": other, "onnx": tmp_path / "model.onnx", "empty": tmp_path / "empty"}


@pytest.mark.parametrize(("which", "expected"), [
    ("name", "'model9' is neither a model name"),
    ("bare", "holds a Tensor, not a checkpoint"),
    ("truncated", "not a readable PyTorch checkpoint"),
    ("random", "not a readable PyTorch checkpoint"),
    ("other", "neither a dsmn checkpoint nor a state_dict"),
    ("onnx", "an exported ONNX model, not a checkpoint"),
    ("empty", "no best.pt or last.pt"),
])
def test_complexity_bad_inputs_are_one_line(checkpoint: Path, tmp_path: Path, capsys, which: str,
                                            expected: str) -> None:
    target = "model9" if which == "name" else str(_bad_files(tmp_path, checkpoint)[which])
    _one_line_error(capsys, ["complexity", target], expected)


def test_export_of_a_bare_tensor_is_one_line(checkpoint: Path, tmp_path: Path, capsys) -> None:
    bare = _bad_files(tmp_path, checkpoint)["bare"]
    _one_line_error(capsys, ["export", str(bare), "--no-check"], "holds a Tensor, not a checkpoint")


# --- generic label CSVs are read the standard way ----------------------------------------------------

def test_quoted_generic_csv(tmp_path: Path) -> None:
    root = tmp_path / "generic"
    (root / "audio").mkdir(parents=True)
    for name in ("park, morning.wav", "tram.wav", 'say "hi".wav'):
        sf.write(root / "audio" / name, NOISE, 44100)
    rows = [["filename", "scene_label", "device"], ["audio/park, morning.wav", "park", "a"],
            ["audio/tram.wav", "tram", "b"], ['audio/say "hi".wav', "metro", "a"]]
    with (root / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle, quoting=csv.QUOTE_ALL).writerows(rows)
    dataset = load_dataset(root)
    assert sorted((c.filename, c.scene, c.device) for c in dataset.clips) == [
        ("audio/park, morning.wav", "park", "a"), ('audio/say "hi".wav', "metro", "a"), ("audio/tram.wav", "tram", "b")]
    (root / "labels.csv").write_text('filename,scene_label\n"audio/tram.wav,tram\n')  # unbalanced quote
    with pytest.raises(ValueError, match="labels.csv"):
        load_dataset(root)
