"""Training runs: one process per run folder, no silent resume with other data or settings, a stop at the
first non-finite loss, refusal of runs that could never save best.pt, export from the run's own data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dsmn.cli import main
from dsmn.training import load_config, train
from dsmn.training import trainer as trainer_module
from dsmn.training.runlock import RunLock, RunLockedError

SMALL = ["batch_size=8", "max_batches_per_epoch=2", "progress=false", "threads=2", "data.val_max_clips=40",
         "schedule.warmup_epochs=1"]
SMALL_FLAGS = [x for item in SMALL for x in ("--set", item)]


@pytest.fixture(scope="module")
def run1(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished epoch of the full recipe (QAT, PCGrad, ...) on the tiny set."""
    run = tmp_path_factory.mktemp("reliability") / "run1"
    train(load_config("model1", [*SMALL, "epochs=1"]), tiny_data, run)
    return run


def copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def one_line(capsys) -> str:  # noqa: ANN001
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


# --- a second run into the same folder -------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from dsmn.training.runlock import RunLock
    RunLock(Path(sys.argv[1])).acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def test_second_train_into_the_same_folder_refuses_at_once_and_a_killed_one_leaves_no_lock(
        tiny_data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", "--data", str(tiny_data), "--out", str(run), *SMALL_FLAGS, "--epochs", "1"]) == 2
        line = one_line(capsys)
        assert f"in use by another `dsmn train` (pid {holder.pid}" in line
        assert not (run / "checkpoints").exists() and not (run / "config.yaml").exists()
    finally:
        holder.kill()  # SIGKILL: no clean-up runs in the holder
        holder.wait()
    with RunLock(run), pytest.raises(RunLockedError):  # the dead holder's lock is gone: the folder is free
        RunLock(run).acquire()
    assert not (run / ".dsmn-train.lock").exists()


# --- resume with other data or settings --------------------------------------------------------------

def test_resume_with_other_settings_is_refused_unless_allowed_and_recorded(run1: Path, tiny_data: Path,
                                                                           tmp_path: Path, capsys) -> None:
    run = copy_run(run1, tmp_path)
    argv = ["train", "--data", str(tiny_data), "--out", str(run), "--resume", "--epochs", "2",
            "--set", "mixup.alpha=0.3"]
    assert main(argv) == 2
    line = one_line(capsys)
    assert "mixup.alpha 0.2 -> 0.3" in line and "--allow-changes" in line and "epochs" not in line
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=False)["epoch"] == 0  # nothing trained
    assert main([*argv, "--allow-changes"]) == 0
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert last["epoch"] == 1
    assert last["resumes"] == [{"epoch": 1, "changes": ["epochs 1 -> 2", "mixup.alpha 0.2 -> 0.3"]}]


def test_a_run_saved_before_a_setting_existed_resumes_unchanged(run1: Path, tiny_data: Path, tmp_path: Path) -> None:
    """A checkpoint of an older dsmn lacks settings added since (here qat.stochastic_rounding): at
    their recipe value they are no change, so the run resumes without --allow-changes."""
    run = copy_run(run1, tmp_path)
    for name in ("last.pt", "best.pt"):
        path = run / "checkpoints" / name
        if path.is_file():
            checkpoint = torch.load(path, weights_only=False)
            del checkpoint["config"]["qat"]["stochastic_rounding"]
            torch.save(checkpoint, path)
    assert main(["train", "--data", str(tiny_data), "--out", str(run), "--resume", "--epochs", "2"]) == 0
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert last["epoch"] == 1 and last["resumes"] == [{"epoch": 1, "changes": ["epochs 1 -> 2"]}]


def test_resume_with_other_data_is_refused(run1: Path, tiny_data: Path, tmp_path: Path, capsys) -> None:
    other = tmp_path / "other"
    other.mkdir()
    for item in tiny_data.iterdir():  # the same audio, a training list without its last 20 clips
        if item.name != "evaluation_setup":
            (other / item.name).symlink_to(item)
    shutil.copytree(tiny_data / "evaluation_setup", other / "evaluation_setup")
    train_csv = other / "evaluation_setup" / "fold1_train.csv"
    train_csv.write_text("\n".join(train_csv.read_text().splitlines()[:-20]) + "\n")
    run = copy_run(run1, tmp_path)
    assert main(["train", "--data", str(other), "--out", str(run), "--resume", "--epochs", "2"]) == 2
    line = one_line(capsys)
    assert f"--data {other.resolve()} lists other clips or labels" in line and "300 training" in line
    assert "280 / 40 now" in line
    # the same data under another path is the same data
    moved = tmp_path / "moved"
    moved.mkdir()
    for item in tiny_data.iterdir():
        (moved / item.name).symlink_to(item)
    assert main(["train", "--data", str(moved), "--out", str(run), "--resume", "--epochs", "2"]) == 0


# --- non-finite loss ---------------------------------------------------------------------------------

