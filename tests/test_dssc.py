"""DSSC family: the three operators (SC, OSC, SPC), the OSC penalty, and the three networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dsmn import models
from dsmn.complexity import measure
from dsmn.models.layers import DistillationBlock, SeparableOperator
from dsmn.models.operators import OSC, SPC, orthonormality_penalty, partial_channels

# (params, MACs per 1-s clip) measured with dsmn.complexity; widths are reconstructions (docs/architecture.md)
EXPECTED = {
    "dssc_large": (110_052, 21_385_413),
    "dssc_middle": (65_244, 9_902_369),
    "dssc_small": (29_772, 5_293_213),
}
OPERATOR_OF = {"dssc_large": OSC, "dssc_middle": SeparableOperator, "dssc_small": SPC}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_complexity_within_the_dcase_budget(name):
    report = measure(models.create(name))
    assert (report.params, report.macs) == EXPECTED[name]
    assert report.param_bytes == report.params <= 128_000 and report.macs <= 30_000_000
    assert report.within_limits


def test_large_is_near_the_papers_size_and_the_others_clearly_smaller():
    """On the measured counts (test_complexity_within_the_dcase_budget pins them to the models)."""
    params = {name: counts[0] for name, counts in EXPECTED.items()}
    assert 100_000 <= params["dssc_large"] <= 120_000
    assert params["dssc_middle"] < 0.7 * params["dssc_large"]
    assert params["dssc_small"] < 0.6 * params["dssc_middle"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_five_split_blocks_built_from_one_operator(name):
    net = models.create(name)
    assert isinstance(net, models.DSMN) and models.entry(name).family == "dssc"
    assert len(net.blocks) == 5
    assert all(isinstance(b, DistillationBlock) and b.frequency_cut for b in net.blocks)
    operators = [op for b in net.blocks for op in (b.op1, b.op2, b.op3)]
    assert {type(op) for op in operators} == {OPERATOR_OF[name]}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_forward_shapes_and_multiscale_embedding(name):
    net = models.create(name).eval()
    out = net(torch.randn(3, 2, 256, 44))
    assert out.shape == (3, 13)
    scenes, coarse = models.split_logits(out)
    assert scenes.shape == (3, 10) and coarse.shape == (3, 3)
    # multi-scale fusion: pooled outputs of blocks 2..5 concatenated
    assert net.embedding(torch.randn(2, 2, 256, 44)).shape == (2, sum(net.config.channels[1:]))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_channels_last_gives_the_same_outputs(name):
    torch.manual_seed(0)
    net = models.create(name).eval()
    x = torch.randn(4, 2, 256, 44)
    with torch.no_grad():
        ref = net(x)
        out = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cuda_matches_cpu(name):
    net = models.create(name).eval()
    x = torch.randn(4, 2, 256, 44)
    with torch.no_grad():
        assert torch.allclose(net(x), net.cuda()(x.cuda()).cpu(), atol=1e-4)


# --- OSC: the orthonormality penalty ---------------------------------------------------------------


def test_penalty_is_positive_for_a_random_weight_and_matches_the_formula():
    torch.manual_seed(0)
    op = OSC(16, 8)
    w = op.pointwise.weight.detach().reshape(8, 16)
    expected = ((w @ w.T - torch.eye(8)) ** 2).sum()
    assert op.regularization_loss().item() > 0.1
    assert torch.allclose(op.regularization_loss(), expected)


@pytest.mark.parametrize(("cin", "cout"), [(16, 16), (16, 8), (8, 16)])
def test_penalty_vanishes_for_an_orthonormal_weight(cin, cout):
    op = OSC(cin, cout)
    with torch.no_grad():
        nn.init.orthogonal_(op.pointwise.weight)
    assert op.regularization_loss().item() < 1e-9 * cin * cout + 1e-8


def test_wide_weight_uses_the_smaller_gram_side():
    """cout > cin: W W^T (cout x cout) has rank cin and can never be I; W^T W can."""
    w = torch.linalg.qr(torch.randn(16, 8)).Q.reshape(16, 8, 1, 1)  # orthonormal columns
    assert orthonormality_penalty(w).item() < 1e-9
    assert orthonormality_penalty(w).shape == ()


def test_model_regularization_sums_every_osc_operator():
    net = models.create("dssc_large")
    penalties = [m.regularization_loss() for m in net.modules() if isinstance(m, OSC)]
    assert len(penalties) == 15
    total = models.regularization_loss(net)
    assert total.item() > 0 and torch.allclose(total, torch.stack(penalties).sum())


@pytest.mark.parametrize("name", ["model1", "dssc_middle", "dssc_small", "cp_mobile"])
def test_models_without_a_penalty_give_a_zero_tensor(name):
    total = models.regularization_loss(models.create(name))
    assert isinstance(total, torch.Tensor) and total.item() == 0.0


def test_penalty_falls_when_trained_with_the_task_loss():
    """A real training loop (cross-entropy on random clips + weighted penalty): the penalty must fall.

    64 mel bins instead of 256 keep it fast; the network pools globally, so any size works.
    """
    torch.manual_seed(0)
    net = models.create("dssc_large").train()
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = torch.randn(2, 2, 64, 44), torch.randint(0, 10, (2,))
    history = []
    for _ in range(5):
        penalty = models.regularization_loss(net)
        history.append(penalty.item())
        loss = nn.functional.cross_entropy(models.split_logits(net(x))[0], y) + 0.1 * penalty
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    history.append(models.regularization_loss(net).item())
    assert history[-1] < 0.9 * history[0]
    assert all(b < a for a, b in zip(history, history[1:], strict=False))


# --- SPC: partial spatial filtering ------------------------------------------------------------------


@pytest.mark.parametrize(("channels", "fraction", "expected"), [(16, 0.25, 4), (8, 0.25, 2), (2, 0.25, 1), (3, 0.1, 1),
                                                               (12, 0.5, 6), (12, 1.0, 12)])
def test_partial_channel_count(channels, fraction, expected):
    assert partial_channels(channels, fraction) == expected
    op = SPC(channels, channels, fraction=fraction)
    assert op.filtered == op.spatial.time_conv.out_channels == expected
    assert op(torch.randn(1, channels, 6, 6)).shape == (1, channels, 6, 6)


def reference_spc(op: SPC, x: torch.Tensor) -> torch.Tensor:
    """SPC as specified, in one piece: one projection, partial spatial stage, one BatchNorm, ReLU."""
    k = op.filtered
    weight = torch.cat([op.project_filtered.weight, op.project_passed.weight])
    projected = nn.functional.conv2d(x, weight)
    spatial_input = projected.clone()
    staged = torch.cat([op.spatial(projected[:, :k]), projected[:, k:]], dim=1)
    assert torch.equal(staged[:, k:], spatial_input[:, k:])  # passed channels: the stage's input, untouched
    norms = (op.norm_filtered, op.norm_passed)
    mean = torch.cat([n.running_mean for n in norms])
    var = torch.cat([n.running_var for n in norms])
    gamma, beta = torch.cat([n.weight for n in norms]), torch.cat([n.bias for n in norms])
    return torch.relu(nn.functional.batch_norm(staged, mean, var, gamma, beta, eps=op.norm_filtered.eps))


def test_spc_equals_one_projection_partial_filtering_one_batchnorm():
    torch.manual_seed(0)
    op = SPC(16, 16)
    for norm in (op.norm_filtered, op.norm_passed):  # non-trivial statistics
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        nn.init.uniform_(norm.weight, 0.5, 1.5)
        nn.init.uniform_(norm.bias, -0.5, 0.5)
    op.eval()
    x = torch.randn(2, 16, 10, 12)
    with torch.no_grad():
        assert torch.allclose(op(x), reference_spc(op, x), atol=1e-6)


def test_spc_filters_only_its_fraction_of_channels():
    """Changing the input at one time-frequency cell moves the passed channels only at that cell (a
    1x1 map, no spatial filtering), while the filtered channels also move at dilated neighbours."""
    torch.manual_seed(0)
    op = SPC(8, 8, fraction=0.25).eval()
    nn.init.constant_(op.norm_filtered.bias, 5.0)  # keep every output above the ReLU threshold
    nn.init.constant_(op.norm_passed.bias, 5.0)
    x = torch.randn(1, 8, 9, 9)
    y = x.clone()
    y[:, :, 4, 4] += 1.0
    with torch.no_grad():
        changed = (op(x) - op(y)).abs() > 1e-6  # (1, 8, 9, 9)
    k = op.filtered
    assert k == 2
    assert changed[0, k:].sum(dim=0).nonzero().tolist() == [[4, 4]]
    assert changed[0, :k, 4, 2].all() and changed[0, :k, 2, 4].all()  # dilation-2 taps along freq and time


def test_spc_fraction_is_a_model_option_that_survives_a_checkpoint():
    net = models.create("dssc_small", fraction=0.5)
    spcs = [m for m in net.modules() if isinstance(m, SPC)]
    assert all(m.filtered == m.project_passed.out_channels for m in spcs)  # half of each operator's width
    again = models.model_from_checkpoint(models.checkpoint_dict(net))
    assert again.model_kwargs == {"fraction": 0.5}
    x = torch.randn(1, 2, 256, 44)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), again.eval()(x))


def test_unknown_operator_or_option_fails_early():
    with pytest.raises(ValueError, match="osc"):
        models.operator_factory("xyz")
    with pytest.raises(TypeError):
        models.create("dssc_large", fraction=0.5)  # OSC has no fraction
    with pytest.raises(ValueError, match="fraction"):
        models.create("dssc_small", fraction=0.0)
