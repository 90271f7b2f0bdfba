"""Training configuration: the schema of the YAML recipes, and how they are read.

The values live in YAML only: `configs/dcase2023.yaml` (shipped in `dsmn/configs`) writes out the
whole DCASE 2023 recipe, every key; a config file names the file it extends (`base: model1.yaml`)
and lists only what differs, and a file without `base:` extends dcase2023.yaml. The dataclasses
below are the schema: types and limits, no values of their own, so a key missing from the merged
YAML, an unknown key or a value of the wrong type or range is an error naming the key in full
(`mixup.late_epoch`). Reading a config never changes a value it checks. See docs/recipe.md.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from dsmn.errors import UserError
from dsmn.files import write_text
from dsmn.quantization.config import QATConfig


class ConfigError(UserError, ValueError):
    """A config file, key or value that cannot be used; the message names the key."""


class ConfigNotFoundError(ConfigError, FileNotFoundError):
    """No config file or shipped config of that name."""


CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
RECIPE = "dcase2023"  # the complete config every other one extends
MULTITASK_MODES = ("pcgrad", "sum", "off")
PCGRAD_MODES = ("full", "shared-representation")
VALIDATION_MODES = ("evaluate", "holdout")
MERGE_RULES = ("per-tensor", "per-element")  # as dsmn.training.pcgrad.MERGE_RULES (no import: config stays light)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
OPTIMIZERS = ("radam", "adam", "adamw", "sgd")
SUBSETS = ("split5", "split10", "split25", "split50", "split100")


def choice(options: tuple) -> Any:
    """A field whose value must be one of `options` (checked when a config is read)."""
    return field(metadata={"choices": options})


def number(low: float | None = None, high: float | None = None) -> Any:
    """A numeric field limited to [low, high] (either side open when None)."""
    return field(metadata={"low": low, "high": high})


def positive() -> Any:
    """A number that must be above zero."""
    return field(metadata={"above": 0})



@dataclass
class OptimizerConfig:
    name: str = choice(OPTIMIZERS)
    lr: float = positive()
    weight_decay: float = number(low=0.0)
    implementation: str = choice(("foreach", "fused", "loop"))  # fused only where torch has it


@dataclass
class ScheduleConfig:
    """Per-epoch learning rate: linear warm-up from `warmup_lr`, then cosine down to `min_lr`.

    `scale_with_epochs`: an `epochs` override (`--epochs N`) scales the epoch-counted settings the
    config does not pin in the same override (warm-up, the mixup switch, positive QAT epochs) by
    N / the config's epochs, so a short run keeps the recipe's shape (see `scale_epoch_settings`).
    """

    warmup_epochs: int = number(low=0)
    warmup_lr: float = number(low=0.0)
    min_lr: float = number(low=0.0)
    scale_with_epochs: bool


@dataclass
class MixupConfig:
    """One lambda ~ Beta(alpha, alpha) per batch; from `late_epoch` on only `late_fraction` of the batch."""

    enabled: bool
    alpha: float = positive()
    late_epoch: int = number(low=0)
    late_fraction: float = number(low=0.0, high=1.0)


@dataclass
class SpectrumCorrectionConfig:
    """Add a stored device response (other device - device a) to device-a clips, per batch with `probability`."""

    enabled: bool
    probability: float = number(low=0.0, high=1.0)
    reference_device: str


@dataclass
class SpecAugmentConfig:
    """Zero `time_stripes` frame stripes and `freq_stripes` bin stripes of width 0..max_width per clip."""

    enabled: bool
    time_stripes: int = number(low=0)
    freq_stripes: int = number(low=0)
    max_width: int = number(low=0)


@dataclass
class DeviceIRConfig:
    """Device impulse responses: a folder of IR WAVs becomes a bank of log-mel device responses added to
    reference-device clips, per batch with `probability`. The bank joins spectrum correction (a batch
    the IR coin skips may still get a correction vector) or, with `replace_correction`, replaces it."""

    enabled: bool
    folder: str | None
    probability: float = number(low=0.0, high=1.0)
    replace_correction: bool


@dataclass
class FreqMixStyleConfig:
    """Freq-MixStyle: per clip with `probability`, its per-mel-band mean and std (over time) are mixed
    with another clip's with a weight ~ Beta(alpha, alpha). Published settings: p = 0.4, alpha = 0.3."""

    enabled: bool
    probability: float = number(low=0.0, high=1.0)
    alpha: float = positive()


