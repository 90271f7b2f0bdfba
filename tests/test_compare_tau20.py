"""benchmarks/compare_tau20.py: the families on 10-s clips, two models trained in parallel processes."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "compare_tau20.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare_tau20", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.e2e
def test_two_models_in_parallel_give_one_tau20_table(tiny_tau20: Path, tmp_path: Path) -> None:
    script = load_script()
    out = tmp_path / "runs"
    rows = script.main(["--out", str(out), "--data", str(tiny_tau20), "--models", "model1", "dssc_small",
                        "--epochs", "1", "--windows-per-clip", "2", "--batch-size", "8", "--max-batches", "2",
                        "--val-max-clips", "10", "--jobs", "2", "--threads", "1"])
    assert [r["model"] for r in rows] == ["model1", "dssc_small"]
    for row in rows:
        assert row["macs_10s"] == 10 * row["macs"]
        assert row["qat_eval_clips"] == 20  # every fold1_evaluate clip, scored by its windows
        for form in ("float", "qat"):
            assert 0.0 <= row[f"{form}_accuracy"] <= 1.0 and 0.0 <= row[f"{form}_window_accuracy"] <= 1.0
        assert "onnx_accuracy" in row and row["onnx_check_clips"] == 50  # every 4th clip, ten windows each
        assert row["train_clips"] == 16  # the same budget: 2 batches of 8 windows
        assert row["budget"]["overrides"]["data"]["windows_per_clip"] == 2
        assert row["budget"]["overrides"]["seed"] == 0  # --seed is the training seed as well as the data's
    table = (out / "compare_tau20.md").read_text()
    assert "| model1 | dsmn | 45,164 | 45,164 | 8.65 M | 86.5 M |" in table
    assert "MACs / 10 s" in table and "1-s window acc" in table
    assert len(list(csv.DictReader((out / "compare_tau20.csv").open()))) == 2
    assert len(json.loads((out / "compare_tau20.json").read_text())) == 2


def test_refuses_a_folder_of_1s_clips(tiny_data: Path, tmp_path: Path) -> None:
    script = load_script()
    with pytest.raises(SystemExit, match="1-s clips"):
        script.main(["--out", str(tmp_path), "--data", str(tiny_data), "--models", "model1", "--epochs", "1"])
