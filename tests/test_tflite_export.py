"""int8 TFLite export: runs in TensorFlow Lite Micro and LiteRT and agrees with the QAT model on real clips."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from dsmn.cli import main
from dsmn.deploy import ExportCheckError, load_trained
from dsmn.deploy.data import logmel_batches, open_features, split_clips
from tests.test_export import evaluate_inputs, make_run

tflm = pytest.importorskip("tflite_micro")
pytest.importorskip("ai_edge_litert")

from dsmn.deploy.c_array import write_c_array  # noqa: E402
from dsmn.deploy.tflite_export import export_tflite  # noqa: E402
from dsmn.deploy.tflite_format import parse  # noqa: E402
from dsmn.deploy.tflite_runtime import TfliteClassifier, read_model, tflm_arena_bytes  # noqa: E402


def qat_trained_run(data: Path, folder: Path, steps: int = 6) -> Path:
    """model1 briefly QAT-trained on real clips (observers and BatchNorm statistics from the first
    batches, then `steps` Adam steps on the scene loss with fake-quantised weights and activations),
    saved as the trainer saves it."""
    from dsmn import models
    from dsmn.deploy import network_input
    from dsmn.quantization import QATConfig, prepare_qat

    run = make_run(data, folder, batches=2)  # float model + observed QAT state, the trainer's format
    checkpoint = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    torch.manual_seed(0)
    float_model = models.create("model1")
    float_model.load_state_dict(checkpoint["state_dict"])
    config = QATConfig.recipe(observer_momentum=0.2)
    net = prepare_qat(float_model, config)
    net.load_state_dict(checkpoint["qat_state_dict"])
    net.train()
    dataset, clips = split_clips(data, "train")
    cache = open_features(dataset, load_trained(run).frontend, progress=False)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    labels = torch.tensor([c.scene_id for c in clips])
    for step, logmel in enumerate(logmel_batches(cache, clips, 48)):
        if step == steps:
            break
        target = labels[step * 48 : step * 48 + len(logmel)]
        loss = torch.nn.functional.cross_entropy(net(network_input(logmel, True))[:, :10], target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    checkpoint.update(models.checkpoint_dict(float_model, qat=config.to_dict(), qat_state_dict=net.state_dict(),
                                             frontend=checkpoint["frontend"], deltas=True))
    torch.save(checkpoint, run / "checkpoints" / "best.pt")
    return run


@pytest.fixture(scope="module")
def qat_run(tiny_data, tmp_path_factory) -> Path:
    return qat_trained_run(tiny_data, tmp_path_factory.mktemp("tflite_run"))


@pytest.fixture(scope="module")
def check_inputs(tiny_data, qat_run) -> list[torch.Tensor]:
    return evaluate_inputs(qat_run, tiny_data)


@pytest.fixture(scope="module")
def exported(qat_run, check_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite") / "model.tflite"
    report = export_tflite(load_trained(qat_run), out, check_inputs, tflm_clips=10)
    return out, report


def float_tensors(graph) -> set[str]:
    return {t.name for t in graph.tensors if t.dtype == "float32"}


def test_export_is_int8_and_agrees_in_both_runtimes(exported) -> None:
    out, report = exported
    assert out.is_file() and not list(out.parent.glob(".*.tmp"))
    checks = {c.runtime: c for c in report.checks}
    assert checks["litert"].clips == 200 and checks["tflm"].clips == 10
    assert checks["litert"].agreement >= 0.99 and checks["tflm"].agreement >= 0.99
    # LiteRT against the QAT simulation, TFLM against the QAT network in TFLite's arithmetic: exactly
    assert checks["litert"].arithmetic == "qat" and checks["tflm"].arithmetic == "tflite"
    assert checks["tflm"].max_logit_difference < 1e-4 and checks["tflm"].qat_rounding_agreement is not None
    graph = parse(out.read_bytes())
    layers = [op for op in graph.operators if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    assert len(layers) == 58  # 56 convolutions + 2 fully connected layers of model1
    *int8_layers, last = layers
    weights = [graph.tensors[op.inputs[1]] for op in int8_layers]
    biases = [graph.tensors[op.inputs[2]] for op in int8_layers]
    assert {w.dtype for w in weights} == {"int8"} and {b.dtype for b in biases} == {"int32"}
    assert all(np.all(w.zero_point == 0) and len(w.scale) == w.shape[w.axis] for w in weights)  # per channel
    # the logits layer is the one float layer: its 13 outputs exactly as the QAT network computes them
    assert last.kind == "FULLY_CONNECTED" and graph.tensors[last.inputs[1]].dtype == "float32"
    assert graph.tensors[graph.inputs[0]].dtype == "int8" and graph.tensors[graph.outputs[0]].dtype == "float32"
    # every activation is int8 but the five ECA gates' sigmoids (C values each) and the logits layer
    activations = [t for t in graph.tensors if t.data is None]
    floats = [t for t in activations if t.dtype == "float32"]
    assert {t.dtype for t in activations} == {"int8", "float32"}
    assert len(floats) == 5 * 2 + 2 and sum(int(np.prod(t.shape)) for t in floats) < 1000
    assert [op.kind for op in graph.operators].count("LOGISTIC") == 5
    # bias scale = input scale x weight scale (TFLite's int32 bias grid)
    for op in graph.operators:
        if op.kind == "CONV_2D":
            x, w, b = (graph.tensors[i] for i in op.inputs)
            np.testing.assert_allclose(b.scale, x.scale[0] * w.scale, rtol=1e-6)


def test_litert_reproduces_the_qat_network_to_the_last_step(exported, qat_run, check_inputs) -> None:
    """Regression: the ECA gates once went through TFLite's int8 LOGISTIC (fixed 1/256 grid, coarser
    than the gates' QAT grid: a third of the gates one step off) and the logits through an int8 grid
    (classes closer than one step tied), which cost a trained model1 2.5 % of top-1 agreement. LiteRT's
    default kernels round like the QAT simulation, so now only float rounding separates the two."""
    out, _ = exported
    network = load_trained(qat_run).model.eval()
    x = torch.cat(check_inputs)[:100]
    with torch.no_grad():
        expected = network(x).numpy()
    got = TfliteClassifier(out, "litert").logits(x.numpy())
    assert np.abs(got - expected).max() < 0.01


def test_tflm_computes_the_qat_network_in_tflite_arithmetic_exactly(exported, qat_run, check_inputs) -> None:
    """Run TFLM's own interpreter directly (no dsmn wrapper): its logits are those of the QAT network
    computed with TFLite's fixed-point requantisation (`--model-kind qat-tflite`), to float precision."""
    out, _ = exported
    from tflite_micro import runtime

    from dsmn.deploy.tflite_arithmetic import TfliteArithmetic

    graph = parse(out.read_bytes())
    x_tensor = graph.tensors[graph.inputs[0]]
    network = load_trained(qat_run).model.eval()
    x = torch.cat(check_inputs)[:8]
    expected = TfliteArithmetic(network, x[:1])(x).numpy()
    interpreter = runtime.Interpreter.from_file(str(out))
    for clip, want in zip(x.numpy(), expected, strict=True):
        q = np.clip(np.rint(clip.transpose(1, 2, 0) / x_tensor.scale[0]) + x_tensor.zero_point[0], -128, 127)
        interpreter.set_input(q.astype(np.int8)[None], 0)
        interpreter.invoke()
        got = interpreter.get_output(0).reshape(-1)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_memory_report_uses_tflms_own_arena_figure(exported) -> None:
    out, report = exported
    memory = report.memory
    assert memory.flash_bytes == out.stat().st_size
    assert memory.arena_bytes == tflm_arena_bytes(out)
    # the stem's 16 x 256 x 44 int8 output and its two slices are alive together
    assert memory.peak_activation_bytes == 2 * 16 * 256 * 44
    assert memory.peak_activation_bytes < memory.arena_bytes < 1.2 * memory.peak_activation_bytes
    assert memory.operators["CONV_2D"] + memory.operators["DEPTHWISE_CONV_2D"] == 56
    assert any("LOGISTIC" in note for note in memory.operator_notes())
    # side by side: the DCASE 2022 baseline's figures (two 16 x 40 x 51 int8 maps at its peak)
    assert memory.reference.peak_activation_bytes == 2 * 16 * 40 * 51
    assert "dcase2022_baseline" in memory.format()


