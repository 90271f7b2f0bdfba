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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` skip on machines without a CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _exact_float32_on_cuda(request: pytest.FixtureRequest):  # noqa: ANN202 - a generator fixture
    """CUDA tests compare with the CPU in true float32: cuDNN convolutions and cuBLAS products
    otherwise run in TF32 (10-bit mantissa) on Ampere and later GPUs."""
    if request.node.get_closest_marker("cuda") is None:
        yield
        return
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
