"""Knowledge distillation end to end on generated TAU-format data: `dsmn teach` over a run folder and
an ONNX file of another family (own front end), distillation under PCGrad (both variants), the plain
sum and QAT, the KD loss falling, and an exact resume with distillation and Freq-MixStyle on."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dsmn.cli import main as cli
from dsmn.distillation import read_teacher_table
from dsmn.labels import SCENES
from dsmn.training import load_config, train

SMALL = ["batch_size=16", "max_batches_per_epoch=4", "progress=false", "threads=2", "data.val_max_clips=40",
         "schedule.warmup_epochs=1"]


@pytest.fixture(scope="module")
def teacher(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two members: a model1 run folder (QAT) and a float DCASE baseline (40-band front end) as fp32 ONNX."""
    from dsmn.deploy import export_onnx, load_trained

    root = tmp_path_factory.mktemp("teachers")
    train(load_config("demo", [*SMALL, "epochs=2", "qat.start_epoch=-1"]), tiny_data, root / "t_model1")
    train(load_config("dcase2023", [*SMALL, "epochs=2", "model=dcase2022_baseline", "qat.enabled=false",
                                    "multitask.mode=sum"]), tiny_data, root / "t_base")
    export_onnx(load_trained(root / "t_base"), root / "t_base.onnx", "fp32")
    out = root / "teacher.tsv"
    assert cli(["teach", str(root / "t_model1"), str(root / "t_base.onnx"), "--data", str(tiny_data),
                "--out", str(out)]) == 0
    return out


@pytest.mark.e2e
def test_teach_writes_the_ensemble_mean_with_provenance(teacher: Path, tiny_data: Path) -> None:
    table = read_teacher_table(teacher)
    members = table.provenance["members"]
    assert [m["model"] for m in members] == ["model1", "dcase2022_baseline"]
    assert [m["kind"] for m in members] == ["qat", "fp32"] and table.provenance["split"] == "train"
    assert all(0 <= m["train_accuracy"] <= 1 for m in members)
    from dsmn.data import load_dataset

    names = [c.filename for c in load_dataset(tiny_data).split("train")]
    assert sorted(table.filenames) == sorted(names) and np.isfinite(table.logits).all()
    # the mean of the members' own tables
    single = [teacher.with_name(f"single{i}.tsv") for i in range(2)]
    for path, member in zip(single, ("t_model1", "t_base.onnx"), strict=True):
        assert cli(["teach", str(teacher.parent / member), "--data", str(tiny_data), "--out", str(path)]) == 0
    parts = [read_teacher_table(p).for_clips(names) for p in single]
    np.testing.assert_allclose(table.for_clips(names), (parts[0] + parts[1]) / 2, atol=2e-5)
    assert teacher.read_text().splitlines()[0].split("\t") == ["filename", *SCENES]


@pytest.mark.e2e
@pytest.mark.parametrize("recipe", [
    ["multitask.pcgrad=full"], ["multitask.pcgrad=shared-representation"], ["multitask.mode=sum", "qat.enabled=false"],
])
def test_kd_loss_falls_during_training(teacher: Path, tiny_data: Path, tmp_path: Path, recipe: list[str]) -> None:
    run = tmp_path / "kd"
    code = cli(["train", "--data", str(tiny_data), "--config", "demo", "--out", str(run), "--teacher", str(teacher),
                "--epochs", "4", "--no-progress", *(a for item in [*SMALL, "max_batches_per_epoch=6",
                                                                    "optimizer.lr=0.01", *recipe]
                                                   for a in ("--set", item))])
    assert code == 0
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    kd = [float(r["kd_loss"]) for r in rows]
    assert all(np.isfinite(kd)) and kd[-1] < 0.8 * kd[0], kd
    assert float(rows[-1]["kd_coarse_loss"]) < float(rows[0]["kd_coarse_loss"])
    saved = json.loads((run / "metrics.json").read_text())["epochs"][0]
    lam = 0.02
    expected = lam * (saved["train_scene_loss"] + saved["train_coarse_loss"]) + (1 - lam) * (
        saved["kd_loss"] + saved["kd_coarse_loss"])
    if "multitask.mode=sum" not in recipe:  # PCGrad: the objective is the two task losses' sum
        assert saved["train_objective"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.e2e
def test_resume_with_distillation_and_freq_mixstyle_is_exact(teacher: Path, tiny_data: Path, tmp_path: Path) -> None:
    items = [*SMALL, "epochs=2", f"distillation.teacher={teacher}", "freq_mixstyle.enabled=true"]
    train(load_config("demo", items), tiny_data, tmp_path / "whole")
    train(load_config("demo", [*items, "epochs=1"]), tiny_data, tmp_path / "split")
    train(load_config("demo", items), tiny_data, tmp_path / "split", resume=True, overrides={"epochs": 2})
    whole, split = (torch.load(tmp_path / r / "checkpoints" / "last.pt", weights_only=False)
                    for r in ("whole", "split"))
    for key in ("state_dict", "qat_state_dict"):
        assert all(torch.equal(split[key][k], v) for k, v in whole[key].items() if isinstance(v, torch.Tensor))
    assert split["metrics"][1]["kd_loss"] == whole["metrics"][1]["kd_loss"]
