"""Teacher logit tables: the documented format (tab or comma, any column and row order) aligned to the
training clips of generated TAU-format data, and refusals that name the problem and the first files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dsmn.data import load_dataset
from dsmn.distillation import TeacherFileError, TeacherTable, read_teacher_table, write_teacher_table
from dsmn.labels import SCENES
from dsmn.training.step import StepSettings, distillation_loss, task_losses


@pytest.fixture(scope="module")
def train_names(tiny_data: Path) -> list[str]:
    return [c.filename for c in load_dataset(tiny_data).split("train")]


def external_table(path: Path, names: list[str], logits: np.ndarray, columns: list[str], sep: str,
                   bare: bool = False) -> Path:
    order = [SCENES.index(c) for c in columns]
    lines = [sep.join(["filename", *columns])]
    for i in reversed(range(len(names))):  # rows in another order than the dataset's
        name = Path(names[i]).name if bare else names[i]
        lines.append(sep.join([name, *(repr(float(v)) for v in logits[i, order])]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_written_and_external_tables_align_with_the_training_clips(train_names, tmp_path: Path) -> None:
    logits = np.random.default_rng(0).normal(size=(len(train_names), 10)).astype(np.float32)
    written = write_teacher_table(tmp_path / "t.tsv", TeacherTable(train_names, logits, {"members": []}))
    assert (tmp_path / "t.tsv.json").is_file()
    assert written.read_text().splitlines()[0].split("\t") == ["filename", *SCENES]
    table = read_teacher_table(written)
    assert table.provenance["classes"] == list(SCENES)
    np.testing.assert_allclose(table.for_clips(train_names), logits, rtol=1e-5)

    shuffled = list(np.random.default_rng(1).permutation(SCENES))
    for sep, bare in (("\t", False), (",", True)):  # e.g. a PaSST ensemble's CSV with bare file names
        path = external_table(tmp_path / f"ext{len(sep)}.csv", train_names, logits, shuffled, sep, bare)
        np.testing.assert_allclose(read_teacher_table(path).for_clips(train_names), logits, rtol=1e-6)


def test_refusals_name_the_problem_and_the_first_files(train_names, tmp_path: Path) -> None:
    logits = np.zeros((len(train_names), 10), np.float32)
    missing = external_table(tmp_path / "missing.tsv", train_names[3:], logits[3:], list(SCENES), "\t")
    with pytest.raises(TeacherFileError, match=r"no teacher logits for 3 of \d+ training clips") as error:
        read_teacher_table(missing).for_clips(train_names, missing)
    assert train_names[0] in str(error.value) and "missing.tsv" in str(error.value)

    wrong = external_table(tmp_path / "wrong.tsv", train_names, logits, list(SCENES), "\t")
    wrong.write_text(wrong.read_text().replace("metro_station", "station", 1))
    with pytest.raises(TeacherFileError, match="unknown class column.*station.*missing scene column.*metro_station"):
        read_teacher_table(wrong)
    numbered = tmp_path / "numbered.csv"
    numbered.write_text("filename," + ",".join(f"class{i}" for i in range(10)) + "\nx.wav" + ",0" * 10 + "\n")
    with pytest.raises(TeacherFileError, match="unknown class column"):
        read_teacher_table(numbered)

    bad = logits.copy()
    bad[[5, 9], 2] = np.nan
    nan = external_table(tmp_path / "nan.tsv", train_names, bad, list(SCENES), "\t")
    with pytest.raises(TeacherFileError, match="non-finite logits .* for 2 clips") as error:
        read_teacher_table(nan)
    assert train_names[9] in str(error.value)

    doubled = external_table(tmp_path / "doubled.tsv", train_names + train_names[:1], np.zeros((len(train_names) + 1,
                             10)), list(SCENES), "\t")
    with pytest.raises(TeacherFileError, match="listed twice"):
        read_teacher_table(doubled)


def test_dsmn_train_refuses_a_bad_teacher_in_one_line(tiny_data: Path, train_names, tmp_path: Path, capsys) -> None:
    from dsmn.cli import main

    bad = np.zeros((len(train_names), 10))
    bad[0, 0] = np.inf
    path = external_table(tmp_path / "inf.tsv", train_names, bad, list(SCENES), "\t")
    code = main(["train", "--data", str(tiny_data), "--model", "model1", "--out", str(tmp_path / "run"),
                 "--teacher", str(path), "--no-progress", "--epochs", "1"])
    out = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert out[-1].startswith("dsmn train: ") and "non-finite" in out[-1] and train_names[0] in out[-1]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_distillation_loss_is_the_tempered_kl() -> None:
    torch.manual_seed(0)
    student = torch.randn(6, 10, requires_grad=True)
    teacher_logits = torch.randn(6, 10)
    teacher = torch.softmax(teacher_logits / 2, dim=1)
    expected = 4 * torch.nn.functional.kl_div(torch.log_softmax(student / 2, 1), teacher, reduction="batchmean")
    assert torch.allclose(distillation_loss(student, teacher, 2.0), expected, atol=1e-6)
    assert distillation_loss(teacher_logits, teacher, 2.0).abs() < 1e-6  # student = teacher: no loss
    # each task's loss mixes label and KD with kd_lambda; the coarse teacher is summed scene probabilities
    scene_t, coarse_t = torch.eye(10)[:6], torch.eye(3)[[0, 1, 2, 0, 1, 2]]
    s = StepSettings("pcgrad", "full", [], kd_lambda=0.25, temperature=2.0)
    coarse_logits = torch.randn(6, 3)
    coarse_teacher = torch.softmax(torch.randn(6, 3), 1)
    scene_loss, coarse_loss, scene_ce, coarse_ce, kd = task_losses(student, coarse_logits, scene_t, coarse_t,
                                                                   (teacher, coarse_teacher), s)
    assert torch.allclose(scene_loss, 0.25 * scene_ce + 0.75 * expected, atol=1e-6)
    assert torch.allclose(coarse_loss, 0.25 * coarse_ce + 0.75 * distillation_loss(coarse_logits, coarse_teacher, 2.0))
    assert torch.allclose(kd[0], expected, atol=1e-6)
