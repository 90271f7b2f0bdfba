"""PCGrad's merge rule checked against an independent re-statement of the authors' PCGrad.

The authors' code (the Pytorch-PCGrad class) back-propagates each loss into `.grad`, marks a
parameter tensor as reached by a task when its `.grad` is not None, projects each task gradient off
the (shuffled) others it conflicts with, and merges: mean over tasks where every task reached the
tensor, sum elsewhere. `reference_update` below says that again in plain code, on a small two-task
network: a shared trunk, a head whose last Linear layer has 13 outputs (10 scenes + 3 coarse
classes), a bias added to the coarse logits only, and a parameter no loss reaches.
"""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from dsmn.models import split_logits
from dsmn.training.augment import soft_targets
from dsmn.training.step import StepSettings, soft_cross_entropy, train_step


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(16, 16)
        self.out = nn.Linear(16, 13)
        self.coarse_bias = nn.Parameter(torch.zeros(3))  # added to the coarse logits only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.out(torch.relu(self.hidden(x)))
        return torch.cat([logits[:, :10], logits[:, 10:] + self.coarse_bias], dim=1)


class TwoTaskNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
        self.head = Head()
        self.unused = nn.Parameter(torch.ones(4))  # no loss reaches it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def make_net(seed: int) -> TwoTaskNet:
    torch.manual_seed(seed)
    return TwoTaskNet().double()


def make_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + seed)
    scene, coarse = soft_targets(torch.randint(0, 10, (12,), generator=g))
    return torch.randn(12, 8, generator=g, dtype=torch.float64), scene.double(), coarse.double()


def losses(net: nn.Module, x: torch.Tensor, scene: torch.Tensor, coarse: torch.Tensor) -> list[torch.Tensor]:
    scene_logits, coarse_logits = split_logits(net(x))
    return [soft_cross_entropy(scene_logits, scene), soft_cross_entropy(coarse_logits, coarse)]


def authors_pcgrad(grads: list[torch.Tensor], has_grads: list[torch.Tensor], seed: int = 0) -> torch.Tensor:
    """PCGrad as the authors' class computes it: shuffled sequential projection, then the merge."""
    shuffle = random.Random(seed).shuffle
    shared = torch.stack(has_grads).prod(0).bool()
    projected = [g.clone() for g in grads]
    others = list(grads)
    for g_i in projected:
        shuffle(others)
        for g_j in others:  # includes the task's own original gradient, which never conflicts
            dot = torch.dot(g_i, g_j)
            if dot < 0:
                g_i -= dot * g_j / g_j.norm() ** 2
    merged = torch.zeros_like(grads[0])
    merged[shared] = torch.stack([g[shared] for g in projected]).mean(dim=0)
    merged[~shared] = torch.stack([g[~shared] for g in projected]).sum(dim=0)
    return merged


def reference_update(net: nn.Module, task_losses: list[torch.Tensor]) -> torch.Tensor:
    """The authors' full PCGrad: one backward per loss into .grad; `.grad is None` means not reached."""
    params = list(net.parameters())
    grads, has_grads = [], []
    for loss in task_losses:
        for p in params:
            p.grad = None
        loss.backward(retain_graph=True)
        grads.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params]))
        has_grads.append(torch.cat([torch.full((p.numel(),), float(p.grad is not None)) for p in params]))
    return authors_pcgrad(grads, has_grads)


def reference_shared_representation_update(net: TwoTaskNet, x: torch.Tensor, scene: torch.Tensor,
                                           coarse: torch.Tensor) -> torch.Tensor:
    """The same rule applied to [d loss / d embedding, head gradients]; the trunk gets the merged embedding one."""
    embedding = net.trunk(x)
    scene_logits, coarse_logits = split_logits(net.head(embedding))
    task_losses = [soft_cross_entropy(scene_logits, scene), soft_cross_entropy(coarse_logits, coarse)]
    head = list(net.head.parameters())
    grads, has_grads = [], []
    for loss in task_losses:
        got = torch.autograd.grad(loss, [embedding, *head], retain_graph=True, allow_unused=True)
        grads.append(torch.cat([(g if g is not None else torch.zeros_like(t)).flatten()
                                for g, t in zip(got, [embedding, *head], strict=True)]))
        has_grads.append(torch.cat([torch.full((t.numel(),), float(g is not None))
                                    for g, t in zip(got, [embedding, *head], strict=True)]))
    merged = authors_pcgrad(grads, has_grads)
    size = embedding.numel()
    trunk = list(net.trunk.parameters())
    trunk_grads = torch.autograd.grad(embedding, trunk, grad_outputs=merged[:size].view_as(embedding))
    by_param = {id(p): g.flatten() for p, g in zip(trunk, trunk_grads, strict=True)}
    offset = size
    for p in head:
        by_param[id(p)] = merged[offset:offset + p.numel()]
        offset += p.numel()
    return torch.cat([by_param.get(id(p), torch.zeros(p.numel(), dtype=p.dtype)) for p in net.parameters()])


