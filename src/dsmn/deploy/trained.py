"""A trained model as the deployment tools need it: network, float twin, front end and input recipe.

evaluate, export and predict all start from `load_trained(checkpoint or run folder)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsmn import models
from dsmn.features import FrontEndConfig, network_input
from dsmn.models.checkpoint import CheckpointError
from dsmn.quantization import QATConfig, prepare_qat


@dataclass
class TrainedModel:
    """`model` is in eval mode: the QAT network when the checkpoint holds one, else the float one."""

    model: nn.Module
    float_model: nn.Module
    is_qat: bool
    model_name: str
    frontend: FrontEndConfig
    deltas: bool
    checkpoint: dict[str, Any]
    path: Path
    delta_width: int = 5
    long_clips: str = "windows"  # how it was trained on clips longer than 1 s (TrainConfig data.long_clips)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> dict[str, Any]:
        """Which checkpoint of its run this is (see `checkpoint_label`)."""
        return checkpoint_label(self.checkpoint, self.path)

    def network_input(self, logmel: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, frames) raw log-mel -> the network input (deltas, per-clip standardisation)."""
        return network_input(logmel, self.deltas, self.delta_width)

    @property
    def window_frames(self) -> int:
        """Frames of the network's 1-s input at its front end (44 for DSMN)."""
        return self.frontend.n_frames(self.frontend.sample_rate)

    def input_settings(self) -> dict[str, Any]:
        """Everything a deployment needs to rebuild the input from audio."""
        return {
            "frontend": {f.name: getattr(self.frontend, f.name) for f in fields(FrontEndConfig)},
            "deltas": self.deltas,
            "delta_width": self.delta_width,
            "standardize": "per clip and channel over (mel, frames): zero mean, unit std, std floored at 1e-5",
        }


def checkpoint_label(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """Which checkpoint of its run this is and how it was chosen; every accuracy table shows it.

    `role`: `selected` (best.pt: the lowest validation loss), `last epoch` (last.pt), or `checkpoint`
    (a file from elsewhere, e.g. the authors' weights). `selected_by` names the validation data, and
    `epoch` / `epochs` are 1-based (epoch 10 of 10).
    """
    config = checkpoint.get("config") or {}
    epoch, best = checkpoint.get("epoch"), checkpoint.get("best_epoch")
    role = "checkpoint"
    if path.name == "last.pt":
        role = "last epoch"
    elif path.name == "best.pt" or (epoch is not None and epoch == best):
        role = "selected"
    label: dict[str, Any] = {"role": role, "file": path.name,
                             "epoch": None if epoch is None else int(epoch) + 1, "epochs": config.get("epochs")}
    if config:
        from dsmn.data.holdout import describe_validation

        label["selected_by"] = f"lowest validation loss on {describe_validation(config.get('data') or {})}"
        label["validation"] = (config.get("data") or {}).get("validation", "evaluate")
        label["val_split"] = (config.get("data") or {}).get("val_split", "evaluate")
        label["best_epoch"] = None if best is None else int(best) + 1
    return label


def describe_checkpoint(label: dict[str, Any] | None) -> str:
    """One line for reports: `selected checkpoint (best.pt, epoch 7 of 10; lowest validation loss on ...)`."""
    if not label:
        return "not recorded (a file exported without its run's record)"
    of = f" of {label['epochs']}" if label.get("epochs") else ""
    where = f"epoch {label['epoch']}{of}" if label.get("epoch") else "epoch unknown"
    name = {"selected": "selected checkpoint", "last epoch": "last-epoch checkpoint"}.get(label["role"], "checkpoint")
    text = f"{name} ({label['file']}, {where}"
    if label["role"] == "selected" and label.get("selected_by"):
        text += f"; {label['selected_by']}"
    elif label["role"] == "last epoch" and label.get("best_epoch") == label.get("epoch"):
        text += "; also the selected one"
    return text + ")"


def frontend_from(settings: dict[str, Any] | None, model_name: str) -> FrontEndConfig:
    """The checkpoint's recorded front end, else the one the model's registry entry asks for."""
    if settings is None:
        settings = models.entry(model_name).frontend if model_name in models.available() else {}
    known = {f.name for f in fields(FrontEndConfig)}
    return FrontEndConfig(**{k: v for k, v in settings.items() if k in known})


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """Load a dsmn checkpoint (or the authors' state_dict) for inference.

    QAT checkpoints (`"qat"` + `"qat_state_dict"`) give the QAT network with its calibrated
    observers; `float_model` is always the plain float network.
    """
    checkpoint_path = models.find_checkpoint(path)
    checkpoint = models.read_checkpoint(checkpoint_path)
    try:
        float_model = models.model_from_checkpoint(checkpoint)
    except CheckpointError as error:
        raise CheckpointError(f"{checkpoint_path}: {error}") from None
    name = getattr(float_model, "model_name", None) or checkpoint.get("model_name") or "model1"
    model: nn.Module = float_model
    is_qat = "qat_state_dict" in checkpoint
    if is_qat:
        config = QATConfig.from_dict(checkpoint.get("qat") or {})
        config.enabled = True
        model = prepare_qat(float_model, config)
        model.load_state_dict(checkpoint["qat_state_dict"])
    model.to(device).eval()
    float_model.eval()
    entry_deltas = models.entry(name).deltas if name in models.available() else True
    train_config = checkpoint.get("config") or {}
    return TrainedModel(
        model=model,
        float_model=float_model,
        is_qat=is_qat,
        model_name=name,
        frontend=frontend_from(checkpoint.get("frontend"), name),
        deltas=bool(checkpoint.get("deltas", entry_deltas)),
        checkpoint=checkpoint,
        path=checkpoint_path,
        delta_width=int(train_config.get("delta_width", 5)),
        long_clips=str((train_config.get("data") or {}).get("long_clips", "windows")),
    )
