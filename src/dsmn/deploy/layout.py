"""Graph rewrites that let ONNX Runtime's CPU kernels run the exported network at full speed.

Both rewrites leave the computed values unchanged (int8: bit for bit); they only remove work that
ONNX Runtime would otherwise do slowly on this kind of network:

- `absorb_input_transpose`: the DSMN networks swap (mel, time) to (time, mel) on their input. In an
  int8 graph ONNX Runtime merges that swap with its own NCHW -> NHWC reorder into one uint8
  permutation (0, 3, 2, 1), which it can only run element by element (11 % of model1's time).
  Running the network on the un-swapped input instead (every later 2-D kernel, padding, stride,
  dilation and slice axis swapped with it) leaves only the reorder, which ONNX Runtime does fast.
- `expand_channel_gates`: a channel gate (ECA) multiplies a (N, C, H, W) tensor by a (N, C, 1, 1)
  one. In NHWC layout ONNX Runtime's QLinearMul then broadcasts in spans of C elements (8 to 32
  here), 15 % of model1's time; expanding the gate to the full shape first makes it one flat pass.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dsmn.deploy.qdq import Graph, remove_unused

# ops whose output has the layout of their (spatial) input, element by element
_ELEMENTWISE = frozenset({"Relu", "Sigmoid", "Clip", "Add", "Mul", "Sub",
                          "Identity", "LeakyRelu", "HardSigmoid", "HardSwish"})
_WINDOWED = frozenset({"Conv", "MaxPool", "AveragePool"})
_SPATIAL_PAIRS = ("kernel_shape", "strides", "dilations")


class _NotFlippable(Exception):
    pass


def _swap_attributes(node: onnx.NodeProto) -> None:
    for attribute in node.attribute:
        if attribute.name in _SPATIAL_PAIRS and len(attribute.ints) == 2:
            attribute.ints[:] = [attribute.ints[1], attribute.ints[0]]
        elif attribute.name == "pads" and len(attribute.ints) == 4:
            top, left, bottom, right = attribute.ints
            attribute.ints[:] = [left, top, right, bottom]
        elif attribute.name == "auto_pad" and attribute.s not in (b"", b"NOTSET", b"VALID"):
            raise _NotFlippable("asymmetric auto_pad")


def _swapped_axis(axis: int) -> int:
    axis = axis % 4
    return {2: 3, 3: 2}.get(axis, axis)


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for initializer in model.graph.initializer:
        shapes[initializer.name] = list(initializer.dims)
    return shapes


def _broadcasts_over_space(shape: list[int | None] | None) -> bool:
    """True if a tensor of `shape`, broadcast against a spatial (N, C, H, W) one, is constant over H and W."""
    if shape is None:
        return False
    if len(shape) < 2:
        return all(d == 1 for d in shape)
    return len(shape) == 4 and shape[2] == 1 and shape[3] == 1


def _quantization_axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _transposed_weight(g: Graph, name: str, new_nodes: list[onnx.NodeProto]) -> str:
    """A copy of the 4-D convolution weight `name` (an initializer, or DequantizeLinear of one) with
    its two spatial axes swapped; returns the new tensor's name."""
    initializer = g.initializer_behind(name)
    if initializer is not None:
        if f"{initializer.name}_hw" in g.initializers:  # shared by several convolutions
            return f"{initializer.name}_hw"
        array = numpy_helper.to_array(initializer)
        return g.add_initializer(np.ascontiguousarray(array.transpose(0, 1, 3, 2)), f"{initializer.name}_hw")
    node = g.producers.get(name)
    if node is None or node.op_type != "DequantizeLinear":
        raise _NotFlippable(f"convolution weight {name} is not a constant")
    stored = g.initializer_behind(node.input[0])
    if stored is None:
        raise _NotFlippable(f"convolution weight {name} is not a constant")
    output = f"{name}_hw"
    if any(output in n.output for n in new_nodes):
        return output
    array = numpy_helper.to_array(stored)
    flipped = g.add_initializer(np.ascontiguousarray(array.transpose(0, 1, 3, 2)), f"{stored.name}_hw")
    new_nodes.append(helper.make_node("DequantizeLinear", [flipped, *node.input[1:]], [output],
                                      name=f"{node.name}_hw", axis=0))
    return output


def absorb_input_transpose(model: onnx.ModelProto) -> bool:
    """Remove the graph's single (0, 1, 3, 2) Transpose (the DSMN networks' input axis swap) by
    swapping the two spatial axes of everything downstream of it; False (model untouched) where some
    downstream operator is not known to be safe to swap."""
    candidate = onnx.ModelProto()
    candidate.CopyFrom(model)
    try:
        _absorb(candidate)
    except _NotFlippable:
        return False
    model.CopyFrom(candidate)
    return True


