"""TFLite's fixed-point integer arithmetic, reproduced (dsmn.deploy.tflite_arithmetic).

The rules are checked on values worked out by hand from TFLite's definitions, then on whole networks
against TFLM itself: the simulation must compute exactly what TFLM computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsmn import models
from dsmn.deploy.tflite_arithmetic import TfliteArithmetic, multiply_by_quantized_multiplier, quantize_multiplier
from dsmn.quantization import calibrate, prepare_qat


def test_quantize_multiplier_normalises_into_a_31_bit_mantissa() -> None:
    multiplier, shift = quantize_multiplier(np.array([0.5, 1.0, 0.3, 3.0, 2.0**-40]))
    assert multiplier.tolist() == [2**30, 2**30, round(0.6 * 2**31), round(0.75 * 2**31), 0]
    assert shift.tolist() == [0, 1, -1, 2, 0]  # a multiplier below 2^-31 becomes 0 (TFLite's underflow rule)


@pytest.mark.parametrize(("x", "real", "tflite", "one_rounding"), [
    (1, 0.375, 1, 0),  # 1 x 0.75 = 0.75 -> 1, then 1 / 2 = 0.5 -> 1 (half away from zero); 0.375 -> 0
    (-1, 0.375, -1, 0),  # the same below zero
    (3, 0.375, 1, 1),  # 2.25 -> 2 -> 1; 1.125 -> 1: the two agree
    (5, 0.75, 4, 4),  # shift 0: one rounding, 3.75 -> 4
    (7, 3.0, 21, 21),  # a multiplier above one shifts left first: exact
    (1000, 2.0**-10, 1, 1),  # 0.977 -> 1
])
def test_fixed_point_multiply_rounds_twice_like_tflite(x, real, tflite, one_rounding) -> None:
    got = multiply_by_quantized_multiplier(torch.tensor([[x]]), *quantize_multiplier(real))
    assert int(got) == tflite
    assert round(x * real) == one_rounding  # what a single rounding (the QAT simulation) gives


DEPLOYABLE = [n for n in models.available() if models.entry(n).family != "teacher"]  # teachers stay on a GPU


@pytest.mark.parametrize("name", DEPLOYABLE)
def test_every_deployable_network_has_an_integer_rule_for_each_operator(name) -> None:
    """No operator of a deployable family falls back to the QAT simulation's rounding."""
    entry = models.entry(name)
    torch.manual_seed(0)
    qat = prepare_qat(models.create(name).eval())
    calibrate(qat, [torch.randn(4, *entry.input_shape)], momentum=1.0)
    qat.eval()
    x = torch.randn(2, *entry.input_shape)
    fixed = TfliteArithmetic(qat, x[:1])
    with torch.no_grad():
        out, qat_out = fixed(x), qat(x)
    assert fixed.float_rounded == set()
    assert out.shape == qat_out.shape and torch.isfinite(out).all()


def test_every_command_offers_the_model_kinds_inference_loads() -> None:
    from dsmn.cli.options import MODEL_KINDS
    from dsmn.deploy.inference import MODEL_KINDS as LOADABLE

    assert MODEL_KINDS == LOADABLE and "qat-tflite" in MODEL_KINDS