def test_refuses_to_write_below_the_agreement_threshold(qat_run, check_inputs, tmp_path) -> None:
    out = tmp_path / "model.tflite"
    with pytest.raises(ExportCheckError, match="agreement"):
        export_tflite(load_trained(qat_run), out, check_inputs[:1], tflm_clips=2, min_agreement=1.01)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("io", ["float", "int8"])
def test_float_and_int8_io_models_run_in_litert_and_tflm(io, qat_run, check_inputs, tmp_path) -> None:
    out = tmp_path / f"{io}.tflite"
    report = export_tflite(load_trained(qat_run), out, check_inputs[:1], io=io, tflm_clips=5)
    graph, recipe = read_model(out)
    dtype = "float32" if io == "float" else "int8"
    assert graph.tensors[graph.inputs[0]].dtype == dtype and graph.tensors[graph.outputs[0]].dtype == dtype
    assert graph.tensors[graph.inputs[0]].shape == (1, 256, 44, 2)  # channels last
    assert recipe.model_name == "model1" and len(recipe.classes) == 10
    assert all(c.agreement >= 0.99 for c in report.checks)
    x = check_inputs[0][:3].numpy()
    np.testing.assert_allclose(TfliteClassifier(out, "tflm").logits(x), TfliteClassifier(out, "litert").logits(x),
                               atol=3 * report.output_scale)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_c_array_compiles_and_holds_the_model(exported, tmp_path) -> None:
    out, report = exported
    header, source = write_c_array(out, report.memory.arena_bytes, tmp_path)
    text = header.read_text()
    assert f"#define DSMN_MODEL_DATA_LEN {out.stat().st_size}u" in text
    assert f"#define DSMN_TENSOR_ARENA_BYTES {report.memory.arena_bytes}u" in text
    assert "#define DSMN_N_MELS 256" in text and "#define DSMN_HOP_LENGTH 1024" in text
    assert "#define DSMN_INPUT_IS_FLOAT 0" in text and "#define DSMN_OUTPUT_IS_FLOAT 1" in text  # int8 in, float out
    compiler = shutil.which("g++") or shutil.which("gcc")
    subprocess.run([compiler, "-x", "c++", "-std=c++11", "-c", str(source), "-o", str(tmp_path / "model_data.o")],
                   check=True, capture_output=True)
    # the bytes in the array are the file's bytes
    body = source.read_text().split("g_dsmn_model_data[DSMN_MODEL_DATA_LEN] = {", 1)[1].split("};", 1)[0]
    assert bytes(int(b, 16) for b in re.findall(r"0x([0-9a-f]{2})", body)) == out.read_bytes()


