"""Per-epoch metrics of a run: metrics.csv, metrics.json, TensorBoard scalars and curves.png.

The history lives in the checkpoint too, so a resumed run rewrites the files from it and epochs
that a killed run logged after its last checkpoint disappear instead of appearing twice.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from dsmn.files import atomic_path, write_json


class Logbook:
    def __init__(self, run_dir: Path, history: list[dict[str, Any]] | None = None, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self.history: list[dict[str, Any]] = list(history or [])
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is a dependency; stay usable without it
                SummaryWriter = None  # noqa: N806
            if SummaryWriter is not None:
                # purge_step drops events of epochs a killed run logged after its last checkpoint
                self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=len(self.history) or None)

    def log(self, row: dict[str, Any], best: dict[str, Any] | None = None) -> None:
        self.history.append(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, int | float) and math.isfinite(value):
                    self.writer.add_scalar(key.replace("_", "/", 1), value, row["epoch"])
            self.writer.flush()
        self.write_files(best)

    def write_files(self, best: dict[str, Any] | None = None) -> None:
        keys: list[str] = []
        for row in self.history:
            keys.extend(k for k in row if k not in keys)
        with atomic_path(self.run_dir / "metrics.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)
        write_json(self.run_dir / "metrics.json", {"epochs": self.history, "best": best or {}}, default=float)
        if self.history:
            plot_curves(self.history, self.run_dir / "curves.png")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Loss and accuracy per epoch, training beside validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] + 1 for row in history]
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_scene_loss", "train (scene)"), ("val_loss", "validation")):
        loss_axis.plot(epochs, [row.get(key, math.nan) for row in history], marker=".", label=label)
    for key, label in (("train_accuracy", "train"), ("val_accuracy", "validation"),
                       ("val_macro_accuracy", "validation, macro")):
        acc_axis.plot(epochs, [row.get(key, math.nan) for row in history], marker=".", label=label)
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    acc_axis.set(xlabel="epoch", ylabel="accuracy", title="scene accuracy", ylim=(0, 1))
    for axis in (loss_axis, acc_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)
