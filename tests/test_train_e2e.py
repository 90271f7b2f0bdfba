"""`dsmn train` end to end on generated TAU-format data: outputs, checkpoint contract, exact resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from dsmn.cli import main as cli
from dsmn.training import load_config, train
from dsmn.training import trainer as trainer_module

# the full recipe (QAT, PCGrad, mixup, spectrum correction, SpecAugment), cut to a few small batches
SMALL = ["batch_size=8", "max_batches_per_epoch=2", "progress=false", "threads=2", "data.val_max_clips=40",
         "schedule.warmup_epochs=1"]


@pytest.mark.e2e
def test_dsmn_train_writes_a_complete_run(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    code = cli(["train", "--data", str(tiny_data), "--model", "model1", "--out", str(run), "--epochs", "2",
                "--batch-size", "8", "--device", "cpu", "--seed", "3", "--no-progress",
                "--set", "max_batches_per_epoch=3", "--set", "data.val_max_clips=60"])
    assert code == 0
    for name in ("config.yaml", "metrics.csv", "metrics.json", "curves.png", "checkpoints/best.pt",
                 "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").iterdir())
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"] == "model1" and saved["epochs"] == 2 and saved["seed"] == 3 and saved["qat"]["enabled"]
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for key in ("val_loss", "val_accuracy", "val_macro_accuracy", "val_accuracy_a", "val_accuracy_s4",
                "val_accuracy_unseen", "train_scene_loss", "train_coarse_loss", "lr"):
        assert key in rows[0], key
    # --epochs 2 scales the recipe's 5 warm-up epochs of 100 to none: the cosine starts at the peak
    assert float(rows[0]["lr"]) == pytest.approx(1e-3) and saved["schedule"]["warmup_epochs"] == 0
    best = json.loads((run / "metrics.json").read_text())["best"]
    assert best["val_loss"] == min(float(r["val_loss"]) for r in rows)

    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    for key in ("format", "model_name", "model_kwargs", "state_dict", "qat", "qat_state_dict", "frontend", "deltas",
                "epoch", "optimizer", "scheduler", "rng", "metrics", "config", "best_val_loss"):
        assert key in ckpt, key
    assert ckpt["epoch"] == 1 and ckpt["deltas"] is True and ckpt["frontend"]["n_mels"] == 256
    assert set(ckpt["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert any(k.startswith("quant.") for k in ckpt["qat_state_dict"])
    assert not any(k.startswith("quant.") for k in ckpt["state_dict"])

    from dsmn.models import load_model  # the float network of the run loads by path
    model = load_model(run / "checkpoints" / "best.pt")
    assert model.model_name == "model1"

    again = cli(["train", "--data", str(tiny_data), "--model", "model1", "--out", str(run), "--no-progress"])
    assert again == 2  # refuses to overwrite a run without --resume / --overwrite


class Killed(Exception):
    pass


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=False)["qat_state_dict"]


@pytest.mark.e2e
def test_resume_ends_bitwise_equal_to_an_uninterrupted_run(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    pinned = [*SMALL, "mixup.late_epoch=2"]  # (an epochs override would scale it otherwise)
    config = load_config("model1", [*pinned, "epochs=3"])
    train(config, tiny_data, tmp_path / "whole")

    # 1 epoch, then resume to 3 (the saved config is reused, --epochs overrides its length only)
    train(load_config("model1", [*pinned, "epochs=1"]), tiny_data, tmp_path / "split")
    train(config, tiny_data, tmp_path / "split", resume=True, overrides={"epochs": 3})

    # killed in the middle of the second epoch, then resumed: the partial epoch is redone identically
    calls = {"n": 0}
    real_step = trainer_module.train_step

    def dying_step(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == 3:
            raise Killed
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", dying_step)
    with pytest.raises(Killed):
        train(config, tiny_data, tmp_path / "killed")
    monkeypatch.setattr(trainer_module, "train_step", real_step)
    train(config, tiny_data, tmp_path / "killed", resume=True)

    whole = final_weights(tmp_path / "whole")
    for other in ("split", "killed"):
        weights = final_weights(tmp_path / other)
        assert weights.keys() == whole.keys()
        for key, value in whole.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(weights[key], value), f"{other}: {key} differs"
        history = json.loads((tmp_path / other / "metrics.json").read_text())["epochs"]
        expected = json.loads((tmp_path / "whole" / "metrics.json").read_text())["epochs"]
        assert [r["epoch"] for r in history] == [0, 1, 2]
        assert [r["val_loss"] for r in history] == [r["val_loss"] for r in expected]


@pytest.mark.e2e
def test_resume_across_the_start_of_late_qat(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    """Float epoch 0, QAT from epoch 1 (qat.float_until_start): resuming at the switch is exact too."""
    late = [*SMALL, "epochs=2", "qat.start_epoch=1", "qat.float_until_start=true"]
    train(load_config("model1", late), tiny_data, tmp_path / "whole")
    best = torch.load(tmp_path / "whole" / "checkpoints" / "best.pt", weights_only=False)
    assert best["epoch"] == 1 and "qat_state_dict" in best  # only QAT epochs compete for best.pt
    real_step, calls = trainer_module.train_step, {"n": 0}

    def dying_step(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - killed at the first step of epoch 1
        calls["n"] += 1
        if calls["n"] == 3:
            raise Killed
        return real_step(*args, **kwargs)

    with monkeypatch.context() as patch, pytest.raises(Killed):
        patch.setattr(trainer_module, "train_step", dying_step)
        train(load_config("model1", late), tiny_data, tmp_path / "split")
    float_only = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=False)
    assert "qat_state_dict" not in float_only  # epoch 0 trained the plain float network
    train(load_config("model1", late), tiny_data, tmp_path / "split", resume=True, overrides={"epochs": 2})
    whole, split = final_weights(tmp_path / "whole"), final_weights(tmp_path / "split")
    assert all(torch.equal(split[k], v) for k, v in whole.items() if isinstance(v, torch.Tensor))


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["dssc_large", "dcase2022_baseline"])
def test_other_families_train_with_the_same_command(tiny_data: Path, tmp_path: Path, name: str) -> None:
    """The registry entry decides the input (front end, deltas); a network's own penalty joins the loss."""
    result = train(load_config("dcase2023", [*SMALL, "epochs=1", f"model={name}", "max_batches_per_epoch=1"]),
                   tiny_data, tmp_path / name)
    row = result.history[0]
    ckpt = torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=False)
    from dsmn import models

    entry = models.entry(name)
    assert ckpt["model_name"] == name and ckpt["deltas"] == entry.deltas
    assert all(ckpt["frontend"][k] == v for k, v in entry.frontend.items())
    assert (row["train_penalty"] > 0) == (name == "dssc_large")  # OSC orthonormality penalty


def test_unknown_split_is_a_clear_error(tiny_data: Path, tmp_path: Path, capsys) -> None:
    code = cli(["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"), "--val-split", "fold9"])
    assert code == 2 and "no split 'fold9'" in capsys.readouterr().err
