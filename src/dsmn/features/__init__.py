"""Features: the DSMN log-mel front end and the on-disk feature cache."""

from dsmn.features.cache import CacheError, CacheMismatchError, FeatureCache, default_cache_dir, ensure_cache
from dsmn.features.frontend import FrontEndConfig, LogMel, ModelInput
from dsmn.features.logmel import deltas, log_mel, mel_filterbank, network_input, standardize

__all__ = [
    "CacheError",
    "CacheMismatchError",
    "FeatureCache",
    "default_cache_dir",
    "ensure_cache",
    "FrontEndConfig",
    "LogMel",
    "ModelInput",
    "deltas",
    "log_mel",
    "mel_filterbank",
    "network_input",
    "standardize",
]
