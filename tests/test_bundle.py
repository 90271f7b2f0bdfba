"""Device bundles (DCASE 2025 Task 1) end to end on generated TAU data: `dsmn finetune` makes one,
evaluate / complexity / export / predict / dsmn.submission use it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dsmn.cli import main as cli

pytestmark = pytest.mark.e2e

SMALL = ["--set", "batch_size=8", "--set", "max_batches_per_epoch=2", "--set", "data.val_max_clips=40",
         "--set", "schedule.warmup_epochs=0", "--threads", "2", "--no-progress"]


@pytest.fixture(scope="module")
def general_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model1 trained with QAT on split25 of the tiny set (a few batches: the plumbing, not accuracy)."""
    run = tmp_path_factory.mktemp("general") / "run"
    assert cli(["train", "--data", str(tiny_data), "--model", "model1", "--out", str(run), "--epochs", "1",
                "--subset", "split25", *SMALL]) == 0
    return run


@pytest.fixture(scope="module")
def bundle(general_run: Path, tiny_data: Path) -> Path:
    """Devices a and b fine-tuned; s1 has no clips in the tiny set's split25."""
    out = general_run.parent / "bundle"
    assert cli(["finetune", str(general_run), "--data", str(tiny_data), "--out", str(out), "--devices", "a,b,s1",
                "--epochs", "1", "--set", "max_batches_per_epoch=2", "--threads", "2", "--no-progress"]) == 0
    return out


def test_finetune_writes_a_bundle(bundle: Path, general_run: Path, capsys) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format"] == "dsmn-bundle" and manifest["kind"] == "qat" and manifest["model_name"] == "model1"
    assert manifest["models"] == {"general": "models/general.pt", "a": "models/a.pt", "b": "models/b.pt"}
    assert manifest["devices"] == {"a": "a", "b": "b", "s1": "general", "unknown": "general"}
    assert manifest["skipped"] == {"s1": "no training clips in split25"}
    assert manifest["per_device"]["a"]["train_clips"] == 100 and manifest["per_device"]["b"]["val_clips"] == 30
    for name in manifest["models"].values():
        assert (bundle / name).is_file()
    # each device model was trained on its own clips only, starting from the general weights
    config = (bundle / "runs" / "b" / "config.yaml").read_text()
    assert "- b" in config and str(general_run.resolve()) in config
    device = torch.load(bundle / "models" / "b.pt", weights_only=False)
    general = torch.load(bundle / "models" / "general.pt", weights_only=False)
    assert "optimizer" not in device and "qat_state_dict" in device and device["device"] == "b"
    assert any(not torch.equal(device["state_dict"][k], general["state_dict"][k]) for k in general["state_dict"])
    complexity = json.loads((bundle / "complexity.json").read_text())
    assert set(complexity["per_device"]) == {"a", "b", "s1", "unknown"}
    assert complexity["per_device"]["a"] == {"MACs": 8_645_641, "Params": 45_164}  # int8 bytes of model1
    assert complexity["max_MACs"] == 8_645_641 and complexity["max_Params"] == 45_164


def test_finetune_resumes_and_refuses_to_overwrite(bundle: Path, general_run: Path, tiny_data: Path,
                                                   capsys) -> None:
    args = ["finetune", str(general_run), "--data", str(tiny_data), "--out", str(bundle), "--devices", "a,b,s1",
            "--epochs", "1", "--no-progress"]
    assert cli(args) == 2
    assert "already holds a bundle" in capsys.readouterr().err
    before = (bundle / "models" / "a.pt").stat().st_mtime_ns
    assert cli([*args, "--resume"]) == 0  # every device is done: nothing is trained again
    out = capsys.readouterr().out
    assert "device a: already fine-tuned" in out and "device b: already fine-tuned" in out
    assert "dsmn train:" not in out
    assert (bundle / "models" / "a.pt").stat().st_mtime_ns >= before


