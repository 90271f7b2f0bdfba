"""Turn any float network of the registry into a QAT network, by rewriting its traced graph.

The network is traced with torch.fx (generic: no knowledge of DSMN). Then:
1. every convolution (or sum of convolutions reading one input) followed by BatchNorm becomes a
   `FoldedConv` (BatchNorm folded); remaining convolutions and linears get int8 weights too;
2. global means over the two last axes become global average pooling (an int8 operator in ONNX Runtime);
3. a uint8 `ActivationQuantizer` is placed on every tensor that flows between compute operators
   (model input, conv / linear / add / mul / cat / pool / sigmoid outputs, after a following ReLU),
   so the exported graph has Q/DQ pairs around every operator and runs in int8.
Data-movement operators (slicing, transposes, reshapes, dropout, max pooling) keep the grid of their
input and get no quantiser. The network's output (the logits) stays float.

The float modules are shared, not copied: the QAT model holds the very same parameters under the
very same names, and the quantiser state lives under the extra `quant.` prefix.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from dsmn.models.wrappers import unwrap
from dsmn.quantization.config import QATConfig
from dsmn.quantization.folded import FoldedConv, FoldedLinear, merge_geometry
from dsmn.quantization.quantizers import ActivationQuantizer

log = logging.getLogger(__name__)

QUANT_PREFIX = "quant"
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_}
_ADD_FUNCTIONS = {operator.add, torch.add, operator.iadd}
_MEAN_FUNCTIONS = {torch.mean}

# operators that only move or select values: their output lies on the grid of their input
_TRANSPARENT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity, nn.Flatten, nn.Unflatten,
                        nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_TRANSPARENT_FUNCTIONS = {
    operator.getitem, torch.transpose, torch.permute, torch.reshape, torch.flatten, torch.squeeze,
    torch.unsqueeze, torch.split, torch.chunk, torch.narrow, torch.select, F.dropout, F.max_pool1d,
    F.max_pool2d, torch.max_pool2d, torch.max_pool1d,
}
_TRANSPARENT_METHODS = {
    "transpose", "permute", "reshape", "view", "flatten", "squeeze", "unsqueeze", "contiguous", "split",
    "chunk", "narrow", "select", "expand", "expand_as", "view_as", "reshape_as",
}
# calls that return Python values (shapes, sizes), not tensors
_NON_TENSOR_FUNCTIONS = {getattr, len}
_NON_TENSOR_METHODS = {"size", "dim", "numel", "ndimension"}


def spatial_mean(x: torch.Tensor, dim: Any) -> torch.Tensor:
    """`x.mean(dim, keepdim=True)`, computed as global average pooling when it averages the spatial
    axes of a 4-D tensor: same value, but ONNX gets GlobalAveragePool, which ONNX Runtime runs in int8."""
    dims = {d % x.dim() for d in ((dim,) if isinstance(dim, int) else dim)}
    if x.dim() == 4 and dims == {2, 3}:
        return F.adaptive_avg_pool2d(x, 1)
    return x.mean(dim=dim, keepdim=True)


def drop_mean_dims(pooled: torch.Tensor, dim: Any) -> torch.Tensor:
    """The `keepdim=False` shape of a `spatial_mean` result (a reshape: no quantiser needed after it)."""
    dims = sorted({d % pooled.dim() for d in ((dim,) if isinstance(dim, int) else dim)}, reverse=True)
    trailing = list(range(pooled.dim() - 1, pooled.dim() - 1 - len(dims), -1))
    if dims == trailing and len(dims) < pooled.dim():
        return pooled.flatten(pooled.dim() - len(dims) - 1)  # merges the size-1 axes into the one before
    for d in dims:
        pooled = pooled.squeeze(d)
    return pooled


_TRANSPARENT_FUNCTIONS.add(drop_mean_dims)

class _ConvLeafTracer(fx.Tracer):
    """fx's tracer, with subclasses of the torch convolutions (dsmn.models.depthwise) kept as leaves too."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, _CONVS) or super().is_leaf_module(m, module_qualified_name)


class QATGraphModule(fx.GraphModule):
    """Marker class of networks built by `prepare_qat` (see `is_qat`)."""


