"""`dsmn complexity`: the JSON contract, --check, checkpoints with unused blocks."""

from __future__ import annotations

import json

import torch

from dsmn.cli import main
from tests.authors_layout_reference import authors_model


def test_json_shape(capsys):
    assert main(["complexity", "model1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"model", "params", "param_bytes", "macs", "within_limits"} <= set(report)
    assert report["params"] == 45_164 and report["macs"] == 8_645_641 and report["within_limits"] is True


def test_dtype_changes_bytes(capsys):
    main(["complexity", "model4", "--json", "--dtype", "fp32"])
    report = json.loads(capsys.readouterr().out)
    assert report["param_bytes"] == 4 * 121_812 and report["within_limits"] is False


def test_check_exits_one_over_budget(capsys):
    assert main(["complexity", "model4", "--dtype", "fp32", "--check"]) == 1
    assert main(["complexity", "model4", "--dtype", "int8", "--check"]) == 0


def test_authors_checkpoint_with_unused_block_counts_only_the_forward_pass(tmp_path, capsys):
    path = tmp_path / "m1.pt"
    torch.save(authors_model("model1").state_dict(), path)
    assert main(["complexity", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["params"] == 45_164


def test_table_lists_every_layer(capsys):
    main(["complexity", "model3"])
    out = capsys.readouterr().out
    assert "blocks.4.attention.conv" in out and "within DCASE limits: yes" in out
