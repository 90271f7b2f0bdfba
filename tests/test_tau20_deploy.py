"""`dsmn export` and `dsmn predict` on 10-s files (TAU 2020 layout): the int8 graph takes 1-s windows,
a file's probabilities are the mean of its windows', and the exported model agrees with the checkpoint."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from dsmn.cli import main
from dsmn.training import load_config, train

SMALL = ["batch_size=8", "max_batches_per_epoch=3", "progress=false", "threads=2", "epochs=1"]


@pytest.fixture(scope="module")
def exported(tiny_tau20: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    run = tmp_path_factory.mktemp("tau20deploy") / "run"
    train(load_config("model1", SMALL), tiny_tau20, run)
    onnx_path = run / "model.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", str(run), "--out", str(onnx_path), "--data", str(tiny_tau20), "--json"]) == 0
    return run, onnx_path, json.loads(printed.getvalue())


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle, delimiter="\t"))[1:]


@pytest.mark.e2e
def test_int8_export_is_checked_on_the_windows_of_10s_clips(exported) -> None:
    report = exported[2]
    assert report["clips_checked"] == 200  # 20 evaluate clips x ten 1-s windows
    assert report["agreement"] >= 0.99

@pytest.mark.e2e
def test_predict_averages_the_windows_of_each_10s_file(exported, tiny_tau20: Path, tmp_path: Path) -> None:
    run, onnx_path, _ = exported
    files = sorted((tiny_tau20 / "audio").glob("*.wav"))[:12]
    results = {}
    for kind, model in (("int8", onnx_path), ("qat", run)):
        out = tmp_path / f"{kind}.csv"
        assert main(["predict", str(model), *map(str, files), "--out", str(out), "--windows", "--quiet"]) == 0
        rows = read_rows(out)
        clips = [r for r in rows if "#w" not in r[0]]
        assert len(clips) == len(files) and len(rows) == 11 * len(files)  # ten windows per 10-s file
        for clip in clips:
            windows = np.array([[float(v) for v in r[2:]] for r in rows if r[0].startswith(clip[0] + "#w")])
            assert windows.shape == (10, 10)
            np.testing.assert_allclose([float(v) for v in clip[2:]], windows.mean(axis=0), atol=2e-6)
        results[kind] = clips
    agree = np.mean([a[1] == b[1] for a, b in zip(results["int8"], results["qat"], strict=True)])
    assert agree >= 11 / 12


@pytest.mark.e2e
def test_predict_matches_evaluate_on_the_same_files(exported, tiny_tau20: Path, tmp_path: Path) -> None:
    """Decoding + log-mel of a whole file in predict equals the feature cache's path of evaluate."""
    run, onnx_path, _ = exported
    assert main(["evaluate", str(onnx_path), "--data", str(tiny_tau20), "--out", str(tmp_path / "eval")]) == 0
    evaluated = {r[0]: np.array(r[2:], dtype=float) for r in read_rows(tmp_path / "eval" / "predictions.csv")}
    names = sorted(evaluated)[:8]
    out = tmp_path / "p.csv"
    assert main(["predict", str(onnx_path), *(str(tiny_tau20 / n) for n in names), "--out", str(out),
                 "--quiet"]) == 0
    for row, name in zip(read_rows(out), names, strict=True):
        np.testing.assert_allclose(np.array(row[2:], dtype=float), evaluated[name], atol=0.02)
