"""PCGrad: projection of conflicting gradients, the shared / task-specific merge (per element here;
the per-tensor rule in test_pcgrad_merge.py), and the training step's gradients checked against a
direct computation on model1."""

from __future__ import annotations

import pytest
import torch

from dsmn.models import create, split_logits
from dsmn.training.augment import soft_targets
from dsmn.training.pcgrad import merge, pcgrad, project_conflicting
from dsmn.training.pipeline import to_layout
from dsmn.training.step import StepSettings, soft_cross_entropy, train_step


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_conflicting_gradients_are_projected_onto_each_others_normal_plane() -> None:
    g1, g2 = t(2, 1), t(-1, 1)  # dot -1: conflict
    p1, p2 = project_conflicting([g1, g2])
    assert torch.allclose(p1, t(1.5, 1.5)) and torch.allclose(p2, t(-0.6, 1.2))
    assert p1.dot(g2) == pytest.approx(0) and p2.dot(g1) == pytest.approx(0)
    assert torch.allclose(pcgrad([g1, g2]), t(0.45, 1.35))  # both tasks reach both elements: mean


def test_agreeing_gradients_are_left_alone() -> None:
    g1, g2 = t(1, 2), t(3, 1)
    p1, p2 = project_conflicting([g1, g2])
    assert torch.equal(p1, g1) and torch.equal(p2, g2)
    assert torch.allclose(pcgrad([g1, g2]), t(2, 1.5))


def test_shared_elements_are_averaged_task_specific_ones_summed() -> None:
    # element 0 is shared, element 1 belongs to task 1 only, element 2 to task 2 only
    assert torch.allclose(pcgrad([t(1, 2, 0), t(1, 0, 3)]), t(1, 2, 3))
    g1, g2 = t(1, 1, 0), t(-2, 0, 1)  # conflict: dot -2
    p1, p2 = project_conflicting([g1, g2])
    assert torch.allclose(p1, t(0.2, 1, 0.4)) and torch.allclose(p2, t(-1, 1, 1))
    # shared: (0.2 - 1) / 2; task-specific: projected values of both tasks summed
    assert torch.allclose(merge([p1, p2], [g1 != 0, g2 != 0]), t(-0.4, 2, 1.4))


class RecordingSGD(torch.optim.SGD):
    """SGD with lr 0 that keeps the gradients it was handed."""

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        super().__init__(params, lr=0.0)
        self.seen: list[torch.Tensor] = []

    def step(self, closure=None):  # noqa: ANN001, ANN201
        self.seen = [p.grad.detach().clone() for group in self.param_groups for p in group["params"]]
        return super().step(closure)


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A small batch (64 mel bins, 44 frames: the networks pool globally, any size works), stored
    time-major so the network's transposed view is channels-last (the fast CPU kernels)."""
    g = torch.Generator().manual_seed(seed)
    scene, coarse = soft_targets(torch.randint(0, 10, (6,), generator=g))
    x = torch.randn(6, 2, 64, 44, generator=g)
    return to_layout(x, channels_last=True), scene, coarse


def model1() -> torch.nn.Module:
    torch.manual_seed(0)
    return create("model1", dropout=0.0).to(memory_format=torch.channels_last)


def test_full_pcgrad_step_matches_a_direct_computation_on_model1() -> None:
    model = model1()
    x, scene, coarse = batch()
    params = list(model.parameters())
    # direct: the two task gradients, projected and merged by hand
    scene_logits, coarse_logits = split_logits(model(x))
    g_scene = torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        soft_cross_entropy(scene_logits, scene), params, retain_graph=True)])
    g_coarse = torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        soft_cross_entropy(coarse_logits, coarse), params)])
    projected = project_conflicting([g_scene, g_coarse])

    def step_gradient(merge_rule: str) -> torch.Tensor:
        """The training step's update (BatchNorm statistics move in both forwards alike; lr 0 keeps the weights)."""
        model = model1()
        optimizer = RecordingSGD(list(model.parameters()))
        settings = StepSettings("pcgrad", "full", list(model.parameters()), merge=merge_rule)
        train_step(model, x, scene, coarse, optimizer, settings)
        return torch.cat([g.reshape(-1) for g in optimizer.seen])

    # per-tensor (the recipe's): both losses reach every tensor of model1, so the mean everywhere
    assert torch.allclose(step_gradient("per-tensor"), (projected[0] + projected[1]) / 2, atol=1e-6)
    got = step_gradient("per-element")
    assert torch.allclose(got, pcgrad([g_scene, g_coarse]), atol=1e-6)
    # per-element: the last layer's scene rows get no coarse gradient, so there the two are summed
    names = [n for n, _ in model.named_parameters()]
    last = names.index("head.3.weight")
    offset = sum(p.numel() for p in params[:last])
    rows = slice(offset, offset + 10 * params[last].shape[1])
    assert torch.all(g_coarse[rows] == 0) and torch.any(g_scene[rows] != 0)
    assert torch.allclose(got[rows], projected[0][rows] + projected[1][rows], atol=1e-7)


@pytest.mark.parametrize("mode", ["sum", "off"])
def test_sum_and_off_modes_use_one_backward_pass(mode: str) -> None:
    model = model1()
    x, scene, coarse = batch(1)
    optimizer = RecordingSGD(list(model.parameters()))
    stats = train_step(model, x, scene, coarse, optimizer, StepSettings(mode, "full", list(model.parameters())))
    assert all(torch.isfinite(v) and v.dim() == 0 for v in stats)
    head_bias = optimizer.seen[[n for n, _ in model.named_parameters()].index("head.3.bias")]
    assert (head_bias[10:].abs().sum() > 0) == (mode == "sum")  # coarse rows learn only in `sum`


def test_shared_representation_variant_runs_on_float_and_qat_networks() -> None:
    from dsmn.quantization import prepare_qat

    for qat in (False, True):
        model = model1()
        net = prepare_qat(model) if qat else model
        x, scene, coarse = batch(2)
        optimizer = RecordingSGD(list(net.parameters()))
        settings = StepSettings("pcgrad", "shared-representation", list(net.parameters()), head=model.head)
        train_step(net, x, scene, coarse, optimizer, settings)
        grads = optimizer.seen
        assert all(torch.isfinite(g).all() for g in grads)
        assert grads[0].abs().sum() > 0  # the stem (trunk) got the merged embedding gradient
