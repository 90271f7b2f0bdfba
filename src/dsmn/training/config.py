"""Training configuration: YAML files with a `base:` chain, dotted overrides, typed sections.

A config file names the file it extends (`base: dcase2023.yaml`) and lists only what differs, so the
paper's recipe is written once and every model, demo or ablation config is a few lines of data.
Names without a folder resolve to the YAMLs shipped in `dsmn/configs` (the repo's `configs/`).
The dataclass defaults below are the DCASE 2023 recipe too, so a partial config is always complete.
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


class ConfigError(UserError, ValueError):
    """A config file, key or value that cannot be used; the message names the key."""


class ConfigNotFoundError(ConfigError, FileNotFoundError):
    """No config file or shipped config of that name."""


CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
MULTITASK_MODES = ("pcgrad", "sum", "off")
PCGRAD_MODES = ("full", "shared-representation")
VALIDATION_MODES = ("evaluate", "holdout")
MERGE_RULES = ("per-tensor", "per-element")  # as dsmn.training.pcgrad.MERGE_RULES (no import: config stays light)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
OPTIMIZERS = ("radam", "adam", "adamw", "sgd")
SUBSETS = ("split5", "split10", "split25", "split50", "split100")


def choice(default: Any, options: tuple) -> Any:
    """A field whose value must be one of `options` (checked when a config is read)."""
    return field(default=default, metadata={"choices": options})


def number(default: Any, low: float | None = None, high: float | None = None) -> Any:
    """A numeric field limited to [low, high] (either side open when None)."""
    return field(default=default, metadata={"low": low, "high": high})


def positive(default: float) -> Any:
    """A number that must be above zero."""
    return field(default=default, metadata={"above": 0})



@dataclass
class OptimizerConfig:
    name: str = choice("radam", OPTIMIZERS)
    lr: float = positive(1e-3)
    weight_decay: float = number(0.0, low=0.0)
    implementation: str = choice("foreach", ("foreach", "fused", "loop"))  # fused only where torch has it


@dataclass
class ScheduleConfig:
    """Per-epoch learning rate: linear warm-up from `warmup_lr`, then cosine down to `min_lr`.

    `scale_with_epochs`: an `epochs` override (`--epochs N`) scales the epoch-counted settings the
    config does not pin in the same override (warm-up, the mixup switch, positive QAT epochs) by
    N / the config's epochs, so a short run keeps the recipe's shape (see `scale_epoch_settings`).
    """

    warmup_epochs: int = number(5, low=0)
    warmup_lr: float = number(5e-5, low=0.0)
    min_lr: float = number(1e-6, low=0.0)
    scale_with_epochs: bool = True


@dataclass
class MixupConfig:
    """One lambda ~ Beta(alpha, alpha) per batch; from `late_epoch` on only `late_fraction` of the batch."""

    enabled: bool = True
    alpha: float = positive(0.2)
    late_epoch: int = number(60, low=0)
    late_fraction: float = number(0.5, low=0.0, high=1.0)


@dataclass
class SpectrumCorrectionConfig:
    """Add a stored device response (other device - device a) to device-a clips, per batch with `probability`."""

    enabled: bool = True
    probability: float = number(12 / 13, low=0.0, high=1.0)
    reference_device: str = "a"


@dataclass
class SpecAugmentConfig:
    """Zero `time_stripes` frame stripes and `freq_stripes` bin stripes of width 0..max_width per clip."""

    enabled: bool = True
    time_stripes: int = number(2, low=0)
    freq_stripes: int = number(2, low=0)
    max_width: int = number(1, low=0)


@dataclass
class DeviceIRConfig:
    """Device impulse responses: a folder of IR WAVs becomes a bank of log-mel device responses added to
    reference-device clips, per batch with `probability`. The bank joins spectrum correction (a batch
    the IR coin skips may still get a correction vector) or, with `replace_correction`, replaces it."""

    enabled: bool = False
    folder: str | None = None
    probability: float = number(0.6, low=0.0, high=1.0)
    replace_correction: bool = False


@dataclass
class FreqMixStyleConfig:
    """Freq-MixStyle: per clip with `probability`, its per-mel-band mean and std (over time) are mixed
    with another clip's with a weight ~ Beta(alpha, alpha). Published settings: p = 0.4, alpha = 0.3."""

    enabled: bool = False
    probability: float = number(0.4, low=0.0, high=1.0)
    alpha: float = positive(0.3)


@dataclass
class DistillationConfig:
    """Knowledge distillation from a teacher logit table (`dsmn teach`, or made elsewhere).

    Each task's loss = kd_lambda * label loss + (1 - kd_lambda) * T^2 * KL(teacher_T || student_T),
    T = `temperature`. Published (CPJKU, DCASE 2023): kd_lambda = 0.02, T = 2. `teacher: null`: off.
    """

    teacher: str | None = None
    kd_lambda: float = number(0.02, low=0.0, high=1.0)
    temperature: float = positive(2.0)


