"""Hot paths share a busy CPU by themselves: passive OpenMP waiting from `import dsmn`, no oversubscription."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from dsmn.data import load_dataset
from dsmn.features import FeatureCache
from dsmn.threads import available_cores, leftover_threads, torch_threads


def _policy(env: dict[str, str]) -> str:
    code = "import dsmn.features, os; print(os.environ.get('OMP_WAIT_POLICY'))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_importing_dsmn_sets_passive_wait_unless_the_user_chose() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy(env) == "PASSIVE"  # a notebook or script that never heard of the variable
    assert _policy({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"


def test_torch_threads_are_capped_and_restored() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    assert leftover_threads(available_cores() + 3) == 1


def test_cache_build_leaves_the_decoding_threads_their_cores(tmp_path: Path, monkeypatch) -> None:
    from dsmn.features import cache as cache_module

    (tmp_path / "park").mkdir()
    noise = (0.1 * np.random.default_rng(0).standard_normal(44100)).astype(np.float32)
    for k in range(4):
        sf.write(tmp_path / "park" / f"{k}.wav", noise, 44100)
    seen: list[int] = []
    real = cache_module.LogMel.forward

    def recording(self, waves: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return real(self, waves)

    monkeypatch.setattr(cache_module.LogMel, "forward", recording)
    before = torch.get_num_threads()
    torch.set_num_threads(max(2, before))
    try:
        FeatureCache.build(load_dataset(tmp_path), tmp_path / "c", workers=2, progress=False)
    finally:
        torch.set_num_threads(before)
    assert seen and max(seen) <= leftover_threads(2)
