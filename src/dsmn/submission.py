"""The DCASE 2025 Task 1 inference API over a dsmn device bundle.

The organisers' evaluation script imports a submission module and calls

    model = load_model()                                   # or load_model(path)
    inputs = load_inputs(file_paths, device_ids, model)    # one network input per file
    device_model = get_model_for_device(model, "s2")       # an nn.Module (complexity check)
    logits, class_order = predict(file_paths, device_ids, model_file_path=None, use_cuda=...)

with device ids such as "a" or "unknown". `model_file_path` is a bundle folder made by `dsmn finetune`
(or its manifest.json); None means `DEFAULT_BUNDLE`, else the `DSMN_BUNDLE` environment variable,
so a submission package sets one line: `dsmn.submission.DEFAULT_BUNDLE = <its bundle folder>`.

A QAT bundle's device models run as int8 torch modules (int8 weight parameters, see
dsmn.deploy.int8_torch) that compute what the exported int8 ONNX files compute; a float bundle's as
its float32 networks. Each module maps a network input (batch, channels, mel, frames) to the ten
scene logits in `class_order`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from dsmn.data import load_audio
from dsmn.deploy.bundle import Bundle, BundleError, load_bundle
from dsmn.deploy.inference import LoadedModel
from dsmn.deploy.metadata import InputRecipe
from dsmn.deploy.predict import Predictor
from dsmn.deploy.trained import load_trained
from dsmn.features import network_input
from dsmn.labels import SCENES
from dsmn.models import split_logits

DEFAULT_BUNDLE: str | Path | None = None
ENVIRONMENT_VARIABLE = "DSMN_BUNDLE"


class SceneLogits(nn.Module):
    """A device's network restricted to its ten scene logits (the coarse outputs are training-only)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return split_logits(self.network(x))[0]


class BundleModel(nn.Module):
    """All models of a bundle, the device map and the input recipe; `load_model` returns one."""

    def __init__(self, bundle: Bundle, networks: dict[str, nn.Module], recipe: InputRecipe) -> None:
        super().__init__()
        self.bundle = bundle
        self.models = nn.ModuleDict({name: SceneLogits(net) for name, net in networks.items()})
        self.recipe = recipe
        self.class_order = list(SCENES)
        self.device_ids = sorted(bundle.devices)  # the known devices

    def model_for(self, device_id: str | None) -> nn.Module:
        return self.models[self.bundle.model_name_for(device_id)]


def _bundle_path(model_file_path: str | Path | None) -> Path:
    path = model_file_path or DEFAULT_BUNDLE or os.environ.get(ENVIRONMENT_VARIABLE)
    if not path:
        raise BundleError("no bundle: pass model_file_path, set dsmn.submission.DEFAULT_BUNDLE or "
                          f"${ENVIRONMENT_VARIABLE}")
    return Path(path)


def load_model(model_file_path: str | Path | None = None) -> BundleModel:
    """Load every model of a checkpoint bundle (made by `dsmn finetune`) for inference on the CPU."""
    bundle = load_bundle(_bundle_path(model_file_path))
    bundle.check_files()
    networks, recipe = {}, None
    for name in bundle.models:
        path = bundle.path(name)
        if path.suffix == ".onnx":
            raise BundleError(f"{path}: dsmn.submission runs the checkpoint bundle of `dsmn finetune` (its int8 "
                              "torch modules compute what the ONNX files do); pass that bundle instead")
        trained = load_trained(path)
        recipe = recipe or InputRecipe(trained.frontend, trained.deltas, trained.delta_width,
                                       model_name=trained.model_name)
        if trained.is_qat:
            from dsmn.deploy.int8_torch import int8_module
            from dsmn.deploy.onnx_export import input_shape

            networks[name] = int8_module(trained.model, torch.randn(input_shape(trained, 2)))
        else:
            networks[name] = trained.float_model.eval()
    return BundleModel(bundle, networks, recipe).eval()


def load_inputs(file_paths: Sequence[str | Path], device_ids: Sequence[str] | None = None,
                model: BundleModel | None = None) -> list[torch.Tensor]:
    """One network input per file: (windows, channels, mel, frames), one window per second of audio
    (a 1-s clip gives (1, 2, 256, 44) for the DSMN networks). Any format, rate and channel count."""
    model = model or load_model()
    predictor = Predictor(LoadedModel("input", model.recipe.model_name, model.recipe, lambda x: x, Path()))
    inputs = []
    for path in file_paths:
        samples, _ = load_audio(Path(path), model.recipe.frontend.sample_rate, duration=None)
        logmels, _ = predictor.windows(samples)
        inputs.append(network_input(logmels, model.recipe.deltas, model.recipe.delta_width))
    return inputs


def get_model_for_device(model: BundleModel, device_id: str) -> nn.Module:
    """The module that scores clips of `device_id`; "unknown" and unlisted ids get the general model."""
    return model.model_for(device_id)


def predict(file_paths: Sequence[str | Path], device_ids: Sequence[str], model_file_path: str | Path | None = None,
            use_cuda: bool = False, batch_size: int = 64) -> tuple[list[torch.Tensor], list[str]]:
    """(logits, class_order): one tensor of ten scene logits per file (the mean over its 1-s windows),
    each file scored by its device's model. `use_cuda` runs the models on a GPU when one is present."""
    if len(file_paths) != len(device_ids):
        raise ValueError(f"{len(file_paths)} file paths but {len(device_ids)} device ids")
    model = load_model(model_file_path)
    device = torch.device("cuda" if use_cuda and torch.cuda.is_available() else "cpu")
    model.to(device)
    inputs = load_inputs(file_paths, device_ids, model)
    outputs: list[torch.Tensor | None] = [None] * len(inputs)
    groups: dict[str, list[int]] = {}
    for i, device_id in enumerate(device_ids):
        groups.setdefault(model.bundle.model_name_for(device_id), []).append(i)
    with torch.no_grad():
        for name, index in groups.items():
            network = model.models[name]
            windows = [inputs[i] for i in index]
            flat = torch.cat(windows)
            logits = torch.cat([network(flat[s:s + batch_size].to(device)).cpu()
                                for s in range(0, len(flat), batch_size)])
            start = 0
            for i, w in zip(index, windows, strict=True):
                outputs[i] = logits[start:start + len(w)].mean(dim=0)
                start += len(w)
    return outputs, list(model.class_order)
