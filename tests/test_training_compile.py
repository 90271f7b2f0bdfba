"""`compile: true`: the training step through torch.compile computes what the eager step computes.

Traced with torch.compile's `aot_eager` backend (Dynamo + AOTAutograd, the same graph capture as
the default inductor backend, without generating kernels), so the test stays fast on a CPU: it
checks that the QAT network (fake-quantisation ops, observers, folded BatchNorm) and PCGrad's two
`autograd.grad` passes over one retained graph work under compilation. Shared-representation PCGrad
is refused with compile: it takes gradients at an embedding captured inside the network's forward,
which a compiled graph does not expose to autograd (seen: the embedding's gradient is None).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dsmn.quantization import prepare_qat
from dsmn.training import load_config
from dsmn.training.augment import soft_targets
from dsmn.training.step import StepSettings, train_step
from dsmn.training.trainer import build_optimizer, uncompiled


class Small(nn.Module):
    """Conv-BN-ReLU, a depthwise conv, pooling and a multi-task head: the operator kinds of model1."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.depthwise = nn.Sequential(nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, bias=False),
                                       nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 13))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.depthwise(self.stem(x)).mean(dim=(2, 3)))


def run(compiled: bool, pcgrad: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    float_net = Small()
    net = prepare_qat(float_net).train()
    params = list(float_net.parameters())
    optimizer = build_optimizer(load_config("model1"), params)
    settings = StepSettings("pcgrad", pcgrad, params, head=float_net.head)
    model = torch.compile(net, backend="aot_eager") if compiled else net
    g = torch.Generator().manual_seed(1)
    results = []
    for k in range(3):
        x = torch.randn(6, 2, 12, 10, generator=g)
        scene, coarse = soft_targets(torch.randint(0, 10, (6,), generator=g))
        step_model = uncompiled(model) if k == 0 else model  # the trainer's first step: observers calibrate
        results.append(torch.stack(train_step(step_model, x, scene, coarse, optimizer, settings)))
    return torch.stack(results), {k: v.detach().clone() for k, v in float_net.state_dict().items()}


def test_compiled_qat_pcgrad_steps_equal_eager_steps() -> None:
    torch._dynamo.reset()
    eager_results, eager_state = run(False, "full")
    compiled_results, compiled_state = run(True, "full")
    assert torch.allclose(compiled_results, eager_results, atol=1e-5), (compiled_results, eager_results)
    for key, value in eager_state.items():
        assert torch.allclose(compiled_state[key].float(), value.float(), atol=1e-5), key
    torch.manual_seed(0)
    assert not torch.equal(eager_state["stem.0.weight"], Small().state_dict()["stem.0.weight"])  # it trained


def test_compile_setting_is_checked() -> None:
    assert load_config("model1", ["compile=true"]).compile is True  # torch.compile's default mode
    assert load_config("model1", ["compile=reduce-overhead"]).compile == "reduce-overhead"
    assert load_config("model1").compile is False
    with pytest.raises(ValueError, match="config key compile"):
        load_config("model1", ["compile=fastest"])
    with pytest.raises(ValueError, match="not with shared-representation"):
        load_config("demo", ["compile=true"])
    assert load_config("demo", ["compile=true", "multitask.pcgrad=full"]).compile is True


def test_uncompiled_unwraps_only_the_compile_wrapper() -> None:
    net = Small()
    assert uncompiled(net) is net
    assert uncompiled(torch.compile(net, backend="aot_eager")) is net
    clone = copy.deepcopy(net)
    assert uncompiled(clone) is clone
