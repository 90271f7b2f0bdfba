"""Training: the DCASE 2023 DSMN recipe (multi-task PCGrad, mixup, spectrum correction, SpecAugment, QAT).

    >>> from dsmn.training import load_config, train
    >>> result = train(load_config("model1", ["epochs=3"]), "data/tau", "runs/m1")
"""

from dsmn.training.config import TrainConfig, config_from_dict, load_config, parse_overrides, save_config
from dsmn.training.trainer import RunExistsError, RunResult, train

__all__ = [
    "RunExistsError",
    "RunResult",
    "TrainConfig",
    "config_from_dict",
    "load_config",
    "parse_overrides",
    "save_config",
    "train",
]
