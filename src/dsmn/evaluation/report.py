"""Write an evaluation as Markdown, CSV, JSON and a confusion-matrix picture."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from dsmn.deploy.data import split_name
from dsmn.deploy.trained import describe_checkpoint
from dsmn.evaluation.evaluate import Evaluation
from dsmn.files import atomic_path, write_json, write_text
from dsmn.labels import SCENES


def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _num(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def _row(r: dict) -> str:
    return f"| {r['name']} | {r['count']} | {_pct(r['accuracy'])} | {_num(r['log_loss'])} |"


def checkpoint_line(result: Evaluation) -> str:
    """Which checkpoint the figures are of, flagged when it was selected on the split it is scored on."""
    label = result.checkpoint
    text = describe_checkpoint(label)
    if label and label.get("role") == "selected" and selected_on(label, result.split):
        text += ": chosen on the split scored here, so an optimistic figure (the last epoch's is not)"
    return text


def selected_on(label: dict, split: str) -> bool:
    """Whether the checkpoint selection looked at `split` (the authors' recipe selects on fold1_evaluate)."""
    return label.get("validation", "evaluate") == "evaluate" and split_name(label.get("val_split") or "") == split


def _window_lines(result: Evaluation) -> list[str]:
    """For clips longer than 1 s: how clips were scored, and the accuracy of single 1-s windows."""
    if result.long_clips is None:
        return []
    how = "the mean of their windows' probabilities" if result.long_clips == "windows" else "one pass each"
    return [f"- 1-s window accuracy: {_pct(result.window_accuracy)} % ({result.clips * result.windows_per_clip} "
            f"windows, {result.windows_per_clip} per clip; the clip accuracy above scores clips by {how})"]


def markdown(result: Evaluation) -> str:
    lines = [
        f"# {result.model} ({result.kind}) on {result.split}: {result.clips} clips",
        "",
        f"- checkpoint: {checkpoint_line(result)}",
        f"- accuracy: {_pct(result.accuracy)} %",
        f"- macro class-wise accuracy (DCASE ranking metric): {_pct(result.macro_accuracy)} %",
        f"- log loss: {_num(result.log_loss)}",
        *_window_lines(result),
        "",
        "## Per class",
        "",
        "| scene | clips | accuracy % | log loss |",
        "|---|---:|---:|---:|",
    ]
    lines += [_row(r) for r in result.per_class]
    lines += ["", "## Per device", "", "| device | clips | accuracy % | log loss |", "|---|---:|---:|---:|"]
    lines += [_row(r) for r in result.per_device]
    return "\n".join(lines) + "\n"


def comparison_markdown(results: list[Evaluation]) -> str:
    """The selected checkpoint beside the last epoch's: one row each, naming the checkpoint."""
    lines = ["## Selected checkpoint and last epoch", "",
             "| checkpoint | accuracy % | macro class-wise accuracy % | log loss |", "|---|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {checkpoint_line(r)} | {_pct(r.accuracy)} | {_pct(r.macro_accuracy)} | {_num(r.log_loss)} |")
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["name", "count", "accuracy", "log_loss"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in writer.fieldnames} for r in rows)


def json_safe(value):  # noqa: ANN001, ANN201 - any JSON-like value
    """`value` with every NaN (an empty group's accuracy) replaced by None, which JSON can hold."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def summary_json(result: Evaluation) -> str:
    return json.dumps(json_safe(result.summary()), indent=2)


def confusion_png(result: Evaluation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(result.confusion, dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(8, 7))
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(SCENES)), SCENES, rotation=60, ha="right")
    axes.set_yticks(range(len(SCENES)), SCENES)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for i in range(len(SCENES)):
        for j in range(len(SCENES)):
            if counts[i, j]:
                axes.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                          color="white" if rates[i, j] > 0.5 else "black")
    axes.set_title(f"{result.model} ({result.kind}), {result.split}: accuracy {_pct(result.accuracy)} %")
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120)
    plt.close(figure)


def write_report(result: Evaluation, folder: Path) -> dict[str, Path]:
    """summary.md, summary.json, per_class.csv, per_device.csv, confusion.png in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": folder / "summary.md",
        "json": folder / "summary.json",
        "per_class": folder / "per_class.csv",
        "per_device": folder / "per_device.csv",
        "confusion": folder / "confusion.png",
    }
    write_text(paths["markdown"], markdown(result))
    full = json_safe({**result.summary(), "confusion": result.confusion, "confusion_order": list(SCENES)})
    write_json(paths["json"], full)
    _write_csv(paths["per_class"], result.per_class)
    _write_csv(paths["per_device"], result.per_device)
    confusion_png(result, paths["confusion"])
    return paths
