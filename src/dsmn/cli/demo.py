"""`dsmn demo`: the main job, raw audio to a deployed int8 model in one run folder.

generate TAU-format data -> feature cache -> train model1 with QAT (demo config) -> evaluate the
float and QAT models -> export int8 ONNX -> evaluate it -> predict the evaluate audio with it ->
report. Each stage is the public command a user would run, so the demo is also their tutorial;
a stage whose output already exists is skipped, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from dsmn.cli import main as dsmn_main
from dsmn.files import write_json, write_text


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the end-to-end main job on generated data (synth, features, train, evaluate, export, predict)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="runs/demo", help="run folder holding every output (default runs/demo)")
    parser.add_argument("--data", help="use this dataset instead of generating one")
    parser.add_argument("--size", default="demo", choices=["tiny", "demo", "large"], help="generated dataset size")
    parser.add_argument("--model", default="model1")
    parser.add_argument("--config", default="demo")
    parser.add_argument("--epochs", type=int, help="override the config's epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation", choices=("evaluate", "holdout"),
                        help="where best.pt is chosen: the config's choice by default (demo: fold1_evaluate, as the "
                        "authors); holdout: a few training locations per scene, leaving fold1_evaluate untouched")
    parser.add_argument("--processes", type=int, default=1,
                        help="train with this many data-parallel CPU processes (torchrun, gloo, one thread each); "
                             "on 2 cores, 2 processes of one thread outrun one process of two threads")
    parser.set_defaults(func=run)


def _stage(title: str, argv: list[str], *, capture: bool = False) -> str:
    shown = argv if len(argv) <= 16 else [*argv[:4], f"... ({len(argv) - 6} more)", *argv[-2:]]
    print(f"\n== {title}: dsmn {' '.join(shown)}", flush=True)
    start = time.perf_counter()
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer) if capture else contextlib.nullcontext():
        code = dsmn_main(argv)
    if code:
        raise SystemExit(f"demo stopped: `dsmn {' '.join(argv)}` exited with {code}")
    print(f"   done in {time.perf_counter() - start:.1f} s", flush=True)
    return buffer.getvalue()


def train_on_cpu_processes(train_flags: list[str], processes: int) -> subprocess.CompletedProcess:
    """`dsmn train TRAIN_FLAGS` under torchrun: `processes` CPU processes (gloo), one intra-op thread
    each (on 2 cores, faster than one process of two threads)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "dsmn.cli.train", *train_flags, "--threads", "1", "--device", "cpu"]
    return subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _distributed_stage(title: str, argv: list[str], processes: int) -> None:
    print(f"\n== {title} ({processes} processes): dsmn {' '.join(argv[:4])} ...", flush=True)
    start = time.perf_counter()
    if train_on_cpu_processes(argv[1:], processes).returncode:
        raise SystemExit(f"demo stopped: `dsmn {' '.join(argv)}` under torchrun failed")
    print(f"   done in {time.perf_counter() - start:.1f} s", flush=True)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else out / "data"
    run_dir = out / "train"
    onnx_path = out / f"{args.model}_int8.onnx"
    timings: dict[str, float] = {}

    def timed(name: str, fn):
        t = time.perf_counter()
        result = fn()
        timings[name] = time.perf_counter() - t
        return result

    if not args.data and not (data / "meta.csv").is_file():
        synth_argv = ["synth", str(data), "--size", args.size, "--seed", str(args.seed)]
        timed("synth", lambda: _stage("generate data", synth_argv))
    timed("features", lambda: _stage("feature cache", ["features", str(data)]))
    train_argv = ["train", "--data", str(data), "--model", args.model, "--config", args.config, "--out", str(run_dir)]
    train_argv += ["--seed", str(args.seed)]
    if args.validation:
        train_argv += ["--validation", args.validation]
    if args.epochs:
        train_argv += ["--epochs", str(args.epochs)]
    if (run_dir / "checkpoints" / "last.pt").is_file():
        train_argv.append("--resume")
    if args.processes > 1:
        timed("train", lambda: _distributed_stage("train", train_argv, args.processes))
    else:
        timed("train", lambda: _stage("train", train_argv))
    evaluations = {}
    for kind in ("float", "qat"):
        text = timed(
            f"evaluate_{kind}",
            lambda kind=kind: _stage(
                f"evaluate ({kind})",
                ["evaluate", str(run_dir), "--data", str(data), "--model-kind", kind, "--json"],
                capture=True,
            ),
        )
        evaluations[kind] = json.loads(text)
    export_text = timed(
        "export",
        lambda: _stage(
            "export int8 ONNX",
            ["export", str(run_dir), "--out", str(onnx_path), "--precision", "int8", "--data", str(data), "--json"],
            capture=True,
        ),
    )
    export = json.loads(export_text)
    evaluations["int8"] = json.loads(
        timed(
            "evaluate_int8",
            lambda: _stage(
                "evaluate (int8 ONNX)", ["evaluate", str(onnx_path), "--data", str(data), "--json"], capture=True
            ),
        )
    )
    files = _evaluate_files(data)
    predictions = out / "predictions.csv"
    timed("predict", lambda: _stage("predict", ["predict", str(onnx_path), *files, "--out", str(predictions)]))
    report = {
        "model": args.model,
        "data": str(data),
        "run_dir": str(run_dir),
        "onnx": str(onnx_path),
        "predictions": str(predictions),
        "evaluation": evaluations,
        "export": export,
        "stage_seconds": {k: round(v, 1) for k, v in timings.items()},
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    write_json(out / "report.json", report)
    text = format_report(report)
    write_text(out / "report.md", text + "\n")
    print("\n" + text)
    return 0


def _evaluate_files(data: Path) -> list[str]:
    from dsmn.data import load_dataset

    dataset = load_dataset(data, check_files=False)
    return [str(dataset.path(clip)) for clip in dataset.split("evaluate")]


def format_report(report: dict) -> str:
    ev = report["evaluation"]
    export = report["export"]
    lines = [
        f"# dsmn demo: {report['model']}",
        "",
        "| model | checkpoint | accuracy | macro class-wise accuracy | log loss |",
        "|---|---|---|---|---|",
    ]
    for kind in ("float", "qat", "int8"):
        evaluations = [ev[kind]] + ([ev[kind]["last_epoch"]] if "last_epoch" in ev[kind] else [])
        for evaluation in evaluations:
            s = evaluation["summary"]
            lines.append(f"| {'int8 ONNX' if kind == 'int8' else kind} | {_checkpoint_cell(evaluation)} | "
                         f"{s['accuracy']:.1%} | {s['macro_accuracy']:.1%} | {s['log_loss']:.3f} |")
    lines += ["", selection_note(ev["qat"].get("checkpoint"), ev["qat"]["split"])]
    devices = ev["int8"]["devices"]
    lines += ["", "int8 accuracy per device: " + ", ".join(f"{d['name']} {d['accuracy']:.1%}" for d in devices)]
    lines += [
        "",
        f"parameters: {export['params']:,} ({export['param_bytes']:,} bytes int8); "
        f"MACs per 1-s clip: {export['macs']:,}",
        f"int8 ONNX vs QAT torch top-1 agreement: {export['agreement']:.2%} (max logit difference "
        f"{export['max_logit_diff']:.4f})",
        f"outputs: {report['run_dir']}, {report['onnx']}, {report['predictions']}",
        "stage seconds: " + ", ".join(f"{k} {v}" for k, v in report["stage_seconds"].items()),
        f"wall time: {report['wall_seconds'] / 60:.1f} min",
    ]
    return "\n".join(lines)


def _checkpoint_cell(evaluation: dict) -> str:
    label = evaluation.get("checkpoint") or {}
    if not label:
        return "not recorded"
    epoch = f"epoch {label.get('epoch')} of {label.get('epochs')}" if label.get("epoch") else "epoch unknown"
    return f"{label['role']} ({label['file']}, {epoch})"


def selection_note(label: dict | None, split: str) -> str:
    """How the selected checkpoint was chosen, and whether that makes its figure optimistic."""
    from dsmn.evaluation.report import selected_on

    if not label or "selected_by" not in label:
        return "selected checkpoint: how it was chosen is not recorded"
    text = f"selected checkpoint: {label['selected_by']}"
    if selected_on(label, split):
        return text + (f" (the authors' recipe), the split this table scores: its figure is optimistic; the "
                       f"last epoch's is not selected on fold1_{split}")
    return text + f": fold1_{split} played no part in training or selection"
