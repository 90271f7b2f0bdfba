"""Networks: DSMN model1..model4, DSSC large/middle/small and the DCASE baselines, built by name
through one registry.

    >>> from dsmn import models
    >>> net = models.create("model1")
    >>> scene_logits, coarse_logits = models.split_logits(net(x))
"""

# Registration order is the order `available()` (and `dsmn complexity`) lists the models in.
# isort: off
from dsmn.models import dsmn as _dsmn  # noqa: F401  (registers model1..model4)
from dsmn.models import dssc as _dssc  # noqa: F401  (registers dssc_large, dssc_middle, dssc_small)
from dsmn.models import baselines as _baselines  # noqa: F401  (registers dcase2022_baseline, cp_mobile)
from dsmn.models import teachers as _teachers  # noqa: F401  (registers cp_mobile_wide, a teacher)
# isort: on
from dsmn.models.baselines import CPMobile, CPMobileConfig, DCASEBaselineCNN
from dsmn.models.checkpoint import (
    checkpoint_dict,
    find_checkpoint,
    load_model,
    model_from_checkpoint,
    read_checkpoint,
)
from dsmn.models.dsmn import DSMN, DSMN_VARIANTS, DSMNConfig
from dsmn.models.dssc import DSSC_VARIANTS, DSSCVariant
from dsmn.models.operators import OPERATORS, OSC, SC, SPC, operator_factory
from dsmn.models.original import load_original
from dsmn.models.outputs import scene_probabilities, split_logits
from dsmn.models.registry import available, create, entry, register_model
from dsmn.models.regularization import regularization_loss
from dsmn.models.windowing import classify_clip, classify_windows, window_starts
from dsmn.models.wrappers import unwrap

__all__ = [
    "CPMobile",
    "CPMobileConfig",
    "DCASEBaselineCNN",
    "DSMN",
    "DSMNConfig",
    "DSMN_VARIANTS",
    "DSSC_VARIANTS",
    "DSSCVariant",
    "OPERATORS",
    "OSC",
    "SC",
    "SPC",
    "classify_clip",
    "classify_windows",
    "operator_factory",
    "regularization_loss",
    "window_starts",
    "available",
    "checkpoint_dict",
    "load_model",
    "model_from_checkpoint",
    "read_checkpoint",
    "create",
    "find_checkpoint",
    "entry",
    "load_original",
    "register_model",
    "scene_probabilities",
    "split_logits",
    "unwrap",
]
