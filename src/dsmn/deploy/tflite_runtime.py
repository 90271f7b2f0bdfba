"""Running .tflite files in TensorFlow Lite Micro and LiteRT, and what they need in memory.

Both runtimes come from the optional `edge` extra (`pip install "dsmn[edge]"`): `tflite-micro`
(the TFLM interpreter and kernels that run on a microcontroller, built for the host) and
`ai-edge-litert` (LiteRT, formerly TensorFlow Lite). The classifiers take the same NCHW float
features as the ONNX one; the channels-last layout and the int8 input/output grids are applied here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsmn.deploy.metadata import InputRecipe, read_recipe
from dsmn.deploy.tflite_format import Graph, parse

# litert-reference: LiteRT with TFLite's reference kernels, the integer arithmetic TFLM and CMSIS-NN
# share (same requantisation rounding), about 100x faster than TFLM on a PC; plain litert uses
# XNNPACK, which rounds like the QAT simulation and ONNX Runtime.
RUNTIMES = ("tflm", "litert", "litert-reference")
METADATA_KEY = "dsmn"
EDGE_HINT = 'the TFLite runtimes are optional: pip install "dsmn[edge]"'
# TFLM's CMSIS-NN build has optimised Cortex-M kernels for these operators; the others run TFLM's
# portable reference kernels (still int8, on any MCU).
CMSIS_NN_OPERATORS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MUL", "AVERAGE_POOL_2D",
                                "MAX_POOL_2D", "SOFTMAX", "TRANSPOSE", "PAD"})
# operators TFLM provides for int8 (what the writer emits; all are in TFLM's op resolver)
TFLM_OPERATORS = frozenset({"ADD", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "FULLY_CONNECTED",
                            "LOGISTIC", "MAX_POOL_2D", "MUL", "RELU", "RESHAPE", "PAD", "TRANSPOSE", "MEAN",
                            "STRIDED_SLICE", "REDUCE_MAX", "QUANTIZE"})


def read_model(path: str | Path) -> tuple[Graph, InputRecipe]:
    """The graph of a dsmn .tflite file and the input recipe stored in its metadata."""
    try:
        graph = parse(Path(path).read_bytes())
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if METADATA_KEY not in graph.metadata:
        raise ValueError(f"{path}: no dsmn metadata in this .tflite file; export it with `dsmn export --format tflite`")
    return graph, read_recipe(json.loads(graph.metadata[METADATA_KEY].decode()))


def _tflm():
    try:
        from tflite_micro import runtime
    except ImportError as error:
        raise ImportError(EDGE_HINT) from error
    return runtime


def _litert():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:
        raise ImportError(EDGE_HINT) from error
    return Interpreter


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Collect what C code writes to file descriptor 2 (TFLM reports allocations there)."""
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())


def tflm_arena_bytes(path: str | Path) -> int:
    """The tensor arena TFLM actually uses for this model (its recording allocator's total)."""
    runtime = _tflm()
    interpreter = runtime.Interpreter.from_file(
        str(path), arena_size=None, intrepreter_config=runtime.InterpreterConfig.kAllocationRecording)
    with _captured_stderr() as lines:
        interpreter.print_allocations()
    for line in lines:
        found = re.search(r"Arena allocation total (\d+) bytes", line)
        if found:
            return int(found.group(1))
    raise RuntimeError(f"{path}: TFLM printed no arena total")


class TfliteClassifier:
    """A dsmn .tflite model in TFLM or LiteRT: `logits(features)` on NCHW float features, one clip per invoke."""

    def __init__(self, path: str | Path, runtime: str = "tflm") -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.path = Path(path)
        self.graph, self.recipe = read_model(self.path)
        self.runtime = runtime
        self.input = self.graph.tensors[self.graph.inputs[0]]
        self.output = self.graph.tensors[self.graph.outputs[0]]
        if runtime == "tflm":
            tflm = _tflm()
            self._tflm = tflm.Interpreter.from_file(str(self.path))
        else:
            kernels = {}
            if runtime == "litert-reference":
                from ai_edge_litert.interpreter import OpResolverType

                kernels = {"experimental_op_resolver_type": OpResolverType.BUILTIN_REF}
            self._litert = _litert()(model_path=str(self.path), num_threads=1, **kernels)
            self._litert.allocate_tensors()
            self._in = self._litert.get_input_details()[0]["index"]
            self._out = self._litert.get_output_details()[0]["index"]

    def quantize_input(self, clip: np.ndarray) -> np.ndarray:
        """One clip (C, H, W) float as the model's input tensor (1, H, W, C), int8 or float."""
        x = np.ascontiguousarray(np.asarray(clip, np.float32).transpose(1, 2, 0)[None])
        if self.input.dtype == "int8":
            x = np.clip(np.rint(x / self.input.scale[0]) + self.input.zero_point[0], -128, 127).astype(np.int8)
        return x

    def dequantize_output(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y).reshape(1, -1)
        if self.output.dtype == "int8":
            y = (y.astype(np.float32) - self.output.zero_point[0]) * self.output.scale[0]
        return y.astype(np.float32)

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """Run the raw input tensor (as `quantize_input` makes it); the raw output tensor."""
        if self.runtime == "tflm":
            self._tflm.set_input(x, 0)
            self._tflm.invoke()
            return self._tflm.get_output(0)
        self._litert.set_tensor(self._in, x)
        self._litert.invoke()
        return self._litert.get_tensor(self._out)

    def logits(self, features: np.ndarray) -> np.ndarray:
        out = [self.dequantize_output(self.invoke(self.quantize_input(clip))) for clip in features]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