class RecordingSGD(torch.optim.SGD):
    """lr 0: keeps the gradients the step hands it, changes nothing."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        super().__init__(params, lr=0.0)
        self.seen = torch.zeros(0)

    def step(self, closure=None):  # noqa: ANN001, ANN201
        self.seen = torch.cat([p.grad.detach().flatten() for g in self.param_groups for p in g["params"]])
        return super().step(closure)


def step_update(seed: int, variant: str, merge: str) -> torch.Tensor:
    net = make_net(seed)
    optimizer = RecordingSGD(list(net.parameters()))
    settings = StepSettings("pcgrad", variant, list(net.parameters()), merge=merge, head=net.head)
    train_step(net, *make_batch(seed), optimizer, settings)
    return optimizer.seen


def slices(net: nn.Module) -> dict[str, slice]:
    out, offset = {}, 0
    for name, p in net.named_parameters():
        out[name] = slice(offset, offset + p.numel())
        offset += p.numel()
    return out


SEEDS = (0, 1, 2, 3)


def task_dot(seed: int) -> float:
    net = make_net(seed)
    params = list(net.parameters())
    g = [torch.cat([(d if d is not None else torch.zeros_like(p)).flatten() for d, p in zip(
        torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True), params, strict=True)])
        for loss in losses(net, *make_batch(seed))]
    return float(g[0].dot(g[1]))


def test_the_seeds_cover_conflicting_and_agreeing_task_gradients() -> None:
    dots = [task_dot(seed) for seed in SEEDS]
    assert any(d < 0 for d in dots) and any(d > 0 for d in dots), dots


@pytest.mark.parametrize("seed", SEEDS)
def test_full_pcgrad_per_tensor_equals_the_authors_rule(seed: int) -> None:
    net = make_net(seed)
    expected = reference_update(net, losses(net, *make_batch(seed)))
    got = step_update(seed, "full", "per-tensor")
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)
    where = slices(net)
    assert torch.all(got[where["unused"]] == 0)
    # the coarse bias feeds only the coarse logits, yet the scene loss's backward gives it a (zero)
    # gradient tensor too: the network returns one logit tensor. So it is shared: half its gradient
    if task_dot(seed) > 0:  # no projection: the coarse loss's own gradient, halved
        fresh = make_net(seed)
        (coarse_only,) = torch.autograd.grad(losses(fresh, *make_batch(seed))[1], [fresh.head.coarse_bias])
        assert torch.allclose(got[where["head.coarse_bias"]], coarse_only / 2)


@pytest.mark.parametrize("seed", SEEDS)
def test_shared_representation_per_tensor_equals_the_authors_rule_at_the_embedding(seed: int) -> None:
    expected = reference_shared_representation_update(make_net(seed), *make_batch(seed))
    got = step_update(seed, "shared-representation", "per-tensor")
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("variant", ["full", "shared-representation"])
@pytest.mark.parametrize("seed", SEEDS)
def test_per_element_doubles_the_task_specific_outputs_and_nothing_else(seed: int, variant: str) -> None:
    """Each row of the last layer (and the coarse bias) gets a zero gradient from the other task:
    the per-element rule sums there, twice the per-tensor mean."""
    per_tensor, per_element = step_update(seed, variant, "per-tensor"), step_update(seed, variant, "per-element")
    where = slices(make_net(seed))
    doubled = torch.zeros_like(per_tensor, dtype=torch.bool)
    for name in ("head.out.weight", "head.out.bias", "head.coarse_bias"):
        doubled[where[name]] = True
    assert torch.allclose(per_element[doubled], 2 * per_tensor[doubled], rtol=1e-10, atol=1e-14)
    assert per_tensor[doubled].abs().sum() > 0  # (a dead hidden unit leaves its column zero for both)
    assert torch.allclose(per_element[~doubled], per_tensor[~doubled], rtol=1e-10, atol=1e-14)


def test_merge_sums_where_a_tensor_is_reached_by_one_task_only() -> None:
    """The per-tensor masks of a parameter the scene loss never reaches (its gradient is None)."""
    from dsmn.training.pcgrad import merge, tensor_reach

    params = [torch.zeros(2), torch.zeros(3)]
    scene_reach = tensor_reach([torch.ones(2), None], params)
    coarse_reach = tensor_reach([torch.ones(2), torch.ones(3)], params)
    projected = [torch.tensor([1.0, 2, 0, 0, 0]), torch.tensor([3.0, 4, 5, 6, 7])]
    merged = merge(projected, [scene_reach, coarse_reach])
    assert torch.equal(merged, torch.tensor([2.0, 3, 5, 6, 7]))


@pytest.mark.parametrize("name", ["dcase2023", "model1", "model2", "model3", "model4", "demo"])
def test_shipped_configs_merge_per_tensor_as_the_authors_do(name: str) -> None:
    from dsmn.training import load_config

    assert load_config(name).multitask.merge == "per-tensor"
    assert load_config(name, ["multitask.merge=per-element"]).multitask.merge == "per-element"


def test_an_unknown_merge_rule_is_refused() -> None:
    from dsmn.training import load_config

    with pytest.raises(ValueError, match="multitask.merge"):
        load_config("model1", ["multitask.merge=elementwise"])
