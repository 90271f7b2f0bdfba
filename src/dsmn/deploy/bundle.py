"""Device bundles: one general model plus one model per known recording device (DCASE 2025 Task 1).

A bundle is a folder with `manifest.json`:

    {"format": "dsmn-bundle", "version": 1, "model_name": "model1", "kind": "qat",
     "models": {"general": "models/general.pt", "a": "models/a.pt", ...},
     "devices": {"a": "a", "b": "b", "s3": "general", "unknown": "general"},
     "skipped": {"s3": "no training clips in split25"}, ...}

`models` names model files (checkpoints, or ONNX files in an exported bundle) relative to the
folder; `devices` maps device ids to model names. `unknown`, and every id the manifest does not
list, is scored by the general model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsmn.files import write_text

MANIFEST = "manifest.json"
FORMAT = "dsmn-bundle"
GENERAL = "general"
UNKNOWN = "unknown"


class BundleError(ValueError):
    """A bundle folder or its manifest is not usable (missing file, unknown model name, ...)."""


@dataclass
class Bundle:
    root: Path
    models: dict[str, str]  # model name -> file relative to root
    devices: dict[str, str]  # device id -> model name
    info: dict[str, Any] = field(default_factory=dict)  # the rest of the manifest

    def model_name_for(self, device_id: str | None) -> str:
        """The model that scores clips of `device_id` (None, "unknown" or unlisted: the general one)."""
        if device_id is None or device_id == "":
            return GENERAL
        return self.devices.get(device_id, GENERAL)

    def path(self, model_name: str) -> Path:
        """The file of a model; a clear error when the manifest lists it but the file is gone."""
        if model_name not in self.models:
            raise BundleError(f"{self.root / MANIFEST}: device map names model {model_name!r}, "
                              f"which is not among its models ({', '.join(self.models)})")
        path = self.root / self.models[model_name]
        if not path.is_file():
            users = sorted(d for d, m in self.devices.items() if m == model_name) or [model_name]
            raise BundleError(f"{self.root / MANIFEST}: model file {self.models[model_name]} of "
                              f"{'device' if len(users) == 1 else 'devices'} {', '.join(users)} is missing")
        return path

    def check_files(self) -> None:
        for name in self.models:
            self.path(name)

    def device_models(self) -> dict[str, str]:
        """Device id -> model name for every listed device (general included as `unknown`)."""
        return {**self.devices, UNKNOWN: GENERAL}

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": 1, **self.info, "models": self.models, "devices": self.device_models()}

    def save(self) -> Path:
        """Write manifest.json atomically (temporary name, then rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return write_json_atomic(self.root / MANIFEST, self.to_dict())


def is_bundle(path: str | Path) -> bool:
    path = Path(path)
    return (path / MANIFEST).is_file() if path.is_dir() else path.name == MANIFEST and path.is_file()


def load_bundle(path: str | Path) -> Bundle:
    """Read a bundle folder (or its manifest.json)."""
    path = Path(path)
    manifest = path if path.name == MANIFEST else path / MANIFEST
    if not manifest.is_file():
        raise BundleError(f"{path}: not a bundle (no {MANIFEST})")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise BundleError(f"{manifest}: unreadable manifest ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"{manifest}: not a dsmn bundle manifest (format {FORMAT!r} expected)")
    models, devices = data.pop("models", None), data.pop("devices", None)
    if not isinstance(models, dict) or GENERAL not in models:
        raise BundleError(f"{manifest}: 'models' must map model names to files and include {GENERAL!r}")
    if not isinstance(devices, dict):
        raise BundleError(f"{manifest}: 'devices' must map device ids to model names")
    data.pop("format"), data.pop("version", None)
    devices = {str(k): str(v) for k, v in devices.items() if k != UNKNOWN}
    return Bundle(manifest.parent, {str(k): str(v) for k, v in models.items()}, devices, data)


def write_json_atomic(path: Path, data: Any) -> Path:
    write_text(path, json.dumps(data, indent=2) + "\n")
    return path


COMPLEXITY = "complexity.json"


def model_complexity(bundle: Bundle) -> dict[str, dict[str, Any]]:
    """Per model name: params, parameter bytes at the stored dtype (int8 for QAT models, float32
    otherwise), MACs of one 1-s clip (torchinfo total_mult_adds on the float network), verdict."""
    from dsmn.complexity import measure
    from dsmn.models import model_from_checkpoint, read_checkpoint

    out = {}
    recorded = bundle.info.get("complexity") or {}  # an exported bundle records its models' figures
    for name in bundle.models:
        path = bundle.path(name)
        if path.suffix == ".onnx":
            if name not in recorded:
                raise BundleError(f"{bundle.root / MANIFEST}: no recorded complexity for ONNX model {name!r}")
            out[name] = recorded[name]
            continue
        checkpoint = read_checkpoint(path)
        dtype = "int8" if "qat_state_dict" in checkpoint else "fp32"
        report = measure(model_from_checkpoint(checkpoint), dtype=dtype)
        out[name] = {"file": bundle.models[name], "dtype": dtype, "params": report.params,
                     "param_bytes": report.param_bytes, "macs": report.macs, "within_limits": report.within_limits}
    return out


def submission_complexity(bundle: Bundle, per_model: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The layout of the DCASE 2025 submission check: {"per_device": {id: {"MACs", "Params"}}, "max_MACs",
    "max_Params"}, Params being parameter memory in bytes; one entry per device id the bundle lists."""
    per_device = {device: {"MACs": per_model[model]["macs"], "Params": per_model[model]["param_bytes"]}
                  for device, model in bundle.device_models().items()}
    return {"per_device": per_device, "max_MACs": max(v["MACs"] for v in per_device.values()),
            "max_Params": max(v["Params"] for v in per_device.values())}


def write_complexity(bundle: Bundle) -> Path:
    return write_json_atomic(bundle.root / COMPLEXITY, submission_complexity(bundle, model_complexity(bundle)))


def check_complexity(per_model: dict[str, dict[str, Any]]) -> list[str]:
    """The models over the DCASE budget (empty: every model fits on its own)."""
    return sorted(name for name, figures in per_model.items() if not figures["within_limits"])