def prepare_qat(model: nn.Module, config: QATConfig | None = None) -> nn.Module:
    """A QAT version of `model` (which it shares parameters with); `model` itself is not modified.

    Parameter names, the forward signature and the output are those of `model`. With
    `config.enabled` False the float model is returned as it is.
    """
    config = config or QATConfig.recipe()
    if not config.enabled:
        return model
    if isinstance(unwrap(model), QATGraphModule):
        return model
    graph = _ConvLeafTracer().trace(model)
    modules = dict(model.named_modules())
    quant = nn.ModuleDict()
    kept_float: list[str] = []
    _fold_convolutions(graph, modules, quant, kept_float)
    _fold_linears(graph, modules, quant)
    _replace_global_means(graph)
    _insert_activation_quantizers(graph, modules, quant, config.observer_momentum, config.stochastic_rounding)
    graph.lint()
    device = next((t.device for t in [*model.parameters(), *model.buffers()]), None)
    if device is not None:  # new observers and folded layers live where the network does (a CUDA run)
        quant.to(device)

    holder = nn.Module()
    for name, child in model.named_children():
        holder.add_module(name, child)
    holder.add_module(QUANT_PREFIX, quant)
    qat = QATGraphModule(holder, graph, class_name=f"QAT{type(model).__name__}")
    for name, child in holder.named_children():  # the very objects, not FX's partial copies
        setattr(qat, name, child)
    for name, value in vars(model).items():  # model_name, model_kwargs, config, ...
        if not name.startswith("_") and name != "training" and not hasattr(qat, name):
            setattr(qat, name, value)
    _link_input_quantizers(qat)
    qat.qat_config = config
    qat.kept_float = kept_float
    if kept_float:
        log.warning("QAT %s: kept float (not foldable): %s", getattr(model, "model_name", ""), ", ".join(kept_float))
    qat.float_model_class = type(model)
    qat.train(model.training)
    _check_names(model, qat)
    return qat


def _link_input_quantizers(qat: fx.GraphModule) -> None:
    """Tell each folded layer which activation quantiser its input comes from (through data movement),
    so it can put its bias on the int32 grid the runtime uses (input scale x weight scale)."""
    modules = dict(qat.named_modules())
    for node in qat.graph.nodes:
        layer = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(layer, FoldedConv | FoldedLinear) or not node.args:
            continue
        source = node.args[0]
        while isinstance(source, fx.Node) and is_data_movement(source, modules) and source.args:
            source = source.args[0]
        if isinstance(source, fx.Node) and source.op == "call_module":
            quantizer = modules.get(source.target)
            if isinstance(quantizer, ActivationQuantizer):
                layer.input_quantizer = (quantizer,)


def _check_names(model: nn.Module, qat: nn.Module) -> None:
    float_names = set(model.state_dict())
    qat_names = {k for k in qat.state_dict() if not k.startswith(QUANT_PREFIX + ".")}
    if float_names != qat_names:
        raise RuntimeError(f"QAT rewrite changed state_dict keys: {sorted(float_names ^ qat_names)[:5]}")


# ----------------------------------------------------------------------------------------------
# graph helpers


def _module(node: fx.Node, modules: dict[str, nn.Module], kinds: tuple[type, ...]) -> nn.Module | None:
    if node.op == "call_module":
        module = modules.get(node.target)
        if isinstance(module, kinds):
            return module
    return None


def _is_add(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in ("add", "add_")
    )


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return (
        _module(node, modules, (nn.ReLU,)) is not None
        or (node.op == "call_function" and node.target in _RELU_FUNCTIONS)
        or (node.op == "call_method" and node.target in ("relu", "relu_"))
    )


def _register(quant: nn.ModuleDict, base: str, module: nn.Module) -> str:
    key = base.replace(".", "_") or "input"
    unique, n = key, 1
    while unique in quant:
        n += 1
        unique = f"{key}_{n}"
    quant[unique] = module
    return f"{QUANT_PREFIX}.{unique}"


def _conv_group(node: fx.Node, modules: dict[str, nn.Module]) -> list[fx.Node] | None:
    """The conv nodes whose (summed) output is `node`, if they can become one convolution."""
    if len(node.users) != 1:
        return None
    if _module(node, modules, _CONVS) is not None:
        return [node]
    if _is_add(node) and len(node.args) == 2 and not node.kwargs:
        parts = node.args
        convs = all(isinstance(p, fx.Node) and _module(p, modules, _CONVS) is not None and len(p.users) == 1
                    for p in parts)
        if convs and parts[0].args[0] is parts[1].args[0] and merge_geometry([modules[p.target] for p in parts]):
            return list(parts)
    return None


def _replace(graph: fx.Graph, anchor: fx.Node, target: str, source: fx.Node, dead: Iterable[fx.Node]) -> None:
    """Put a call of module `target` on `source` in place of `anchor`, and erase the replaced nodes."""
    with graph.inserting_before(anchor):
        new = graph.call_module(target, (source,))
    anchor.replace_all_uses_with(new)
    for node in [anchor, *dead]:
        if node is not new and not node.users:
            graph.erase_node(node)