def _absorb(model: onnx.ModelProto) -> None:
    g = Graph(model)
    transposes = [n for n in g.graph.node if n.op_type == "Transpose"
                  and list(next((a.ints for a in n.attribute if a.name == "perm"), [])) == [0, 1, 3, 2]]
    if len(transposes) != 1:
        raise _NotFlippable("no single (0, 1, 3, 2) transpose")
    transpose = transposes[0]
    shapes = _shapes(model)
    flipped: set[str] = {transpose.output[0]}
    rebuilt: list[onnx.NodeProto] = []
    for node in g.graph.node:
        if node is transpose:
            continue
        spatial_inputs = [i for i in node.input if i in flipped]
        if not spatial_inputs:
            rebuilt.append(node)
            continue
        _flip_node(g, node, flipped, shapes, rebuilt)
        rebuilt.append(node)
    if any(o.name in flipped for o in g.graph.output):
        raise _NotFlippable("a graph output has spatial axes")
    for node in rebuilt:
        for index, name in enumerate(node.input):
            if name == transpose.output[0]:
                node.input[index] = transpose.input[0]
    del g.graph.node[:]
    g.graph.node.extend(rebuilt)
    kept_info = [v for v in g.graph.value_info if v.name not in flipped]
    del g.graph.value_info[:]
    g.graph.value_info.extend(kept_info)
    remove_unused(g.graph)


def _flip_node(g: Graph, node: onnx.NodeProto, flipped: set[str], shapes: dict, rebuilt: list) -> None:
    """Swap `node` to work on inputs whose spatial axes are swapped; mark its outputs flipped or not."""
    op = node.op_type
    if op in ("QuantizeLinear", "DequantizeLinear"):
        if node.input[0] not in flipped or _quantization_axis(node) % 4 in (2, 3):
            raise _NotFlippable(f"{node.name}: quantised along a spatial axis")
        flipped.update(node.output)
    elif op in _ELEMENTWISE:
        for name in node.input:
            if name and name not in flipped and not _broadcasts_over_space(shapes.get(name)):
                raise _NotFlippable(f"{node.name}: operand {name} varies along a spatial axis")
        flipped.update(node.output)
    elif op in _WINDOWED:
        if node.input[0] not in flipped or any(i in flipped for i in node.input[1:]):
            raise _NotFlippable(f"{node.name}: spatial weight")
        if op == "Conv":
            weight_shape = shapes.get(node.input[1])
            if weight_shape is None or len(weight_shape) != 4:
                raise _NotFlippable(f"{node.name}: not a 2-D convolution")
            node.input[1] = _transposed_weight(g, node.input[1], rebuilt)
        _swap_attributes(node)
        flipped.update(node.output)
    elif op == "Slice":
        if node.input[0] not in flipped or any(i in flipped for i in node.input[1:]):
            raise _NotFlippable(f"{node.name}: sliced by a spatial tensor")
        if len(node.input) < 4 or not node.input[3]:
            raise _NotFlippable(f"{node.name}: slice without explicit axes")
        axes = g.constant(node.input[3])
        if axes is None:
            raise _NotFlippable(f"{node.name}: slice axes are not constant")
        swapped = np.array([_swapped_axis(int(a)) for a in axes.reshape(-1)], dtype=axes.dtype)
        node.input[3] = g.add_initializer(swapped, f"{node.name}_axes_hw")
        flipped.update(node.output)
    elif op == "Concat":
        if not all(i in flipped for i in node.input):
            raise _NotFlippable(f"{node.name}: concatenates spatial and non-spatial tensors")
        for attribute in node.attribute:
            if attribute.name == "axis":
                attribute.i = _swapped_axis(attribute.i)
        flipped.update(node.output)
    elif op in ("GlobalAveragePool", "GlobalMaxPool"):
        pass  # (N, C, 1, 1): the same either way
    else:
        raise _NotFlippable(f"{node.name}: {op} on a spatial tensor")


def expand_channel_gates(model: onnx.ModelProto) -> int:
    """Rewrite Mul(x, DQ(gate)) with x (N, C, H, W) and gate (N, C, 1, 1) as Mul(x, DQ(Q(Expand(gate))));
    returns the number rewritten. Values are unchanged: the expanded gate re-quantises onto its own grid."""
    g = Graph(model)
    shapes = _shapes(model)
    rebuilt: list[onnx.NodeProto] = []
    rewritten = 0
    for node in g.graph.node:
        if node.op_type == "Mul" and len(node.input) == 2:
            shape_a, shape_b = shapes.get(node.input[0]), shapes.get(node.input[1])
            for big, small, position in ((shape_a, shape_b, 1), (shape_b, shape_a, 0)):
                gate = g.producers.get(node.input[position])
                if (big is None or small is None or len(big) != 4 or len(small) != 4 or None in big[2:]
                        or small[2:] != [1, 1] or big[2] * big[3] == 1 or gate is None
                        or gate.op_type != "DequantizeLinear"):
                    continue
                base = f"{node.name}_gate"
                target = g.add_initializer(np.array([1, 1, big[2], big[3]], dtype=np.int64), f"{base}_shape")
                rebuilt.append(helper.make_node("Expand", [node.input[position], target], [f"{base}_expanded"],
                                                name=f"{base}_Expand"))
                rebuilt.append(helper.make_node("QuantizeLinear", [f"{base}_expanded", *gate.input[1:]],
                                                [f"{base}_q"], name=f"{base}_QuantizeLinear"))
                rebuilt.append(helper.make_node("DequantizeLinear", [f"{base}_q", *gate.input[1:]],
                                                [f"{base}_dq"], name=f"{base}_DequantizeLinear"))
                node.input[position] = f"{base}_dq"
                rewritten += 1
                break
        rebuilt.append(node)
    del g.graph.node[:]
    g.graph.node.extend(rebuilt)
    return rewritten
