"""Quantisation-aware training on maintained aten fake-quant ops, and int8 deployment helpers.

    >>> qat = prepare_qat(dsmn.models.create("model1"), QATConfig.recipe())
    >>> logits = qat(x)                       # same signature, same parameter names
    >>> torch.save({"qat_state_dict": qat.state_dict(), "qat": QATConfig.recipe().to_dict(), ...}, path)
"""

from dsmn.quantization.config import QATConfig
from dsmn.quantization.prepare import prepare_qat
from dsmn.quantization.switches import (
    calibrate,
    calibrating,
    float_state_dict,
    freeze_batchnorm,
    freeze_observers,
    is_qat,
    set_fake_quant,
    unwrap,
)

__all__ = [
    "QATConfig",
    "calibrate",
    "calibrating",
    "float_state_dict",
    "freeze_batchnorm",
    "freeze_observers",
    "is_qat",
    "prepare_qat",
    "set_fake_quant",
    "unwrap",
]
