"""DCASE 2025 setup on generated data: a general model vs its device-specific bundle, several seeds.

Per seed: model1 trained on `split25` of a generated TAU-format set (the demo recipe: QAT for the
last 3 epochs, the best validation-loss checkpoint kept), then `dsmn finetune` per known device
(a, b, c, s1, s2, s3; configs/finetune.yaml), then every fold1_evaluate clip scored by its device's
model and by the general model alone (`dsmn evaluate BUNDLE`, QAT networks). Writes per seed
`seed<N>/general`, `seed<N>/bundle`, `seed<N>/result.json`, and `device_finetune.md` /
`device_finetune.json` with the per-device table (mean +- standard deviation over seeds) and the
wall time of every stage.

    python benchmarks/device_finetune.py --out runs/dft                         # GPU defaults: large data
    python benchmarks/device_finetune.py --device cuda --jobs 2 --out runs/dft
    python benchmarks/device_finetune.py --size demo --epochs 4 --finetune-epochs 3 --device cpu --out /tmp/dft

`--data DIR` reuses a generated (or real TAU22) dataset; otherwise `--size` data (default `large`:
split25 holds ~7,500 clips, fold1_evaluate 12,000) is generated into OUT/data once.
`--jobs K` runs K seeds at once in separate processes (they share the GPU, each with
max(1, CPUs / K) CPU threads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dsmn.labels import DEVICES, SEEN_DEVICES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: generate --size data)")
    parser.add_argument("--size", default="large", choices=("tiny", "demo", "large"))
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=10, help="general model epochs (default: %(default)s)")
    parser.add_argument("--finetune-epochs", type=int, default=6, help="fine-tuning epochs per device")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once, one process each")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per job (default: CPUs / jobs)")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch size (default: the recipe's 32)")
    parser.add_argument("--val-max-clips", type=int, default=2000,
                        help="validation clips per epoch (general run; device runs use all of their device's, up "
                        "to this many); the final scores use every evaluate clip")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of the general run's config (demo.yaml)")
    parser.add_argument("--seed-only", type=int, default=None, help=argparse.SUPPRESS)  # a worker process
    return parser.parse_args(argv)


def device_of(args: argparse.Namespace) -> str:
    if args.device != "auto":
        return args.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def ensure_data(args: argparse.Namespace) -> tuple[Path, float]:
    """The dataset and its feature cache (generated / built once); returns (folder, seconds spent)."""
    from dsmn import models
    from dsmn.data import load_dataset
    from dsmn.training.data import frontend_for, open_cache

    started = time.perf_counter()
    data = args.data or args.out / "data"
    if args.data is None and not (data / "meta.csv").is_file():
        from dsmn.data.synth import generate

        print(f"generating {args.size} TAU-format data in {data} ...", flush=True)
        generate(data, args.size, seed=0, workers=os.cpu_count())
    open_cache(load_dataset(data), frontend_for(models.entry("model1").frontend), progress=False)
    return data, time.perf_counter() - started


def run_seed(args: argparse.Namespace, data: Path, seed: int) -> dict[str, Any]:
    """General run, fine-tuned bundle and its evaluation for one seed; written to OUT/seed<N>/result.json."""
    import torch

    from dsmn.deploy.bundle import load_bundle
    from dsmn.evaluation.bundle import evaluate_bundle
    from dsmn.training import load_config, parse_overrides, train
    from dsmn.training.config import deep_merge
    from dsmn.training.finetune import finetune

    folder = args.out / f"seed{seed}"
    result_path = folder / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    device = device_of(args)
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    torch.set_num_threads(threads)
    common: dict[str, Any] = {"device": device, "threads": threads, "progress": False,
                              "data": {"val_max_clips": args.val_max_clips}}
    if args.batch_size:
        common["batch_size"] = args.batch_size
    if device.startswith("cuda"):
        common["data"]["val_batch_size"] = 512
    general_overrides = deep_merge(common, {"epochs": args.epochs, "seed": seed, "data": {"subset": "split25"}})
    general_overrides = deep_merge(general_overrides, parse_overrides(args.set))
    timings = {}
    started = time.perf_counter()
    last = folder / "general" / "checkpoints" / "last.pt"
    train(load_config("demo", general_overrides), data, folder / "general", resume=last.is_file(),
          overrides=general_overrides)
    timings["general_s"] = time.perf_counter() - started
    started = time.perf_counter()
    bundle, devices = finetune(folder / "general", data, folder / "bundle", devices=SEEN_DEVICES,
                               overrides=deep_merge(common, {"epochs": args.finetune_epochs}),
                               resume=True, log=lambda line: print(f"[seed {seed}] {line}", flush=True))
    timings["finetune_s"] = time.perf_counter() - started
    started = time.perf_counter()
    evaluation, _, _, _ = evaluate_bundle(load_bundle(folder / "bundle"), data, "evaluate", kind="qat",
                                          device=device)
    timings["evaluate_s"] = time.perf_counter() - started
    result = {"seed": seed, "device": device, "threads": threads, "timings": timings,
              "train_clips": {d.device: d.train_clips for d in devices},
              **evaluation.to_dict()}
    result_path.write_text(json.dumps(result, indent=2))
    return result


def mean_sd(values: list[float]) -> str:
    values = [100 * v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} +- {statistics.stdev(values):.1f}"


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: per group (summary rows, then devices) general alone vs bundle and the gain, over seeds."""
    lines = ["| group | clips | model | general alone % | device-specific bundle % | gain (points) |",
             "|---|---:|---|---:|---:|---:|"]
    first = results[0]
    for section in ("summary", "devices"):
        for k, row in enumerate(first[section]):
            rows = [r[section][k] for r in results]
            lines.append(f"| {row['name']} | {row['clips']} | {row['model']} | "
                         f"{mean_sd([r['general_accuracy'] for r in rows])} | {mean_sd([r['accuracy'] for r in rows])} "
                         f"| {mean_sd([r['gain'] for r in rows])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.seed_only is not None:  # a worker started by the --jobs parent
        data = args.data or args.out / "data"
        run_seed(args, data, args.seed_only)
        return 0
    wall = time.perf_counter()
    data, data_s = ensure_data(args)
    print(f"data ready in {data_s:.1f} s: {data}", flush=True)
    started = time.perf_counter()
    if args.jobs > 1:
        base = [a for a in (argv if argv is not None else sys.argv[1:])]
        pending = list(seeds)
        running: list[subprocess.Popen] = []
        while pending or running:
            while pending and len(running) < args.jobs:
                seed = pending.pop(0)
                running.append(subprocess.Popen([sys.executable, __file__, *base, "--data", str(data),
                                                 "--seed-only", str(seed)]))
            time.sleep(1)
            for process in [p for p in running if p.poll() is not None]:
                running.remove(process)
                if process.returncode:
                    print(f"a seed failed (exit {process.returncode})", file=sys.stderr)
                    return 1
        results = [json.loads((args.out / f"seed{s}" / "result.json").read_text()) for s in seeds]
    else:
        results = [run_seed(args, data, s) for s in seeds]
    seeds_s = time.perf_counter() - started
    wall_s = time.perf_counter() - wall
    import torch

    machine = (f"{torch.cuda.get_device_name(0)}, " if results[0]["device"].startswith("cuda") else "") + \
        f"{os.cpu_count()} CPUs, {args.jobs} job(s) x {results[0]['threads']} thread(s)"
    clips = results[0]["train_clips"]
    text = "\n".join([
        f"# Device-specific fine-tuning: model1, split25 of {data.name} ({sum(clips.values())} training clips)",
        "",
        f"Seeds {', '.join(map(str, seeds))}; general model {args.epochs} epochs (demo recipe, QAT for the last 3), "
        f"fine-tuning {args.finetune_epochs} epochs per device (configs/finetune.yaml); QAT networks scored on "
        f"every fold1_evaluate clip. Training clips per device: "
        f"{', '.join(f'{d} {n}' for d, n in clips.items())}. Machine: {machine}.",
        "",
        table(results),
        "",
        f"Wall time of this invocation (a stage finished by an earlier, interrupted one is reused and counts "
        f"only its reuse): {wall_s:.0f} s in all (data {data_s:.0f} s, seeds {seeds_s:.0f} s); per seed: " + "; ".join(
            f"seed {r['seed']}: general {r['timings']['general_s']:.0f} s, fine-tuning "
            f"{r['timings']['finetune_s']:.0f} s, evaluation {r['timings']['evaluate_s']:.0f} s" for r in results),
    ])
    (args.out / "device_finetune.md").write_text(text + "\n")
    (args.out / "device_finetune.json").write_text(json.dumps(
        {"seeds": results, "wall_s": wall_s, "data_s": data_s, "machine": machine, "devices": list(DEVICES)},
        indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