def test_training_stops_at_the_first_non_finite_loss_and_keeps_the_last_good_checkpoint(
        run1: Path, tiny_data: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    run = copy_run(run1, tmp_path)
    best_before = (run / "checkpoints" / "best.pt").read_bytes()
    real_step = trainer_module.train_step
    calls = {"n": 0}

    def diverging(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        result = real_step(*args, **kwargs)
        return type(result)(*(v * float("nan") for v in result)) if calls["n"] == 2 else result

    monkeypatch.setattr(trainer_module, "train_step", diverging)
    assert main(["train", "--data", str(tiny_data), "--out", str(run), "--resume", "--epochs", "3"]) == 2
    line = one_line(capsys)
    assert "training loss is not finite at epoch 2, step 2" in line
    assert f"{run / 'checkpoints' / 'last.pt'} (end of epoch 1) is kept" in line
    assert f"--out {run} --resume" in line
    assert calls["n"] == 2  # stopped at once
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=False)["epoch"] == 0
    assert (run / "checkpoints" / "best.pt").read_bytes() == best_before


def test_poisoned_cache_stops_a_fresh_run_at_its_first_step(tiny_data: Path, tmp_path: Path, capsys) -> None:
    """Log-mels cached as NaN by an older version: the first step says so instead of training on NaN."""
    data = tmp_path / "data"
    data.mkdir()
    for item in tiny_data.iterdir():
        if item.name != ".dsmn_cache":
            (data / item.name).symlink_to(item)
    shutil.copytree(tiny_data / ".dsmn_cache", data / ".dsmn_cache")
    logmels = np.load(data / ".dsmn_cache" / "logmels.npy", mmap_mode="r+")
    logmels[:] = np.nan
    logmels.flush()
    del logmels
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *SMALL_FLAGS, "--epochs", "1",
                 "--set", "spectrum_correction.enabled=false"]) == 2
    line = one_line(capsys)
    assert "not finite at epoch 1, step 1" in line and "no checkpoint was written yet" in line
    assert not (run / "checkpoints").exists()


# --- runs that could never produce best.pt; data that makes a switch a no-op ---------------------------

def generic_dataset(root: Path, per_scene: int = 8) -> Path:
    """Scene folders of short real-noise clips: no device information, so no device-a parallel pairs."""
    rng = np.random.default_rng(0)
    for scene in ("park", "tram", "metro"):
        (root / scene).mkdir(parents=True)
        for k in range(per_scene):
            colour = np.cumsum(rng.standard_normal(44100)) if scene == "park" else rng.standard_normal(44100)
            clip = (0.1 * colour / np.abs(colour).max()).astype(np.float32)
            sf.write(root / scene / f"{scene}-{k}.wav", clip, 44100, subtype="PCM_16")
    return root


def test_no_reference_device_clips_warns_and_bad_clips_are_skipped_with_a_report(tmp_path: Path, capsys) -> None:
    from dsmn.data import load_dataset

    root = generic_dataset(tmp_path / "generic")
    bad = load_dataset(root).split("train")[0]
    samples = np.zeros(44100, dtype=np.float32)
    samples[10] = 1e20
    sf.write(root / bad.filename, samples, 44100, subtype="FLOAT")
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "4",
                 "--no-progress", "--set", "max_batches_per_epoch=1", "--set", "qat.enabled=false"]) == 0
    out = capsys.readouterr().out
    assert "spectrum correction is on but has 0 vectors" in out
    assert f"skipping 1 of {len(load_dataset(root).split('train'))} training clips" in out
    assert f"{bad.filename}: samples reach 1e+20" in out


def test_a_run_that_validates_on_no_clip_is_refused_up_front(tmp_path: Path, capsys) -> None:
    from dsmn.data import load_dataset

    root = generic_dataset(tmp_path / "generic")
    for clip in load_dataset(root).split("evaluate"):
        (root / clip.filename).write_bytes(b"RIFF....WAVEfmt broken")
    run = tmp_path / "run"
    assert main(["train", "--data", str(root), "--out", str(run), "--epochs", "1", "--batch-size", "4",
                 "--no-progress"]) == 2
    assert "validation split 'evaluate' has no usable clips" in one_line(capsys)
    assert not (run / "checkpoints").exists()


# --- export ------------------------------------------------------------------------------------------

def test_export_uses_the_runs_recorded_data_and_never_leaves_an_unchecked_model(run1: Path, tmp_path: Path,
                                                                               monkeypatch, capsys) -> None:
    from dsmn.deploy import onnx_export

    run = copy_run(run1, tmp_path)
    out = tmp_path / "model.onnx"

    def killed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - the export dies while it is being checked
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(onnx_export, "compare", killed)
        assert main(["export", str(run), "--out", str(out), "--check-clips", "40"]) == 2
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert main(["export", str(run), "--check-clips", "40"]) == 0  # no --data: the run's own
    assert "agreement" in capsys.readouterr().out
    assert (run / "model-int8.onnx").is_file()
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]
