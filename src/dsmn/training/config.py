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
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Any, get_type_hints

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
MULTITASK_MODES = ("pcgrad", "sum", "off")
PCGRAD_MODES = ("full", "shared-representation")
VALIDATION_MODES = ("evaluate", "holdout")
MERGE_RULES = ("per-tensor", "per-element")  # as dsmn.training.pcgrad.MERGE_RULES (no import: config stays light)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class OptimizerConfig:
    name: str = "radam"  # radam | adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    implementation: str = "foreach"  # foreach | fused | loop (fused only where torch supports it)


@dataclass
class ScheduleConfig:
    """Per-epoch learning rate: linear warm-up from `warmup_lr`, then cosine down to `min_lr`.

    `scale_with_epochs`: an `epochs` override (`--epochs N`) scales the epoch-counted settings the
    config does not pin in the same override (warm-up, the mixup switch, positive QAT epochs) by
    N / the config's epochs, so a short run keeps the recipe's shape (see `scale_epoch_settings`).
    """

    warmup_epochs: int = 5
    warmup_lr: float = 5e-5
    min_lr: float = 1e-6
    scale_with_epochs: bool = True


@dataclass
class MixupConfig:
    """One lambda ~ Beta(alpha, alpha) per batch; from `late_epoch` on only `late_fraction` of the batch."""

    enabled: bool = True
    alpha: float = 0.2
    late_epoch: int = 60
    late_fraction: float = 0.5


@dataclass
class SpectrumCorrectionConfig:
    """Add a stored device response (other device - device a) to device-a clips, per batch with `probability`."""

    enabled: bool = True
    probability: float = 12 / 13
    reference_device: str = "a"


@dataclass
class SpecAugmentConfig:
    """Zero `time_stripes` frame stripes and `freq_stripes` bin stripes of width 0..max_width per clip."""

    enabled: bool = True
    time_stripes: int = 2
    freq_stripes: int = 2
    max_width: int = 1


@dataclass
class DeviceIRConfig:
    """Device impulse responses: a folder of IR WAVs becomes a bank of log-mel device responses added to
    reference-device clips, per batch with `probability`. The bank joins spectrum correction (a batch
    the IR coin skips may still get a correction vector) or, with `replace_correction`, replaces it."""

    enabled: bool = False
    folder: str | None = None
    probability: float = 0.6
    replace_correction: bool = False


@dataclass
class FreqMixStyleConfig:
    """Freq-MixStyle: per clip with `probability`, its per-mel-band mean and std (over time) are mixed
    with another clip's with a weight ~ Beta(alpha, alpha). Published settings: p = 0.4, alpha = 0.3."""

    enabled: bool = False
    probability: float = 0.4
    alpha: float = 0.3


@dataclass
class DistillationConfig:
    """Knowledge distillation from a teacher logit table (`dsmn teach`, or made elsewhere).

    Each task's loss = kd_lambda * label loss + (1 - kd_lambda) * T^2 * KL(teacher_T || student_T),
    T = `temperature`. Published (CPJKU, DCASE 2023): kd_lambda = 0.02, T = 2. `teacher: null`: off.
    """

    teacher: str | None = None
    kd_lambda: float = 0.02
    temperature: float = 2.0


