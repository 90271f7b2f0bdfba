"""ONNX export: int8 QDQ runs on int8 kernels and agrees with the QAT model on real clips."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from dsmn import models
from dsmn.cli import main
from dsmn.deploy import ExportCheckError, OnnxClassifier, export_onnx, load_trained
from dsmn.deploy.data import logmel_batches, open_features, split_clips
from dsmn.features import FrontEndConfig
from dsmn.labels import SCENES
from dsmn.quantization import QATConfig, prepare_qat


def make_run(data: Path, folder: Path, *, qat: bool = True, batches: int = 4) -> Path:
    """A run folder with checkpoints/best.pt in the trainer's format: model1 whose BatchNorm
    statistics and activation ranges come from real training clips (train-mode passes, no update
    of the weights: enough for export and evaluation mechanics, fast)."""
    torch.manual_seed(0)
    dataset, clips = split_clips(data, "train")
    cache = open_features(dataset, FrontEndConfig(), progress=False)
    float_model = models.create("model1")
    config = QATConfig.recipe(observer_momentum=0.2)
    net = prepare_qat(float_model, config) if qat else float_model
    net.train()
    with torch.no_grad():
        for i, logmel in enumerate(logmel_batches(cache, clips, 48)):
            if i == batches:
                break
            from dsmn.deploy import network_input

            net(network_input(logmel, True))
    extra = {"qat": config.to_dict(), "qat_state_dict": net.state_dict()} if qat else {}
    checkpoint = models.checkpoint_dict(float_model, **extra, frontend=asdict(FrontEndConfig()), deltas=True)
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, folder / "checkpoints" / "best.pt")
    return folder


@pytest.fixture(scope="module")
def qat_run(tiny_data, tmp_path_factory) -> Path:
    return make_run(tiny_data, tmp_path_factory.mktemp("qat_run"))


def evaluate_inputs(run: Path, data: Path) -> list[torch.Tensor]:
    """The run's network inputs for the fold1_evaluate clips of `data`, in batches of 100 (export checks)."""
    trained = load_trained(run)
    dataset, clips = split_clips(data, "fold1_evaluate")
    cache = open_features(dataset, trained.frontend, progress=False)
    return [trained.network_input(b) for b in logmel_batches(cache, clips, 100)]


@pytest.fixture(scope="module")
def check_inputs(tiny_data, qat_run) -> list[torch.Tensor]:
    return evaluate_inputs(qat_run, tiny_data)


def test_int8_export_agrees_with_the_qat_model_and_runs_int8_kernels(qat_run, check_inputs, tmp_path) -> None:
    trained = load_trained(qat_run)
    assert trained.is_qat
    out = tmp_path / "model.onnx"
    report = export_onnx(trained, out, "int8", check_inputs=check_inputs)
    assert report.clips_checked == 200
    assert report.agreement >= 0.99
    assert report.executed_operators.get("QLinearConv", 0) >= 40  # every convolution of model1
    assert "Conv" not in report.float_compute_operators and "BatchNormalization" not in report.executed_operators
    # int8 weights, int32 biases, nothing float; within the DCASE budget
    assert report.memory.float_parameters == 0
    assert report.memory.bytes == report.memory.int8_weights + 4 * report.memory.int32_biases < 128_000
    assert report.float_model_params == report.dcase_param_bytes == 45_164 and report.macs == 8_645_641
    compact = export_onnx(trained, tmp_path / "compact.onnx", "int8", check_inputs=check_inputs[:1], compact=True)
    # grouped 1x1 kernels stored grouped; the 3x3 cross kernels keep their 4 structural zeros per channel
    assert 40_000 < compact.memory.int8_weights < 50_000 < report.memory.int8_weights
    assert compact.agreement >= 0.99
    model = onnx.load(str(out))
    stored = {i.data_type for i in model.graph.initializer if len(i.dims) >= 2}
    assert stored == {onnx.TensorProto.INT8}  # no float weight matrix is stored
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["dsmn.classes"]) == list(SCENES)
    assert json.loads(props["dsmn.frontend.n_mels"]) == 256 and json.loads(props["dsmn.frontend.htk"]) is True
    assert json.loads(props["dsmn.deltas"]) is True and props["dsmn.precision"] == "int8"


def test_fp32_export_is_the_folded_float_model(qat_run, check_inputs, tmp_path) -> None:
    trained = load_trained(qat_run)
    report = export_onnx(trained, tmp_path / "fp32.onnx", "fp32", check_inputs=check_inputs[:1])
    assert report.agreement == 1.0 and report.max_logit_difference < 1e-3
    assert report.int8_operators == 0 and report.memory.int8_weights == 0
    assert "BatchNormalization" not in {n.op_type for n in onnx.load(str(tmp_path / "fp32.onnx")).graph.node}


