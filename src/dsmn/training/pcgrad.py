"""PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning") on flat gradient vectors.

Each task gradient loses its component along another task's gradient when the two conflict
(negative dot product). The projected gradients are then merged: averaged over the tasks where every
task reaches a parameter (shared), summed where only some do (task-specific). What "reaches" means
is the merge rule:

- `per-tensor` (the authors' code, the widely used Pytorch-PCGrad class): a task reaches every
  element of a parameter tensor its loss gives a gradient at all. Both losses of the DSMN networks
  reach every tensor, the last Linear layer included (one tensor, although its scene rows and coarse
  rows each serve one task), so the update is the mean of the two projected gradients everywhere.
- `per-element`: a task reaches the elements where its gradient is non-zero, so the last layer's
  scene rows (zero coarse gradient) get the sum, i.e. twice the authors' update there, and elements
  that happen to be exactly zero for one task are treated as task-specific.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

MERGE_RULES = ("per-tensor", "per-element")


def project_conflicting(gradients: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each task gradient projected off every other task's (original) gradient it conflicts with.

    Tasks are visited in their given order (the paper shuffles; with two tasks order is irrelevant).
    """
    projected = []
    for i, own in enumerate(gradients):
        g = own.clone()
        for j, other in enumerate(gradients):
            if i == j:
                continue
            dot = torch.dot(g, other)
            # branch-free (no device sync on a GPU): the coefficient is zero unless the two conflict
            coefficient = torch.where(dot < 0, dot / other.dot(other).clamp_min(torch.finfo(other.dtype).tiny), 0.0)
            g -= coefficient * other
        projected.append(g)
    return projected


def merge(projected: Sequence[torch.Tensor], reached: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over tasks where every task reaches the element (`reached`: one bool mask per task), sum elsewhere."""
    stacked = torch.stack(list(projected))
    shared = torch.stack(list(reached)).all(dim=0)
    return torch.where(shared, stacked.mean(dim=0), stacked.sum(dim=0))


def pcgrad(gradients: Sequence[torch.Tensor], reached: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """The PCGrad update direction of flat task gradients (same length).

    `reached`: which elements each task reaches (see `tensor_reach`); None: its non-zero elements
    (the per-element rule).
    """
    if reached is None:
        reached = [g != 0 for g in gradients]
    return merge(project_conflicting(gradients), reached)


def tensor_reach(grads: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The per-tensor rule's mask of one task: True on every element of each tensor it has a gradient for.

    The mask depends only on which tensors have a gradient, the same at every step: it is built once
    (one kernel per tensor) and reused, not rebuilt with some hundred small GPU launches per step.
    """
    key = (tuple(g is not None for g in grads), tuple(p.numel() for p in params), str(params[0].device))
    mask = _REACH_MASKS.get(key)
    if mask is None:
        mask = torch.cat([
            torch.full((p.numel(),), g is not None, dtype=torch.bool, device=p.device)
            for g, p in zip(grads, params, strict=True)
        ])
        _REACH_MASKS[key] = mask
    return mask


_REACH_MASKS: dict[tuple, torch.Tensor] = {}  # read-only masks, by (gradient pattern, sizes, device)


def flatten(grads: Iterable[torch.Tensor | None], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """One flat vector of per-parameter gradients (None -> zeros), in parameter order."""
    return torch.cat([
        (g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params, strict=True)
    ])