def test_finetune_trains_only_the_named_parts(general_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "head"
    assert cli(["finetune", str(general_run), "--data", str(tiny_data), "--out", str(out), "--devices", "b",
                "--epochs", "1", "--set", "finetune.trainable=[head]", "--set", "max_batches_per_epoch=2",
                "--set", "optimizer.lr=0.01", "--threads", "2", "--no-progress"]) == 0
    tuned = torch.load(out / "models" / "b.pt", weights_only=False)["state_dict"]
    general = torch.load(out / "models" / "general.pt", weights_only=False)["state_dict"]
    weights = [k for k in general if k.endswith("weight") and "norm" not in k]
    assert all(torch.equal(tuned[k], general[k]) for k in weights if not k.startswith("head."))
    assert any(not torch.equal(tuned[k], general[k]) for k in weights if k.startswith("head."))


def test_finetune_bad_input_is_one_clear_line(general_run: Path, tiny_data: Path, tmp_path: Path, capsys) -> None:
    code = cli(["finetune", str(general_run), "--data", str(tiny_data), "--out", str(tmp_path / "x"),
                "--devices", "b", "--set", "finetune.trainable=[nonexistent]", "--no-progress"])
    assert code == 2
    assert "finetune.trainable: 'nonexistent' names no parameter" in capsys.readouterr().err
    assert cli(["finetune", str(tmp_path / "nothing"), "--data", str(tiny_data), "--out", str(tmp_path / "y")]) == 2


def test_evaluate_bundle_scores_each_clip_with_its_device_model(bundle: Path, tiny_data: Path, tmp_path: Path,
                                                                capsys) -> None:
    from dsmn.deploy.bundle import load_bundle
    from dsmn.deploy.data import logmel_batches, open_features, split_clips
    from dsmn.deploy.inference import load_for_inference
    from dsmn.evaluation.bundle import evaluate_bundle
    from dsmn.evaluation.evaluate import scene_probabilities

    assert cli(["evaluate", str(bundle), "--data", str(tiny_data), "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "| known devices | 70 |" in out and "| unknown devices | 130 | general |" in out  # a, b, s1 listed
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    rows = {r["name"]: r for r in summary["devices"]}
    assert rows["b"]["model"] == "b" and rows["s1"]["model"] == "general" and rows["s5"]["model"] == "general"
    for name in ("s1", "s4", "s5", "s6"):  # the general model in both columns
        assert rows[name]["accuracy"] == rows[name]["general_accuracy"]

    result, clips, probabilities, assigned = evaluate_bundle(load_bundle(bundle), tiny_data)
    dataset, _ = split_clips(tiny_data, "evaluate")
    for name, device in (("b", "b"), ("general", "s4")):
        index = [i for i, c in enumerate(clips) if c.device == device]
        assert {assigned[i] for i in index} == {name}
        loaded = load_for_inference(bundle / "models" / f"{name}.pt")
        cache = open_features(dataset, loaded.recipe.frontend)
        expected = scene_probabilities(loaded, logmel_batches(cache, [clips[i] for i in index]))
        assert torch.allclose(torch.from_numpy(probabilities[index]), torch.from_numpy(expected), atol=1e-6)


def test_evaluate_bundle_reads_devices_from_a_generic_csv(bundle: Path, tiny_data: Path, tmp_path: Path) -> None:
    """Files without TAU names: the device comes from the CSV's device column (empty: unknown)."""
    import shutil

    from dsmn.deploy.bundle import load_bundle
    from dsmn.evaluation.bundle import evaluate_bundle

    root = tmp_path / "generic"
    (root / "clips").mkdir(parents=True)
    lines = ["filename,scene_label,device"]
    tau = sorted((tiny_data / "audio").glob("*.wav"))[:40]
    for k, path in enumerate(tau):
        scene, device = path.stem.split("-")[0], ("b", "s9", "")[k % 3]
        shutil.copy(path, root / "clips" / f"clip{k:03d}.wav")
        lines.append(f"clips/clip{k:03d}.wav,{scene},{device}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    _, clips, _, assigned = evaluate_bundle(load_bundle(bundle), root, split="train")
    by_device = {(c.device or "unknown"): a for c, a in zip(clips, assigned, strict=True)}
    assert by_device == {"b": "b", "s9": "general", "unknown": "general"}


def test_complexity_of_a_bundle_per_device(bundle: Path, tmp_path: Path, capsys) -> None:
    from dsmn import models
    from dsmn.deploy.bundle import Bundle

    assert cli(["complexity", str(bundle), "--check"]) == 0
    out = capsys.readouterr().out
    assert "s1       general  int8     45,164    45,164    8,645,641  yes" in out
    assert cli(["complexity", str(bundle), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["within_limits"] and report["devices"]["unknown"] == "general"
    assert report["per_device"]["b"] == {"MACs": 8_645_641, "Params": 45_164}

    # a float bundle stores 4 bytes per parameter: model1 at float32 is over the 128,000-byte budget
    torch.save(models.checkpoint_dict(models.create("model1")), tmp_path / "general.pt")
    Bundle(tmp_path, {"general": "general.pt"}, {"a": "general"}).save()
    assert cli(["complexity", str(tmp_path), "--check"]) == 1
    assert "over the budget: general" in capsys.readouterr().out


@pytest.fixture(scope="module")
def exported(bundle: Path, tiny_data: Path) -> Path:
    out = bundle.parent / "deploy"
    assert cli(["export", str(bundle), "--out", str(out), "--data", str(tiny_data), "--check-clips", "60"]) == 0
    return out


def test_export_bundle_writes_checked_int8_models_and_a_manifest(exported: Path, bundle: Path) -> None:
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["models"] == {"general": "general.onnx", "a": "a.onnx", "b": "b.onnx"}
    assert manifest["devices"] == {"a": "a", "b": "b", "s1": "general", "unknown": "general"}
    assert manifest["precision"] == "int8"
    for name in ("general", "a", "b"):
        check = manifest["export"][name]
        assert check["clips_checked"] > 0 and check["agreement"] >= 0.99 and check["int8_operators"] > 0
    assert manifest["export"]["b"]["clips_checked"] == 30  # device b's own evaluate clips
    assert json.loads((exported / "complexity.json").read_text()) == \
        json.loads((bundle / "complexity.json").read_text())


def _audio(tiny_data: Path, device: str) -> Path:
    return sorted((tiny_data / "audio").glob(f"*-{device}.wav"))[0]


def test_predict_with_a_bundle_picks_each_files_model(exported: Path, bundle: Path, tiny_data: Path,
                                                      tmp_path: Path) -> None:
    import shutil

    plain = tmp_path / "clip.wav"  # no TAU name, not in the table: unknown
    shutil.copy(_audio(tiny_data, "a"), plain)
    listed = tmp_path / "recording7.wav"
    shutil.copy(_audio(tiny_data, "a"), listed)
    ids = tmp_path / "ids.csv"
    ids.write_text("filename,device_id\nrecording7.wav,b\n")
    files = [_audio(tiny_data, "a"), _audio(tiny_data, "s1"), _audio(tiny_data, "s4"), plain, listed]
    for model in (exported, bundle):  # the ONNX bundle and the checkpoint bundle
        out = tmp_path / f"{model.name}.tsv"
        assert cli(["predict", str(model), *map(str, files), "--device-ids", str(ids), "--out", str(out)]) == 0
        rows = [line.split("\t") for line in out.read_text().splitlines()]
        assert rows[0][-2:] == ["device_id", "model"]
        assert [(r[-2], r[-1]) for r in rows[1:]] == [("a", "a"), ("s1", "general"), ("s4", "general"),
                                                      ("unknown", "general"), ("b", "b")]
    # the same file through the b model and the general model: different models, different numbers
    onnx_rows = [line.split("\t") for line in (tmp_path / "deploy.tsv").read_text().splitlines()]
    assert onnx_rows[4][2:12] != onnx_rows[5][2:12]


def test_a_manifest_device_whose_model_file_is_missing_is_a_clear_error(exported: Path, tiny_data: Path,
                                                                        tmp_path: Path, capsys) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / "b.onnx").unlink()
    code = cli(["predict", str(broken), str(_audio(tiny_data, "a")), "--out", str(tmp_path / "p.tsv")])
    assert code == 2
    assert "model file b.onnx of device b is missing" in capsys.readouterr().err
    assert cli(["evaluate", str(broken), "--data", str(tiny_data), "--out", str(tmp_path / "e")]) == 2
    assert "b.onnx of device b is missing" in capsys.readouterr().err
    bad = tmp_path / "ids.csv"
    bad.write_text("name;dev\n")
    assert cli(["predict", str(exported), str(_audio(tiny_data, "a")), "--device-ids", str(bad)]) == 2
    assert "expected columns filename and device_id" in capsys.readouterr().err


def test_submission_api_as_the_organisers_script_calls_it(bundle: Path, exported: Path, tiny_data: Path,
                                                          tmp_path: Path, monkeypatch) -> None:
    """load_model / load_inputs / get_model_for_device / predict as evaluate_submission.py and the
    complexity check use them: test split with device ids (one "unknown"), softmax, output.csv."""
    import copy
    import csv

    import torchinfo

    from dsmn import submission as api
    from dsmn.data import load_dataset
    from dsmn.labels import SCENES

    monkeypatch.setattr(api, "DEFAULT_BUNDLE", bundle)
    dataset = load_dataset(tiny_data)
    clips = dataset.split("evaluate")[::10]
    file_paths = [str(tiny_data / c.filename) for c in clips]
    device_ids = [c.device for c in clips]
    device_ids[0] = "unknown"
    predictions, class_order = api.predict(file_paths=file_paths, device_ids=device_ids, model_file_path=None,
                                           use_cuda=torch.cuda.is_available())
    assert class_order == list(SCENES)
    assert len(predictions) == len(file_paths) and all(p.shape == (10,) for p in predictions)
    label_to_idx = {label: i for i, label in enumerate(class_order)}
    true = [label_to_idx[c.scene] for c in clips]
    predicted = [int(p.argmax().item()) for p in predictions]
    assert len(true) == len(predicted)
    probabilities = torch.softmax(torch.stack(predictions), dim=1)
    output = tmp_path / "output.csv"
    with output.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["filename", "scene_label", *class_order])
        for clip, p in zip(clips, probabilities, strict=True):
            writer.writerow([clip.filename, class_order[int(p.argmax())], *p.tolist()])
    assert len(output.read_text().splitlines()) == len(clips) + 1

    # each file went through its device's model: the same numbers as the exported int8 bundle
    rows = tmp_path / "onnx.tsv"
    ids = tmp_path / "ids.csv"
    ids.write_text("filename,device_id\n" + "".join(f"{p},{d}\n" for p, d in zip(file_paths, device_ids, strict=True)))
    assert cli(["predict", str(exported), *file_paths, "--device-ids", str(ids), "--out", str(rows)]) == 0
    onnx = [line.split("\t") for line in rows.read_text().splitlines()[1:]]
    assert [r[-1] for r in onnx] == [{"a": "a", "b": "b"}.get(d, "general") for d in device_ids]
    onnx_probabilities = torch.tensor([[float(v) for v in r[2:12]] for r in onnx])
    assert torch.allclose(probabilities, onnx_probabilities, atol=0.02)

    # the organisers' complexity check: torchinfo on a float copy, memory = numel x dtype bytes
    model = api.load_model()
    inputs = api.load_inputs(file_paths[:3], ["a", "b", "unknown"], model)
    for tensor, device_id in zip(inputs, ["a", "b", "unknown"], strict=True):
        submodel = api.get_model_for_device(model, device_id)
        macs = torchinfo.summary(copy.deepcopy(submodel).float(), input_size=tuple(tensor.shape), verbose=0)
        memory = sum(p.numel() * p.element_size() for p in submodel.parameters())
        assert tensor.shape == (1, 2, 256, 44)
        assert macs.total_mult_adds <= 30_000_000 and memory <= 128_000
        assert {p.dtype for p in submodel.parameters()} == {torch.int8, torch.float32}
    assert api.get_model_for_device(model, "unknown") is api.get_model_for_device(model, "s6")
    assert api.get_model_for_device(model, "b") is not api.get_model_for_device(model, "unknown")