@dataclass
class DistillationConfig:
    """Knowledge distillation from a teacher logit table (`dsmn teach`, or made elsewhere).

    Each task's loss = kd_lambda * label loss + (1 - kd_lambda) * T^2 * KL(teacher_T || student_T),
    T = `temperature`. Published (CPJKU, DCASE 2023): kd_lambda = 0.02, T = 2. `teacher: null`: off.
    """

    teacher: str | None
    kd_lambda: float = number(low=0.0, high=1.0)
    temperature: float = positive()


@dataclass
class MultitaskConfig:
    """pcgrad: 10-scene + 3-coarse losses combined by PCGrad; sum: one summed loss; off: scene loss only.

    `pcgrad: full` projects gradients over every parameter (two backward passes, faithful);
    `shared-representation` projects at the embedding and back-propagates the trunk once (faster).
    `merge`: which tasks "reach" a parameter, deciding mean (shared) or sum (task-specific) of the
    projected gradients: `per-tensor` as the authors' code (mean everywhere for the DSMN networks) or
    `per-element` (non-zero elements; the last layer's task rows get the sum). See training.pcgrad.
    """

    mode: str = choice(MULTITASK_MODES)
    pcgrad: str = choice(PCGRAD_MODES)
    merge: str = choice(MERGE_RULES)
    coarse_weight: float = number(low=0.0)  # `sum` mode only: loss = scene + coarse_weight * coarse


@dataclass
class DataConfig:
    """`validation`: where the checkpoint with the lowest validation loss is chosen. `evaluate` (the
    authors'): on `val_split`, fold1_evaluate by default, the split results are then reported on;
    `holdout`: on `holdout_locations` recording locations per scene held out of the training split
    (deterministic, never trained on; see dsmn.data.holdout)."""

    train_split: str
    val_split: str
    validation: str = choice(VALIDATION_MODES)
    holdout_locations: int = number(low=1)  # per scene, with validation: holdout
    subset: str | None = choice((None, *SUBSETS))  # train on a DCASE 2024 subset instead of train_split
    cache_dir: str | None  # default: the feature cache's own default location
    preload: str = choice(("auto", "always", "never"))  # hold the training log-mels in (device) memory
    preload_limit_gb: float = number(low=0.0)  # `auto` preloads below this size
    workers: int = number(low=0)  # threads reading cache rows ahead of the step (memmap path)
    val_batch_size: int = number(low=1)  # small: CPU activations stay in cache; raise on a GPU
    val_max_clips: int | None = number(low=1)  # validate on an evenly spread subset (quick runs)
    # clips longer than the network's 1-s input (TAU 2020's 10 s): `windows` trains on 1-s windows drawn at
    # random positions every epoch and scores a clip by its windows' mean probabilities; `whole` trains and
    # scores whole clips (the networks pool time globally)
    long_clips: str = choice(("windows", "whole"))
    windows_per_clip: int = number(low=1)  # `windows`: windows drawn from every clip per epoch
    devices: list[str] | None  # train and validate on these recording devices only (device-specific models)


@dataclass
class FinetuneConfig:
    """Start from trained weights instead of a fresh network (`dsmn finetune` sets these per device).

    `checkpoint`: a dsmn checkpoint or run folder; its float weights, and its QAT state (observers)
    when this run uses QAT too, replace the initial ones. `trainable`: parameter-name prefixes that
    are trained (e.g. [head] or [blocks.4, head]); None trains the whole network.
    """

    checkpoint: str | None
    trainable: list[str] | None


