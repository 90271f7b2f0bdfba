"""dsmn evaluate: DCASE metrics of float, QAT and int8 models; the report files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dsmn.cli import main
from dsmn.deploy.inference import TORCH_CHUNK, load_for_inference
from dsmn.deploy.onnx_export import input_shape
from dsmn.deploy.trained import load_trained
from dsmn.evaluation.evaluate import score
from tests.test_export import make_run


@pytest.fixture(scope="module")
def qat_run(tiny_data, tmp_path_factory) -> Path:
    return make_run(tiny_data, tmp_path_factory.mktemp("eval_run"))


def test_score_counts_classes_devices_and_groups() -> None:
    targets = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.full((6, 10), 0.01)
    probabilities[np.arange(6), [0, 1, 1, 1, 2, 0]] = 0.91  # four of six right
    devices = ["a", "a", "b", "s4", "s1", "s5"]
    result = score(probabilities, targets, devices, model="m", kind="float", split="evaluate")
    assert result.accuracy == pytest.approx(4 / 6)
    assert result.macro_accuracy == pytest.approx((0.5 + 1 + 0.5) / 3)  # absent classes do not count
    per_class = {r["name"]: r for r in result.per_class}
    assert per_class["bus"]["accuracy"] == 1.0 and per_class["airport"]["count"] == 2
    per_device = {r["name"]: r for r in result.per_device}
    assert per_device["unseen"]["count"] == 2 and per_device["unseen"]["accuracy"] == 0.5
    assert per_device["real"]["count"] == 3 and np.isfinite(result.log_loss)
    assert np.asarray(result.confusion).sum() == 6


def test_evaluate_writes_the_report_for_the_qat_model(qat_run, tiny_data, capsys) -> None:
    assert main(["evaluate", str(qat_run), "--data", str(tiny_data), "--split", "fold1_evaluate", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "qat" and report["split"] == "evaluate"
    summary = report["summary"]
    assert summary["clips"] == 200 and 0 <= summary["accuracy"] <= 1 and summary["log_loss"] > 0
    assert [c["name"] for c in report["classes"]][:2] == ["airport", "bus"]
    assert {"a", "s4", "unseen"} <= {d["name"] for d in report["devices"]}
    folder = qat_run / "eval_evaluate_qat"
    for name in ("summary.md", "summary.json", "per_class.csv", "per_device.csv", "confusion.png", "predictions.csv"):
        assert (folder / name).is_file(), name
    with (folder / "per_device.csv").open() as handle:
        devices = {row["name"] for row in csv.DictReader(handle)}
    assert {"a", "b", "c", "s1", "s4", "real", "seen", "unseen"} <= devices
    assert "macro class-wise accuracy" in (folder / "summary.md").read_text()
    assert (folder / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_int8_onnx_scores_like_the_qat_model(qat_run, tiny_data, tmp_path, capsys) -> None:
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(qat_run), "--out", str(onnx_path), "--data", str(tiny_data)]) == 0
    capsys.readouterr()
    results = {}
    for kind, target in (("qat", qat_run), ("int8", onnx_path), ("float", qat_run)):
        extra = ["--model-kind", "float"] if kind == "float" else []
        out = tmp_path / f"eval_{kind}"
        assert main(["evaluate", str(target), "--data", str(tiny_data), "--out", str(out), "--json", *extra]) == 0
        results[kind] = json.loads(capsys.readouterr().out)
    assert results["int8"]["kind"] == "int8" and results["float"]["kind"] == "float"
    int8, qat = results["int8"]["summary"], results["qat"]["summary"]
    assert abs(int8["accuracy"] - qat["accuracy"]) <= 2 / 200  # at most 2 clips differ
    assert int8["log_loss"] == pytest.approx(qat["log_loss"], abs=0.02)


def test_evaluate_reports_bad_arguments(qat_run, tiny_data, tmp_path, capsys) -> None:
    assert main(["evaluate", str(tmp_path / "missing"), "--data", str(tiny_data)]) == 2
    assert main(["evaluate", str(qat_run), "--data", str(tiny_data), "--split", "nonsense"]) == 2
    assert "dsmn evaluate" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["float", "qat"])
def test_chunked_channels_last_inference_matches_one_plain_pass(qat_run, kind) -> None:
    reference = load_trained(qat_run)  # a separate copy, left in its contiguous layout
    network = reference.float_model if kind == "float" else reference.model
    torch.manual_seed(0)
    x = torch.randn(input_shape(reference, 2 * TORCH_CHUNK + 5))
    with torch.no_grad():
        plain = network.eval()(x).numpy()
    chunked = load_for_inference(qat_run, kind).logits(x)
    assert chunked.shape == plain.shape
    np.testing.assert_allclose(chunked, plain, rtol=1e-4, atol=1e-4)
