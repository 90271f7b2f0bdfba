"""Does PCGrad's merge rule change demo accuracy? Both rules, several seeds, selected and last epoch.

`multitask.merge: per-tensor` (the authors' PCGrad: the mean of the two projected gradients on every
tensor) against `per-element` (the sum on the last layer's task rows). Every run trains model1 with
configs/demo.yaml on the same demo data (`dsmn synth --size demo`), one `dsmn train` process per run,
`--jobs` of them at a time; each run's selected checkpoint (best.pt, lowest validation loss) and
last-epoch checkpoint (last.pt) are then reloaded and scored on fold1_evaluate with the QAT network
(benchmarks/demo_accuracy.py does the scoring).

    python benchmarks/pcgrad_merge.py --device cuda --jobs 4 --out runs/pcgrad_merge    # one GPU, 4 runs at once
    python benchmarks/pcgrad_merge.py --device cpu --jobs 1 --out DIR                   # CPU: ~10 min a run
    python benchmarks/pcgrad_merge.py --size tiny --epochs 2 --set max_batches_per_epoch=3 ...  # smoke test

Writes OUT/pcgrad_merge.md (the table), OUT/pcgrad_merge.json and OUT/runs/<rule>-seed<N>/ (each
run's folder and train.log). Runs already complete in OUT with the same settings are scored again,
not retrained.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from demo_accuracy import CHECKPOINT_HEADER, build_cache, checkpoint_rows, ensure_demo_data, score_run, selection_text

from dsmn.training import load_config

RULES = ("per-tensor", "per-element")


def run_name(rule: str, seed: int) -> str:
    return f"{rule}-seed{seed}"


def overrides_for(rule: str, seed: int, args: argparse.Namespace) -> list[str]:
    """The config overrides of one run (what `dsmn train --set` receives)."""
    extra = [f"epochs={args.epochs}"] if args.epochs else []
    if args.validation:
        extra.append(f"data.validation={args.validation}")
    return [f"multitask.merge={rule}", f"seed={seed}", *extra, *args.set]


def finished(run: Path, config_name: str, overrides: list[str]) -> bool:
    """A complete earlier run with these settings (device, threads and progress bars aside)."""
    last = run / "checkpoints" / "last.pt"
    if not last.is_file():
        return False
    saved = torch.load(last, map_location="cpu", weights_only=False)
    expected = load_config(config_name, overrides)
    ignore = ("progress", "device", "threads")
    same = {k: v for k, v in saved["config"].items() if k not in ignore} == {
        k: v for k, v in expected.to_dict().items() if k not in ignore}
    return same and saved["epoch"] == expected.epochs - 1


def train_run(run: Path, data: Path, args: argparse.Namespace, overrides: list[str]) -> float:
    """One `dsmn train` process (its output in run/train.log); returns its wall seconds."""
    command = [sys.executable, "-m", "dsmn.cli.train", "--data", str(data), "--config", args.config,
               "--out", str(run), "--overwrite", "--no-progress", "--device", args.device,
               "--threads", str(args.threads)]
    for item in overrides:
        command += ["--set", item]
    run.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    with (run / "train.log").open("w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        raise SystemExit(f"training failed ({run / 'train.log'}): {' '.join(command)}")
    return time.perf_counter() - start


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    return f"{mean:.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")


def verdict(a: list[float], b: list[float]) -> str:
    """The difference of the means against the seeds' own spread (n seeds per rule: indicative only)."""
    diff = statistics.mean(a) - statistics.mean(b)
    noise = max(max(a) - min(a), max(b) - min(b))
    word = "within noise" if abs(diff) <= noise else "larger than the seed-to-seed range"
    return f"{diff:+.3f} ({word}: seed-to-seed range up to {noise:.3f})"


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace, data: Path,
           seconds: dict[str, float]) -> str:
    config = load_config(args.config, overrides_for(RULES[0], args.seeds[0], args))
    first = next(iter(results.values()))[0]
    lines = [
        f"## PCGrad merge rule on demo data (model1, config {args.config}, {config.epochs} epochs, "
        f"seeds {' '.join(map(str, args.seeds))}, device {args.device}, {args.jobs} run(s) at a time)",
        "",
        f"data {data}: {first['clips']} fold1_evaluate clips; QAT network of each checkpoint, reloaded; "
        f"selected checkpoint: {selection_text(first['checkpoint'])}.",
        f"overrides beyond the merge rule and seed: {' '.join(args.set) or 'none'}"
        + (f"; epochs={args.epochs}" if args.epochs else "")
        + (f"; data.validation={args.validation}" if args.validation else ""),
        "",
        "| merge rule | seeds | accuracy, selected (best.pt) | accuracy, last epoch (last.pt) | macro, selected |"
        " s4-s6 (unseen), selected |",
        "|---|---|---|---|---|---|",
    ]
    for rule, runs in results.items():
        lines.append(f"| {rule} | {' '.join(str(r['seed']) for r in runs)} | {spread([r['accuracy'] for r in runs])} |"
                     f" {spread([r['last_epoch']['accuracy'] for r in runs])} |"
                     f" {spread([r['macro_accuracy'] for r in runs])} |"
                     f" {spread([r['devices'].get('s4-s6 (unseen)', float('nan')) for r in runs])} |")
    if len(results) == 2 and all(len(r) > 1 for r in results.values()):
        a, b = (results[rule] for rule in RULES)
        selected = verdict([r["accuracy"] for r in a], [r["accuracy"] for r in b])
        last = verdict([r["last_epoch"]["accuracy"] for r in a], [r["last_epoch"]["accuracy"] for r in b])
        lines += ["", f"per-tensor - per-element, selected: {selected}",
                  f"per-tensor - per-element, last epoch: {last}"]
    lines += ["", "Per run:", "", CHECKPOINT_HEADER[0].replace("| checkpoint |", "| run | checkpoint |"),
              "|---" + CHECKPOINT_HEADER[1]]
    for rule, runs in results.items():
        for r in runs:
            name = run_name(rule, r["seed"])
            lines += [f"| {name} {row}" for row in checkpoint_rows(r)]
    lines += ["", "training wall seconds per run (runs share the machine when --jobs > 1): "
              + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dataset folder (default: generate --size data in the temp folder)")
    parser.add_argument("--size", default="demo", choices=("tiny", "demo", "large"), help="generated data size")
    parser.add_argument("--out", required=True, help="folder for the runs and the report")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--jobs", type=int, help="training runs at a time (default: 4 on a GPU, 1 on the CPU)")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: CPU cores / jobs, at most 4)")
    parser.add_argument("--config", default="demo")
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, help="override the config's epochs (the schedule scales with it)")
    parser.add_argument("--validation", choices=("evaluate", "holdout"), help="override data.validation")
    parser.add_argument("--set", action="append", default=[], help="config override for every run")
    args = parser.parse_args(argv)
    args.jobs = args.jobs or (4 if args.device.startswith("cuda") else 1)
    args.threads = args.threads or max(1, min(4, (os.cpu_count() or 1) // args.jobs))
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 8)))
    out = Path(args.out)
    data = ensure_demo_data(args.data, size=args.size)
    build_cache(data)  # once, before the runs share it

    todo = [(rule, seed) for rule in args.rules for seed in args.seeds]
    seconds: dict[str, float] = {}

    def one(job: tuple[str, int]) -> None:
        rule, seed = job
        run, overrides = out / "runs" / run_name(rule, seed), overrides_for(rule, seed, args)
        if finished(run, args.config, overrides):
            print(f"{run_name(rule, seed)}: complete earlier run reused", flush=True)
            return
        print(f"{run_name(rule, seed)}: training ...", flush=True)
        seconds[run_name(rule, seed)] = train_run(run, data, args, overrides)
        print(f"{run_name(rule, seed)}: trained in {seconds[run_name(rule, seed)]:.0f} s", flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, todo))
    results: dict[str, list[dict[str, Any]]] = {}
    for rule, seed in todo:
        scores = score_run(out / "runs" / run_name(rule, seed), data, device=args.device)
        results.setdefault(rule, []).append({**scores, "seed": seed})
    text = report(results, args, data, seconds)
    print("\n" + text)
    (out / "pcgrad_merge.md").write_text(text + "\n", encoding="utf-8")
    (out / "pcgrad_merge.json").write_text(json.dumps({"results": results, "train_seconds": seconds,
                                                       "args": vars(args)}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
