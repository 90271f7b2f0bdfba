"""QAT core: parameter names, folding, fake-quant on/off, observers, layouts, training on real clips."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dsmn import models
from dsmn.quantization import (
    QATConfig,
    calibrate,
    float_state_dict,
    freeze_batchnorm,
    freeze_observers,
    is_qat,
    prepare_qat,
    set_fake_quant,
)
from dsmn.quantization.folded import FoldedConv, merge_geometry
from dsmn.quantization.quantizers import (
    WEIGHT_QMAX,
    ActivationQuantizer,
    fake_quantize_weight,
    quantize_weight_int8,
    weight_scale,
)


@pytest.fixture(scope="module")
def real_batch(tiny_data) -> tuple[torch.Tensor, torch.Tensor]:
    """32 training clips of the tiny synthetic set as model input, and their scene ids."""
    from dsmn.data import load_dataset
    from dsmn.features import network_input
    from dsmn.features.cache import ensure_cache

    dataset = load_dataset(tiny_data)
    cache = ensure_cache(dataset, progress=False)
    clips = dataset.split("train")[:32]
    logmels = torch.from_numpy(cache.logmels[cache.rows(clips)].astype("float32"))
    return network_input(logmels), torch.tensor([c.scene_id for c in clips])


def _randomise_batchnorms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters, so folding is really exercised."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


@pytest.mark.parametrize("name", models.available())
def test_every_registered_network_keeps_its_parameters_and_output(name: str) -> None:
    torch.manual_seed(0)
    model = models.create(name).eval()
    _randomise_batchnorms(model)
    qat = prepare_qat(model)
    assert is_qat(qat) and not is_qat(model)
    float_params = dict(model.named_parameters())
    qat_params = dict(qat.named_parameters())
    assert list(float_params) == list(qat_params) or set(float_params) == set(qat_params)
    assert all(qat_params[k] is float_params[k] for k in float_params)  # shared, not copied
    assert qat.model_name == name
    x = torch.randn(4, *models.entry(name).input_shape)
    qat.train()
    qat(x)  # observe once
    qat.eval()
    set_fake_quant(qat, False)
    with torch.no_grad():
        torch.testing.assert_close(qat(x), model(x), rtol=1e-4, atol=1e-4)
    set_fake_quant(qat, True)
    with torch.no_grad():
        out = qat(x)
    assert out.shape == model(x).shape and torch.isfinite(out).all()
    restored = models.create(name)
    restored.load_state_dict(float_state_dict(qat))  # strict


def test_fake_quant_off_equals_float_in_training_too() -> None:
    torch.manual_seed(1)
    model = models.create("model1", dropout=0.0)
    _randomise_batchnorms(model)
    reference = copy.deepcopy(model)
    qat = prepare_qat(model)
    set_fake_quant(qat, False)
    qat.train()
    reference.train()
    x = torch.randn(8, 2, 256, 44)
    torch.testing.assert_close(qat(x), reference(x), rtol=1e-4, atol=1e-4)
    # the batch statistics were learned identically
    torch.testing.assert_close(model.blocks[0].op1.norm.running_var, reference.blocks[0].op1.norm.running_var)
    assert int(model.blocks[0].norm.num_batches_tracked) == 1


def test_per_channel_weight_quantization_error_is_within_half_a_step() -> None:
    torch.manual_seed(2)
    weight = torch.randn(16, 8, 3, 3) * torch.logspace(-3, 1, 16).view(-1, 1, 1, 1)
    quantized = fake_quantize_weight(weight)
    scale = weight_scale(weight).view(-1, 1, 1, 1)
    assert ((quantized - weight).abs() <= scale / 2 + 1e-7).all()
    steps = quantized / scale
    torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-4)
    q, s = quantize_weight_int8(weight)
    assert q.dtype == torch.int8 and q.abs().max() == WEIGHT_QMAX  # the largest weight of each channel
    torch.testing.assert_close(q.float() * s.view(-1, 1, 1, 1), quantized)


def test_batchnorm_folding_equals_unfolded_batchnorm_in_eval() -> None:
    torch.manual_seed(3)
    conv = nn.Conv2d(6, 6, 3, padding=1, bias=True)
    bn = nn.BatchNorm2d(6)
    wrapper = nn.Sequential(conv, bn)
    _randomise_batchnorms(wrapper)
    folded = FoldedConv([conv], bn, None).eval()
    folded.fake_quant_enabled = False
    x = torch.randn(2, 6, 10, 12)
    torch.testing.assert_close(folded(x), bn.eval()(conv(x)), rtol=1e-5, atol=1e-5)
    weight, bias, attributes = folded.deployed()
    torch.testing.assert_close(F.conv2d(x, weight, bias, padding=attributes["padding"]), bn(conv(x)), rtol=1e-5,
                               atol=1e-5)


def test_sum_of_time_and_frequency_convolutions_is_one_dilated_cross_kernel() -> None:
    torch.manual_seed(4)
    time_conv = nn.Conv2d(5, 5, (3, 1), padding=(2, 0), dilation=(2, 1), groups=5, bias=False)
    freq_conv = nn.Conv2d(5, 5, (1, 3), padding=(0, 2), dilation=(1, 2), groups=5, bias=False)
    geometry = merge_geometry([time_conv, freq_conv])
    assert geometry.kernel_size == (3, 3) and geometry.dilation == (2, 2) and geometry.padding == (2, 2)
    bn = nn.BatchNorm2d(5)
    _randomise_batchnorms(bn)
    folded = FoldedConv([time_conv, freq_conv], bn, geometry).eval()
    folded.fake_quant_enabled = False
    x = torch.randn(3, 5, 22, 64)
    torch.testing.assert_close(folded(x), bn.eval()(time_conv(x) + freq_conv(x)), rtol=1e-5, atol=1e-5)
    weight = folded.merged_weight()
    assert (weight[:, :, [0, 0, 2, 2], [0, 2, 0, 2]] == 0).all()  # the corners of the cross are empty
    # incompatible geometry (dilation 2 along time vs 3) is refused
    other = nn.Conv2d(5, 5, (3, 1), padding=(3, 0), dilation=(3, 1), groups=5, bias=False)
    assert merge_geometry([time_conv, other]) is None


def test_observer_state_round_trips_through_state_dict() -> None:
    torch.manual_seed(5)
    config = QATConfig.recipe(observer_momentum=0.1)
    qat = prepare_qat(models.create("model1"), config)
    qat.train()
    for _ in range(2):
        qat(torch.randn(4, 2, 256, 44))
    freeze_observers(qat)
    freeze_batchnorm(qat)
    state = qat.state_dict()
    assert any(k.startswith("quant.") and k.endswith("min_val") for k in state)
    fresh = prepare_qat(models.create("model1"), config)
    fresh.load_state_dict(state)
    qat.eval()
    fresh.eval()
    x = torch.randn(2, 2, 256, 44)
    torch.testing.assert_close(fresh(x), qat(x), rtol=0, atol=0)
    quantizer = next(m for m in fresh.modules() if isinstance(m, ActivationQuantizer))
    assert quantizer.observed and not quantizer.observer_enabled
    assert all(m.bn_frozen for m in fresh.modules() if isinstance(m, FoldedConv) and m.bn)
    assert QATConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown QAT settings"):
        QATConfig.from_dict({"start_epock": 3})


def test_stochastic_rounding_is_unbiased_on_the_grid_and_off_in_evaluation() -> None:
    """qat.stochastic_rounding: in training each value goes to one of its two neighbouring steps, with
    probability by distance (so the mean is kept); evaluation (and so export) rounds to nearest."""
    torch.manual_seed(0)
    quantizer = ActivationQuantizer(momentum=1.0, stochastic_rounding=True)
    quantizer.train()
    quantizer(torch.tensor([0.0, 2.55]))  # observe: scale 0.01, zero point 0
    quantizer.observer_enabled = False
    x = torch.full((20000,), 0.503)  # 50.3 steps
    out = quantizer(x) / quantizer.scale
    assert set(torch.round(out).unique().tolist()) == {50.0, 51.0}
    assert torch.allclose(out, torch.round(out), atol=1e-4)  # on the grid
    assert abs(float((out == 51).float().mean()) - 0.3) < 0.02  # P(up) = distance to the lower step
    quantizer.eval()
    assert torch.equal(quantizer(x) / quantizer.scale, torch.full_like(x, 50.0))
    config = QATConfig.recipe(stochastic_rounding=True)
    qat = prepare_qat(models.create("model1"), config)
    assert all(m.stochastic_rounding for m in qat.modules() if isinstance(m, ActivationQuantizer))
    assert not QATConfig.recipe().stochastic_rounding  # the recipe rounds to nearest


def test_frozen_observers_and_batchnorm_stop_changing() -> None:
    qat = prepare_qat(models.create("model1")).train()
    qat(torch.randn(4, 2, 256, 44))
    freeze_observers(qat)
    freeze_batchnorm(qat)
    before = {k: v.clone() for k, v in qat.state_dict().items() if isinstance(v, torch.Tensor)}
    qat(torch.randn(4, 2, 256, 44) * 3)
    after = qat.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert changed == []


def test_channels_last_gives_the_same_logits() -> None:
    torch.manual_seed(6)
    qat = prepare_qat(models.create("model2", dropout=0.0))
    x = torch.randn(6, 2, 256, 44)
    calibrate(qat, [x], momentum=1.0)
    qat.eval()
    with torch.no_grad():
        expected = qat(x)
        qat.to(memory_format=torch.channels_last)
        got = qat(x.contiguous(memory_format=torch.channels_last))
    # layouts change float summation order: a value on a rounding boundary may move by one step
    assert (got.argmax(1) == expected.argmax(1)).all()
    torch.testing.assert_close(got, expected, rtol=0, atol=0.05)


def test_qat_model_learns_real_clips(real_batch) -> None:
    x, y = real_batch[0][:16], real_batch[1][:16]
    torch.manual_seed(7)
    qat = prepare_qat(models.create("model1", dropout=0.0), QATConfig.recipe(observer_momentum=0.1)).train()
    optimizer = torch.optim.Adam(qat.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(models.split_logits(qat(x))[0], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(p.grad is not None for p in qat.parameters() if p.requires_grad)


def test_works_under_distributed_data_parallel() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group already exists")
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29531", rank=0, world_size=1)
    try:
        qat = prepare_qat(models.create("model1"))
        wrapped = nn.parallel.DistributedDataParallel(qat)
        wrapped(torch.randn(2, 2, 256, 44)).sum().backward()
        set_fake_quant(wrapped, False)
        assert is_qat(wrapped)
        assert set(float_state_dict(wrapped)) == set(models.create("model1").state_dict())
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", ["model1", "dssc_small"])
def test_prepared_on_a_moved_network_everything_stays_on_its_device(name: str) -> None:
    """The trainer moves the float network to the GPU, then prepares QAT (also late, for
    float_until_start): the new observers and folded layers must follow it (the meta device stands in
    for CUDA here)."""
    qat = prepare_qat(models.create(name).to("meta"))
    places = {t.device.type for t in [*qat.parameters(), *qat.buffers()]}
    assert places == {"meta"}


@pytest.mark.cuda
def test_runs_on_cuda() -> None:
    qat = prepare_qat(models.create("model1")).cuda().train()
    qat(torch.randn(4, 2, 256, 44, device="cuda")).sum().backward()
    qat.eval()
    assert qat(torch.randn(2, 2, 256, 44, device="cuda")).device.type == "cuda"


def test_int8_convolution_cannot_saturate_int16_pair_sums(tmp_path) -> None:
    """Worst case for x86 CPUs without VNNI: every activation at 255, every weight at the top of its grid.
    With 8-bit weights ONNX Runtime's u8 x s8 kernels saturate (2 * 255 * 127 > 32767) there; the 7-bit
    grid keeps ONNX Runtime equal to the torch QAT model on any CPU."""
    import onnx

    from dsmn.deploy.onnx_export import to_onnx
    from dsmn.deploy.runtime import create_session
    from dsmn.quantization import calibrate

    net = nn.Sequential(nn.Conv2d(64, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1))
    with torch.no_grad():
        net[0].weight.fill_(0.01)
        net[0].weight[:, ::2] = -0.01  # pairs of opposite products: only the int16 pair sums can overflow
        net[0].weight[1].fill_(0.01)  # one channel whose products all add up
        net[0].bias.zero_()
    qat = prepare_qat(net)
    x = torch.rand(2, 64, 4, 4) + 1.0
    x[0] = 2.0  # the calibrated maximum: quantised to 255
    calibrate(qat, [x], momentum=1.0)
    qat.eval()
    path = tmp_path / "worst.onnx"
    onnx.save(to_onnx(qat, tuple(x.shape), quantized=True), str(path))
    got = create_session(path).run(None, {"features": x.numpy()})[0]
    with torch.no_grad():
        expected = qat(x).numpy()
    assert abs(got - expected).max() <= 1e-3 * (abs(expected).max() + 1)


def test_deployed_biases_lie_on_the_int32_grid_of_their_layer() -> None:
    """Bias step = input scale x per-channel weight scale, as QLinearConv / QGemm store it; the QAT
    model's eval output uses the same rounded biases, so the exported model reproduces it."""
    from dsmn import models
    from dsmn.quantization import calibrate
    from dsmn.quantization.folded import _FoldedBase

    torch.manual_seed(0)
    qat = prepare_qat(models.create("model1"))
    calibrate(qat, [torch.randn(4, 2, 256, 44)], momentum=1.0)
    qat.eval()
    layers = [m for m in qat.modules() if isinstance(m, _FoldedBase)]
    assert layers and all(m.input_quantizer for m in layers)
    for layer in layers:
        weight, bias = layer.deployed_weights()
        if bias is None:
            continue
        steps = bias / (layer.input_quantizer[0].scale * weight_scale(weight))
        torch.testing.assert_close(steps, steps.round(), rtol=1e-6, atol=2e-3)  # float32 at large steps
