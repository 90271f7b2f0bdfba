"""The DSSC paper's protocol: the families on TAU Urban Acoustic Scenes 2020 Mobile (10-s clips).

Generates (once) a TAU 2020 layout dataset with `dsmn synth --layout tau20`, builds its feature cache,
then trains dssc_large, dssc_middle, dssc_small, model1, model2 and cp_mobile on it with the same
recipe and budget and writes one table: parameters, int8 bytes, MACs per 1-s window and per 10-s clip,
float / int8 clip accuracy, 1-s window accuracy, unseen-device (s4-s6) accuracy.

Training draws `--windows-per-clip` random 1-s windows of every 10-s clip per epoch (the trainer's
`data.long_clips: windows`); every clip is scored by the mean of its ten 1-s windows' probabilities,
and the window accuracy scores each window alone. Training, scoring, the int8 ONNX export and its
check, resuming and the result files are benchmarks/compare_families.py's (imported, not copied).

`--jobs K` trains K models at once in separate processes (spawned; each gets cores / K torch
threads); the dataset and its cache are made before, by this process. The defaults (large data:
3,000 training and 1,200 evaluate clips of 10 s; 5 epochs of 3 random windows per clip) are sized
for about five minutes on one GPU with 16 cores:

    python benchmarks/compare_tau20.py --out runs/tau20 --device cuda --jobs 6

Rerunning the same command continues an interrupted benchmark: the data and caches are kept,
finished models reused, interrupted training runs resumed from their last checkpoint.

A reduced run on a small CPU machine (the docs' table):

    python benchmarks/compare_tau20.py --out runs/tau20cpu --size demo --epochs 4 --windows-per-clip 2 \
        --jobs 2 --threads 1 --val-max-clips 60
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # compare_families, also in spawned workers

import compare_families as families  # noqa: E402

from dsmn import models  # noqa: E402
from dsmn.data import load_dataset  # noqa: E402
from dsmn.data.synth import generate  # noqa: E402
from dsmn.deploy.data import open_features  # noqa: E402
from dsmn.training.data import frontend_for  # noqa: E402

DEFAULT_MODELS = ("dssc_large", "dssc_middle", "dssc_small", "model1", "model2", "cp_mobile")
NAME = "compare_tau20"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder: data/, one run folder per model, "
                        "compare_tau20.md / .json / .csv")
    parser.add_argument("--data", type=Path, help="an existing TAU 2020 layout folder (default: OUT/data, generated)")
    parser.add_argument("--size", choices=("tiny", "demo", "large"), default="large",
                        help="size of the generated data (default large: 3,000 train / 1,200 evaluate 10-s clips)")
    parser.add_argument("--seed", type=int, default=0, help="data and training seed")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--config", default="demo", help="training config every model shares (default: demo)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--windows-per-clip", type=int, default=3, help="random 1-s windows per clip and epoch")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-batches", type=int, help="cut every epoch to this many batches (smoke runs)")
    parser.add_argument("--val-max-clips", type=int, help="validate during training on an even subset of clips")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--jobs", type=int, default=1, help="models trained at once, one process each")
    parser.add_argument("--threads", type=int, help="torch CPU threads per job (default: cores / jobs)")
    parser.add_argument("--workers", type=int, help="processes generating the data (default: all cores)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="any further config override, the same for every model")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--no-onnx", action="store_true", help="skip the int8 ONNX export and its evaluation")
    parser.add_argument("--cache", help="feature cache folder (default DATA/.dsmn_cache)")
    parser.add_argument("--results", type=Path, help="Markdown results file (default OUT/compare_tau20.md)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    args.sets = [f"data.windows_per_clip={args.windows_per_clip}", "data.long_clips=windows", *args.sets]
    if args.device and args.device.startswith("cuda"):  # large validation batches: a GPU is not cache-bound
        args.sets.insert(0, "data.val_batch_size=256")
    return args


def prepare_data(args: argparse.Namespace) -> Path:
    """The TAU 2020 folder (generated when missing) and the feature cache of every front end needed."""
    data = args.data or args.out / "data"
    if not (data / "meta.csv").is_file():
        started = time.perf_counter()
        summary = generate(data, args.size, args.seed, workers=args.workers, layout="tau20")
        print(f"generated {summary.clips} 10-s clips in {time.perf_counter() - started:.0f} s -> {data}", flush=True)
    dataset = load_dataset(data)
    for frontend in {frontend_for(models.entry(m).frontend) for m in args.models}:
        started = time.perf_counter()
        cache = open_features(dataset, frontend, args.cache, progress=False)
        if cache.processed:
            print(f"feature cache: {cache.processed} clips, log-mels {cache.logmels.shape[1:]}, "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
        if cache.logmels.shape[-1] <= frontend.n_frames(frontend.sample_rate):
            raise SystemExit(f"compare_tau20: {data} holds 1-s clips; this benchmark is for 10-s clips (TAU 2020)")
    return data


def run_one(model: str, data: Path, out: Path, budget: families.Budget, cache: str | None, threads: int
            ) -> dict[str, Any]:
    """One model in its own process: torch threads first, then compare_families' train-and-score."""
    import torch

    torch.set_num_threads(threads)
    return families.run_model(model, data, out, budget, cache)


