"""Evaluate a device bundle as DCASE 2025 reports it: each clip scored by its device's model.

Beside the bundle's scores the same clips are scored by the bundle's general model alone, so every
table has both columns and the gain of device-specific fine-tuning is read off one row. Known
devices are those the bundle's manifest lists (its fine-tuning devices); every other device, and a
clip without a device id, is unknown and is scored by the general model in both columns.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dsmn.deploy.bundle import GENERAL, UNKNOWN, Bundle
from dsmn.deploy.data import logmel_batches, open_features, split_clips, split_name
from dsmn.deploy.inference import load_for_inference
from dsmn.evaluation import metrics
from dsmn.evaluation.evaluate import scene_probabilities
from dsmn.evaluation.report import json_safe
from dsmn.files import atomic_path, write_json, write_text
from dsmn.labels import DEVICES, SCENES


@dataclass
class Row:
    """One group of clips (a device, a class, known / unknown, all) under both systems."""

    name: str
    clips: int
    model: str  # which model scored the group in the bundle ("mixed" for groups of several devices)
    accuracy: float
    general_accuracy: float

    @property
    def gain(self) -> float:
        return self.accuracy - self.general_accuracy


@dataclass
class BundleEvaluation:
    bundle: str
    kind: str
    split: str
    summary: list[Row] = field(default_factory=list)  # all, macro, known, unknown
    devices: list[Row] = field(default_factory=list)
    classes: list[Row] = field(default_factory=list)

    def to_dict(self) -> dict:
        def rows(items: list[Row]) -> list[dict]:
            return [{**asdict(r), "gain": r.gain} for r in items]

        return json_safe({"bundle": self.bundle, "kind": self.kind, "split": self.split,
                           "summary": rows(self.summary), "devices": rows(self.devices), "classes": rows(self.classes)})


def device_of(device: str | None) -> str:
    return device if device else UNKNOWN


def evaluate_bundle(bundle: Bundle, data: str | Path, split: str = "evaluate", kind: str | None = None,
                    cache_dir: str | Path | None = None, progress: bool = False, device: str = "cpu"
                    ) -> tuple[BundleEvaluation, list, np.ndarray, list[str]]:
    """Scores of `bundle` on a labelled split; also the clips, the bundle's probabilities and the
    model that scored each clip. `device`: where torch networks run (cpu, cuda)."""
    dataset, clips = split_clips(data, split)
    if not clips:
        raise ValueError(f"split {split!r} of {data} is empty")
    if any(c.scene is None for c in clips):
        raise ValueError(f"split {split!r} has unlabelled clips: evaluate needs labels (use `dsmn predict`)")
    assigned = [bundle.model_name_for(c.device) for c in clips]
    needed = [GENERAL, *sorted(set(assigned) - {GENERAL})]
    paths = {name: bundle.path(name) for name in needed}  # every file checked before any work
    general = load_for_inference(paths[GENERAL], kind, device=device)
    cache = open_features(dataset, general.recipe.frontend, cache_dir, progress=progress)
    usable = set(id(c) for c in cache.usable(clips))
    keep = [i for i, c in enumerate(clips) if id(c) in usable]
    clips, assigned = [clips[i] for i in keep], [assigned[i] for i in keep]
    general_p = scene_probabilities(general, logmel_batches(cache, clips))
    bundle_p = general_p.copy()
    for name in needed[1:]:
        loaded = load_for_inference(paths[name], kind, device=device)
        index = [i for i, a in enumerate(assigned) if a == name]
        bundle_p[index] = scene_probabilities(loaded, logmel_batches(cache, [clips[i] for i in index]))
    targets = np.array([c.scene_id for c in clips])
    devices = [device_of(c.device) for c in clips]
    result = BundleEvaluation(str(bundle.root), general.kind, split_name(split))
    known = set(bundle.devices)

    def row(name: str, mask: np.ndarray, model: str) -> Row:
        return Row(name, int(mask.sum()), model, metrics.accuracy(bundle_p[mask], targets[mask]),
                   metrics.accuracy(general_p[mask], targets[mask]))

    everything = np.ones(len(clips), dtype=bool)
    result.summary.append(row("all devices", everything, "mixed"))
    result.summary.append(Row("macro class-wise", len(clips), "mixed", metrics.macro_accuracy(bundle_p, targets),
                              metrics.macro_accuracy(general_p, targets)))
    is_known = np.array([d in known for d in devices])
    result.summary.append(row("known devices", is_known, "mixed"))
    result.summary.append(row("unknown devices", ~is_known, GENERAL))
    order = [d for d in DEVICES if d in devices] + sorted(set(devices) - set(DEVICES))
    for device in order:
        result.devices.append(row(device, np.array([d == device for d in devices]), bundle.model_name_for(device)))
    for c, scene in enumerate(SCENES):
        result.classes.append(row(scene, targets == c, "mixed"))
    return result, clips, bundle_p, assigned


def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _gain(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:+.1f}"


def markdown(result: BundleEvaluation) -> str:
    def table(title: str, rows: list[Row]) -> list[str]:
        lines = [f"## {title}", "", "| group | clips | model | bundle % | general alone % | gain |",
                 "|---|---:|---|---:|---:|---:|"]
        lines += [f"| {r.name} | {r.clips} | {r.model} | {_pct(r.accuracy)} | {_pct(r.general_accuracy)} | "
                  f"{_gain(r.gain)} |" for r in rows]
        return [*lines, ""]

    lines = [f"# Bundle {result.bundle} ({result.kind}) on {result.split}", ""]
    lines += table("Summary", result.summary) + table("Per device", result.devices) + table("Per class",
                                                                                            result.classes)
    return "\n".join(lines)


def write_report(result: BundleEvaluation, folder: Path, clips: list, probabilities: np.ndarray,
                 assigned: list[str]) -> list[Path]:
    """summary.md, summary.json, per_device.csv, per_class.csv, predictions.csv (with the model column)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "summary.md", folder / "summary.json", folder / "per_device.csv", folder / "per_class.csv",
             folder / "predictions.csv"]
    write_text(paths[0], markdown(result))
    write_json(paths[1], result.to_dict())
    for path, rows in ((paths[2], result.devices), (paths[3], result.classes)):
        with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["name", "clips", "model", "accuracy", "general_accuracy", "gain"])
            writer.writerows([r.name, r.clips, r.model, r.accuracy, r.general_accuracy, r.gain] for r in rows)
    with atomic_path(paths[4]) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["filename", "device", "model", "scene_label", *SCENES])
        for clip, p, model in zip(clips, probabilities, assigned, strict=True):
            writer.writerow([clip.filename, device_of(clip.device), model, SCENES[int(np.argmax(p))],
                             *(f"{v:.6f}" for v in p)])
    return paths
