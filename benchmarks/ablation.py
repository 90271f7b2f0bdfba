"""Ablation of the recipe on the demo data: what spectrum correction, PCGrad / multi-task and mixup do.

Every variant trains model1 with configs/demo.yaml on the same data and seed, one part switched
off, and is scored on fold1_evaluate with its reloaded selected checkpoint (best.pt, QAT model):
accuracy, macro accuracy and accuracy per device group: a | b/c | s1-s3 | s4-s6 (unseen in training),
and the last epoch's accuracy (last.pt) beside them.
Unseen devices show the device gap; spectrum correction is meant to narrow it. The last variant
trains with the authors' step (PCGrad on every parameter, QAT from the first epoch) instead of the
demo config's faster options, for the accuracy side of that trade.

    python benchmarks/ablation.py [--data DIR] [--out FOLDER] [--variants full no-spectrum-correction ...]
                                  [--seeds 0 1] [--set key=value ...]

Runs already complete in OUT with the same configuration are scored again, not retrained.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from demo_accuracy import DEVICE_GROUPS, build_cache, ensure_demo_data, score_run, selection_text

from dsmn.training import load_config, train

VARIANTS: dict[str, list[str]] = {
    "full recipe": [],
    "no spectrum correction": ["spectrum_correction.enabled=false"],
    "multi-task, summed (no PCGrad)": ["multitask.mode=sum"],
    "no multi-task (scene loss only)": ["multitask.mode=off"],
    "no mixup": ["mixup.enabled=false"],
    "faithful step (full PCGrad, QAT throughout)": [
        "multitask.pcgrad=full", "qat.start_epoch=0", "qat.float_until_start=false"],
}
SHORT = {
    "full": "full recipe", "no-spectrum-correction": "no spectrum correction", "sum": "multi-task, summed (no PCGrad)",
    "off": "no multi-task (scene loss only)", "no-mixup": "no mixup",
    "faithful": "faithful step (full PCGrad, QAT throughout)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="demo dataset folder (default: generate it in the temp folder)")
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "dsmn-ablation"))
    parser.add_argument("--config", default="demo")
    parser.add_argument("--variants", nargs="+", choices=list(SHORT), default=list(SHORT))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="config override for every variant")
    parser.add_argument("--report", help="Markdown file for the table (default: OUT/ablation.md)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = ensure_demo_data(args.data)
    build_cache(data)
    out = Path(args.out)
    results: dict[str, list[dict]] = {}
    for short in args.variants:
        name = SHORT[short]
        for seed in args.seeds:
            run = out / f"{short}-seed{seed}"
            overrides = [f"threads={args.threads}", "device=cpu", "progress=false", f"seed={seed}",
                         *VARIANTS[name], *args.set]
            config = load_config(args.config, overrides)
            start = time.perf_counter()
            if not finished(run, config):
                train(config, data, run, overwrite=True)
            scores = score_run(run, data)
            scores["seconds"] = time.perf_counter() - start
            results.setdefault(name, []).append(scores)
            print(f"{name} (seed {seed}): accuracy {scores['accuracy']:.3f}, unseen "
                  f"{scores['devices'].get('s4-s6 (unseen)', float('nan')):.3f}, {scores['seconds']:.0f} s", flush=True)
    report = table(results, args)
    print(report)
    path = Path(args.report) if args.report else out / "ablation.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report + "\n", encoding="utf-8")
    (out / "ablation.json").write_text(json.dumps(results, indent=2))
    return 0


def finished(run: Path, config) -> bool:  # noqa: ANN001
    """A complete earlier run of exactly this configuration (rerunning the script reuses it)."""
    last = run / "checkpoints" / "last.pt"
    if not last.is_file():
        return False
    saved = torch.load(last, map_location="cpu", weights_only=False)
    same = {k: v for k, v in saved["config"].items() if k != "progress"} == {
        k: v for k, v in config.to_dict().items() if k != "progress"}
    return same and saved["epoch"] == config.epochs - 1


def table(results: dict[str, list[dict]], args: argparse.Namespace) -> str:
    def mean(values: list[float]) -> str:
        return f"{statistics.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")

    lines = [
        f"## Ablation on demo data (model1, config {args.config}, seeds {' '.join(map(str, args.seeds))}, QAT model, "
        "fold1_evaluate)",
        "",
        "Every column is of the selected checkpoint (best.pt) but the last, the last epoch's (last.pt). "
        "Selected checkpoint: " + selection_text(next(iter(results.values()))[0]["checkpoint"]) + ".",
        "",
        "| variant | accuracy | macro | " + " | ".join(DEVICE_GROUPS)
        + " | unseen gap (a - s4-s6) | accuracy, last epoch |",
        "|---" * (5 + len(DEVICE_GROUPS)) + "|",
    ]
    for name, runs in results.items():
        devices = [mean([r["devices"].get(g, float("nan")) for r in runs]) for g in DEVICE_GROUPS]
        gap = mean([r["devices"]["a"] - r["devices"]["s4-s6 (unseen)"] for r in runs])
        last = mean([r["last_epoch"]["accuracy"] for r in runs])
        lines.append(f"| {name} | {mean([r['accuracy'] for r in runs])} | {mean([r['macro_accuracy'] for r in runs])}"
                     f" | {' | '.join(devices)} | {gap} | {last} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