def test_predict_evaluate_and_complexity_take_a_tflite_file(exported, qat_run, tiny_data, tmp_path, capsys) -> None:
    out, _ = exported
    import soundfile

    files = sorted((tiny_data / "audio").glob("*.wav"))[:2]
    awkward = tmp_path / "short stereo 22k.flac"  # 0.3 s, two channels, another rate and format
    noise = np.random.default_rng(0).standard_normal((6615, 2)).astype(np.float32) * 0.1
    soundfile.write(awkward, noise, 22050)
    files.append(awkward)
    table = tmp_path / "predictions.tsv"
    assert main(["predict", str(out), *map(str, files), "--out", str(table), "--quiet", "--runtime", "tflm"]) == 0
    rows = table.read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("filename")
    # the run itself, computed as TFLM computes its export, predicts the same scenes
    simulated = tmp_path / "simulated.tsv"
    assert main(["predict", str(qat_run), *map(str, files), "--out", str(simulated), "--quiet",
                 "--model-kind", "qat-tflite"]) == 0
    assert [r.split("\t")[:2] for r in simulated.read_text().splitlines()] == [r.split("\t")[:2] for r in rows]
    assert main(["evaluate", str(out), "--data", str(tiny_data), "--out", str(tmp_path / "eval"), "--json"]) == 0
    assert main(["complexity", str(out), "--summary"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"TFLM tensor arena: [\d,]+ bytes", text) and "flash:" in text
    assert re.search(r"peak activations +[\d,]+ +65,280", text)  # beside the DCASE 2022 baseline


def test_export_cli_writes_tflite_and_c_array(qat_run, tiny_data, tmp_path, capsys) -> None:
    out = tmp_path / "cli.tflite"
    code = main(["export", str(qat_run), "--format", "tflite", "--out", str(out), "--data", str(tiny_data),
                 "--split", "fold1_evaluate", "--check-clips", "100", "--tflm-clips", "3", "--c-array"])
    assert code == 0 and out.is_file()
    assert (tmp_path / "model_data.h").is_file() and (tmp_path / "model_data.cc").is_file()
    text = capsys.readouterr().out
    assert "top-1 agreement" in text and "TFLM tensor arena" in text and "max |logit difference|" in text
    # the checked clips' labels give both models' accuracy, so a user can weigh a disagreement
    assert re.search(r"check in tflm on 3 real clips: .*; accuracy [\d.]+% \(QAT model on the same clips", text)
    assert "logits int8 grid" not in text  # float logits (the default --io int8-float)
    assert main(["export", str(qat_run), "--format", "tflite", "--precision", "fp32", "--data", str(tiny_data)]) == 2
    assert main(["export", str(qat_run), "--format", "tflite", "--min-agreement", "1.5", "--data",
                 str(tiny_data)]) == 2
    assert "--min-agreement 1.5: must be a fraction in (0, 1]" in capsys.readouterr().err


def _observed_run(data: Path, folder: Path, name: str) -> Path:
    """A run of `name` whose BatchNorm statistics and activation ranges come from real training clips."""
    from dataclasses import asdict

    from dsmn import models
    from dsmn.deploy import network_input
    from dsmn.features import FrontEndConfig
    from dsmn.quantization import QATConfig, prepare_qat

    torch.manual_seed(0)
    entry = models.entry(name)
    frontend = FrontEndConfig(**entry.frontend)
    dataset, clips = split_clips(data, "train")
    cache = open_features(dataset, frontend, progress=False)
    float_model = models.create(name)
    config = QATConfig.recipe(observer_momentum=0.2)
    net = prepare_qat(float_model, config).train()
    with torch.no_grad():
        for i, logmel in enumerate(logmel_batches(cache, clips, 48)):
            if i == 3:
                break
            net(network_input(logmel, entry.deltas))
    checkpoint = models.checkpoint_dict(float_model, qat=config.to_dict(), qat_state_dict=net.state_dict(),
                                        frontend=asdict(frontend), deltas=entry.deltas)
    (folder / "checkpoints").mkdir(parents=True)
    torch.save(checkpoint, folder / "checkpoints" / "best.pt")
    return folder


@pytest.mark.parametrize(("name", "operators"), [
    ("dcase2022_baseline", {"MAX_POOL_2D", "REDUCE_MAX", "TRANSPOSE"}),  # 7x7 convolutions, max pools, flatten
    ("dssc_small", {"RELU", "CONCATENATION"}),  # a ReLU after each channel concatenation
    ("cp_mobile", {"PAD"}),  # stride-2 convolutions padded like torch, not like TFLite's SAME
])
def test_other_families_export_and_agree(name, operators, tiny_data, tmp_path) -> None:
    trained = load_trained(_observed_run(tiny_data, tmp_path / name, name))
    dataset, clips = split_clips(tiny_data, "fold1_evaluate")
    cache = open_features(dataset, trained.frontend, progress=False)
    check = [trained.network_input(b) for b in logmel_batches(cache, clips[:60], 60)]
    report = export_tflite(trained, tmp_path / f"{name}.tflite", check, tflm_clips=5)
    assert all(c.agreement >= 0.99 for c in report.checks)
    assert report.checks[1].runtime == "tflm" and report.checks[1].max_logit_difference < 1e-4  # bit-exact
    assert operators <= set(report.memory.operators)
    assert not [n for n in report.memory.operator_notes() if "not provided by TFLM" in n]
    if name == "dcase2022_baseline":  # two 16 x 40 x 51 int8 maps alive together (the published ~65 kB)
        assert report.memory.peak_activation_bytes == 2 * 16 * 40 * 51


def test_damaged_tflite_files_are_refused_in_one_line(exported, tiny_data, tmp_path, capsys) -> None:
    out, _ = exported
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(out.read_bytes()[:5000])
    (tmp_path / "text.tflite").write_text("not a model")
    wav = str(sorted((tiny_data / "audio").glob("*.wav"))[0])
    assert main(["predict", str(truncated), wav, "--out", "-"]) == 2
    assert main(["complexity", str(tmp_path / "text.tflite")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == [f"dsmn predict: {truncated}: damaged TFLite flatbuffer (truncated or corrupt)",
                      f"dsmn complexity: {tmp_path / 'text.tflite'}: not a TFLite flatbuffer (file identifier "
                      "TFL3 missing)"]


def test_litert_reference_kernels_compute_what_tflm_computes(exported, check_inputs) -> None:
    """`--runtime litert-reference` (TFLite's reference kernels) is the fast stand-in for TFLM's integer
    arithmetic; every command that takes a runtime offers the same three."""
    from dsmn.cli.options import TFLITE_RUNTIMES
    from dsmn.deploy.tflite_runtime import RUNTIMES

    out, _ = exported
    x = torch.cat(check_inputs)[:6].numpy()
    reference = TfliteClassifier(out, "litert-reference").logits(x)
    np.testing.assert_allclose(reference, TfliteClassifier(out, "tflm").logits(x), atol=0.01)
    assert set(TFLITE_RUNTIMES) == set(RUNTIMES)