@dataclass
class MultitaskConfig:
    """pcgrad: 10-scene + 3-coarse losses combined by PCGrad; sum: one summed loss; off: scene loss only.

    `pcgrad: full` projects gradients over every parameter (two backward passes, faithful);
    `shared-representation` projects at the embedding and back-propagates the trunk once (faster).
    `merge`: which tasks "reach" a parameter, deciding mean (shared) or sum (task-specific) of the
    projected gradients: `per-tensor` as the authors' code (mean everywhere for the DSMN networks) or
    `per-element` (non-zero elements; the last layer's task rows get the sum). See training.pcgrad.
    """

    mode: str = choice("pcgrad", MULTITASK_MODES)
    pcgrad: str = choice("full", PCGRAD_MODES)
    merge: str = choice("per-tensor", MERGE_RULES)
    coarse_weight: float = number(1.0, low=0.0)  # `sum` mode only: loss = scene + coarse_weight * coarse


@dataclass
class QATSectionConfig:
    """Quantisation-aware training. Keys other than these go to dsmn.quantization.QATConfig
    (observer_momentum, freeze_observers_epoch, freeze_bn_epoch); they are kept in `options`.

    `float_until_start`: train the plain float network before `start_epoch` (faster) instead of
    preparing it at epoch 0 with fake quantisation off until `start_epoch`. A negative `start_epoch`
    counts from the end (-3: QAT for the last three epochs), so it survives `--epochs N`.
    """

    enabled: bool = True
    start_epoch: int = 0
    float_until_start: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """`validation`: where the checkpoint with the lowest validation loss is chosen. `evaluate` (the
    authors'): on `val_split`, fold1_evaluate by default, the split results are then reported on;
    `holdout`: on `holdout_locations` recording locations per scene held out of the training split
    (deterministic, never trained on; see dsmn.data.holdout)."""

    train_split: str = "train"
    val_split: str = "evaluate"
    validation: str = choice("evaluate", VALIDATION_MODES)
    holdout_locations: int = number(2, low=1)  # per scene, with validation: holdout
    subset: str | None = choice(None, (None, *SUBSETS))  # train on a DCASE 2024 subset instead of train_split
    cache_dir: str | None = None  # default: the feature cache's own default location
    preload: str = choice("auto", ("auto", "always", "never"))  # hold the training log-mels in (device) memory
    preload_limit_gb: float = number(4.0, low=0.0)  # `auto` preloads below this size
    workers: int = number(0, low=0)  # threads reading cache rows ahead of the step (memmap path)
    val_batch_size: int = number(32, low=1)  # small: CPU activations stay in cache; raise on a GPU
    val_max_clips: int | None = number(None, low=1)  # validate on an evenly spread subset (quick runs)
    devices: list[str] | None = None  # train and validate on these recording devices only (device-specific models)
    # clips longer than the network's 1-s input (TAU 2020's 10 s): `windows` trains on 1-s windows drawn at
    # random positions every epoch and scores a clip by its windows' mean probabilities; `whole` trains and
    # scores whole clips (the networks pool time globally)
    long_clips: str = choice("windows", ("windows", "whole"))
    windows_per_clip: int = number(1, low=1)  # `windows`: windows drawn from every clip per epoch


@dataclass
class FinetuneConfig:
    """Start from trained weights instead of a fresh network (`dsmn finetune` sets these per device).

    `checkpoint`: a dsmn checkpoint or run folder; its float weights, and its QAT state (observers)
    when this run uses QAT too, replace the initial ones. `trainable`: parameter-name prefixes that
    are trained (e.g. [head] or [blocks.4, head]); None trains the whole network.
    """

    checkpoint: str | None = None
    trainable: list[str] | None = None


