"""The TFLite flatbuffer: a small in-memory graph, its writer and a reader (no TensorFlow needed).

Only the parts of the TFLite schema (version 3, file identifier "TFL3") that an int8 convolutional
network needs are written: Model, SubGraph, Tensor, Buffer, Operator, OperatorCode,
QuantizationParameters, Metadata and the builtin options of the operators in `OPERATORS`.
Field ids follow the schema's declaration order (a table field's vtable slot is 4 + 2 * id).
Constant data is aligned to 16 bytes, so a microcontroller may read int32 biases in place.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import flatbuffers
import numpy as np
from flatbuffers import number_types as N
from flatbuffers.table import Table

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
DATA_ALIGNMENT = 16

TENSOR_TYPES = {"float32": 0, "int32": 2, "int8": 9, "int64": 4, "uint8": 3}
TYPE_NAMES = {v: k for k, v in TENSOR_TYPES.items()}
PADDING = {"SAME": 0, "VALID": 1}
ACTIVATIONS = {"NONE": 0, "RELU": 1}


@dataclass(frozen=True)
class OperatorSpec:
    """Builtin code, the version written, and the builtin options table: (union type, field count,
    {option name: (field id, scalar kind)})."""

    code: int
    version: int
    options_type: int = 0
    options_fields: int = 0
    options: dict[str, tuple[int, str]] = field(default_factory=dict)


_CONV = {"padding": (0, "int8"), "stride_w": (1, "int32"), "stride_h": (2, "int32"), "activation": (3, "int8"),
         "dilation_w": (4, "int32"), "dilation_h": (5, "int32")}
_DEPTHWISE = {"padding": (0, "int8"), "stride_w": (1, "int32"), "stride_h": (2, "int32"),
              "depth_multiplier": (3, "int32"), "activation": (4, "int8"), "dilation_w": (5, "int32"),
              "dilation_h": (6, "int32")}
_POOL = {"padding": (0, "int8"), "stride_w": (1, "int32"), "stride_h": (2, "int32"), "filter_w": (3, "int32"),
         "filter_h": (4, "int32"), "activation": (5, "int8")}
OPERATORS: dict[str, OperatorSpec] = {
    "ADD": OperatorSpec(0, 2, 11, 2, {"activation": (0, "int8")}),
    "CONCATENATION": OperatorSpec(2, 2, 10, 2, {"axis": (0, "int32"), "activation": (1, "int8")}),
    "CONV_2D": OperatorSpec(3, 3, 1, 7, _CONV),
    "DEPTHWISE_CONV_2D": OperatorSpec(4, 3, 2, 7, _DEPTHWISE),
    "DEQUANTIZE": OperatorSpec(6, 2, 38, 0),
    "FULLY_CONNECTED": OperatorSpec(9, 4, 8, 6, {"activation": (0, "int8"), "keep_num_dims": (2, "bool")}),
    "LOGISTIC": OperatorSpec(14, 2),
    "MAX_POOL_2D": OperatorSpec(17, 2, 5, 6, _POOL),
    "MUL": OperatorSpec(18, 2, 21, 1, {"activation": (0, "int8")}),
    "RELU": OperatorSpec(19, 2),
    "RESHAPE": OperatorSpec(22, 1),
    "PAD": OperatorSpec(34, 2, 22, 0),
    "TRANSPOSE": OperatorSpec(39, 2, 26, 0),
    "MEAN": OperatorSpec(40, 2, 27, 1, {"keep_dims": (0, "bool")}),
    "STRIDED_SLICE": OperatorSpec(45, 2, 32, 6, {"begin_mask": (0, "int32"), "end_mask": (1, "int32")}),
    "REDUCE_MAX": OperatorSpec(82, 2, 27, 1, {"keep_dims": (0, "bool")}),
    "QUANTIZE": OperatorSpec(114, 2, 89, 0),
}
OPERATOR_NAMES = {spec.code: name for name, spec in OPERATORS.items()}


@dataclass
class Tensor:
    """A tensor: constant when `data` is set. `scale` / `zero_point` per tensor (1 value) or per
    channel along `axis`."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    data: np.ndarray | None = None
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    axis: int = 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass
class Operator:
    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    """One subgraph with its tensors, operators in execution order, inputs, outputs and metadata."""

    tensors: list[Tensor] = field(default_factory=list)
    operators: list[Operator] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    metadata: dict[str, bytes] = field(default_factory=dict)
    description: str = "dsmn"

    def add_tensor(self, tensor: Tensor) -> int:
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def add_operator(self, kind: str, inputs: list[int], outputs: list[int], **options: Any) -> None:
        if kind not in OPERATORS:
            raise ValueError(f"operator {kind} is not supported by the writer")
        self.operators.append(Operator(kind, list(inputs), list(outputs), options))


# ---------------------------------------------------------------- writing


