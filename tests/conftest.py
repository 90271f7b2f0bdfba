"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see dsmn.cli


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `tiny` synthetic TAU-format dataset (seed 0), generated once per test session."""
    from dsmn.data.synth import generate

    root = tmp_path_factory.mktemp("tiny") / "TAU-synth-tiny"
    generate(root, "tiny", seed=0, workers=2)
    return root


@pytest.fixture(scope="session")
def tiny_tau20(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `tiny` synthetic dataset in the TAU 2020 Mobile layout (10-s clips, seed 0), once per session."""
    from dsmn.data.synth import generate

    root = tmp_path_factory.mktemp("tiny20") / "TAU-synth-tiny-2020"
    generate(root, "tiny", seed=0, workers=2, layout="tau20")
    return root
