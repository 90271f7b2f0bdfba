"""Training configs: the shipped recipe, the base chain, overrides, and errors for typos."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dsmn.training import load_config, parse_overrides
from dsmn.training.config import CONFIG_DIR, read_config_dict


@pytest.mark.parametrize("name", ["model1", "model2", "model3", "model4"])
def test_model_configs_hold_the_dcase2023_recipe(name: str) -> None:
    c = load_config(name)
    assert c.model == name
    assert (c.epochs, c.batch_size) == (100, 32)
    assert (c.optimizer.name, c.optimizer.lr) == ("radam", 1e-3)
    assert (c.schedule.warmup_epochs, c.schedule.warmup_lr, c.schedule.min_lr) == (5, 5e-5, 1e-6)
    assert c.mixup.enabled and c.mixup.alpha == 0.2 and c.mixup.late_epoch == 60 and c.mixup.late_fraction == 0.5
    assert c.spectrum_correction.enabled and c.spectrum_correction.probability == pytest.approx(12 / 13)
    assert c.spectrum_correction.reference_device == "a"
    assert c.specaugment.enabled and (c.specaugment.time_stripes, c.specaugment.freq_stripes) == (2, 2)
    assert c.specaugment.max_width == 1
    assert (c.multitask.mode, c.multitask.pcgrad) == ("pcgrad", "full")
    assert c.qat.enabled and c.qat.start_epoch == 0
    assert c.data.val_split == "evaluate"


def test_model_configs_are_data_not_copies() -> None:
    for name in ("model1", "model2", "model3", "model4"):
        text = (CONFIG_DIR / f"{name}.yaml").read_text()
        assert "base: dcase2023.yaml" in text and "mixup" not in text


def test_repo_configs_folder_is_the_package_folder() -> None:
    repo_configs = Path(__file__).resolve().parent.parent / "configs"
    assert repo_configs.resolve() == CONFIG_DIR.resolve()


def test_demo_config_extends_model1() -> None:
    demo = load_config("demo")
    assert demo.model == "model1" and demo.qat.enabled
    assert demo.epochs < 100


def test_base_chain_and_overrides(tmp_path: Path) -> None:
    child = tmp_path / "ablation.yaml"
    child.write_text("base: model2\nmixup:\n  enabled: false\noptimizer:\n  lr: 2e-3\n")
    c = load_config(child, ["specaugment.max_width=3", "qat.start_epoch=80", "epochs=7"])
    assert c.model == "model2" and not c.mixup.enabled and c.mixup.alpha == 0.2  # merged, not replaced
    assert c.optimizer.lr == 2e-3  # YAML reads 2e-3 as a string: coerced to float
    assert (c.specaugment.max_width, c.qat.start_epoch, c.epochs) == (3, 80, 7)
    assert load_config("model1", ["multitask.mode=off"]).multitask.mode == "off"  # not YAML's False


def test_relative_base_is_found_beside_the_file(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("base: model3\nepochs: 5\n")
    (tmp_path / "child.yaml").write_text("base: mine.yaml\nbatch_size: 16\n")
    c = load_config(tmp_path / "child.yaml")
    assert (c.model, c.epochs, c.batch_size) == ("model3", 5, 16)


def test_the_qat_section_is_the_quantisation_settings_class() -> None:
    from dsmn.quantization import QATConfig
    from dsmn.training.qat import QATSchedule

    c = load_config("model1", ["qat.freeze_bn_epoch=90", "qat.observer_momentum=0.1"])
    assert isinstance(c.qat, QATConfig) and c.qat == QATConfig.recipe(freeze_bn_epoch=90, observer_momentum=0.1)
    schedule = QATSchedule(c.qat, c.epochs)
    assert schedule.config.freeze_bn_epoch == 90 and schedule.first_epoch == 0


def test_parse_overrides_nests_and_parses_values() -> None:
    assert parse_overrides(["a.b.c=1", "a.d=false", "e=split25", "f=null"]) == {
        "a": {"b": {"c": 1}, "d": False}, "e": "split25", "f": None}
    with pytest.raises(ValueError, match="key.sub=value"):
        parse_overrides(["mixup"])


def test_typos_and_bad_values_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mixup.enabeld"):
        load_config("model1", ["mixup.enabeld=false"])
    with pytest.raises(ValueError, match="multitask.mode"):
        load_config("model1", ["multitask.mode=mean"])
    with pytest.raises(ValueError, match="qat.freeze_everything"):
        load_config("model1", ["qat.freeze_everything=1"])
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ValueError, match="extends itself"):
        read_config_dict(loop)
    with pytest.raises(FileNotFoundError, match="shipped configs"):
        load_config("no-such-config")


def test_negative_qat_start_counts_from_the_end() -> None:
    """The demo config trains QAT for its last epochs whatever --epochs says."""
    assert load_config("demo", ["epochs=2"]).qat_start_epoch == 0
    assert load_config("demo", ["epochs=10"]).qat_start_epoch == 7
    config = load_config("demo", ["qat.start_epoch=-1", "epochs=5"])
    assert config.qat_start_epoch == 4
    assert config.qat.start_epoch == -1  # validation reads the config, it never rewrites it


@pytest.mark.parametrize(("override", "message"), [
    ("epochs=abc", "epochs: expected a whole number, got 'abc'"),
    ("batch_size=abc", "batch_size: expected a whole number"),
    ("seed=1.5", "seed: expected a whole number, got 1.5"),
    ("mixup.alpha=-1", "mixup.alpha: -1.0 is out of range"),
    ("mixup.enabled=maybe", "mixup.enabled: expected true or false, got 'maybe'"),
    ("specaugment.enabled=1", "specaugment.enabled: expected true or false"),
    ("optimizer.name=foo", "optimizer.name: 'foo' is not one of radam, adam, adamw, sgd"),
    ("optimizer.lr=-1", "optimizer.lr: -1.0 is out of range"),
    ("spectrum_correction.probability=2", "spectrum_correction.probability: 2.0 is out of range"),
    ("data.subset=split7", "data.subset: 'split7' is not one of split5"),
    ("data.preload=sometimes", "data.preload"),
    ("device=gpu", "device: 'gpu' is not auto, cpu, cuda"),
    ("model=model9", "unknown model 'model9'"),
    ("qat.freeze_bn_epoch=soon", "qat.freeze_bn_epoch: expected a whole number"),
    ("mixup=3", "mixup must be a mapping"),
    ("epochs=.nan", "epochs: expected a whole number"),
    ("optimizer.lr=.inf", "optimizer.lr: expected a finite number"),
])
def test_every_key_is_type_checked(override: str, message: str) -> None:
    """Booleans, numbers and choices are checked for every key: a wrong value never becomes a string."""
    from dsmn.training.config import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("model1", [override])


def test_valid_spellings_still_read() -> None:
    config = load_config("model1", ["spectrum_correction.probability=12/13", "optimizer.lr=1e-3", "epochs=2.0",
                                    "data.subset=split25", "device=cuda:1", "qat.freeze_bn_epoch=null"])
    assert config.epochs == 2 and isinstance(config.epochs, int) and config.optimizer.lr == 1e-3
    assert config.spectrum_correction.probability == pytest.approx(12 / 13)


def test_runs_that_could_never_save_best_are_refused() -> None:
    from dsmn.training.config import ConfigError

    with pytest.raises(ConfigError, match="QAT would never start"):
        load_config("model1", ["epochs=3", "qat.start_epoch=3"]).check_trainable()
    load_config("model1", ["epochs=3", "qat.start_epoch=3", "qat.enabled=false"]).check_trainable()



def test_a_missing_key_is_named_in_full(tmp_path: Path) -> None:
    from dsmn.training.config import ConfigError, config_from_dict, read_config_dict

    recipe = read_config_dict("dcase2023")
    del recipe["mixup"]["late_epoch"]
    from dsmn.training import config as schema

    with pytest.raises(ConfigError, match=r"config key\(s\) mixup\.late_epoch missing"):
        schema._build(schema.TrainConfig, recipe, "")
    assert config_from_dict({"model": "model2"}).mixup.late_epoch == 60  # a partial dict: the recipe fills it


def test_a_file_without_base_extends_the_recipe(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("model: model2\nepochs: 4\n")
    c = load_config(mine)
    assert (c.model, c.epochs, c.mixup.alpha, c.qat.observer_momentum) == ("model2", 4, 0.2, 0.01)


def test_the_recipe_yaml_names_every_setting_and_the_schema_holds_no_values() -> None:
    """dcase2023.yaml is the one place the values live: the schema classes have no defaults."""
    import dataclasses
    from typing import get_type_hints

    from dsmn.training import config as schema

    recipe = read_config_dict("dcase2023")
    sections = [(hint, recipe[name]) for name, hint in get_type_hints(schema.TrainConfig).items()
                if dataclasses.is_dataclass(hint)]
    for cls, section in [(schema.TrainConfig, recipe), *sections]:
        names = {f.name for f in dataclasses.fields(cls)}
        assert names == set(section), cls.__name__
        assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   for f in dataclasses.fields(cls)), cls.__name__