def test_exported_model_has_a_dynamic_batch_and_rebuilds_its_recipe(qat_run, check_inputs, tmp_path) -> None:
    trained = load_trained(qat_run)
    export_onnx(trained, tmp_path / "m.onnx", "int8")
    classifier = OnnxClassifier(tmp_path / "m.onnx")
    x = check_inputs[0][:7].numpy()
    together = classifier.logits(x)
    one = classifier.logits(x[:1])
    assert together.shape == (7, 13)
    np.testing.assert_allclose(one[0], together[0], atol=1e-5)
    assert classifier.recipe.frontend == trained.frontend and classifier.recipe.deltas


def test_export_fails_loudly_and_leaves_no_file(qat_run, check_inputs, tmp_path) -> None:
    trained = load_trained(qat_run)
    with pytest.raises(ExportCheckError, match="agreement"):
        export_onnx(trained, tmp_path / "bad.onnx", "int8", check_inputs=check_inputs[:1], min_agreement=1.01)
    assert not (tmp_path / "bad.onnx").exists()


def test_float_checkpoint_is_quantised_after_training_when_exported_to_int8(tiny_data, tmp_path) -> None:
    run = make_run(tiny_data, tmp_path / "float_run", qat=False, batches=2)
    trained = load_trained(run)
    assert not trained.is_qat
    dataset, clips = split_clips(tiny_data, "train")
    cache = open_features(dataset, trained.frontend, progress=False)
    batches = [trained.network_input(b) for b in logmel_batches(cache, clips[:96], 48)]
    with pytest.warns(UserWarning, match="without QAT"):
        report = export_onnx(trained, tmp_path / "ptq.onnx", "int8", check_inputs=batches, calibration=batches)
    assert report.calibrated_clips == 96 and report.agreement >= 0.99


def test_export_command(qat_run, tiny_data, tmp_path, capsys) -> None:
    out = tmp_path / "cli.onnx"
    assert main(["export", str(qat_run), "--out", str(out), "--data", str(tiny_data), "--check-clips", "100"]) == 0
    text = capsys.readouterr().out
    assert "agreement" in text and "QLinearConv" in text and "bytes" in text
    assert out.is_file()
    assert main(["export", str(qat_run), "--out", str(tmp_path / "x.onnx")]) == 2  # no data to check on


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_export_never_overwrites_a_file_of_another_kind(qat_run, tiny_data, fmt, capsys) -> None:
    """`--out` naming the dataset's meta.csv once replaced it with the model: refused before any work."""
    meta = tiny_data / "meta.csv"
    before = meta.read_bytes()
    assert main(["export", str(qat_run), "--format", fmt, "--out", str(meta), "--data", str(tiny_data)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert meta.read_bytes() == before


@pytest.mark.parametrize("name", [n for n in models.available() if n != "model1"])
def test_every_registered_network_exports_to_int8(name: str, tmp_path) -> None:
    """Randomly initialised, observers calibrated on random inputs: the export must run in ORT, in int8,
    and reproduce the QAT model's logits closely."""
    from dsmn.deploy.onnx_export import to_onnx
    from dsmn.deploy.runtime import INT8_OPERATORS, optimized_operators
    from dsmn.quantization import calibrate

    torch.manual_seed(0)
    qat = prepare_qat(models.create(name))
    x = torch.randn(8, *models.entry(name).input_shape)
    calibrate(qat, [x], momentum=1.0)
    path = tmp_path / f"{name}.onnx"
    onnx.save(to_onnx(qat.eval(), tuple(x.shape), quantized=True), str(path))
    operators = optimized_operators(path)
    assert sum(v for k, v in operators.items() if k in INT8_OPERATORS) > 0
    from dsmn.deploy.runtime import create_session

    got = create_session(path).run(None, {"features": x.numpy()})[0]
    with torch.no_grad():
        expected = qat(x).numpy()
    scale = np.abs(expected).max() + 1e-6
    assert np.abs(got - expected).max() / scale < 0.1
    assert (got[:, : len(SCENES)].argmax(1) == expected[:, : len(SCENES)].argmax(1)).mean() >= 0.99


@pytest.mark.e2e
def test_trainer_run_exports_evaluates_and_predicts(tiny_data, tmp_path, capsys) -> None:
    """The trainer's own checkpoint (QAT, PCGrad, ...) through export, evaluate (int8) and predict."""
    from dsmn.training import load_config, train

    overrides = ["epochs=1", "max_batches_per_epoch=3", "progress=false", "data.val_max_clips=64"]
    run = train(load_config("model1", overrides), tiny_data, tmp_path / "run").run_dir
    onnx_path = run / "model-int8.onnx"
    assert main(["export", str(run), "--data", str(tiny_data), "--check-clips", "100"]) == 0
    assert onnx_path.is_file()
    assert main(["evaluate", str(onnx_path), "--data", str(tiny_data), "--json"]) == 0
    assert (run / "eval_evaluate_int8" / "summary.json").is_file()
    wav = sorted((tiny_data / "audio").glob("*.wav"))[0]
    assert main(["predict", str(onnx_path), str(wav), "--out", str(tmp_path / "p.csv")]) == 0
    capsys.readouterr()
