"""benchmarks/compare_families.py on generated data: one table for two families, resumable per model."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from dsmn import complexity, models

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "compare_families.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare_families", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    return module


@pytest.mark.e2e
def test_two_families_share_one_budget_and_one_table(tiny_data: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    script = load_script()
    out, results = tmp_path / "runs", tmp_path / "table.md"
    argv = ["--data", str(tiny_data), "--out", str(out), "--models", "model1", "cp_mobile", "--epochs", "1",
            "--batch-size", "8", "--max-batches", "2", "--val-max-clips", "40", "--threads", "1",
            "--results", str(results)]
    rows = script.main(argv)

    assert [r["model"] for r in rows] == ["model1", "cp_mobile"]
    for row in rows:
        assert row["params"] == complexity.measure(models.create(row["model"])).params
        assert row["int8_bytes"] == row["params"]  # one byte per int8 parameter
        assert row["train_clips"] == 16  # 2 batches of 8, the same budget for both
        assert row["train_clips_per_second"] > 0 and row.get("train_clips_per_cpu_second", 1.0) > 0
        assert row["qat_eval_clips"] == 200  # scored on the whole evaluate split, not the validation subset
        assert 0.0 <= row["qat_accuracy"] <= 1.0 and 0.0 <= row["qat_unseen_accuracy"] <= 1.0
        assert 0.0 <= row["float_accuracy"] <= 1.0
        assert "onnx_accuracy" in row or "onnx_error" in row
        assert (out / row["model"] / "result.json").is_file()
    config = json.loads((out / "cp_mobile" / "result.json").read_text())["budget"]
    assert config["overrides"]["epochs"] == 1 and config["config"] == "demo"

    table = results.read_text()
    assert "| model1 | dsmn |" in table and "| cp_mobile | baseline |" in table
    assert len(list(csv.DictReader((out / "compare_families.csv").open()))) == 2
    assert len(json.loads((out / "compare_families.json").read_text())) == 2

    # a second call with the same budget reuses both finished results, trains nothing, keeps hand-written notes
    results.write_text(table + f"\n{script.NOTES_MARKER}\nwhat the numbers mean\n")
    monkeypatch.setattr(script, "train", lambda *a, **k: pytest.fail("a finished model was trained again"))
    again = script.main(argv)
    assert [r["qat_accuracy"] for r in again] == [r["qat_accuracy"] for r in rows]
    rewritten = results.read_text()
    assert rewritten.count("| model1 | dsmn |") == 1 and rewritten.endswith("what the numbers mean\n")
