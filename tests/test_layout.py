"""The ONNX Runtime layout rewrites change no value: int8 bit for bit, float to rounding."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from dsmn import models
from dsmn.deploy.layout import absorb_input_transpose, expand_channel_gates
from dsmn.deploy.onnx_export import to_onnx
from dsmn.quantization import calibrate, prepare_qat


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _qat(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    shape = models.entry(name).input_shape
    qat = prepare_qat(models.create(name).eval())
    calibrate(qat, [torch.randn(8, *shape)], momentum=1.0)
    return qat.eval(), shape


def _ops(model: onnx.ModelProto, op_type: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == op_type]


@pytest.mark.parametrize("name", ["model1", "dssc_small"])
def test_rewrites_keep_int8_values_exactly(name: str) -> None:
    network, shape = _qat(name)
    plain = to_onnx(network, (2, *shape), quantized=True, runtime_layout=False)
    fast = to_onnx(network, (2, *shape), quantized=True)
    onnx.checker.check_model(fast)
    assert len(_ops(plain, "Transpose")) == 1 and not _ops(fast, "Transpose")
    assert len(_ops(fast, "Expand")) == 5  # one per distillation block's channel gate
    x = np.random.default_rng(0).standard_normal((6, *shape)).astype(np.float32)
    np.testing.assert_array_equal(_run(fast, x), _run(plain, x))


def test_rewrites_keep_float_values() -> None:
    network, shape = _qat("model2")
    plain = to_onnx(network, (2, *shape), quantized=False, runtime_layout=False)
    fast = to_onnx(network, (2, *shape), quantized=False)
    assert not _ops(fast, "Transpose") and not _ops(fast, "Expand")
    x = np.random.default_rng(1).standard_normal((4, *shape)).astype(np.float32)
    np.testing.assert_allclose(_run(fast, x), _run(plain, x), rtol=1e-5, atol=1e-5)


class _FlattensSpace(nn.Module):
    """Swaps its input's axes and then flattens a spatial tensor: swapping back is not value-preserving."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, (3, 1), padding=(1, 0))
        self.head = nn.Linear(2 * 4 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.conv(x.transpose(2, 3)), 1))


def test_absorb_refuses_a_graph_it_cannot_swap() -> None:
    network = _FlattensSpace().eval()
    model = to_onnx(network, (2, 1, 6, 4), quantized=False, runtime_layout=False)
    before = model.SerializeToString()
    assert absorb_input_transpose(model) is False
    assert model.SerializeToString() == before
    assert expand_channel_gates(model) == 0


def test_absorb_swaps_kernels_padding_and_slices() -> None:
    class Asymmetric(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(1, 3, (3, 1), padding=(1, 0), dilation=(1, 1))
            self.b = nn.Conv2d(3, 3, (1, 5), padding=(0, 4), dilation=(1, 2), stride=(2, 1))
            self.pool = nn.AvgPool2d((2, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.b(torch.relu(self.a(x.transpose(2, 3))))
            y = self.pool(torch.cat([y[..., :5], y[..., 5:]], dim=1))
            return y.mean(dim=(2, 3))

    network = Asymmetric().eval()
    model = to_onnx(network, (2, 1, 10, 8), quantized=False, runtime_layout=False)
    swapped = onnx.ModelProto()
    swapped.CopyFrom(model)
    assert absorb_input_transpose(swapped) is True
    assert not _ops(swapped, "Transpose")
    x = np.random.default_rng(2).standard_normal((3, 1, 10, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(swapped, x), _run(model, x), rtol=1e-5, atol=1e-6)
