"""Distillation, Freq-MixStyle and device IRs measured: the whole KD path on generated TAU-format data.

1. data (`dsmn synth --size SIZE`, or --data), feature cache, device IRs (`dsmn synth-irs`);
2. TEACHERS teachers (`dsmn train --model cp_mobile_wide --config teacher --seed i`), each scored;
3. `dsmn teach` over them -> teacher.tsv (training split) and the ensemble's own evaluate accuracy;
4. model1 students with the demo recipe (configs/demo.yaml), for every variant and seed:
   baseline | kd (--teacher) | freq-mixstyle | dir (device IRs beside spectrum correction);
   each trained, exported to int8 ONNX (`dsmn export --precision int8`) and evaluated from the ONNX
   file (`dsmn evaluate`), so every number is the deployed int8 model's;
5. a table: mean +- std over seeds of overall, device-a and s4-s6 (unseen) accuracy, the gap to
   device a, and the teachers' accuracy -> OUT/distillation.md and OUT/results.json.

Every step is a `dsmn` command run as a subprocess; --jobs K runs K of them at once (teachers, then
students), each with --threads (default: cores / jobs) intra-op threads. Finished steps are reused
when the script runs again with the same OUT, and a run cut short resumes from its last epoch.

    python benchmarks/distillation.py --out OUT [--size tiny|demo] [--data DIR] [--device cpu|cuda]
        [--jobs K] [--seeds 0 1] [--teachers 2] [--epochs 10] [--teacher-epochs 10]
        [--variants baseline kd freq-mixstyle dir kd:0.5] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

VARIANTS = ("baseline", "kd", "freq-mixstyle", "dir")


def dsmn(*args: str, log: Path | None = None, threads: int = 1) -> dict[str, Any]:
    """Run `dsmn ARGS` in a fresh interpreter; returns {seconds}; raises with the log tail on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with open(log or os.devnull, "a", encoding="utf-8") as handle:
        handle.write(f"$ dsmn {' '.join(args)}\n")
        handle.flush()
        command = [sys.executable, "-c", "import sys; from dsmn.cli import main; sys.exit(main())", *args]
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env).returncode
    if code:
        tail = Path(log).read_text(encoding="utf-8")[-2000:] if log else ""
        raise RuntimeError(f"`dsmn {' '.join(args)}` exited {code}\n{tail}")
    return {"seconds": time.perf_counter() - start}


def trained(run: Path, epochs: int) -> bool:
    metrics = run / "metrics.csv"
    return metrics.is_file() and len(metrics.read_text().strip().splitlines()) - 1 >= epochs


def scores(evaluation: dict[str, Any]) -> dict[str, float]:
    devices = {d["name"]: d["accuracy"] for d in evaluation["devices"]}
    return {"accuracy": evaluation["summary"]["accuracy"], "macro_accuracy": evaluation["summary"]["macro_accuracy"],
            "a": devices.get("a", float("nan")), "unseen": devices.get("unseen", float("nan")),
            "gap": devices.get("a", float("nan")) - devices.get("unseen", float("nan"))}


def evaluate(model: Path, data: Path, out: Path, threads: int, kind: str | None = None) -> dict[str, float]:
    summary = out / "summary.json"
    if not summary.is_file():
        extra = ["--model-kind", kind] if kind else []
        dsmn("evaluate", str(model), "--data", str(data), "--out", str(out), *extra, log=out.parent / "log.txt",
             threads=threads)
    return scores(json.loads(summary.read_text()))


def train_teacher(index: int, a: argparse.Namespace, data: Path, out: Path) -> dict[str, Any]:
    run = out / "teachers" / f"t{index}"
    run.mkdir(parents=True, exist_ok=True)
    seconds = None
    if not trained(run, a.teacher_epochs):
        model = a.teacher_model[index % len(a.teacher_model)]
        seconds = dsmn("train", "--data", str(data), "--model", model, "--config", "teacher",
                       "--seed", str(index), "--epochs", str(a.teacher_epochs), "--out", str(run), "--resume",
                       "--device", a.device, "--threads", str(a.threads), "--no-progress", *a.extra,
                       log=run / "log.txt", threads=a.threads)["seconds"]
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    result = {"run": str(run), "model": a.teacher_model[index % len(a.teacher_model)], "seconds": seconds,
              "train_clips_per_second": statistics.mean(float(r["train_clips_per_second"]) for r in rows),
              **evaluate(run, data, run / "eval_float", a.threads, "float")}
    print(f"teacher t{index} ({result['model']}): accuracy {result['accuracy']:.4f}, "
          f"{result['train_clips_per_second']:.0f} training clips/s", flush=True)
    return result


