"""Checkpoint selection: a validation split held out from the training locations, and every accuracy
report naming its checkpoint (selected and last epoch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsmn.cli import main
from dsmn.data import Clip, load_dataset
from dsmn.data.holdout import HoldoutError, describe_validation, split_holdout
from dsmn.deploy.trained import checkpoint_label, describe_checkpoint
from dsmn.training import load_config


def test_holdout_takes_whole_locations_out_of_training(tiny_data: Path) -> None:
    dataset = load_dataset(tiny_data)
    clips = dataset.split("train")
    train, validation = split_holdout(clips, per_scene=2)
    assert len(train) + len(validation) == len(clips) and validation
    held = {(c.scene, c.identifier) for c in validation}
    assert not held & {(c.scene, c.identifier) for c in train}  # never shared with train ...
    evaluate = {c.identifier for c in dataset.split("evaluate")}
    assert not {c.identifier for c in validation} & evaluate  # ... nor with evaluate
    scenes = {c.scene for c in clips}
    assert {c.scene for c in validation} == scenes and {c.scene for c in train} == scenes
    # tiny data has 2 training locations per scene: one is held out, one still trains
    assert len(held) == len(scenes)
    # deterministic, whatever the order of the clips
    again = split_holdout(list(reversed(clips)), per_scene=2)[1]
    assert {c.filename for c in again} == {c.filename for c in validation}


def test_holdout_needs_locations_to_spare() -> None:
    one_location = [Clip(f"audio/{i}.wav", "park", "a", identifier="lyon-1") for i in range(3)]
    with pytest.raises(HoldoutError, match="scene park has 1 training location"):
        split_holdout(one_location, per_scene=1)
    no_location = [Clip("x.wav", "park", "a")]
    with pytest.raises(HoldoutError, match="no recording location"):
        split_holdout(no_location, per_scene=1)


def test_the_recipe_keeps_the_authors_selection_labelled() -> None:
    recipe = load_config("model1")
    assert recipe.data.validation == "evaluate" and recipe.data.val_split == "evaluate"
    assert describe_validation(recipe.to_dict()["data"]) == "fold1_evaluate"
    holdout = load_config("model1", ["data.validation=holdout"])
    assert describe_validation(holdout.to_dict()["data"]) == "2 held-out train locations per scene"
    with pytest.raises(ValueError, match="data.validation"):
        load_config("model1", ["data.validation=test"])


def test_checkpoint_labels() -> None:
    config = load_config("model1", ["epochs=10"]).to_dict()
    best = checkpoint_label({"epoch": 6, "best_epoch": 6, "config": config}, Path("run/checkpoints/best.pt"))
    assert best["role"] == "selected" and best["epoch"] == 7 and best["epochs"] == 10
    assert describe_checkpoint(best) == ("selected checkpoint (best.pt, epoch 7 of 10; lowest validation loss on "
                                         "fold1_evaluate)")
    last = checkpoint_label({"epoch": 9, "best_epoch": 9, "config": config}, Path("run/checkpoints/last.pt"))
    assert describe_checkpoint(last) == "last-epoch checkpoint (last.pt, epoch 10 of 10; also the selected one)"
    other = checkpoint_label({}, Path("weights.pt"))
    assert other["role"] == "checkpoint" and describe_checkpoint(other) == "checkpoint (weights.pt, epoch unknown)"


SMALL = ["--batch-size", "8", "--no-progress", "--threads", "2", "--set", "max_batches_per_epoch=2",
         "--set", "schedule.warmup_epochs=0"]


@pytest.mark.e2e
def test_a_holdout_run_reports_selected_and_last_epoch(tiny_data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data), "--model", "model1", "--out", str(run), "--epochs", "2",
                 "--validation", "holdout", *SMALL]) == 0
    out = capsys.readouterr().out
    _, validation = split_holdout(load_dataset(tiny_data).split("train"), per_scene=2)
    assert f"{len(validation)} validation clips (2 held-out train locations per scene" in out
    assert "(selected: lowest validation loss on 2 held-out train locations per scene)" in out
    assert "last epoch 2 (2 held-out train locations per scene)" in out

    assert main(["evaluate", str(run), "--data", str(tiny_data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checkpoint"]["role"] == "selected" and report["checkpoint"]["file"] == "best.pt"
    assert report["checkpoint"]["selected_by"] == "lowest validation loss on 2 held-out train locations per scene"
    last = report["last_epoch"]
    assert last["checkpoint"]["role"] == "last epoch" and last["checkpoint"]["epoch"] == 2
    assert last["summary"]["clips"] == report["summary"]["clips"] == 200
    assert (run / "eval_evaluate_qat" / "last_epoch" / "summary.json").is_file()

    assert main(["evaluate", str(run), "--data", str(tiny_data)]) == 0
    text = capsys.readouterr().out
    assert "- checkpoint: selected checkpoint (best.pt, epoch" in text
    assert "## Selected checkpoint and last epoch" in text and "| last-epoch checkpoint (last.pt, epoch 2 of 2" in text
    assert "optimistic" not in text  # fold1_evaluate played no part in the selection


def test_the_demo_report_names_both_checkpoints_and_the_selection() -> None:
    from dsmn.cli.demo import format_report

    config = load_config("demo", ["data.validation=holdout"]).to_dict()

    def evaluation(epoch: int, name: str, accuracy: float) -> dict:
        label = checkpoint_label({"epoch": epoch, "best_epoch": 6, "config": config}, Path(name))
        return {"split": "evaluate", "checkpoint": label, "devices": [{"name": "a", "accuracy": accuracy}],
                "summary": {"accuracy": accuracy, "macro_accuracy": accuracy, "log_loss": 1.0}}

    ev = {kind: {**evaluation(6, "best.pt", 0.6), "last_epoch": evaluation(9, "last.pt", 0.58)}
          for kind in ("float", "qat")}
    ev["int8"] = evaluation(6, "best.pt", 0.6)
    report = {"model": "model1", "evaluation": ev, "run_dir": "r", "onnx": "o", "predictions": "p",
              "stage_seconds": {}, "wall_seconds": 60,
              "export": {"params": 1, "param_bytes": 1, "macs": 1, "agreement": 1.0, "max_logit_diff": 0.0}}
    text = format_report(report)
    assert "| qat | selected (best.pt, epoch 7 of 10) | 60.0% |" in text
    assert "| qat | last epoch (last.pt, epoch 10 of 10) | 58.0% |" in text
    assert "selected checkpoint: lowest validation loss on 2 held-out train locations per scene: fold1_evaluate " \
           "played no part in training or selection" in text