class _Vectors:
    """Numeric vectors written once and shared by every table that holds the same values (flatbuffers
    allow it): the all-zero zero-point vectors of per-channel quantisation would otherwise cost 8 bytes
    per channel per tensor."""

    def __init__(self, builder: flatbuffers.Builder) -> None:
        self.builder = builder
        self.written: dict[tuple[str, bytes], int] = {}

    def __call__(self, values, dtype: str) -> int:
        array = np.asarray(values, dtype=dtype).reshape(-1)
        key = (dtype, array.tobytes())
        if key not in self.written:
            self.written[key] = self.builder.CreateNumpyVector(array)
        return self.written[key]


def _offsets(builder: flatbuffers.Builder, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _aligned_bytes(builder: flatbuffers.Builder, payload: bytes) -> int:
    builder.StartVector(1, len(payload), DATA_ALIGNMENT)
    builder.head -= len(payload)
    builder.Bytes[builder.head : builder.head + len(payload)] = payload
    builder.vectorNumElems = len(payload)
    return builder.EndVector()


def _table(builder: flatbuffers.Builder, n_fields: int, slots: list[tuple[int, str, Any]]) -> int:
    """A table from (field id, kind, value) slots; kind: int8/int32/uint32/bool/uint8/offset."""
    builder.StartObject(n_fields)
    prepend = {"int8": builder.PrependInt8Slot, "int32": builder.PrependInt32Slot,
               "uint32": builder.PrependUint32Slot, "bool": builder.PrependBoolSlot,
               "uint8": builder.PrependUint8Slot, "offset": builder.PrependUOffsetTRelativeSlot}
    for slot, kind, value in slots:
        if value is not None:
            prepend[kind](slot, value, 0)
    return builder.EndObject()


def _options(builder: flatbuffers.Builder, spec: OperatorSpec, options: dict[str, Any]) -> int:
    slots = []
    for name, value in options.items():
        if name not in spec.options:
            raise ValueError(f"unknown option {name!r}")
        slot, kind = spec.options[name]
        if name in ("padding",):
            value = PADDING[value]
        elif name == "activation":
            value = ACTIVATIONS[value]
        slots.append((slot, kind, value))
    return _table(builder, spec.options_fields, slots)


def serialize(graph: Graph) -> bytes:
    """The .tflite file of `graph`."""
    builder = flatbuffers.Builder(1024)
    builder.ForceDefaults(True)
    _vector = _Vectors(builder)
    # buffer 0 is the empty sentinel; each constant tensor gets its own buffer
    payloads: list[bytes | None] = [None]
    buffer_of: list[int] = []
    for tensor in graph.tensors:
        if tensor.data is None:
            buffer_of.append(0)
        else:
            payloads.append(np.ascontiguousarray(tensor.data, dtype=tensor.dtype).astype("<" + np.dtype(
                tensor.dtype).str[1:], copy=False).tobytes())
            buffer_of.append(len(payloads) - 1)
    metadata_buffers = {}
    for name, payload in graph.metadata.items():
        payloads.append(payload)
        metadata_buffers[name] = len(payloads) - 1
    data_offsets = [None if p is None else _aligned_bytes(builder, p) for p in payloads]
    buffers = [_table(builder, 3, [] if d is None else [(0, "offset", d)]) for d in data_offsets]

    tensors = []
    for tensor, buffer in zip(graph.tensors, buffer_of, strict=True):
        quantization = None
        if tensor.scale is not None:
            scale = _vector(tensor.scale, "<f4")
            zero = _vector(tensor.zero_point if tensor.zero_point is not None
                           else np.zeros(np.size(tensor.scale)), "<i8")
            quantization = _table(builder, 7, [(2, "offset", scale), (3, "offset", zero),
                                               (6, "int32", int(tensor.axis))])
        shape = _vector(tensor.shape, "<i4")
        name = builder.CreateString(tensor.name)
        tensors.append(_table(builder, 11, [(0, "offset", shape), (1, "int8", TENSOR_TYPES[tensor.dtype]),
                                            (2, "uint32", buffer), (3, "offset", name),
                                            (4, "offset", quantization)]))
    kinds = sorted({op.kind for op in graph.operators}, key=lambda k: OPERATORS[k].code)
    operators = []
    for op in graph.operators:
        spec = OPERATORS[op.kind]
        inputs, outputs = _vector(op.inputs, "<i4"), _vector(op.outputs, "<i4")
        options = _options(builder, spec, op.options) if spec.options_type else None
        operators.append(_table(builder, 14, [
            (0, "uint32", kinds.index(op.kind)), (1, "offset", inputs), (2, "offset", outputs),
            (3, "uint8", spec.options_type if options is not None else None), (4, "offset", options),
        ]))
    name = builder.CreateString("main")
    subgraph = _table(builder, 6, [
        (0, "offset", _offsets(builder, tensors)), (1, "offset", _vector(graph.inputs, "<i4")),
        (2, "offset", _vector(graph.outputs, "<i4")), (3, "offset", _offsets(builder, operators)),
        (4, "offset", name),
    ])
    codes = [_table(builder, 4, [(0, "int8", min(OPERATORS[k].code, 127)), (2, "int32", OPERATORS[k].version),
                                 (3, "int32", OPERATORS[k].code)]) for k in kinds]
    metadata = [_table(builder, 2, [(0, "offset", builder.CreateString(n)), (1, "uint32", b)])
                for n, b in metadata_buffers.items()]
    description = builder.CreateString(graph.description)
    model = _table(builder, 10, [
        (0, "uint32", SCHEMA_VERSION), (1, "offset", _offsets(builder, codes)),
        (2, "offset", _offsets(builder, [subgraph])), (3, "offset", description),
        (4, "offset", _offsets(builder, buffers)), (6, "offset", _offsets(builder, metadata) if metadata else None),
    ])
    builder.Finish(model, file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


# ---------------------------------------------------------------- reading


class _Reader:
    """Field access on one table of a flatbuffer (field id -> value)."""

    def __init__(self, buf: bytes | bytearray, pos: int) -> None:
        self.table = Table(buf, pos)

    def _offset(self, slot: int) -> int:
        return self.table.Offset(4 + 2 * slot)

    def scalar(self, slot: int, flags, default: Any = 0) -> Any:
        o = self._offset(slot)
        return self.table.Get(flags, o + self.table.Pos) if o else default

    def string(self, slot: int) -> str:
        o = self._offset(slot)
        return self.table.String(o + self.table.Pos).decode() if o else ""

    def array(self, slot: int, flags) -> np.ndarray:
        o = self._offset(slot)
        return self.table.GetVectorAsNumpy(flags, o) if o else np.zeros(0, dtype=np.dtype(flags.packer_type.format))

    def tables(self, slot: int) -> list[_Reader]:
        o = self._offset(slot)
        if not o:
            return []
        start = self.table.Vector(o)
        return [_Reader(self.table.Bytes, self.table.Indirect(start + 4 * i)) for i in range(self.table.VectorLen(o))]

    def table_at(self, slot: int) -> _Reader | None:
        o = self._offset(slot)
        return _Reader(self.table.Bytes, self.table.Indirect(o + self.table.Pos)) if o else None


def parse(data: bytes) -> Graph:
    """The graph of a .tflite file (first subgraph; operator options are not read back)."""
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ValueError("not a TFLite flatbuffer (file identifier TFL3 missing)")
    try:
        return _parse(data)
    except (IndexError, KeyError, struct.error, TypeError):
        raise ValueError("damaged TFLite flatbuffer (truncated or corrupt)") from None


def _parse(data: bytes) -> Graph:
    model = _Reader(data, N.UOffsetTFlags.py_type(int.from_bytes(data[:4], "little")))
    buffers = [b.array(0, N.Uint8Flags) for b in model.tables(4)]
    codes = []
    for code in model.tables(1):
        builtin = max(code.scalar(3, N.Int32Flags), code.scalar(0, N.Int8Flags))
        codes.append(OPERATOR_NAMES.get(builtin, f"BUILTIN_{builtin}"))
    subgraph = model.tables(2)[0]
    graph = Graph(description=model.string(3))
    for t in subgraph.tables(0):
        dtype = TYPE_NAMES.get(t.scalar(1, N.Int8Flags), "unknown")
        raw = buffers[t.scalar(2, N.Uint32Flags)] if t.scalar(2, N.Uint32Flags) < len(buffers) else None
        quant = t.table_at(4)
        scale = zero = None
        axis = 0
        if quant is not None and len(quant.array(2, N.Float32Flags)):
            scale, zero = quant.array(2, N.Float32Flags), quant.array(3, N.Int64Flags)
            axis = quant.scalar(6, N.Int32Flags)
        data_array = None
        if raw is not None and len(raw) and dtype != "unknown":
            data_array = np.frombuffer(raw.tobytes(), dtype="<" + np.dtype(dtype).str[1:])
        graph.tensors.append(Tensor(t.string(3), tuple(int(s) for s in t.array(0, N.Int32Flags)), dtype,
                                    data_array, scale, zero, axis))
    for op in subgraph.tables(3):
        graph.operators.append(Operator(codes[op.scalar(0, N.Uint32Flags)],
                                        [int(i) for i in op.array(1, N.Int32Flags)],
                                        [int(i) for i in op.array(2, N.Int32Flags)]))
    graph.inputs = [int(i) for i in subgraph.array(1, N.Int32Flags)]
    graph.outputs = [int(i) for i in subgraph.array(2, N.Int32Flags)]
    for entry in model.tables(6):
        graph.metadata[entry.string(0)] = buffers[entry.scalar(1, N.Uint32Flags)].tobytes()
    return graph
