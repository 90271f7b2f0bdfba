"""Export a QAT-trained model to a fully int8 .tflite file for TFLite Micro and LiteRT, checked on real clips.

The file is written from the same int8 network as the ONNX export (BatchNorm folded, int8
per-channel weights, int32 biases, the QAT observers' activation grids; see dsmn.deploy.tflite_convert),
so no converter re-quantises anything. The logits, which the QAT network leaves in float, get an int8
grid from their range on the check clips (with a margin). The file is checked in both runtimes before
it is moved into place: top-1 agreement with the QAT network must reach 99 %. Each runtime is compared
with the QAT network computed in its own integer arithmetic: LiteRT's XNNPACK kernels round like the
QAT simulation; TFLM (and LiteRT's reference kernels) requantise with TFLite's fixed-point rules, which
`dsmn.deploy.tflite_arithmetic` reproduces. How far TFLM is from the QAT simulation's rounding is
reported beside it.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dsmn.deploy.layout import absorb_input_transpose
from dsmn.deploy.metadata import InputRecipe, metadata_for
from dsmn.deploy.onnx_export import MIN_AGREEMENT, ExportCheckError, input_shape, reference_network, to_onnx
from dsmn.deploy.tflite_arithmetic import TfliteArithmetic
from dsmn.deploy.tflite_convert import DEFAULT_IO, IO_MODES, convert
from dsmn.deploy.tflite_format import serialize
from dsmn.deploy.tflite_runtime import METADATA_KEY, MemoryReport, TfliteClassifier, memory_report
from dsmn.deploy.trained import TrainedModel
from dsmn.models import split_logits

REFERENCE_MODEL = "dcase2022_baseline"  # its memory is printed beside every exported model's
OUTPUT_MARGIN = 1.25  # the logits' int8 range: the observed range on the check clips, widened by this factor
TFLM_CHECK_CLIPS = 200  # TFLM runs portable reference kernels (~0.1 s per model1 clip on a PC): a subset
# runtimes whose int8 kernels requantise with TFLite's fixed-point multiplier (two roundings)
FIXED_POINT_RUNTIMES = frozenset({"tflm", "litert-reference"})


@dataclass
class RuntimeCheck:
    runtime: str
    clips: int
    agreement: float  # top-1 agreement with the QAT model in the runtime's own arithmetic (`arithmetic`)
    max_logit_difference: float
    accuracy: float | None = None  # scene accuracy on the checked clips, when their labels are known ...
    reference_accuracy: float | None = None  # ... and the QAT model's on the same clips
    arithmetic: str = "qat"  # "qat": the QAT simulation's rounding; "tflite": TFLite's fixed-point rules
    qat_rounding_agreement: float | None = None  # fixed-point runtimes: agreement with the QAT simulation

    def format(self) -> str:
        reference = "the QAT model" + (" in TFLite's fixed-point arithmetic" if self.arithmetic == "tflite" else "")
        line = (f"  check in {self.runtime} on {self.clips} real clips: top-1 agreement with {reference} "
                f"{self.agreement:.2%}, max |logit difference| {self.max_logit_difference:.4g}")
        if self.qat_rounding_agreement is not None:
            line += f" (with the QAT simulation's rounding {self.qat_rounding_agreement:.2%})"
        if self.accuracy is not None:
            line += f"; accuracy {self.accuracy:.2%} (QAT model on the same clips {self.reference_accuracy:.2%})"
        return line


@dataclass
class TfliteExportReport:
    path: str
    model_name: str
    io: str
    output_scale: float
    output_zero_point: int
    checks: list[RuntimeCheck] = field(default_factory=list)
    memory: MemoryReport | None = None
    calibrated_clips: int = 0

    def to_dict(self) -> dict:
        return {"path": self.path, "model_name": self.model_name, "io": self.io,
                "output_scale": self.output_scale, "output_zero_point": self.output_zero_point,
                "checks": [vars(c) for c in self.checks], "calibrated_clips": self.calibrated_clips,
                "memory": self.memory.to_dict() if self.memory else None}

    def format(self) -> str:
        lines = [f"exported {self.model_name} (TFLite, int8 weights / activations / int32 biases, "
                 f"{IO_MODES[self.io][0]} input, {IO_MODES[self.io][1]} logits) -> {self.path}"]
        lines += [c.format() for c in self.checks]
        if IO_MODES[self.io][1] == "int8":
            lines.append(f"  logits int8 grid: scale {self.output_scale:.4g}, zero point {self.output_zero_point}")
        if self.calibrated_clips:
            lines.append(f"  post-training quantisation: observers calibrated on {self.calibrated_clips} clips")
        if self.memory is not None:
            lines.append(self.memory.format())
        return "\n".join(lines)


def logits_grid(logits: np.ndarray, margin: float = OUTPUT_MARGIN) -> tuple[float, int]:
    """An int8 (scale, zero point) covering the observed logits (and 0), widened by `margin`."""
    low, high = min(float(logits.min()), 0.0) * margin, max(float(logits.max()), 0.0) * margin
    scale = max(high - low, 1e-6) / 255.0
    zero = int(np.clip(np.rint(-128 - low / scale), -128, 127))
    return scale, zero


def tflite_bytes(network: torch.nn.Module, shape: tuple[int, ...], recipe: InputRecipe, io: str,
                 grid: tuple[float, int]) -> bytes:
    """The .tflite file of the int8 `network` (a QAT or calibrated model) for inputs of `shape`
    (batch 1), with `recipe` in its metadata and `grid` as the logits' int8 (scale, zero point)."""
    model = to_onnx(network, shape, quantized=True, compact=True, runtime_layout=False)
    absorb_input_transpose(model)  # the network reads (mel, time) as stored: no transpose at its input
    graph = convert(model, io, lambda name: grid)
    graph.metadata[METADATA_KEY] = json.dumps(metadata_for(recipe)).encode()
    graph.description = f"dsmn {recipe.model_name} int8"
    return serialize(graph)


