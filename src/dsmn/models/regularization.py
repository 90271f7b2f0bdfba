"""Extra loss terms that networks carry themselves (e.g. the OSC orthonormality penalty).

A module opts in by defining `regularization_loss() -> Tensor` over its OWN parameters (not its
children's); the trainer adds `weight * regularization_loss(model)` to the task loss, whatever the
architecture.
"""

from __future__ import annotations

import torch
from torch import nn


def regularization_loss(model: nn.Module) -> torch.Tensor:
    """Sum of `regularization_loss()` over the model and every submodule that defines it.

    Without any such module the result is a zero tensor on the model's device, so
    `loss + weight * regularization_loss(model)` works unchanged for every network.
    """
    terms = [m.regularization_loss().reshape(()) for m in model.modules() if _has_penalty(m)]
    if terms:
        return torch.stack(terms).sum()
    reference = next(model.parameters(), None)
    return torch.zeros((), device=reference.device if reference is not None else None)


def has_regularization(model: nn.Module) -> bool:
    """Whether any module of `model` defines a penalty (`regularization_loss()`)."""
    return any(_has_penalty(m) for m in model.modules())


def _has_penalty(module: nn.Module) -> bool:
    return callable(getattr(module, "regularization_loss", None))
