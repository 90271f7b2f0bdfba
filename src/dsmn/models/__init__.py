"""Networks: DSMN model1..model4 (and further families), built by name through one registry.

    >>> from dsmn import models
    >>> net = models.create("model1")
    >>> scene_logits, coarse_logits = models.split_logits(net(x))
"""

from dsmn.models import dsmn as _dsmn  # noqa: F401  (registers model1..model4)
from dsmn.models.checkpoint import checkpoint_dict, load_model, model_from_checkpoint, read_checkpoint
from dsmn.models.dsmn import DSMN, DSMN_VARIANTS, DSMNConfig, split_logits
from dsmn.models.original import load_original
from dsmn.models.registry import available, create, entry, register_model

__all__ = [
    "DSMN",
    "DSMNConfig",
    "DSMN_VARIANTS",
    "available",
    "checkpoint_dict",
    "load_model",
    "model_from_checkpoint",
    "read_checkpoint",
    "create",
    "entry",
    "load_original",
    "register_model",
    "split_logits",
]
