"""`--epochs N` with a recipe written for another length: the epoch-counted settings follow, and the
banner says so; settings that do not fit the run are warned about."""

from __future__ import annotations

import pytest

from dsmn.training import load_config
from dsmn.training.distributed import Distributed
from dsmn.training.schedule import learning_rate, mixup_fraction, schedule_notes
from dsmn.training.trainer import _banner

DESCRIBE = {"train_clips": 100, "val_clips": 20, "validation": "fold1_evaluate", "correction_vectors": 3}


def banner(config) -> str:  # noqa: ANN001
    return _banner(config, DESCRIBE, Distributed(), 0)


def test_four_epochs_of_the_recipe_keep_its_shape() -> None:
    config = load_config("model1", ["epochs=4"])
    assert (config.schedule.warmup_epochs, config.mixup.late_epoch, config.qat.start_epoch) == (0, 2, 0)
    lrs = [learning_rate(e, epochs=4, base_lr=config.optimizer.lr, schedule=config.schedule) for e in range(4)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-6)  # peak, then cosine to the floor
    assert [mixup_fraction(e, config.mixup) for e in range(4)] == [1.0, 1.0, 0.5, 0.5]
    text = banner(config)
    assert "schedule scaled from the config's 100 epochs to 4: schedule.warmup_epochs 5 -> 0, " \
           "mixup.late_epoch 60 -> 2" in text
    assert "warning" not in text


def test_the_demo_config_scales_from_its_own_ten_epochs() -> None:
    config = load_config("demo", ["epochs=20"])
    assert (config.schedule.warmup_epochs, config.mixup.late_epoch, config.qat_start_epoch) == (2, 12, 17)
    assert config.scaled_settings == {"epochs": [10, 20], "schedule.warmup_epochs": [1, 2],
                                      "mixup.late_epoch": [6, 12]}


def test_the_recipes_own_length_and_pinned_settings_are_left_alone() -> None:
    assert load_config("model1", ["epochs=100"]).scaled_settings == {}
    config = load_config("model1", ["epochs=4", "schedule.warmup_epochs=1", "qat.start_epoch=3"])
    assert (config.schedule.warmup_epochs, config.mixup.late_epoch, config.qat.start_epoch) == (1, 2, 3)
    scaled = load_config("model1", ["epochs=10", "qat.freeze_bn_epoch=8"])
    assert scaled.qat.freeze_bn_epoch == 8  # pinned in the same overrides
    unset = load_config("model1", ["epochs=4"]).qat
    assert (unset.freeze_bn_epoch, unset.freeze_observers_epoch) == (None, None)  # unset QAT epochs stay unset


def test_a_schedule_that_does_not_fit_is_warned_about() -> None:
    config = load_config("model1", ["epochs=4", "schedule.scale_with_epochs=false"])
    assert (config.schedule.warmup_epochs, config.mixup.late_epoch) == (5, 60)
    notes = schedule_notes(config)
    assert any(n.startswith("warning: schedule.warmup_epochs=5 >= epochs=4: the run never leaves warm-up")
               for n in notes)
    assert any(n.startswith("warning: mixup.late_epoch=60 >= epochs=4") for n in notes)
    assert "never leaves warm-up" in banner(config)
    late_qat = load_config("model1", ["epochs=4", "qat.start_epoch=4"])
    assert any("fake quantisation never starts" in n for n in schedule_notes(late_qat))