@dataclass
class TrainConfig:
    model: str
    model_kwargs: dict[str, Any]
    epochs: int = number(low=1)
    batch_size: int = number(low=1)
    seed: int = number(low=0, high=2**32 - 1)
    device: str = field(metadata={"pattern": r"auto|cpu|cuda(:\d+)?|mps",
                                                  "pattern_doc": "auto, cpu, cuda, cuda:N or mps"})
    threads: int | None = number(low=1)  # torch intra-op threads on the CPU (None: torch's default)
    channels_last: bool
    deltas: bool | None  # None: what the model's registry entry says
    delta_width: int = number(low=3)
    regularization_weight: float = number(low=0.0)  # weight of dsmn.models.regularization_loss(model), if defined
    drop_last: bool
    max_batches_per_epoch: int | None = number(low=1)  # cut epochs short (smoke tests); None: all
    progress: bool  # tqdm bars (epochs and batches)
    # torch.compile the network for training: false | true (= "default") | a torch.compile mode
    # ("reduce-overhead": also CUDA graphs, "max-autotune-no-cudagraphs"). Fewer, fused GPU kernels.
    compile: bool | str
    optimizer: OptimizerConfig
    schedule: ScheduleConfig
    mixup: MixupConfig
    spectrum_correction: SpectrumCorrectionConfig
    specaugment: SpecAugmentConfig
    device_ir: DeviceIRConfig
    freq_mixstyle: FreqMixStyleConfig
    distillation: DistillationConfig
    multitask: MultitaskConfig
    qat: QATConfig  # the quantisation package's own settings class: QAT is defined once
    data: DataConfig
    finetune: FinetuneConfig
    # what an `epochs` override scaled: {"epochs": [config's, run's], "mixup.late_epoch": [was, now], ...}
    scaled_settings: dict[str, list[int]]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def qat_start_epoch(self) -> int:
        """The first QAT epoch: `qat.start_epoch`, counted from the end when negative (-3: the last
        three epochs), so a config survives `--epochs N`."""
        return self.qat.first_epoch(self.epochs)

    def validate(self) -> TrainConfig:
        """Checks across keys (each key's own type and range is checked when the config is read);
        changes nothing."""
        from dsmn import models

        if self.model not in models.available():
            raise ConfigError(f"config key model: unknown model {self.model!r}; available: "
                              f"{', '.join(models.available())}")
        if self.device_ir.enabled and not self.device_ir.folder:
            raise ConfigError("device_ir.enabled needs device_ir.folder (a folder of impulse response WAVs)")
        if self.compile is not False and self.compile is not True and self.compile not in COMPILE_MODES:
            raise ConfigError(f"config key compile: {self.compile!r} is not false, true or one of "
                              f"{', '.join(COMPILE_MODES)}")
        if self.compile and self.multitask.mode == "pcgrad" and self.multitask.pcgrad == "shared-representation":
            # the embedding is captured inside the network's forward; a compiled graph does not expose it to autograd
            raise ConfigError("compile works with multitask.pcgrad=full, sum or off, not with shared-representation")
        return self

    def check_trainable(self) -> None:
        """Refuse settings under which a run would end without a usable best.pt."""
        if self.qat.enabled and self.qat_start_epoch >= self.epochs:
            raise ConfigError(f"qat.start_epoch {self.qat_start_epoch} is not before the last epoch ({self.epochs} "
                              "epochs): QAT would never start and no epoch could become best.pt; lower "
                              "qat.start_epoch, raise epochs, or set qat.enabled=false")
        if self.data.val_max_clips is not None and self.data.val_max_clips < 1:
            raise ConfigError("data.val_max_clips must be at least 1 (or null for the whole split)")
        if self.max_batches_per_epoch is not None and self.max_batches_per_epoch < 1:
            raise ConfigError("max_batches_per_epoch must be at least 1 (or null for whole epochs)")


# --- loading ------------------------------------------------------------------------------------


