"""The registered teacher network: over the DCASE budget by design, trained with the same command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dsmn import models
from dsmn.cli import main
from dsmn.cli.train import default_config_name
from dsmn.training import load_config


def test_cp_mobile_wide_is_registered_and_over_budget(capsys) -> None:
    assert "cp_mobile_wide" in models.available("teacher")
    assert main(["complexity", "cp_mobile_wide", "--json", "--check"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert 1_000_000 <= report["params"] <= 5_000_000 and report["within_limits"] is False
    assert report["params"] == 1_701_314 and report["macs"] == 244_061_450
    main(["complexity"])
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("cp_mobile_wide"))
    assert row.split()[-1] == "NO"


@pytest.mark.e2e
def test_dsmn_train_trains_the_teacher_with_its_config(tiny_data: Path, tmp_path: Path) -> None:
    assert default_config_name("cp_mobile_wide") == "cp_mobile_wide"
    config = load_config("cp_mobile_wide")
    assert (config.model, config.qat.enabled, config.multitask.mode) == ("cp_mobile_wide", False, "sum")
    assert config.freq_mixstyle.enabled
    run = tmp_path / "teacher"
    assert main(["train", "--data", str(tiny_data), "--model", "cp_mobile_wide", "--out", str(run), "--epochs", "1",
                 "--batch-size", "8", "--no-progress", "--set", "max_batches_per_epoch=2",
                 "--set", "data.val_max_clips=16"]) == 0
    rows = (run / "metrics.csv").read_text().splitlines()
    header, values = rows[0].split(","), rows[1].split(",")
    assert np.isfinite(float(values[header.index("train_loss")]))
    assert models.load_model(run / "checkpoints" / "best.pt").model_name == "cp_mobile_wide"
