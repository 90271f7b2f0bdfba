"""A model ready for inference, whatever its form: float / QAT torch network, exported ONNX or .tflite file."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dsmn.deploy.metadata import InputRecipe
from dsmn.deploy.onnx_export import export_onnx, input_shape
from dsmn.deploy.runtime import OnnxClassifier
from dsmn.deploy.tflite_arithmetic import TfliteArithmetic
from dsmn.deploy.trained import TrainedModel, load_trained

MODEL_KINDS = ("float", "qat", "qat-tflite", "int8", "fp32")
TORCH_CHUNK = 32  # clips per forward pass of a torch network (see _torch_logits)


@dataclass
class LoadedModel:
    """Anything that maps a network input batch to logits, with the recipe for its input."""

    kind: str
    name: str
    recipe: InputRecipe
    logits: Callable[[torch.Tensor], np.ndarray]
    source: Path
    trained: TrainedModel | None = None

    @property
    def checkpoint(self) -> dict | None:
        """Which checkpoint of its run this is (dsmn.deploy.trained.checkpoint_label); for an ONNX
        file, what its export recorded (None for files exported before dsmn recorded it)."""
        if self.trained is not None:
            return self.trained.label
        return json.loads(self.recipe.checkpoint) if self.recipe.checkpoint else None


def _torch_logits(network: torch.nn.Module, chunk: int = TORCH_CHUNK) -> Callable[[torch.Tensor], np.ndarray]:
    """Logits in chunks of `chunk` clips, channels-last on the CPU: the depthwise-heavy networks run
    2-3x faster that way than on one large contiguous batch (activations stay in cache)."""
    network.eval()
    device = next(network.parameters()).device
    channels_last = device.type == "cpu"
    chunk = chunk if channels_last else max(chunk, 1024)  # a GPU is not cache-bound: large batches
    if channels_last:
        network.to(memory_format=torch.channels_last)

    def run(x: torch.Tensor) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(x), chunk):
                part = x[start : start + chunk].to(device)
                if channels_last and part.dim() == 4:
                    part = part.contiguous(memory_format=torch.channels_last)
                out.append(network(part).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    return run


def load_for_inference(path: str | Path, kind: str | None = None, workdir: Path | None = None,
                       device: str | torch.device = "cpu", runtime: str = "litert") -> LoadedModel:
    """A checkpoint / run folder (kind float, qat, or int8 / fp32 through a fresh ONNX export), an
    exported ONNX file (its own precision) or an int8 .tflite file (run in `runtime`: litert or tflm).
    `device`: where a torch network (float, qat) runs."""
    path = Path(path)
    if path.suffix == ".tflite":
        return _load_tflite(path, kind, runtime)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        classifier = OnnxClassifier(path)
        recipe = classifier.recipe
        if kind not in (None, recipe.precision, "int8" if recipe.precision == "int8" else "fp32"):
            raise ValueError(f"{path} is a {recipe.precision or 'onnx'} model; --model-kind {kind} does not apply")
        return LoadedModel(recipe.precision or "onnx", recipe.model_name, recipe,
                           lambda x: classifier.logits(x.numpy()), path)
    trained = load_trained(path, device if kind in (None, "float", "qat") else "cpu")
    recipe = InputRecipe(trained.frontend, trained.deltas, trained.delta_width, model_name=trained.model_name,
                         long_clips=trained.long_clips)
    kind = kind or ("qat" if trained.is_qat else "float")
    if kind == "float":
        network = trained.float_model.to(device)
        return LoadedModel(kind, trained.model_name, recipe, _torch_logits(network), trained.path, trained)
    if kind in ("qat", "qat-tflite"):
        if not trained.is_qat:
            raise ValueError(f"{trained.path} was trained without QAT: use --model-kind float (or int8)")
        if kind == "qat-tflite":  # what TFLM computes from the .tflite export, without a .tflite file
            network = TfliteArithmetic(trained.model, torch.zeros(input_shape(trained, 1)))
            return LoadedModel(kind, trained.model_name, recipe, lambda x: network(x).numpy(), trained.path,
                               trained)
        return LoadedModel(kind, trained.model_name, recipe, _torch_logits(trained.model), trained.path, trained)
    if kind in ("int8", "fp32"):
        if kind == "int8" and not trained.is_qat:
            raise ValueError(f"{trained.path} was trained without QAT: export it with `dsmn export --data` first")
        folder = workdir or Path(tempfile.mkdtemp(prefix="dsmn-eval-"))
        onnx_path = folder / f"model-{kind}.onnx"
        export_onnx(trained, onnx_path, kind)
        classifier = OnnxClassifier(onnx_path)
        return LoadedModel(kind, trained.model_name, classifier.recipe, lambda x: classifier.logits(x.numpy()),
                           onnx_path, trained)
    raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")


def _load_tflite(path: Path, kind: str | None, runtime: str) -> LoadedModel:
    from dsmn.deploy.tflite_runtime import TfliteClassifier

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such .tflite file")
    if kind not in (None, "int8"):
        raise ValueError(f"{path} is an int8 TFLite model; --model-kind {kind} does not apply")
    try:
        classifier = TfliteClassifier(path, runtime)
    except ImportError as error:
        raise ValueError(str(error)) from None
    recipe = classifier.recipe
    return LoadedModel("int8", recipe.model_name, recipe, lambda x: classifier.logits(x.numpy()), path)