def registry_tflite(name: str, path: str | Path, io: str = DEFAULT_IO) -> Path:
    """An int8 .tflite file of the registered model `name`, randomly initialised with its observers
    calibrated on random inputs: for memory and speed figures, which do not depend on the weights."""
    from dsmn import models
    from dsmn.features import FrontEndConfig
    from dsmn.quantization import calibrate, prepare_qat

    torch.manual_seed(0)
    entry = models.entry(name)
    qat = prepare_qat(models.create(name).eval())
    calibrate(qat, [torch.randn(32, *entry.input_shape)], momentum=1.0)
    qat.eval()
    with torch.no_grad():
        grid = logits_grid(qat(torch.randn(32, *entry.input_shape)).numpy())
    recipe = InputRecipe(FrontEndConfig(**entry.frontend), entry.deltas, model_name=name, precision="int8")
    path = Path(path)
    path.write_bytes(tflite_bytes(qat, (1, *entry.input_shape), recipe, io, grid))
    return path


@functools.lru_cache(maxsize=1)
def reference_memory() -> MemoryReport:
    """Flash, TFLM arena and peak activations of the DCASE 2022 baseline, for comparison."""
    with tempfile.TemporaryDirectory() as folder:
        return memory_report(registry_tflite(REFERENCE_MODEL, Path(folder) / f"{REFERENCE_MODEL}.tflite"))


def with_reference(memory: MemoryReport) -> MemoryReport:
    memory.reference, memory.reference_name = reference_memory(), f"{REFERENCE_MODEL} (random weights)"
    return memory


