"""The faster depthwise backward pass gives the gradients of F.conv2d, and is taken only where it applies."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dsmn import models
from dsmn.models.depthwise import DepthwiseConv2d, conv2d, uses_fast_backward
from dsmn.quantization import prepare_qat


@pytest.mark.parametrize(("kernel", "padding", "dilation"), [
    ((3, 3), (2, 2), (2, 2)), ((3, 1), (2, 0), (2, 1)), ((1, 3), (0, 2), (1, 2)), ((5, 5), (2, 2), (1, 1)),
])
@pytest.mark.parametrize("channels_last", [True, False])
def test_gradients_equal_those_of_conv2d(kernel, padding, dilation, channels_last: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 6, 17, 24)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    weight = torch.randn(6, 1, *kernel, requires_grad=True)
    bias = torch.randn(6, requires_grad=True)
    grad = torch.randn(3, 6, 17, 24)
    assert uses_fast_backward(x, weight, (1, 1), padding, dilation, 6)
    ours = conv2d(x, weight, bias, (1, 1), padding, dilation, 6)
    reference = F.conv2d(x, weight, bias, 1, padding, dilation, 6)
    assert torch.allclose(ours, reference, atol=1e-5)
    for a, b in zip(torch.autograd.grad(ours, [x, weight, bias], grad),
                    torch.autograd.grad(reference, [x, weight, bias], grad), strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-5)


def test_plain_path_outside_cpu_training() -> None:
    x = torch.randn(2, 4, 8, 8)
    weight = torch.randn(4, 1, 3, 3, requires_grad=True)
    assert not uses_fast_backward(x, weight, (2, 2), (1, 1), (1, 1), 4)  # strided
    assert not uses_fast_backward(x, weight, (1, 1), (0, 0), (1, 1), 4)  # not "same"
    assert not uses_fast_backward(x, torch.randn(8, 4, 3, 3), (1, 1), (1, 1), (1, 1), 1)  # not depthwise
    with torch.no_grad():
        assert not uses_fast_backward(x, weight, (1, 1), (1, 1), (1, 1), 4)


def test_models_train_through_it_and_keep_their_parameters() -> None:
    net = models.create("model1")
    convs = [m for m in net.modules() if isinstance(m, DepthwiseConv2d)]
    assert len(convs) == 30  # time and frequency convolution of each of the 15 separable operators
    assert all(isinstance(m, torch.nn.Conv2d) for m in convs)
    qat = prepare_qat(net)  # traced with the convolutions as leaves: folded like any nn.Conv2d
    assert sorted(dict(qat.named_parameters())) == sorted(dict(net.named_parameters()))
    x = torch.randn(2, 2, 256, 44).to(memory_format=torch.channels_last)
    qat.train()(x).sum().backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in convs)