@dataclass
class TrainConfig:
    model: str = "model1"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = number(100, low=1)
    batch_size: int = number(32, low=1)
    seed: int = number(0, low=0, high=2**32 - 1)
    device: str = field(default="auto", metadata={"pattern": r"auto|cpu|cuda(:\d+)?|mps",
                                                  "pattern_doc": "auto, cpu, cuda, cuda:N or mps"})
    threads: int | None = number(None, low=1)  # torch intra-op threads on the CPU (None: torch's default)
    channels_last: bool = True
    deltas: bool | None = None  # None: what the model's registry entry says
    delta_width: int = number(5, low=3)
    regularization_weight: float = number(1.0, low=0.0)  # weight of dsmn.models.regularization_loss(model), if defined
    drop_last: bool = True
    max_batches_per_epoch: int | None = number(None, low=1)  # cut epochs short (smoke tests); None: all
    progress: bool = True  # tqdm bars (epochs and batches)
    # torch.compile the network for training: false | true (= "default") | a torch.compile mode
    # ("reduce-overhead": also CUDA graphs, "max-autotune-no-cudagraphs"). Fewer, fused GPU kernels.
    compile: bool | str = False
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)
    spectrum_correction: SpectrumCorrectionConfig = field(default_factory=SpectrumCorrectionConfig)
    specaugment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    device_ir: DeviceIRConfig = field(default_factory=DeviceIRConfig)
    freq_mixstyle: FreqMixStyleConfig = field(default_factory=FreqMixStyleConfig)
    distillation: DistillationConfig = field(default_factory=DistillationConfig)
    multitask: MultitaskConfig = field(default_factory=MultitaskConfig)
    qat: QATSectionConfig = field(default_factory=QATSectionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    # what an `epochs` override scaled: {"epochs": [config's, run's], "mixup.late_epoch": [was, now], ...}
    scaled_settings: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> TrainConfig:
        """Checks across keys (each key's own type and range is checked when the config is read)."""
        from dsmn import models

        if self.model not in models.available():
            raise ConfigError(f"config key model: unknown model {self.model!r}; available: "
                              f"{', '.join(models.available())}")
        if self.qat.start_epoch < 0:  # counted from the end
            self.qat.start_epoch = max(0, self.epochs + self.qat.start_epoch)
        if self.device_ir.enabled and not self.device_ir.folder:
            raise ConfigError("device_ir.enabled needs device_ir.folder (a folder of impulse response WAVs)")
        if self.compile is True:
            self.compile = "default"
        if self.compile is not False and self.compile not in COMPILE_MODES:
            raise ConfigError(f"config key compile: {self.compile!r} is not false, true or one of "
                              f"{', '.join(COMPILE_MODES)}")
        if self.compile and self.multitask.mode == "pcgrad" and self.multitask.pcgrad == "shared-representation":
            # the embedding is captured inside the network's forward; a compiled graph does not expose it to autograd
            raise ConfigError("compile works with multitask.pcgrad=full, sum or off, not with shared-representation")
        return self

    def check_trainable(self) -> None:
        """Refuse settings under which a run would end without a usable best.pt."""
        if self.qat.enabled and self.qat.start_epoch >= self.epochs:
            raise ConfigError(f"qat.start_epoch {self.qat.start_epoch} is not before the last epoch ({self.epochs} "
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
    data = read_config_dict(name) if name is not None else {}
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    return config_from_dict(apply_overrides(data, overrides or {}))


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` merged into a config dict; an `epochs` override scales the epoch-counted settings."""
    merged = deep_merge(data, overrides)
    if "epochs" in overrides:
        limits = {"low": 1}
        merged["epochs"] = check_value(merged["epochs"], int, "epochs", limits)  # before it is computed with
        config_epochs = check_value(data.get("epochs", TrainConfig.epochs), int, "epochs", limits)
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
        if _get(pinned, key, None) is not None or _get(pinned, key.replace("qat.", "qat.options."), None) is not None:
            continue
        for path in (key, key.replace("qat.", "qat.options.")) if key.startswith("qat.") else (key,):
            value = _get(out, path, _default(key) if path == key else None)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                continue
            new = math.floor(value * epochs / config_epochs + 0.5)
            if new != value:
                _set(out, path, new)
                scaled[key] = [value, new]
    if scaled:
        out["scaled_settings"] = {"epochs": [config_epochs, epochs], **scaled}
    return out


def _default(key: str) -> Any:
    """The dataclass default of a dotted key (the config file may leave it out)."""
    section, _, leaf = key.partition(".")
    holder = {"schedule": ScheduleConfig(), "mixup": MixupConfig(), "qat": QATSectionConfig()}[section]
    return getattr(holder, leaf, None)


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
    data = copy.deepcopy(data)
    if isinstance(data.get("qat"), dict):  # QATConfig settings written beside enabled / start_epoch
        own = {f.name for f in fields(QATSectionConfig)}
        qat = data["qat"]
        extra = {k: qat.pop(k) for k in list(qat) if k not in own}
        qat["options"] = {**qat.get("options", {}), **extra}
        from dsmn.quantization.config import QATConfig

        checked = _build(QATConfig, qat["options"], "qat.")  # the same type checks for these keys
        qat["options"] = {k: getattr(checked, k) for k in qat["options"]}
    return _build(TrainConfig, data, "").validate()


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """The dataclass `cls` from `data`, every value checked against its field's type and limits."""
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
                          f"expected among {', '.join(sorted(known))}")
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