def check(path: Path, runtime: str, network: torch.nn.Module, inputs: Sequence[torch.Tensor],
          limit: int | None = None, labels: np.ndarray | None = None,
          fixed_point: TfliteArithmetic | None = None) -> RuntimeCheck:
    """Top-1 agreement and max |logit difference| of the file in `runtime` against the QAT `network`
    (against `fixed_point`, the same network in TFLite's fixed-point arithmetic, for the runtimes that
    compute that way, with the agreement with `network` reported beside it), and both one's scene
    accuracy where the inputs' `labels` are given."""
    classifier = TfliteClassifier(path, runtime)
    fixed_point = fixed_point if runtime in FIXED_POINT_RUNTIMES else None
    agree = count = right = reference_right = qat_agree = 0
    worst = 0.0
    network.eval()
    for x in inputs:
        if limit is not None and count >= limit:
            break
        if limit is not None:
            x = x[: limit - count]
        with torch.no_grad():
            qat = network(x).numpy()
        reference = qat if fixed_point is None else fixed_point(x).numpy()
        logits = classifier.logits(x.numpy())
        got, expected = split_logits(logits)[0].argmax(1), split_logits(reference)[0].argmax(1)
        qat_top = split_logits(qat)[0].argmax(1)
        agree += int((got == expected).sum())
        qat_agree += int((got == qat_top).sum())
        if labels is not None:
            truth = labels[count : count + len(x)]
            right, reference_right = right + int((got == truth).sum()), reference_right + int((qat_top == truth).sum())
        count += len(x)
        worst = max(worst, float(np.abs(logits - reference).max()))
    result = RuntimeCheck(runtime, count, agree / max(count, 1), worst)
    if fixed_point is not None:
        result.arithmetic, result.qat_rounding_agreement = "tflite", qat_agree / max(count, 1)
    if labels is not None:
        result.accuracy, result.reference_accuracy = right / max(count, 1), reference_right / max(count, 1)
    return result


def export_tflite(
    trained: TrainedModel,
    out: str | Path,
    check_inputs: Sequence[torch.Tensor],
    io: str = DEFAULT_IO,
    calibration: Sequence[torch.Tensor] | None = None,
    min_agreement: float = MIN_AGREEMENT,
    tflm_clips: int = TFLM_CHECK_CLIPS,
    check_labels: np.ndarray | None = None,
) -> TfliteExportReport:
    """Write `out` after checking it in LiteRT (all clips) and TFLM (`tflm_clips`); raises
    ExportCheckError and writes nothing if agreement is below `min_agreement`. `check_labels` (the
    scene of each check input) adds both models' accuracy to the report."""
    if io not in IO_MODES:
        raise ValueError(f"io must be one of {', '.join(IO_MODES)}, got {io!r}")
    if not check_inputs:
        raise ValueError("a TFLite export needs real clips (--data): they set the logits' int8 range and check it")
    out = Path(out)
    network, calibrated = reference_network(trained, "int8", calibration)
    with torch.no_grad():
        logits = np.concatenate([network(x).numpy() for x in check_inputs])
    scale, zero = logits_grid(logits)
    recipe = InputRecipe(trained.frontend, trained.deltas, trained.delta_width, model_name=trained.model_name,
                         precision="int8")
    data = tflite_bytes(network, input_shape(trained, 1), recipe, io, (scale, zero))
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_bytes(data)
    try:
        report = TfliteExportReport(str(out), trained.model_name, io, scale, zero, calibrated_clips=calibrated)
        fixed_point = TfliteArithmetic(network, check_inputs[0][:1])
        report.checks = [check(temporary, "litert", network, check_inputs, labels=check_labels),
                         check(temporary, "tflm", network, check_inputs, tflm_clips, check_labels, fixed_point)]
        failed = [c for c in report.checks if c.agreement < min_agreement]
        report.memory = with_reference(memory_report(temporary))
        report.memory.path = str(out)
        if failed:
            problems = "; ".join(f"top-1 agreement in {c.runtime} is {c.agreement:.2%} < {min_agreement:.0%}"
                                 for c in failed)
            raise ExportCheckError(f"{out}: {problems} (nothing written)\n{report.format()}")
        temporary.replace(out)
    finally:
        temporary.unlink(missing_ok=True)
    return report
