"""Checkpoints in the authors' key layout load into dsmn networks that compute the same outputs."""

from __future__ import annotations

import pytest
import torch

from dsmn import models
from dsmn.models.original import infer_original_variant, to_original_state_dict
from tests.authors_layout_reference import authors_model


@pytest.mark.parametrize("name", ["model1", "model2", "model3", "model4"])
def test_outputs_equal_the_authors_definition(name, tmp_path):
    reference = authors_model(name, seed=3)
    path = tmp_path / "authors.pt"
    torch.save(reference.state_dict(), path)  # carries the unused conv6 block, like theirs
    net = models.load_original(path, name).eval()
    x = torch.randn(5, 2, 256, 44)
    with torch.no_grad():
        assert (net(x) - reference(x)).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["model1", "model2", "model3", "model4"])
def test_variant_is_inferred_from_shapes(name):
    assert infer_original_variant(authors_model(name).state_dict()) == name


def test_wrapped_and_ddp_prefixed_checkpoints_load():
    state = {f"module.{k}": v for k, v in authors_model("model1").state_dict().items()}
    net = models.load_original({"state_dict": state})
    assert net.model_name == "model1"


def test_missing_and_unknown_keys_are_listed():
    state = authors_model("model1").state_dict()
    state.pop("conv2.att.conv.weight")
    state["conv2.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as error:
        models.load_original(state, "model1")
    assert "conv2.att.conv.weight" in str(error.value) and "conv2.extra.weight" in str(error.value)


def test_wrong_variant_reports_shapes():
    with pytest.raises(ValueError, match="shapes"):
        models.load_original(authors_model("model4").state_dict(), "model1")


def test_round_trip_to_the_authors_layout():
    net = models.create("model2")
    back = models.load_original(to_original_state_dict(net.state_dict()), "model2")
    for key, value in net.state_dict().items():
        assert torch.equal(value, back.state_dict()[key])
