"""PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning") on flat gradient vectors.

Each task gradient loses its component along another task's gradient when the two conflict
(negative dot product). The projected gradients are then merged element by element: averaged where
several tasks reach the element (shared parameters), summed where only one does (task-specific
elements, such as the scene rows and the coarse rows of the last Linear layer).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


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


def merge(projected: Sequence[torch.Tensor], original: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over tasks where more than one task's original gradient is nonzero, sum elsewhere."""
    stacked = torch.stack(list(projected))
    reach = torch.stack([g != 0 for g in original]).sum(dim=0)
    total = stacked.sum(dim=0)
    return torch.where(reach > 1, total / reach.clamp_min(1), total)


def pcgrad(gradients: Sequence[torch.Tensor]) -> torch.Tensor:
    """The PCGrad update direction of flat task gradients (same length)."""
    return merge(project_conflicting(gradients), gradients)


def flatten(grads: Iterable[torch.Tensor | None], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """One flat vector of per-parameter gradients (None -> zeros), in parameter order."""
    return torch.cat([
        (g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params, strict=True)
    ])

