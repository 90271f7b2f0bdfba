"""Starting a run from trained weights: the trainer's side of device-specific fine-tuning.

A fine-tuning run is an ordinary `train` run whose network starts from a checkpoint (float weights,
and the calibrated observers of its QAT network when both are QAT) and whose optimiser sees only
the parameters named trainable.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from dsmn.models import read_checkpoint


def load_start_weights(float_model: nn.Module, checkpoint: str, model_name: str) -> dict[str, Any]:
    """Copy a checkpoint's float weights into `float_model`; returns the checkpoint (its QAT state
    is loaded by `load_start_qat_state` once the QAT network exists)."""
    state = read_checkpoint(checkpoint)
    if state.get("model_name") not in (None, model_name):
        raise ValueError(f"finetune.checkpoint {checkpoint} holds {state.get('model_name')}, not {model_name}")
    float_model.load_state_dict(state["state_dict"])
    return state


def load_start_qat_state(net: nn.Module, float_model: nn.Module, state: dict[str, Any]) -> None:
    """The start checkpoint's QAT state (observer ranges) into the freshly prepared QAT network."""
    if net is not float_model and "qat_state_dict" in state:
        net.load_state_dict(state["qat_state_dict"])


def freeze_except(model: nn.Module, prefixes: list[str] | None) -> list[str]:
    """Switch off gradients of every parameter outside `prefixes` (None: all train); returns the
    names that stay trainable. A prefix matching no parameter is an error naming the candidates."""
    names = [name for name, _ in model.named_parameters()]
    if prefixes is None:
        return names
    for prefix in prefixes:
        if not any(_matches(name, prefix) for name in names):
            top = sorted({name.split(".")[0] for name in names})
            raise ValueError(f"finetune.trainable: {prefix!r} names no parameter; top-level modules: {', '.join(top)}")
    trainable = []
    for name, param in model.named_parameters():
        keep = any(_matches(name, prefix) for prefix in prefixes)
        param.requires_grad_(keep)
        if keep:
            trainable.append(name)
    return trainable


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix.rstrip(".") + ".")
