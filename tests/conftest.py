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
