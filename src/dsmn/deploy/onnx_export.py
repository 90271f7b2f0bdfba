"""Export a trained model to ONNX (int8 QDQ or folded fp32), check it on real clips, report its cost.

int8: the QAT network's eval-mode computation (BatchNorm folded, int8 per-channel weights, uint8
activations) as QuantizeLinear / DequantizeLinear around every operator; ONNX Runtime fuses them into
QLinearConv, QLinearAdd, ... fp32: the same folded graph without quantisation. The front end is not
in the model; the file's metadata records how to build the input (dsmn.deploy.metadata).
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from dsmn import complexity
from dsmn.deploy.layout import absorb_input_transpose, expand_channel_gates
from dsmn.deploy.metadata import InputRecipe, write_metadata
from dsmn.deploy.qdq import quantize_initializers
from dsmn.deploy.runtime import FLOAT_COMPUTE_OPERATORS, INT8_OPERATORS, create_session, optimized_operators
from dsmn.deploy.torch_model import deployed_module
from dsmn.deploy.trained import TrainedModel
from dsmn.files import atomic_path
from dsmn.models import split_logits, unwrap
from dsmn.quantization import calibrate, is_qat, prepare_qat

log = logging.getLogger(__name__)

PRECISIONS = ("int8", "fp32")
OPSET = 17
MIN_AGREEMENT = 0.99


class ExportCheckError(RuntimeError):
    """The exported model does not compute what the torch model computes (or not in int8)."""


@dataclass
class ParameterMemory:
    """Parameters stored in the ONNX file, by storage type. DCASE counts weights and biases, not the
    quantisation scales / zero points (reported apart)."""

    int8_weights: int = 0
    int32_biases: int = 0
    float_parameters: int = 0
    quantization_constants: int = 0

    @property
    def parameters(self) -> int:
        return self.int8_weights + self.int32_biases + self.float_parameters

    @property
    def bytes(self) -> int:
        return self.int8_weights + 4 * self.int32_biases + 4 * self.float_parameters

    def to_dict(self) -> dict:
        return {**asdict(self), "parameters": self.parameters, "bytes": self.bytes}


@dataclass
class ExportReport:
    path: str
    precision: str
    model_name: str
    memory: ParameterMemory
    macs: int
    float_model_params: int
    dcase_param_bytes: int
    clips_checked: int = 0
    agreement: float | None = None
    max_logit_difference: float | None = None
    executed_operators: dict[str, int] = field(default_factory=dict)
    int8_operators: int = 0
    float_compute_operators: dict[str, int] = field(default_factory=dict)
    kept_float: list[str] = field(default_factory=list)
    calibrated_clips: int = 0  # > 0: a float checkpoint quantised after training (no QAT)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["memory"] = self.memory.to_dict()
        # short names: the DCASE count, and the check's result
        out.update(params=self.float_model_params, param_bytes=self.dcase_param_bytes,
                   stored_param_bytes=self.memory.bytes, max_logit_diff=self.max_logit_difference)
        return out

    def format(self) -> str:
        m = self.memory
        lines = [
            f"exported {self.model_name} ({self.precision}) -> {self.path}",
            f"  DCASE complexity (dsmn.complexity on the model definition): {self.float_model_params:,} parameters"
            f" = {self.dcase_param_bytes:,} bytes at {self.precision}, {self.macs:,} MACs per 1-s clip",
            f"  stored in the file: {m.bytes:,} bytes = {m.int8_weights:,} int8 weights x 1 B"
            f" + {m.int32_biases:,} int32 biases x 4 B + {m.float_parameters:,} float32 parameters x 4 B"
            f"  ({m.quantization_constants:,} quantisation scales/zero points not counted; BatchNorm folded;"
            " merged/dense kernels store their structural zeros)",
        ]
        if self.clips_checked:
            lines.append(
                f"  check on {self.clips_checked} real clips: top-1 agreement with torch {self.agreement:.2%},"
                f" max |logit difference| {self.max_logit_difference:.4g}"
            )
        else:
            lines.append("  not checked on real clips (no data given)")
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.executed_operators.items()) if k in INT8_OPERATORS)
        lines.append(f"  ONNX Runtime int8 kernels: {self.int8_operators} ({ops or 'none'})")
        if self.float_compute_operators:
            floats = ", ".join(f"{k} {v}" for k, v in sorted(self.float_compute_operators.items()))
            lines.append(f"  float operators left: {floats}")
        if self.kept_float:
            lines.append(f"  kept float by QAT: {', '.join(self.kept_float)}")
        if self.calibrated_clips:
            lines.append(f"  post-training quantisation: observers calibrated on {self.calibrated_clips} clips")
        return "\n".join(lines)


def input_shape(trained: TrainedModel, batch: int = 1) -> tuple[int, int, int, int]:
    """Network input of `batch` 1-s clips."""
    frontend = trained.frontend
    return (batch, 2 if trained.deltas else 1, frontend.n_mels, frontend.n_frames(frontend.sample_rate))


def reference_network(
    trained: TrainedModel, precision: str, calibration: Iterable[torch.Tensor] | None = None
) -> tuple[nn.Module, int]:
    """The torch network the export must agree with (and the clips used to calibrate it, if any)."""
    if precision == "fp32":
        return trained.float_model.eval(), 0
    if trained.is_qat:
        return trained.model.eval(), 0
    if calibration is None:
        raise ValueError("int8 export of a checkpoint trained without QAT needs data to calibrate on (--data)")
    warnings.warn("checkpoint was trained without QAT: quantising after training (calibrated observers)",
                  stacklevel=2)
    qat = prepare_qat(trained.float_model)
    seen = calibrate(qat, calibration, momentum=0.1)
    return qat.eval(), seen


def to_onnx(
    network: nn.Module, shape: tuple[int, ...], quantized: bool, compact: bool = False, runtime_layout: bool = True
) -> onnx.ModelProto:
    """The deployed form of `network` as an ONNX model with a dynamic batch dimension.

    `compact`: grouped 1x1 convolutions keep their grouped weights (fewest stored bytes); otherwise
    they are stored dense (block-diagonal, zeros included), which ONNX Runtime runs much faster.
    `runtime_layout`: apply the value-preserving rewrites of `dsmn.deploy.layout` (off only to measure them).
    """
    example = torch.randn(shape)
    deployed = deployed_module(network, quantized, example, dense_pointwise=not compact)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter warns about itself and about traced shapes
        torch.onnx.export(
            deployed, (example,), buffer, input_names=["features"], output_names=["logits"], opset_version=OPSET,
            dynamic_axes={"features": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
        )
    model = onnx.load_from_string(buffer.getvalue())
    if quantized:
        quantize_initializers(model)
    if runtime_layout:
        absorb_input_transpose(model)
        if quantized:
            expand_channel_gates(model)
    return model


def parameter_memory(model: onnx.ModelProto) -> ParameterMemory:
    """Count the stored parameters by how they are stored (see ParameterMemory)."""
    memory = ParameterMemory()
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for position, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, position))
    for initializer in model.graph.initializer:
        size = int(np.prod(initializer.dims)) if initializer.dims else 1
        uses = consumers.get(initializer.name, [])
        if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") and p > 0 for n, p in uses):
            memory.quantization_constants += size
        elif any(n.op_type == "DequantizeLinear" and p == 0 for n, p in uses):
            if initializer.data_type == onnx.TensorProto.INT8:
                memory.int8_weights += size
            else:
                memory.int32_biases += size
        elif initializer.data_type == onnx.TensorProto.FLOAT and any(
            n.op_type in FLOAT_COMPUTE_OPERATORS for n, _ in uses
        ):
            memory.float_parameters += size
    return memory


def compare(path: str | Path, network: nn.Module, inputs: Iterable[torch.Tensor]) -> tuple[int, float, float]:
    """(clips, top-1 scene agreement, max |logit difference|) of the ONNX file against `network`."""
    session = create_session(path)
    name = session.get_inputs()[0].name
    agree, count, worst = 0, 0, 0.0
    network.eval()
    for x in inputs:
        with torch.no_grad():
            expected = network(x).numpy()
        got = session.run(None, {name: x.numpy().astype(np.float32)})[0]
        agree += int((split_logits(got)[0].argmax(1) == split_logits(expected)[0].argmax(1)).sum())
        count += len(x)
        worst = max(worst, float(np.abs(got - expected).max()))
    return count, agree / max(count, 1), worst


def export_onnx(
    trained: TrainedModel,
    out: str | Path,
    precision: str = "int8",
    check_inputs: Iterable[torch.Tensor] | None = None,
    calibration: Iterable[torch.Tensor] | None = None,
    min_agreement: float = MIN_AGREEMENT,
    compact: bool = False,
) -> ExportReport:
    """Write `out` and report; raises ExportCheckError (and writes nothing) if the check fails.

    The model is written and checked under a temporary name beside `out` and renamed to `out` only
    when every check passed: a killed or failed export never leaves an unchecked model at `out`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    out = Path(out)
    network, calibrated = reference_network(trained, precision, calibration)
    model = to_onnx(network, input_shape(trained, 2), precision == "int8", compact)
    recipe = InputRecipe(trained.frontend, trained.deltas, trained.delta_width, model_name=trained.model_name,
                         precision=precision, checkpoint=json.dumps(trained.label))  # 1-s input: long clips by windows
    write_metadata(model, recipe)
    onnx.checker.check_model(model)
    with atomic_path(out) as staged:  # the file appears only once the check has passed
        onnx.save(model, str(staged))
        try:
            report = _check(trained, model, network, staged, precision, calibrated, check_inputs, min_agreement)
        except ExportCheckError as error:
            raise ExportCheckError(f"{out} not written: {error}") from None
        report.path = str(out)
    return report


