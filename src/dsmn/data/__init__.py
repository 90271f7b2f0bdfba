"""Data: dataset indexes (TAU and generic layouts), audio decoding and the synthetic TAU-format set."""

from dsmn.data.audio import AudioError, load_audio
from dsmn.data.clip import Clip
from dsmn.data.dataset import SUBSET_SPLITS, Dataset
from dsmn.data.errors import DatasetError
from dsmn.data.filenames import parse_tau_name
from dsmn.data.loading import load_dataset
from dsmn.data.pairs import parallel_pairs
from dsmn.data.selection import spread

__all__ = [
    "SUBSET_SPLITS",
    "AudioError",
    "Clip",
    "Dataset",
    "DatasetError",
    "load_audio",
    "load_dataset",
    "parallel_pairs",
    "parse_tau_name",
    "spread",
]
