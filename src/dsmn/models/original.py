"""Load checkpoints trained with the authors' DSMN code (key layout: docs/architecture.md).

Their modules are named conv (stem), conv1..conv5 (blocks; each with dilaconv1..3, conv1..3, att,
norm) and l1 / l2 (head); ours carry descriptive names. The mapping is a pure renaming, so a loaded
network computes exactly what theirs computes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from dsmn.models.dsmn import DSMN
from dsmn.models.registry import create

_BLOCK_PARTS = {
    "conv1": "proj_a",
    "conv2": "proj_b",
    "conv3": "fuse",
    "att": "attention",
    "norm": "norm",
}
_OPERATOR_PARTS = {"ch_conv1": "pointwise", "sp_conv1": "time_conv", "sp_conv2": "freq_conv", "norm": "norm"}
_HEAD = {"l1": "head.0", "l2": "head.3"}
_IGNORED_PREFIXES = ("conv6.",)  # defined but never used in the authors' forward pass
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _rename(key: str) -> str | None:
    """Our name for one of the authors' keys, or None when the key is not part of their layout."""
    parts = key.split(".")
    if parts[0] == "conv" and len(parts) == 2:
        return f"stem.{parts[1]}"
    if parts[0] in _HEAD and len(parts) == 2:
        return f"{_HEAD[parts[0]]}.{parts[1]}"
    block = re.fullmatch(r"conv([1-5])", parts[0])
    if not block or len(parts) < 3:
        return None
    prefix = f"blocks.{int(block.group(1)) - 1}"
    op = re.fullmatch(r"dilaconv([1-3])", parts[1])
    if op and parts[2] in _OPERATOR_PARTS:
        return ".".join([prefix, f"op{op.group(1)}", _OPERATOR_PARTS[parts[2]], *parts[3:]])
    if parts[1] in _BLOCK_PARTS:
        return ".".join([prefix, _BLOCK_PARTS[parts[1]], *parts[2:]])
    return None


def _unwrap(obj: object) -> dict[str, torch.Tensor]:
    """Accept a bare state_dict or the usual wrappers ({'state_dict': ...}, {'model': ...}, DDP prefixes)."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("expected a state_dict (a mapping of parameter names to tensors)")
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        state[key] = value
    return state


def convert_original_state_dict(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(our state_dict, keys that have no place in the authors' layout)."""
    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key.startswith(_IGNORED_PREFIXES):
            continue
        name = _rename(key)
        if name is None:
            unknown.append(key)
        else:
            converted[name] = value
    return converted, unknown


def infer_original_variant(state: Mapping[str, torch.Tensor]) -> str:
    """Which of model1..model4 a checkpoint in the authors' layout holds, read off its weight shapes.

    A split block fuses C/2 channels, a plain block 3C/2; model4 is the one with 128-wide blocks.
    """
    state = _unwrap(state)
    kinds = []
    for k in range(1, 6):
        fuse = state.get(f"conv{k}.conv3.weight")
        proj = state.get(f"conv{k}.conv1.weight")
        if fuse is None or proj is None:
            raise ValueError(f"not a DSMN checkpoint in the authors' layout: conv{k}.conv1/conv3 missing")
        kinds.append("split" if fuse.shape[1] == proj.shape[0] else "plain")
    widths = [int(state[f"conv{k}.conv3.weight"].shape[0]) for k in range(1, 6)]
    from dsmn.models.dsmn import DSMN_VARIANTS

    for name, config in DSMN_VARIANTS.items():
        if tuple(kinds) == config.blocks and tuple(widths) == config.channels:
            return name
    raise ValueError(f"checkpoint blocks {kinds} with widths {widths} match none of model1..model4")


def load_original(state_dict_or_path: Mapping[str, torch.Tensor] | str | Path, name: str | None = None) -> DSMN:
    """A dsmn network holding the weights of a checkpoint from the authors' code.

    `name` is "model1".."model4" (the names of the published table); inferred from the weight
    shapes when omitted. Missing or unknown keys raise a ValueError listing them.
    """
    source = state_dict_or_path
    if isinstance(source, str | Path):
        source = torch.load(Path(source), map_location="cpu", weights_only=True)
    state = _unwrap(source)
    name = name or infer_original_variant(state)
    model = create(name)
    converted, unknown = convert_original_state_dict(state)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    if unknown or missing:
        lines = []
        if missing:
            lines.append("missing keys: " + ", ".join(original_name(k) for k in missing))
        if unknown:
            lines.append("unknown keys: " + ", ".join(sorted(unknown)))
        raise ValueError(f"checkpoint does not fit the authors' {name} layout; " + "; ".join(lines))
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs {name} {tuple(expected[k].shape)}"
        for k, v in converted.items()
        if v.shape != expected[k].shape
    ]
    if shapes:
        raise ValueError(f"checkpoint shapes do not fit {name}: " + "; ".join(shapes))
    model.load_state_dict(converted)
    return model


def original_name(key: str) -> str:
    """The authors' name for one of our keys (inverse of the renaming above)."""
    parts = key.split(".")
    if parts[0] == "stem":
        name = f"conv.{parts[1]}"
    elif parts[0] == "head":
        name = next((f"{orig}.{parts[-1]}" for orig, ours in _HEAD.items() if key.startswith(ours + ".")), "")
    elif parts[0] == "blocks" and len(parts) > 3:
        prefix = f"conv{int(parts[1]) + 1}"
        op = re.fullmatch(r"op([1-3])", parts[2])
        if op:
            inverse = {v: k for k, v in _OPERATOR_PARTS.items()}
            name = ".".join([prefix, f"dilaconv{op.group(1)}", inverse.get(parts[3], parts[3]), *parts[4:]])
        else:
            inverse = {v: k for k, v in _BLOCK_PARTS.items()}
            name = ".".join([prefix, inverse.get(parts[2], parts[2]), *parts[3:]])
    else:
        name = ""
    if _rename(name) != key:
        raise ValueError(f"{key} has no counterpart in the authors' layout")
    return name


def to_original_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state_dict renamed to the authors' layout (to hand weights back to their tools)."""
    return {original_name(key): value for key, value in state.items()}