def _check(trained: TrainedModel, model: onnx.ModelProto, network: nn.Module, out: Path, precision: str,
           calibrated: int, check_inputs: Iterable[torch.Tensor] | None, min_agreement: float) -> ExportReport:
    """Measure the written model and compare it with the torch network; ExportCheckError on a problem."""

    float_model = trained.float_model
    measured = complexity.measure(float_model, dtype="int8" if precision == "int8" else "fp32",
                                  input_shape=input_shape(trained, 1))
    executed = optimized_operators(out)
    report = ExportReport(
        path=str(out), precision=precision, model_name=trained.model_name, memory=parameter_memory(model),
        macs=measured.macs, float_model_params=measured.params, dcase_param_bytes=measured.param_bytes,
        executed_operators=dict(executed),
        int8_operators=sum(v for k, v in executed.items() if k in INT8_OPERATORS),
        float_compute_operators={k: v for k, v in executed.items() if k in FLOAT_COMPUTE_OPERATORS},
        kept_float=list(getattr(unwrap(network), "kept_float", []) if is_qat(network) else []),
        calibrated_clips=calibrated,
    )
    problems = []
    if precision == "int8" and report.int8_operators == 0:
        problems.append("ONNX Runtime runs no int8 kernel on this graph")
    if check_inputs is not None:
        report.clips_checked, report.agreement, report.max_logit_difference = compare(out, network, check_inputs)
        if report.agreement < min_agreement:
            problems.append(f"top-1 agreement with the torch model is {report.agreement:.2%} < {min_agreement:.0%}")
    if problems:
        raise ExportCheckError("; ".join(problems) + "\n" + report.format())
    return report
