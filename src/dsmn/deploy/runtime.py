"""ONNX Runtime sessions for exported models, and what the optimiser made of the graph."""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from dsmn.deploy.metadata import InputRecipe, read_recipe

# operators that mean "this runs on integer kernels" in an ORT-optimised graph
INT8_OPERATORS = frozenset({
    "QLinearConv", "ConvInteger", "MatMulInteger", "QGemm", "QLinearMatMul", "MatMulIntegerToFloat",
    "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearSigmoid", "QLinearAveragePool",
    "QLinearGlobalAveragePool", "QLinearLeakyRelu", "QLinearSoftmax", "QLinearReduceMean", "NhwcQLinearConv",
})
# float operators that do arithmetic (data movement and Q/DQ themselves are not counted)
FLOAT_COMPUTE_OPERATORS = frozenset({
    "Conv", "Gemm", "MatMul", "Add", "Mul", "Sigmoid", "AveragePool", "GlobalAveragePool", "ReduceMean",
    "BatchNormalization", "Relu", "Concat", "FusedConv", "FusedGemm", "NchwcConv", "Softmax",
})


def session_options(
    threads: int = 2, optimized_path: str | Path | None = None, spinning: bool = False
) -> ort.SessionOptions:
    """Full graph optimisation (int8 fusions, NHWC / NCHWc layouts), `threads` intra-op threads.

    `spinning` off by default: idle ORT threads that spin-wait steal the cores from whatever runs
    next in the process (torch in evaluate / export checks), which costs far more than it saves.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the "optimised model is hardware specific" warning is expected
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


def create_session(
    path: str | Path, threads: int = 2, optimized_path: str | Path | None = None, spinning: bool = False
) -> ort.InferenceSession:
    options = session_options(threads, optimized_path, spinning)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def optimized_operators(path: str | Path, threads: int = 2) -> collections.Counter:
    """Operator counts of the graph ONNX Runtime actually executes (after its optimisations)."""
    with tempfile.TemporaryDirectory() as folder:
        optimized = Path(folder) / "optimized.onnx"
        create_session(path, threads, optimized)
        graph = onnx.load(str(optimized)).graph
    return collections.Counter(node.op_type for node in graph.node)


class OnnxClassifier:
    """An exported dsmn model: `logits(features)` and the input recipe from its metadata."""

    def __init__(self, path: str | Path, threads: int = 2) -> None:
        self.path = Path(path)
        self.session = create_session(self.path, threads)
        self.recipe: InputRecipe = read_recipe(self.session.get_modelmeta().custom_metadata_map)
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, features: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(features, dtype=np.float32)})[0]