def variant_name(text: str) -> str:
    technique, colon, setting = text.partition(":")
    if technique not in VARIANTS or (colon and technique != "kd"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected one of {', '.join(VARIANTS)} or kd:LAMBDA")
    if colon:
        try:
            if not 0.0 <= float(setting) <= 1.0:
                raise ValueError
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: LAMBDA must be a number in [0, 1]") from None
    return text


def train_student(variant: str, seed: int, a: argparse.Namespace, data: Path, out: Path) -> dict[str, Any]:
    run = out / "students" / f"{variant.replace(':', '-lambda')}-seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    technique, _, setting = variant.partition(":")  # kd:0.5 = KD with kd_lambda 0.5
    flags = {"baseline": [], "kd": ["--teacher", str(out / "teacher.tsv")],
             "freq-mixstyle": ["--set", "freq_mixstyle.enabled=true"],
             "dir": ["--set", "device_ir.enabled=true", "--set", f"device_ir.folder={out / 'irs'}"]}[technique]
    if setting:
        flags = [*flags, "--set", f"distillation.kd_lambda={float(setting)}"]
    seconds = None
    if not trained(run, a.epochs):
        seconds = dsmn("train", "--data", str(data), "--model", "model1", "--config", "demo", "--seed", str(seed),
                       "--epochs", str(a.epochs), "--out", str(run), "--resume", "--device", a.device,
                       "--threads", str(a.threads), "--no-progress", *flags, *a.extra,
                       log=run / "log.txt", threads=a.threads)["seconds"]
    onnx = run / "model1_int8.onnx"
    if not onnx.is_file():
        dsmn("export", str(run), "--out", str(onnx), "--precision", "int8", "--data", str(data),
             log=run / "log.txt", threads=a.threads)
    result = {"variant": variant, "seed": seed, "seconds": seconds,
              **evaluate(onnx, data, run / "eval_int8", a.threads)}
    print(f"{variant} seed {seed}: int8 accuracy {result['accuracy']:.4f}, s4-s6 {result['unseen']:.4f}", flush=True)
    return result


def ensemble_accuracy(data: Path, out: Path, teachers: list[Path], threads: int) -> dict[str, float]:
    """The teacher ensemble scored on the evaluate split through `dsmn teach --split evaluate`."""
    import numpy as np

    from dsmn.data import load_dataset
    from dsmn.distillation import read_teacher_table
    from dsmn.evaluation.evaluate import score
    from dsmn.models import scene_probabilities

    table_path = out / "teacher_evaluate.tsv"
    if not table_path.is_file():
        dsmn("teach", *map(str, teachers), "--data", str(data), "--split", "evaluate", "--out", str(table_path),
             log=out / "log.txt", threads=threads)
    clips = load_dataset(data).split("evaluate")
    logits = read_teacher_table(table_path).for_clips([c.filename for c in clips])
    probabilities = scene_probabilities(np.asarray(logits, dtype=np.float32))
    result = score(probabilities, np.array([c.scene_id for c in clips]), [c.device for c in clips])
    return scores(result.summary())


def mean_std(values: list[float]) -> str:
    values = [v * 100 for v in values]
    if len(values) < 2:
        return f"{values[0]:.1f}" if values else "-"
    return f"{statistics.mean(values):.1f} +- {statistics.stdev(values):.1f}"


def report(a: argparse.Namespace, teachers: list[dict], ensemble: dict, students: list[dict], timings: dict) -> str:
    lines = [f"# Distillation, Freq-MixStyle and device IRs ({a.size if not a.data else a.data} data)", "",
             f"model1, demo recipe, {a.epochs} epochs, int8 ONNX accuracy on fold1_evaluate; seeds "
             f"{' '.join(map(str, a.seeds))}; device {a.device}, {a.jobs} parallel jobs x {a.threads} threads; "
             f"teachers: {', '.join(t['model'] for t in teachers)}, {a.teacher_epochs} epochs each. Accuracy in %, "
             "mean +- standard deviation over seeds; gap = device a - s4-s6.", "",
             "| model | accuracy | device a | s4-s6 (unseen) | gap to a | runs |", "|---|---|---|---|---|---|"]
    for i, t in enumerate(teachers):
        lines.append(f"| teacher t{i}: {t['model']} (float) | {t['accuracy'] * 100:.1f} | {t['a'] * 100:.1f} | "
                     f"{t['unseen'] * 100:.1f} | {t['gap'] * 100:.1f} | 1 |")
    lines.append(f"| teacher ensemble (mean logits) | {ensemble['accuracy'] * 100:.1f} | {ensemble['a'] * 100:.1f} | "
                 f"{ensemble['unseen'] * 100:.1f} | {ensemble['gap'] * 100:.1f} | - |")
    for variant in a.variants:
        rows = [s for s in students if s["variant"] == variant]
        lines.append(f"| model1 int8, {variant} | {mean_std([r['accuracy'] for r in rows])} | "
                     f"{mean_std([r['a'] for r in rows])} | {mean_std([r['unseen'] for r in rows])} | "
                     f"{mean_std([r['gap'] for r in rows])} | {len(rows)} |")
    base = {r["seed"]: r for r in students if r["variant"] == "baseline"}
    lines += ["", "Paired differences to the baseline (same seed), accuracy points:", ""]
    for variant in a.variants:
        if variant == "baseline":
            continue
        diffs = [r["accuracy"] - base[r["seed"]]["accuracy"] for r in students
                 if r["variant"] == variant and r["seed"] in base]
        unseen = [r["unseen"] - base[r["seed"]]["unseen"] for r in students
                  if r["variant"] == variant and r["seed"] in base]
        if diffs:
            lines.append(f"- {variant}: overall {mean_std(diffs)}, s4-s6 {mean_std(unseen)}")
    teacher_speed = [t["train_clips_per_second"] for t in teachers]
    lines += ["", f"Teacher training: {statistics.mean(teacher_speed):.0f} clips/s per run "
              f"({a.jobs} runs sharing the machine). Wall time per stage (s): "
              + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (data, runs, table)")
    parser.add_argument("--data", help="dataset folder (default: generate OUT/data with --size)")
    parser.add_argument("--size", choices=("tiny", "demo", "large"), default="demo")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (passed to every dsmn train)")
    parser.add_argument("--jobs", type=int, default=1, help="training processes at once")
    parser.add_argument("--threads", type=int, help="intra-op threads per process (default: cores / jobs)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--teachers", type=int, default=2)
    parser.add_argument("--teacher-model", nargs="+", default=["cp_mobile_wide"],
                        help="teacher network(s); teacher i is the (i mod count)-th (mixed-family ensembles)")
    parser.add_argument("--epochs", type=int, default=10, help="student epochs (demo recipe)")
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--variants", nargs="+", type=variant_name, default=list(VARIANTS),
                        help=f"{', '.join(VARIANTS)}; kd:LAMBDA distils with kd_lambda LAMBDA (default 0.02)")
    parser.add_argument("--set", action="append", default=[], help="config override for every training run")
    a = parser.parse_args(argv)
    if a.teachers < 1 or "baseline" not in a.variants:
        parser.error("need at least one teacher and the baseline variant")
    a.threads = a.threads or max(1, (os.cpu_count() or 1) // a.jobs)
    a.extra = [x for item in a.set for x in ("--set", item)]
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    data = Path(a.data).resolve() if a.data else out / "data"
    if not (data / "meta.csv").is_file():
        dsmn("synth", str(data), "--size", a.size, "--seed", "0", "--workers", str(os.cpu_count() or 1),
             log=out / "log.txt")
    dsmn("features", str(data), "--workers", str(os.cpu_count() or 1), "--quiet", log=out / "log.txt")
    if not (out / "irs" / "irs.json").is_file():
        dsmn("synth-irs", str(out / "irs"), "--count", "12", "--seed", "0", log=out / "log.txt")
    timings["data"] = time.perf_counter() - start

    mark = time.perf_counter()
    with ThreadPoolExecutor(a.jobs) as pool:
        teachers = list(pool.map(lambda i: train_teacher(i, a, data, out), range(a.teachers)))
    runs = [Path(t["run"]) for t in teachers]
    if not (out / "teacher.tsv").is_file():
        dsmn("teach", *map(str, runs), "--data", str(data), "--out", str(out / "teacher.tsv"), log=out / "log.txt",
             threads=a.threads * a.jobs)
    ensemble = ensemble_accuracy(data, out, runs, a.threads * a.jobs)
    timings["teachers"] = time.perf_counter() - mark
    print(f"teacher ensemble: accuracy {ensemble['accuracy']:.4f}", flush=True)

    mark = time.perf_counter()
    jobs = [(v, s) for s in a.seeds for v in a.variants]
    with ThreadPoolExecutor(a.jobs) as pool:
        students = list(pool.map(lambda job: train_student(*job, a, data, out), jobs))
    timings["students"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - start

    text = report(a, teachers, ensemble, students, timings)
    (out / "distillation.md").write_text(text, encoding="utf-8")
    (out / "results.json").write_text(json.dumps({"teachers": teachers, "ensemble": ensemble, "students": students,
                                                  "timings": timings, "args": {k: v for k, v in vars(a).items()}},
                                                 indent=2, default=str), encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