def resolve_config_path(name: str | Path, relative_to: Path | None = None) -> Path:
    """A path, or a bare name (`model1`, `model1.yaml`) of a shipped config."""
    path = Path(name)
    candidates = [path]
    if relative_to is not None and not path.is_absolute():
        candidates.insert(0, relative_to / path)
    if path.suffix == "" and len(path.parts) == 1:
        candidates.append(CONFIG_DIR / f"{path}.yaml")
    candidates.append(CONFIG_DIR / path.name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    shipped = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigNotFoundError(f"config {name!r} not found (shipped configs: {shipped})")


def read_config_dict(name: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The merged dict of a config file and its `base:` chain (the file's own keys win)."""
    path = resolve_config_path(name, _seen[-1].parent if _seen else None)
    if path in _seen:
        raise ConfigError(f"config {path} extends itself through its base chain")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"config {path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: expected a mapping at the top level")
    base = data.pop("base", None)
    if base is None:
        return data
    return deep_merge(read_config_dict(base, (*_seen, path)), data)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key not in _OPAQUE_KEYS:
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


_OPAQUE_KEYS = ("model_kwargs",)  # replaced whole: kwargs of one model make no sense for another


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["mixup.enabled=false", "epochs=3"]` -> nested dict; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r} is not of the form key.sub=value")
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} is set to a value and used as a section")
        try:
            node[leaf] = yaml.safe_load(text)
        except yaml.YAMLError:
            node[leaf] = text  # a plain string; the schema says whether the key takes one
    return out


def load_config(
    name: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None
) -> TrainConfig:
    """Read a config (default: the DCASE 2023 recipe for model1), apply overrides, check it."""
    data = deep_merge(read_config_dict(RECIPE), read_config_dict(name if name is not None else RECIPE))
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    return config_from_dict(apply_overrides(data, overrides or {}))


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` merged into a config dict; an `epochs` override scales the epoch-counted settings."""
    merged = deep_merge(data, overrides)
    if "epochs" in overrides:
        limits = {"low": 1}
        merged["epochs"] = check_value(merged["epochs"], int, "epochs", limits)  # before it is computed with
        config_epochs = check_value(data["epochs"], int, "epochs", limits)
        merged = scale_epoch_settings(merged, config_epochs, overrides)
    return merged


EPOCH_SETTINGS = ("schedule.warmup_epochs", "mixup.late_epoch", "qat.start_epoch", "qat.freeze_observers_epoch",
                  "qat.freeze_bn_epoch")


def scale_epoch_settings(data: dict[str, Any], config_epochs: int, pinned: dict[str, Any]) -> dict[str, Any]:
    """Epoch-counted settings scaled from `config_epochs` to data["epochs"] (rounded to the nearest epoch).

    Why: `--epochs 4` with the 100-epoch recipe would otherwise keep 5 warm-up epochs and never leave
    warm-up. Settings `pinned` in the same overrides, negative ones (counted from the end) and unset
    ones stay; `schedule.scale_with_epochs: false` turns scaling off. The changes are recorded in
    `scaled_settings` (the training banner lists them).
    """
    epochs = int(data["epochs"])
    if epochs == config_epochs or config_epochs < 1 or not _get(data, "schedule.scale_with_epochs", True):
        return data
    out = copy.deepcopy(data)
    scaled: dict[str, list[int]] = {}
    for key in EPOCH_SETTINGS:
        if _get(pinned, key, None) is not None:
            continue
        value = _get(out, key, None)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            continue
        new = math.floor(value * epochs / config_epochs + 0.5)
        if new != value:
            _set(out, key, new)
            scaled[key] = [value, new]
    if scaled:
        out["scaled_settings"] = {"epochs": [config_epochs, epochs], **scaled}
    return out


def _get(data: dict[str, Any], dotted: str, default: Any) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A checked TrainConfig from a config dict; keys it lacks come from the recipe (dcase2023.yaml)."""
    data = deep_merge(read_config_dict(RECIPE), _upgrade(data))
    return _build(TrainConfig, data, "").validate()


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """Configs saved by earlier versions (in checkpoints) kept extra QAT settings under `qat.options`."""
    qat = data.get("qat")
    if not isinstance(qat, dict) or "options" not in qat:
        return data
    qat = {k: v for k, v in qat.items() if k != "options"} | dict(qat["options"] or {})
    return {**data, "qat": qat}


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """The dataclass `cls` from `data`, every value checked against its field's type and limits."""
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
                          f"expected among {', '.join(sorted(known))}")
    missing = [k for k in known if k not in data]
    if missing:
        raise ConfigError(f"config key(s) {', '.join(where + k for k in missing)} missing")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {where}{key} must be a mapping of its settings, got {value!r}")
            kwargs[key] = _build(hint, value, f"{where}{key}.")
        else:
            kwargs[key] = check_value(value, hint, f"{where}{key}", known[key].metadata)
    return cls(**kwargs)


def check_value(value: Any, hint: Any, key: str, limits: Any = None) -> Any:
    """`value` as the type `hint` asks for, within `limits` (field metadata: choices, low, high).

    Booleans must be true / false; whole numbers must be whole; numbers may be written as fractions
    ("12/13") or `1e-3` (which YAML 1.1 reads as a string). Anything else is a `ConfigError` naming the key.
    """
    limits = limits or {}
    options = [a for a in get_args(hint) if a is not type(None)] if get_origin(hint) in (Union, UnionType) else [hint]
    if value is None:
        if len(options) == 1 and hint is not Any and get_origin(hint) not in (Union, UnionType):
            raise ConfigError(f"config key {key} must be set (null is not allowed)")
        return None
    if len(options) > 1:  # e.g. `bool | str`: the first type the value fits
        errors = []
        for option in options:
            try:
                return check_value(value, option, key, limits)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[-1])
    kind = options[0]
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key}: expected true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key}: expected a whole number, got {value!r}")
    elif kind is float:
        if isinstance(value, str):
            try:
                value = float(Fraction(value.replace(" ", "")))
            except (ValueError, ZeroDivisionError):
                raise ConfigError(f"config key {key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"config key {key}: expected a finite number, got {value!r}")
        value = float(value)
    elif kind is str:
        if isinstance(value, bool):  # YAML 1.1 reads `off` / `on` as booleans
            value = "on" if value else "off"
        if isinstance(value, int | float):
            value = str(value)
        if not isinstance(value, str):
            raise ConfigError(f"config key {key}: expected a text value, got {value!r}")
    elif get_origin(kind) is dict and not isinstance(value, dict):
        raise ConfigError(f"config key {key}: expected a mapping, got {value!r}")
    elif get_origin(kind) is list:
        if isinstance(value, str):  # `--set data.devices=a,b` means [a, b]
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or any(isinstance(v, dict | list) for v in value):
            raise ConfigError(f"config key {key}: expected a list of names, got {value!r}")
        value = [str(v) for v in value]
    choices = limits.get("choices")
    if choices is not None and value not in choices:
        listed = ", ".join(str(c) for c in choices if c is not None)
        raise ConfigError(f"config key {key}: {value!r} is not one of {listed}")
    above = limits.get("above")
    if above is not None and not value > above:
        raise ConfigError(f"config key {key}: {value!r} is out of range (must be > {above})")
    low, high = limits.get("low"), limits.get("high")
    if low is not None and value < low or high is not None and value > high:
        bounds = f"[{low}, {high}]" if low is not None and high is not None else (
            f">= {low}" if low is not None else f"<= {high}")
        raise ConfigError(f"config key {key}: {value!r} is out of range (must be {bounds})")
    pattern = limits.get("pattern")
    if pattern is not None and not re.fullmatch(pattern, value):
        raise ConfigError(f"config key {key}: {value!r} is not {limits.get('pattern_doc', pattern)}")
    return value


def save_config(config: TrainConfig, path: Path) -> None:
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
