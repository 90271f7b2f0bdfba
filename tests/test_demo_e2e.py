"""`dsmn demo` (the main job) end to end on tiny generated data: every stage, one run folder, a report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsmn.cli import main


@pytest.mark.e2e
def test_demo_runs_every_stage_into_one_folder(tiny_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--data", str(tiny_data), "--out", str(out), "--epochs", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["evaluation"]) == {"float", "qat", "int8"}  # QAT ran although --epochs < the config's
    assert report["export"]["agreement"] >= 0.99
    assert (out / "model1_int8.onnx").is_file() and (out / "train" / "checkpoints" / "best.pt").is_file()
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0].split("\t")[:2] == ["filename", "scene_label"] and len(rows) > 1
    text = (out / "report.md").read_text()
    assert "wall time" in text
    # both checkpoints, named; the recipe selects on fold1_evaluate, and the report says what that means
    for row in ("| qat | selected (best.pt, epoch 1 of 1) |", "| qat | last epoch (last.pt, epoch 1 of 1) |",
                "| int8 ONNX | selected (best.pt, epoch 1 of 1) |"):
        assert row in text, row
    assert "lowest validation loss on fold1_evaluate (the authors' recipe)" in text and "optimistic" in text