@dataclass
class MultitaskConfig:
    """pcgrad: 10-scene + 3-coarse losses combined by PCGrad; sum: one summed loss; off: scene loss only.

    `pcgrad: full` projects gradients over every parameter (two backward passes, faithful);
    `shared-representation` projects at the embedding and back-propagates the trunk once (faster).
    `merge`: which tasks "reach" a parameter, deciding mean (shared) or sum (task-specific) of the
    projected gradients: `per-tensor` as the authors' code (mean everywhere for the DSMN networks) or
    `per-element` (non-zero elements; the last layer's task rows get the sum). See training.pcgrad.
    """

    mode: str = "pcgrad"
    pcgrad: str = "full"
    merge: str = "per-tensor"
    coarse_weight: float = 1.0  # `sum` mode only: loss = scene + coarse_weight * coarse


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
    validation: str = "evaluate"  # evaluate | holdout
    holdout_locations: int = 2  # per scene, with validation: holdout
    subset: str | None = None  # e.g. split25: train on a DCASE 2024 subset instead of train_split
    cache_dir: str | None = None  # default: the feature cache's own default location
    preload: str = "auto"  # auto | always | never: hold the training log-mels in (device) memory
    preload_limit_gb: float = 4.0  # `auto` preloads below this size
    workers: int = 0  # threads reading cache rows ahead of the step (memmap path)
    val_batch_size: int = 32  # small batches keep CPU activations in cache (2-3x faster); raise it on a GPU
    val_max_clips: int | None = None  # validate on an evenly spread subset (quick experiments, smoke tests)
    devices: list[str] | None = None  # train and validate on these recording devices only (device-specific models)


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
    epochs: int = 100
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch intra-op threads on the CPU (None: torch's default)
    channels_last: bool = True
    deltas: bool | None = None  # None: what the model's registry entry says
    delta_width: int = 5
    regularization_weight: float = 1.0  # weight of dsmn.models.regularization_loss(model), if defined
    drop_last: bool = True
    max_batches_per_epoch: int | None = None  # cut epochs short (smoke tests, benchmarks); None: whole epochs
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
        if self.multitask.mode not in MULTITASK_MODES:
            raise ValueError(f"multitask.mode must be one of {MULTITASK_MODES}, got {self.multitask.mode!r}")
        if self.multitask.pcgrad not in PCGRAD_MODES:
            raise ValueError(f"multitask.pcgrad must be one of {PCGRAD_MODES}, got {self.multitask.pcgrad!r}")
        if self.multitask.merge not in MERGE_RULES:
            raise ValueError(f"multitask.merge must be one of {MERGE_RULES}, got {self.multitask.merge!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be positive")
        if self.qat.start_epoch < 0:  # counted from the end
            self.qat.start_epoch = max(0, self.epochs + self.qat.start_epoch)
        if not 0.0 <= self.spectrum_correction.probability <= 1.0:
            raise ValueError("spectrum_correction.probability must lie in [0, 1]")
        if not 0.0 <= self.device_ir.probability <= 1.0:
            raise ValueError("device_ir.probability must lie in [0, 1]")
        if self.device_ir.enabled and not self.device_ir.folder:
            raise ValueError("device_ir.enabled needs device_ir.folder (a folder of impulse response WAVs)")
        if not 0.0 <= self.freq_mixstyle.probability <= 1.0 or self.freq_mixstyle.alpha <= 0:
            raise ValueError("freq_mixstyle.probability must lie in [0, 1] and freq_mixstyle.alpha be positive")
        if not 0.0 <= self.distillation.kd_lambda <= 1.0 or self.distillation.temperature <= 0:
            raise ValueError("distillation.kd_lambda must lie in [0, 1] and distillation.temperature be positive")
        for section, key in ((self.data, "devices"), (self.finetune, "trainable")):
            value = getattr(section, key)
            if isinstance(value, str):  # `--set data.devices=a` means [a]
                setattr(section, key, [v.strip() for v in value.split(",") if v.strip()])
            elif value is not None:
                setattr(section, key, [str(v) for v in value])
        if self.compile is True:
            self.compile = "default"
        if self.compile is not False and self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be false, true or one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        if self.compile and self.multitask.mode == "pcgrad" and self.multitask.pcgrad == "shared-representation":
            # the embedding is captured inside the network's forward; a compiled graph does not expose it to autograd
            raise ValueError("compile works with multitask.pcgrad=full, sum or off, not with shared-representation")
        if self.data.validation not in VALIDATION_MODES:
            raise ValueError(f"data.validation must be one of {VALIDATION_MODES}, got {self.data.validation!r}")
        if self.data.holdout_locations < 1:
            raise ValueError("data.holdout_locations must be at least 1")
        if self.data.preload not in ("auto", "always", "never"):
            raise ValueError(f"data.preload must be auto, always or never, got {self.data.preload!r}")
        return self


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
    raise FileNotFoundError(f"config {name!r} not found (shipped configs: {shipped})")


def read_config_dict(name: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The merged dict of a config file and its `base:` chain (the file's own keys win)."""
    path = resolve_config_path(name, _seen[-1].parent if _seen else None)
    if path in _seen:
        raise ValueError(f"config {path} extends itself through its base chain")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config {path}: expected a mapping at the top level")
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
            raise ValueError(f"override {item!r} is not of the form key.sub=value")
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(text)
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
        merged = scale_epoch_settings(merged, int(data.get("epochs", TrainConfig.epochs)), overrides)
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
    return _build(TrainConfig, data, "").validate()


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
                         f"expected among {', '.join(sorted(known))}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ValueError(f"config key {where}{key} must be a mapping")
            kwargs[key] = _build(hint, value, f"{where}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{where}{key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Numbers written as fractions ("12/13"), `1e-3` strings or ints where floats are expected become floats."""
    text = str(hint)
    if value is None:
        return None
    if hint is str and isinstance(value, bool):  # YAML 1.1 reads `off` / `on` as booleans
        return "on" if value else "off"
    if "float" in text and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(Fraction(value.replace(" ", "")))
        except ValueError:
            raise ValueError(f"config key {key}: {value!r} is not a number") from None
    if "float" in text and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if text.startswith("int") and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def save_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