# ---------------------------------------------------------------- memory report


@dataclass
class LayerMemory:
    index: int
    operator: str
    output: str
    live_bytes: int  # activations alive while this operator runs (its inputs, its outputs, and what waits)


@dataclass
class MemoryReport:
    """Flash and RAM of a .tflite model on a microcontroller."""

    path: str
    flash_bytes: int
    constant_bytes: int
    arena_bytes: int | None
    peak_activation_bytes: int
    peak_layer: str
    layers: list[LayerMemory] = field(default_factory=list)
    operators: dict[str, int] = field(default_factory=dict)
    reference: MemoryReport | None = None  # the same figures for a reference model, printed side by side
    reference_name: str = ""

    def operator_notes(self) -> list[str]:
        notes = []
        for name in sorted(self.operators):
            if name not in TFLM_OPERATORS:
                notes.append(f"{name}: not provided by TFLM")
            elif name not in CMSIS_NN_OPERATORS:
                notes.append(f"{name}: no CMSIS-NN kernel (TFLM reference kernel)")
        return notes

    def to_dict(self) -> dict:
        return {"path": self.path, "flash_bytes": self.flash_bytes, "constant_bytes": self.constant_bytes,
                "tflm_arena_bytes": self.arena_bytes, "peak_activation_bytes": self.peak_activation_bytes,
                "peak_layer": self.peak_layer, "operators": self.operators, "operator_notes": self.operator_notes(),
                "layers": [vars(layer) for layer in self.layers],
                "reference": None if self.reference is None else {
                    "model": self.reference_name, "flash_bytes": self.reference.flash_bytes,
                    "tflm_arena_bytes": self.reference.arena_bytes,
                    "peak_activation_bytes": self.reference.peak_activation_bytes}}

    def format(self, with_layers: bool = False) -> str:
        arena = f"{self.arena_bytes:,} bytes" if self.arena_bytes is not None else "not measured (tflite-micro missing)"
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.operators.items()))
        lines = [
            f"  flash: {self.flash_bytes:,} bytes (the .tflite file; {self.constant_bytes:,} of them weights, "
            "biases and constants)",
            f"  TFLM tensor arena: {arena} (measured with TFLM's recording allocator)",
            f"  peak activation memory: {self.peak_activation_bytes:,} bytes at {self.peak_layer} "
            "(tensor-lifetime plan, activations only)",
            f"  operators: {ops}",
        ]
        lines += [f"    note: {n}" for n in self.operator_notes()]
        if self.reference is not None:
            lines += self._side_by_side()
        if with_layers:
            lines.append(f"  {'#':>4} {'operator':<18} {'live activation bytes':>22}  output")
            lines += [f"  {m.index:>4} {m.operator:<18} {m.live_bytes:>22,}  {m.output}" for m in self.layers]
        return "\n".join(lines)


    def _side_by_side(self) -> list[str]:
        ref = self.reference
        width = max(len(self.reference_name), 10)
        rows = [("flash", self.flash_bytes, ref.flash_bytes), ("TFLM arena", self.arena_bytes, ref.arena_bytes),
                ("peak activations", self.peak_activation_bytes, ref.peak_activation_bytes)]
        lines = [f"  {'bytes':<18} {'this model':>12} {self.reference_name:>{width}}"]
        for label, mine, theirs in rows:
            lines.append(f"  {label:<18} {_bytes(mine):>12} {_bytes(theirs):>{width}}")
        return lines


def _bytes(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def activation_plan(graph: Graph) -> list[LayerMemory]:
    """Bytes of activations alive during each operator: a tensor lives from the operator that writes
    it (or the start, for the input) to the last operator that reads it (or the end, for the output)."""
    constant = {i for i, t in enumerate(graph.tensors) if t.data is not None}
    first: dict[int, int] = {i: 0 for i in graph.inputs}
    last: dict[int, int] = {i: len(graph.operators) - 1 for i in graph.outputs}
    for step, op in enumerate(graph.operators):
        for t in op.outputs:
            first.setdefault(t, step)
        for t in op.inputs:
            if t >= 0 and t not in constant:
                last[t] = max(last.get(t, step), step)
    layers = []
    for step, op in enumerate(graph.operators):
        live = sum(graph.tensors[t].nbytes for t in first if first[t] <= step <= last.get(t, first[t]))
        layers.append(LayerMemory(step, op.kind, graph.tensors[op.outputs[0]].name, live))
    return layers


def memory_report(path: str | Path, measure_arena: bool = True) -> MemoryReport:
    path = Path(path)
    graph = parse(path.read_bytes())
    layers = activation_plan(graph)
    peak = max(layers, key=lambda m: m.live_bytes)
    arena = None
    if measure_arena:
        with contextlib.suppress(ImportError):
            arena = tflm_arena_bytes(path)
    operators: dict[str, int] = {}
    for op in graph.operators:
        operators[op.kind] = operators.get(op.kind, 0) + 1
    constants = sum(t.nbytes for t in graph.tensors if t.data is not None)
    return MemoryReport(str(path), path.stat().st_size, constants, arena, peak.live_bytes,
                        f"operator {peak.index} ({peak.operator} -> {peak.output})", layers, operators)
