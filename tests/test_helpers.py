"""The small shared helpers: atomic writes, scene probabilities, clip spreading, unwrapping, run checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dsmn import models
from dsmn.data import spread
from dsmn.files import atomic_path, write_json, write_text


def test_atomic_path_replaces_the_target_only_when_the_write_succeeds(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "metrics.csv"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.suffix == ".csv" and tmp.parent == target.parent
        tmp.write_text("half a fi")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.csv"]  # no temporary file left
    write_json(target.with_suffix(".json"), {"a": 1})
    assert target.with_suffix(".json").read_text() == '{\n  "a": 1\n}'


def test_scene_probabilities_are_the_softmax_of_the_first_ten_logits() -> None:
    logits = torch.randn(5, 13)
    expected = torch.softmax(logits[:, :10], dim=1)
    assert torch.equal(models.scene_probabilities(logits), expected)
    from_numpy = models.scene_probabilities(logits.numpy())  # ONNX Runtime output
    assert isinstance(from_numpy, np.ndarray) and np.array_equal(from_numpy, expected.numpy())
    assert torch.allclose(models.scene_probabilities(logits).sum(1), torch.ones(5))


def test_spread_keeps_first_and_last_and_spaces_evenly() -> None:
    assert spread(list(range(10)), 4) == [0, 3, 6, 9]
    assert spread(list(range(3)), 5) == [0, 1, 2]
    assert spread(list(range(3)), None) == [0, 1, 2]


def test_unwrap_reaches_the_network_inside_nested_wrappers() -> None:
    net = nn.Linear(2, 2)

    class Wrapper(nn.Module):  # DataParallel / DDP keep the network as `.module`
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    assert models.unwrap(Wrapper(Wrapper(net))) is net
    assert models.unwrap(net) is net


def test_find_checkpoint_prefers_best_then_last(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    assert models.find_checkpoint(run) == run / "checkpoints" / "last.pt"
    (run / "checkpoints" / "best.pt").write_bytes(b"")
    assert models.find_checkpoint(run) == run / "checkpoints" / "best.pt"
    with pytest.raises(FileNotFoundError, match="no best.pt or last.pt"):
        models.find_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        models.find_checkpoint(tmp_path / "missing.pt")


def test_every_model_is_registered_under_its_builder_function_name() -> None:
    import inspect

    for name in models.available():
        builder = models.entry(name).builder
        assert builder.__name__ == name
        assert f"def {name}(" in inspect.getsource(inspect.getmodule(builder))
