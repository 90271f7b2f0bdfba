"""The joint output of a multi-task network: 10 scene logits, then 3 coarse (indoor / outdoor /
transportation) logits. Every consumer reads scene probabilities through `scene_probabilities`."""

from __future__ import annotations

import numpy as np
import torch

from dsmn.labels import NUM_SCENES


def split_logits(logits: torch.Tensor, num_scenes: int = NUM_SCENES) -> tuple[torch.Tensor, torch.Tensor]:
    """(scene logits, coarse logits) from the joint output of a multi-task network."""
    return logits[..., :num_scenes], logits[..., num_scenes:]


def scene_probabilities(logits: torch.Tensor | np.ndarray, num_scenes: int = NUM_SCENES) -> torch.Tensor | np.ndarray:
    """Softmax over the scene logits (the first `num_scenes` outputs), in float32.

    Takes a torch tensor (returns one on the same device) or a NumPy array (ONNX Runtime output;
    returns a NumPy array): both are computed by the same torch softmax.
    """
    if isinstance(logits, np.ndarray):
        return scene_probabilities(torch.from_numpy(logits), num_scenes).numpy()
    return torch.softmax(split_logits(logits, num_scenes)[0].float(), dim=-1)
