"""A model ready for inference, whatever its form: float / QAT torch network or exported ONNX file."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dsmn.deploy.metadata import InputRecipe
from dsmn.deploy.onnx_export import export_onnx
from dsmn.deploy.runtime import OnnxClassifier
from dsmn.deploy.trained import TrainedModel, load_trained

MODEL_KINDS = ("float", "qat", "int8", "fp32")


@dataclass
class LoadedModel:
    """Anything that maps a network input batch to logits, with the recipe for its input."""

    kind: str
    name: str
    recipe: InputRecipe
    logits: Callable[[torch.Tensor], np.ndarray]
    source: Path
    trained: TrainedModel | None = None


def _torch_logits(network: torch.nn.Module) -> Callable[[torch.Tensor], np.ndarray]:
    network.eval()
    device = next(network.parameters()).device

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return network(x.to(device)).float().cpu().numpy()

    return run


def load_for_inference(path: str | Path, kind: str | None = None, workdir: Path | None = None) -> LoadedModel:
    """A checkpoint / run folder (kind float, qat, or int8 / fp32 through a fresh ONNX export) or an
    exported ONNX file (its own precision)."""
    path = Path(path)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        classifier = OnnxClassifier(path)
        recipe = classifier.recipe
        if kind not in (None, recipe.precision, "int8" if recipe.precision == "int8" else "fp32"):
            raise ValueError(f"{path} is a {recipe.precision or 'onnx'} model; --model-kind {kind} does not apply")
        return LoadedModel(recipe.precision or "onnx", recipe.model_name, recipe,
                           lambda x: classifier.logits(x.numpy()), path)
    trained = load_trained(path)
    recipe = InputRecipe(trained.frontend, trained.deltas, trained.delta_width, model_name=trained.model_name)
    kind = kind or ("qat" if trained.is_qat else "float")
    if kind == "float":
        return LoadedModel(kind, trained.model_name, recipe, _torch_logits(trained.float_model), trained.path, trained)
    if kind == "qat":
        if not trained.is_qat:
            raise ValueError(f"{trained.path} was trained without QAT: use --model-kind float (or int8)")
        return LoadedModel(kind, trained.model_name, recipe, _torch_logits(trained.model), trained.path, trained)
    if kind in ("int8", "fp32"):
        if kind == "int8" and not trained.is_qat:
            raise ValueError(f"{trained.path} was trained without QAT: export it with `dsmn export --data` first")
        folder = workdir or Path(tempfile.mkdtemp(prefix="dsmn-eval-"))
        onnx_path = folder / f"model-{kind}.onnx"
        export_onnx(trained, onnx_path, kind)
        classifier = OnnxClassifier(onnx_path)
        return LoadedModel(kind, trained.model_name, recipe, lambda x: classifier.logits(x.numpy()), onnx_path,
                           trained)
    raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)