def run_all(args: argparse.Namespace, data: Path, budget: families.Budget) -> list[dict[str, Any]]:
    if args.jobs == 1:
        return [run_one(m, data, args.out, budget, args.cache, args.threads) for m in args.models]
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked; the same on every platform
    with ProcessPoolExecutor(min(args.jobs, len(args.models)), mp_context=context) as pool:
        futures = [pool.submit(run_one, m, data, args.out, budget, args.cache, args.threads) for m in args.models]
        return [f.result() for f in futures]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    pct = families.fmt_pct
    header = ["model", "family", "params", "int8 bytes", "MACs / 1 s", "MACs / 10 s", "float clip acc",
              "int8 clip acc (QAT sim)", "int8 clip acc (ONNX)", "int8 1-s window acc (QAT sim)",
              "int8 unseen s4-s6 clip acc (QAT sim)", "ONNX = QAT top-1", "train min"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for r in rows:
        cells = [r["model"], r["family"], f"{r['params']:,}", f"{r['int8_bytes']:,}", f"{r['macs'] / 1e6:.2f} M",
                 f"{r['macs_10s'] / 1e6:.1f} M", pct(r.get("float_accuracy")), pct(r.get("qat_accuracy")),
                 families.onnx_cell(r), pct(r.get("qat_window_accuracy")), pct(r.get("qat_unseen_accuracy")),
                 pct(r.get("onnx_qat_agreement")), f"{r['train_seconds'] / 60:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe(args: argparse.Namespace, data: Path, budget: families.Budget, rows: list[dict[str, Any]],
             seconds: float) -> str:
    config = budget.train_config(rows[0]["model"] if rows else "model1")
    clips = rows[0].get("qat_eval_clips", "?") if rows else "?"
    return "\n".join([
        f"- data: `{data}` (TAU 2020 layout, 10-s clips); scored on fold1_evaluate: {clips} clips of 10 s,"
        " devices a, b, c, s1..s6 (s4-s6 unseen in training)",
        f"- recipe: config `{budget.config}`, epochs {config.epochs}, batch {config.batch_size},"
        f" {config.data.windows_per_clip} random 1-s window(s) per 10-s clip and epoch, lr {config.optimizer.lr},"
        f" QAT {'on' if config.qat.enabled else 'off'} (from epoch {config.qat.start_epoch}),"
        f" multitask {config.multitask.mode} ({config.multitask.pcgrad}), seed {config.seed},"
        f" device {config.device}, {args.jobs} model(s) at a time, {args.threads} torch thread(s) each",
        f"- checkpoint scored: {budget.checkpoint}.pt (lowest validation loss on the same split)",
        "- clip accuracy: each 10-s clip scored by the mean of its ten 1-s windows' probabilities; window"
        " accuracy: every 1-s window scored alone. MACs / 10 s = 10 x MACs / 1 s (ten windows).",
        "- float: the QAT checkpoint's weights with the quantisers removed; int8 (QAT sim): the QAT network"
        " in eval mode; int8 (ONNX): the exported int8 QDQ model in ONNX Runtime",
        f"- wall time of the whole benchmark (data, caches, training, scoring): {seconds / 60:.1f} min",
    ])


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    started = time.perf_counter()
    budget = families.budget_from(args)
    budget.overrides["seed"] = args.seed  # the training seed too, not only the data's
    for model in args.models:
        budget.train_config(model)  # an unknown model or a bad override fails before any work
    args.out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(args)
    rows = run_all(args, data, budget)
    seconds = time.perf_counter() - started
    markdown = "\n".join([
        "# Model families on the TAU 2020 protocol (10-s clips)", "",
        f"Written by `benchmarks/compare_tau20.py` on {time.strftime('%Y-%m-%d %H:%M')}.", "",
        describe(args, data, budget, rows, seconds), "", markdown_table(rows)])
    print("\n" + markdown, flush=True)
    families.write_outputs(rows, markdown, args.results or args.out / f"{NAME}.md", args.out, NAME)
    return rows


if __name__ == "__main__":
    main()
