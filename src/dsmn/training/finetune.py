"""Device-specific fine-tuning (DCASE 2025 Task 1): one copy of a trained run per known device.

Each copy is an ordinary `train` run (same loop, checkpoints, resume) that starts from the general
run's weights and sees only its device's clips: `data.devices: [d]` filters both the training split
and the validation split, `finetune.checkpoint` names the starting weights, `finetune.trainable`
which parameters move. The recipe is the general run's own with `configs/finetune.yaml` (or the
given file) on top. The result is a bundle (see dsmn.deploy.bundle):

BUNDLE/
  manifest.json        device id -> model; unknown and unlisted ids -> general
  complexity.json      per device model: MACs and parameter bytes (DCASE 2025 submission layout)
  models/general.pt    the general run's best checkpoint (weights, QAT state, recipe)
  models/<device>.pt   each device's best checkpoint (lowest validation loss on its evaluate clips)
  runs/<device>/       the device's training run (config.yaml, metrics, checkpoints/last.pt)
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dsmn.data import load_dataset
from dsmn.data.holdout import split_holdout
from dsmn.deploy.bundle import GENERAL, MANIFEST, Bundle
from dsmn.labels import SEEN_DEVICES
from dsmn.models import find_checkpoint, read_checkpoint
from dsmn.training import checkpoints
from dsmn.training.config import config_from_dict, deep_merge, read_config_dict
from dsmn.training.trainer import RunExistsError, train

DEFAULT_CONFIG = "finetune"
# what a deployed model needs from a training checkpoint (optimiser, RNG and history are left behind)
MODEL_KEYS = ("format", "model_name", "model_kwargs", "state_dict", "qat", "qat_state_dict", "frontend", "deltas",
              "config", "epoch", "best_epoch", "best_val_loss", "best_metrics", "val_metrics")


@dataclass
class DeviceResult:
    device: str
    model: str  # the model that scores this device: its own, or "general"
    train_clips: int
    val_clips: int
    best_epoch: int | None = None
    val_accuracy: float | None = None
    note: str = ""


def finetune(
    run: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    devices: Sequence[str] = SEEN_DEVICES,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> tuple[Bundle, list[DeviceResult]]:
    """Fine-tune a copy of `run` per device of `devices` on `data`; writes the bundle `out`."""
    from dsmn.deploy.bundle import write_complexity

    out = Path(out)
    _prepare_bundle_dir(out, resume, overwrite)
    general_path = find_checkpoint(run)
    general = read_checkpoint(general_path)
    if general.get("format") != "dsmn" or not general.get("config"):
        raise ValueError(f"{general_path}: not a dsmn training checkpoint (no recipe to fine-tune with)")
    is_qat = "qat_state_dict" in general
    recipe = _finetune_recipe(general, config_file, overrides or {}, is_qat)
    config = config_from_dict(recipe)  # checked once, before any training

    models_dir = out / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    checkpoints.save_atomic(_model_only(general), models_dir / "general.pt")
    dataset = load_dataset(data)
    train_split = config.data.subset or config.data.train_split
    train_clips, val_clips, val_split = dataset.split(train_split), dataset.split(config.data.val_split), \
        config.data.val_split
    if config.data.validation == "holdout":  # as the trainer splits it: held-out training locations
        train_clips, val_clips = split_holdout(train_clips, config.data.holdout_locations)
        val_split = f"held-out locations of {train_split}"
    train_counts, val_counts = _device_counts(train_clips), _device_counts(val_clips)

    bundle = Bundle(out, {GENERAL: "models/general.pt"}, {}, {
        "model_name": general["model_name"], "kind": "qat" if is_qat else "float",
        "source_run": str(general_path.resolve()), "data": str(Path(data).resolve()), "train_split": train_split,
        "val_split": val_split, "epochs": config.epochs,
        "trainable": config.finetune.trainable or "all", "skipped": {}, "per_device": {},
    })
    results = []
    for device in devices:
        result = _finetune_device(device, recipe, general_path, data, out, train_counts, val_counts, train_split,
                                  val_split, log)
        results.append(result)
        if result.model == GENERAL:
            bundle.info["skipped"][device] = result.note
        else:
            bundle.models[device] = f"models/{device}.pt"
        bundle.devices[device] = result.model
        bundle.info["per_device"][device] = asdict(result)
        bundle.save()  # after every device: an interrupted run leaves a usable bundle
    write_complexity(bundle)
    return bundle, results


def _finetune_recipe(general: dict[str, Any], config_file: str | Path | None, overrides: dict[str, Any],
                     is_qat: bool) -> dict[str, Any]:
    """The general run's recipe, the fine-tuning file on top, then the command line; model and QAT
    follow the general run (QAT from the first epoch for a QAT run, so every epoch is a candidate)."""
    recipe = deep_merge(general["config"], read_config_dict(config_file or DEFAULT_CONFIG))
    recipe = deep_merge(recipe, overrides)
    recipe.pop("scaled_settings", None)  # the general run's record of its own schedule, not this one's
    recipe["model"] = general["model_name"]
    recipe["model_kwargs"] = dict(general.get("model_kwargs", {}))
    qat = recipe.setdefault("qat", {})
    qat.update(enabled=is_qat, start_epoch=0, float_until_start=False)
    return recipe


def _finetune_device(device: str, recipe: dict[str, Any], general_path: Path, data: str | Path, out: Path,
                     train_counts: dict[str, int], val_counts: dict[str, int], train_split: str, val_split: str,
                     log: Callable[[str], None]) -> DeviceResult:
    result = DeviceResult(device, GENERAL, train_counts.get(device, 0), val_counts.get(device, 0))
    if not result.train_clips:
        result.note = f"no training clips in {train_split}"
    elif not result.val_clips:
        result.note = f"no clips in {val_split} to validate on"
    if result.note:
        log(f"dsmn finetune: device {device}: {result.note} -> general model")
        return result
    device_recipe = deep_merge(recipe, {"data": {"devices": [device]},
                                        "finetune": {"checkpoint": str(general_path.resolve())}})
    config = config_from_dict(device_recipe)
    run_dir = out / "runs" / device
    last = run_dir / "checkpoints" / "last.pt"
    done = last.is_file() and int(checkpoints.load(last)["epoch"]) + 1 >= config.epochs
    if done:
        log(f"dsmn finetune: device {device}: already fine-tuned ({run_dir})")
    else:
        log(f"dsmn finetune: device {device}: {result.train_clips} training clips, {result.val_clips} validation clips")
        train(config, data, run_dir, resume=last.is_file(), overrides=device_recipe)
    best_path = run_dir / "checkpoints" / "best.pt"
    if not best_path.is_file():
        result.note = "no epoch produced a checkpoint"
        log(f"dsmn finetune: device {device}: {result.note} -> general model")
        return result
    best = checkpoints.load(best_path)
    checkpoints.save_atomic({**_model_only(best), "device": device}, out / "models" / f"{device}.pt")
    result.model = device
    result.best_epoch = best.get("best_epoch")
    result.val_accuracy = (best.get("best_metrics") or {}).get("val_accuracy")
    return result


def _model_only(checkpoint: dict[str, Any]) -> dict[str, Any]:
    return {k: checkpoint[k] for k in MODEL_KEYS if k in checkpoint}


def _device_counts(clips: Sequence) -> dict[str, int]:
    counts: dict[str, int] = {}
    for clip in clips:
        if clip.device:
            counts[clip.device] = counts.get(clip.device, 0) + 1
    return counts


def _prepare_bundle_dir(out: Path, resume: bool, overwrite: bool) -> None:
    if not (out / MANIFEST).exists() and not (out / "runs").exists():
        return
    if overwrite:
        for stale in ("models", "runs", MANIFEST, "complexity.json"):
            target = out / stale
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    elif not resume:
        raise RunExistsError(f"{out} already holds a bundle; pass --resume to continue it or --overwrite")


__all__ = ["DeviceResult", "finetune"]