def _fold_convolutions(
    graph: fx.Graph, modules: dict[str, nn.Module], quant: nn.ModuleDict, kept_float: list[str]
) -> None:
    for node in list(graph.nodes):
        bn = _module(node, modules, _BATCHNORMS)
        if bn is None:
            continue
        group = _conv_group(node.args[0], modules)
        if group is None:
            kept_float.append(f"{node.target} (BatchNorm after {node.args[0].name})")
            continue
        convs = [modules[n.target] for n in group]
        target = _register(quant, node.target, FoldedConv(convs, bn, merge_geometry(convs) if len(convs) > 1 else None))
        summed = node.args[0]
        _replace(graph, node, target, group[0].args[0], [summed, *group] if summed not in group else group)
    # sums of convolutions without BatchNorm, then single convolutions
    for node in list(graph.nodes):
        if _is_add(node) and (group := _conv_group(node, modules)) and len(group) == 2:
            convs = [modules[n.target] for n in group]
            target = _register(quant, group[0].target, FoldedConv(convs, None, merge_geometry(convs)))
            _replace(graph, node, target, group[0].args[0], group)
    for node in list(graph.nodes):
        conv = _module(node, modules, _CONVS)
        if conv is not None:
            target = _register(quant, node.target, FoldedConv([conv], None, None))
            _replace(graph, node, target, node.args[0], [])


def _fold_linears(graph: fx.Graph, modules: dict[str, nn.Module], quant: nn.ModuleDict) -> None:
    for node in list(graph.nodes):
        linear = _module(node, modules, (nn.Linear,))
        if linear is None:
            continue
        users = list(node.users)
        bn = _module(users[0], modules, (nn.BatchNorm1d,)) if len(users) == 1 else None
        if bn is not None:
            target = _register(quant, users[0].target, FoldedLinear(linear, bn))
            _replace(graph, users[0], target, node.args[0], [node])
        else:
            target = _register(quant, node.target, FoldedLinear(linear))
            _replace(graph, node, target, node.args[0], [])


def _replace_global_means(graph: fx.Graph) -> None:
    for node in list(graph.nodes):
        is_mean = (node.op == "call_method" and node.target == "mean") or (
            node.op == "call_function" and node.target in _MEAN_FUNCTIONS
        )
        if not is_mean:
            continue
        args = list(node.args)
        dim = node.kwargs.get("dim", args[1] if len(args) > 1 else None)
        keepdim = node.kwargs.get("keepdim", args[2] if len(args) > 2 else False)
        if dim is None or isinstance(dim, fx.Node) or set(node.kwargs) - {"dim", "keepdim"}:
            continue
        with graph.inserting_before(node):
            new = graph.call_function(spatial_mean, (args[0], dim))
            if not keepdim:
                new = graph.call_function(drop_mean_dims, (new, dim))
        node.replace_all_uses_with(new)
        graph.erase_node(node)


# ----------------------------------------------------------------------------------------------
# activation quantisers


def tensor_nodes(graph: fx.Graph) -> set[fx.Node]:
    """The nodes of `graph` whose value is a tensor (or a tuple of tensors), not a shape or a number."""
    tensors: set[fx.Node] = set()
    for node in graph.nodes:
        if _produces_tensor(node, tensors):
            tensors.add(node)
    return tensors


def returns_tuple(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in (torch.split, torch.chunk, torch.unbind)) or (
        node.op == "call_method" and node.target in ("split", "chunk", "unbind")
    )


def _produces_tensor(node: fx.Node, tensors: set[fx.Node]) -> bool:
    if node.op in ("placeholder", "call_module"):
        return True
    if node.op == "call_function" and node.target in _NON_TENSOR_FUNCTIONS:
        return False
    if node.op == "call_method" and node.target in _NON_TENSOR_METHODS:
        return False
    if node.op in ("call_function", "call_method"):
        inputs: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), inputs.append)
        return any(n in tensors for n in inputs)
    return False


def is_data_movement(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Operators that only select, reshape or move values: their output lies on their input's grid."""
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _TRANSPARENT_MODULES)
    if node.op == "call_function":
        return node.target in _TRANSPARENT_FUNCTIONS
    if node.op == "call_method":
        return node.target in _TRANSPARENT_METHODS
    return False


def _insert_activation_quantizers(
    graph: fx.Graph, modules: dict[str, nn.Module], quant: nn.ModuleDict, momentum: float, stochastic: bool
) -> None:
    tensors = tensor_nodes(graph)
    output = next(n for n in graph.nodes if n.op == "output")
    for node in list(graph.nodes):
        if node not in tensors or is_data_movement(node, modules):
            continue
        users = list(node.users)
        if not users or all(u is output for u in users):
            continue  # the network's output stays float
        if len(users) == 1 and _is_relu(users[0], modules):
            continue  # quantised after the ReLU (deployed as one fused operator)
        base = node.target if node.op == "call_module" else node.name
        if isinstance(base, str) and base.startswith(QUANT_PREFIX + "."):
            base = base[len(QUANT_PREFIX) + 1 :]
        name = f"{base}_out" if node.op != "placeholder" else "input"
        target = _register(quant, name, ActivationQuantizer(momentum, stochastic))
        with graph.inserting_after(node):
            quantized = graph.call_module(target, (node,))
        node.replace_all_uses_with(quantized, delete_user_cb=lambda user, q=quantized: user is not q)
