"""Side-by-side comparison of the model families: DSMN, DSSC and the two baselines.

Every model is trained by `dsmn.training.train` on the same dataset with the same recipe and budget
(the `demo` config: QAT from the start, PCGrad, mixup, spectrum correction, SpecAugment; same epochs,
batch size and seed), then scored on the evaluate split (fold1_evaluate, the split the DCASE
development setup tests on; it holds the unseen devices s4..s6) in three forms:

- float: the float network of the checkpoint (the QAT model's own weights, quantisers removed);
- int8 (QAT): the QAT network in eval mode, which simulates the int8 computation exactly;
- int8 (ONNX): the checkpoint exported by `dsmn.deploy.export_onnx` to an int8 QDQ ONNX model and run
  by ONNX Runtime (skipped with `--no-onnx`; an export failure is recorded, not fatal).

The checkpoint scored is the trainer's best.pt (lowest validation loss on the same evaluate split,
as the recipe keeps it) unless `--checkpoint last`. Complexity is `dsmn.complexity.measure` on each
network's own 1-s input (int8 parameter bytes = parameters x 1 B, as DCASE counts them). Training
speed is the trainer's own timing: clips seen / wall time of the training epochs (validation and
checkpointing excluded), and clips per CPU-second of the training process (less sensitive to whatever
else runs on a shared machine; with `--threads 1` it is the single-core rate).

Resumable per model: OUT/<model>/result.json marks a finished model and is reused when its budget
matches; an interrupted training run continues from its last.pt.

    python benchmarks/compare_families.py --data runs/compare/data --out runs/compare6/runs \
        --epochs 6 --threads 2 --val-max-clips 600 --set mixup.late_epoch=5   # the results file's run
    python benchmarks/compare_families.py --data DIR --out DIR --models model1 cp_mobile --epochs 1 \
        --max-batches 5 --results /tmp/table.md
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dsmn import complexity, files, models
from dsmn.data.holdout import describe_validation
from dsmn.deploy import export_onnx, load_trained
from dsmn.deploy.data import logmel_batches, logmel_windows, open_features, split_clips
from dsmn.deploy.inference import LoadedModel, load_for_inference
from dsmn.deploy.onnx_export import MIN_AGREEMENT
from dsmn.evaluation.evaluate import Evaluation, evaluate
from dsmn.training import load_config, train
from dsmn.training.config import TrainConfig, parse_overrides
from dsmn.training.distributed import select_device

DEFAULT_MODELS = ("model1", "model2", "dssc_large", "dssc_middle", "dssc_small", "dcase2022_baseline", "cp_mobile")
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "compare_families.md"
RESULT_FILE = "result.json"
EVAL_SPLIT = "evaluate"
SCORING_VERSION = 2  # results scored by an older version are re-scored (the training run is reused)
NOTES_MARKER = "<!-- notes: kept when the table is rewritten -->"
CHECK_STRIDE = 4  # the ONNX export is checked against the QAT network on every 4th evaluate clip


@dataclass
class Budget:
    """What every model gets: the config, the overrides on top of it and the checkpoint scored."""

    config: str
    overrides: dict[str, Any]
    checkpoint: str
    onnx: bool

    def train_config(self, model: str) -> TrainConfig:
        return load_config(self.config, {**self.overrides, "model": model})

    def key(self) -> dict[str, Any]:
        """Identity of the budget: a stored result is reused only under the same one."""
        return {"config": self.config, "overrides": self.overrides, "checkpoint": self.checkpoint,
                "onnx": self.onnx}


# --- one model: train, score, measure ----------------------------------------------------------------


def run_model(model: str, data: Path, out: Path, budget: Budget, cache_dir: str | None) -> dict[str, Any]:
    """Train (or resume) and score one model; the result is also written to OUT/<model>/result.json."""
    run_dir = out / model
    stored = read_result(run_dir)
    if stored is not None and stored.get("budget") == budget.key() and stored.get("scoring") == SCORING_VERSION:
        print(f"[{model}] finished result found in {run_dir}, reused", flush=True)
        return {**stored, **training_speed(run_dir)}  # derived from the run's own log: always current
    config = budget.train_config(model)
    resume = same_config(run_dir, config)  # a finished run of the same config: resuming trains nothing
    print(f"[{model}] training {config.epochs} epoch(s) -> {run_dir}" + (" (resuming)" if resume else ""), flush=True)
    train(config, data, run_dir, resume=resume, overwrite=not resume)

    result: dict[str, Any] = {"model": model, "family": models.entry(model).family, "budget": budget.key(),
                              "scoring": SCORING_VERSION}
    result.update(complexity_columns(model))
    result.update(training_speed(run_dir))
    result.update(score_forms(run_dir, data, budget, cache_dir))
    write_json(run_dir / RESULT_FILE, result)
    print(f"[{model}] " + ", ".join(f"{k} {fmt_pct(result.get(k))}" for k in
                                   ("float_accuracy", "qat_accuracy", "onnx_accuracy")), flush=True)
    return result


def read_result(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:  # a half-written file from a killed process: redo the model
        return None


def same_config(run_dir: Path, config: TrainConfig) -> bool:
    """Whether run_dir holds an interrupted run of exactly this configuration (then it is resumed)."""
    saved = run_dir / "config.yaml"
    if not (run_dir / "checkpoints" / "last.pt").is_file() or not saved.is_file():
        return False
    return comparable(yaml.safe_load(saved.read_text(encoding="utf-8"))) == comparable(config.to_dict())


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "progress"}


def complexity_columns(model: str) -> dict[str, Any]:
    """Parameters, int8 parameter bytes and MACs of one 1-s clip on the model's own input."""
    network = models.create(model)
    report = complexity.measure(network, dtype="int8")
    return {"params": report.params, "int8_bytes": report.param_bytes, "macs": report.macs,
            "macs_10s": report.macs_10s,
            "input_shape": list(complexity.clip_input_shape(network)[1:]), "within_limits": report.within_limits}


def training_speed(run_dir: Path) -> dict[str, Any]:
    """Clips/s over the training epochs, from the trainer's per-epoch timing in metrics.json."""
    history = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))["epochs"]
    seconds = sum(row["epoch_seconds"] for row in history)
    clips = sum(row["train_clips_per_second"] * row["epoch_seconds"] for row in history)
    out = {"epochs": len(history), "train_clips": round(clips), "train_seconds": seconds,
           "train_clips_per_second": clips / seconds if seconds > 0 else math.nan,
           "best_epoch": min(history, key=lambda row: row["val_loss"])["epoch"] + 1 if history else None}
    if history and all("epoch_cpu_seconds" in row for row in history):  # process CPU time: robust to a busy machine
        cpu = sum(row["epoch_cpu_seconds"] for row in history)
        out.update(train_cpu_seconds=cpu, train_clips_per_cpu_second=clips / cpu if cpu > 0 else math.nan)
    return out


def score_forms(run_dir: Path, data: Path, budget: Budget, cache_dir: str | None) -> dict[str, Any]:
    """float / int8 (QAT) / int8 (ONNX) accuracy, macro class-wise accuracy and unseen-device accuracy."""
    checkpoint = run_dir / "checkpoints" / f"{budget.checkpoint}.pt"
    out: dict[str, Any] = {"checkpoint": str(checkpoint)}
    device = select_device(budget.overrides.get("device") or "cpu")  # the torch forms run where training ran
    forms: dict[str, LoadedModel] = {
        "float": load_for_inference(checkpoint, "float", device=device),
        "qat": load_for_inference(checkpoint, "qat", device=device),
    }
    if budget.onnx:
        try:
            forms["onnx"] = export_int8(checkpoint, run_dir / "model-int8.onnx", data, cache_dir, out)
        except Exception as error:  # noqa: BLE001 - an export failure is a finding to report, not a crash
            out["onnx_error"] = f"{type(error).__name__}: {error}".splitlines()[0]
            print(f"  int8 ONNX export failed: {out['onnx_error']}", file=sys.stderr, flush=True)
    predictions = {}
    for form, loaded in forms.items():
        evaluation, _, probabilities = evaluate(loaded, data, EVAL_SPLIT, cache_dir)
        out.update(evaluation_columns(form, evaluation))
        predictions[form] = probabilities.argmax(axis=1)
    if "onnx" in predictions:  # how far the deployed int8 model is from the simulated one, on the whole split
        out["onnx_qat_agreement"] = float((predictions["onnx"] == predictions["qat"]).mean())
    out["checkpoint_epoch"] = forms["qat"].checkpoint.get("epoch")
    other = other_checkpoint(budget.checkpoint)
    other_path = run_dir / "checkpoints" / f"{other}.pt"
    if other_path.is_file():  # the other checkpoint too: selected and last-epoch figures side by side
        loaded = load_for_inference(other_path, "qat")
        evaluation, _, _ = evaluate(loaded, data, EVAL_SPLIT, cache_dir)
        out.update(other_checkpoint=other, other_epoch=loaded.checkpoint.get("epoch"),
                   qat_other_accuracy=evaluation.accuracy)
    return out


def other_checkpoint(name: str) -> str:
    return "last" if name == "best" else "best"


def export_int8(checkpoint: Path, path: Path, data: Path, cache_dir: str | None, out: dict[str, Any]) -> LoadedModel:
    """`dsmn export`'s int8 export, checked against the QAT network on every 4th evaluate clip.

    The check's verdict is recorded instead of enforced (min_agreement 0): the ONNX model is scored
    either way and the table marks it when it fails the 99 % top-1 agreement `dsmn export` requires.
    """
    trained = load_trained(checkpoint)
    dataset, clips = split_clips(data, EVAL_SPLIT)
    cache = open_features(dataset, trained.frontend, cache_dir, progress=False)
    windows = logmel_windows(logmel_batches(cache, cache.usable(clips)[::CHECK_STRIDE], 64), trained.window_frames)
    inputs = [trained.network_input(x) for x in windows]  # 1-s windows: the graph's input (TAU 2020: ten a clip)
    report = export_onnx(trained, path, "int8", check_inputs=inputs, min_agreement=0.0)
    out.update(onnx_bytes=report.memory.bytes, onnx_int8_operators=report.int8_operators,
               onnx_kept_float=report.kept_float, onnx_check_clips=report.clips_checked,
               onnx_check_agreement=report.agreement, onnx_max_logit_difference=report.max_logit_difference,
               onnx_check_passed=report.agreement >= MIN_AGREEMENT)
    return load_for_inference(path)


def evaluation_columns(form: str, evaluation: Evaluation) -> dict[str, Any]:
    groups = {d["name"]: d["accuracy"] for d in evaluation.per_device}
    return {
        f"{form}_accuracy": evaluation.accuracy,
        f"{form}_macro_accuracy": evaluation.macro_accuracy,
        f"{form}_log_loss": evaluation.log_loss,
        f"{form}_seen_accuracy": groups.get("seen", math.nan),
        f"{form}_unseen_accuracy": groups.get("unseen", math.nan),
        f"{form}_eval_clips": evaluation.clips,
        f"{form}_window_accuracy": evaluation.window_accuracy,  # clips longer than 1 s only (TAU 2020)
    }


# --- the table -----------------------------------------------------------------------------------------


def speed_key(rows: list[dict[str, Any]]) -> str:
    """Clips per CPU-second when every run logged CPU time (robust on a shared machine), else per wall second."""
    cpu = "train_clips_per_cpu_second"
    return cpu if rows and all(cpu in r for r in rows) else "train_clips_per_second"


def markdown_table(rows: list[dict[str, Any]], reference: str = "model1", checkpoint: str = "best") -> str:
    """Every accuracy column is of `checkpoint`.pt except the one that names the other checkpoint."""
    key = speed_key(rows)
    speed_ref = next((r[key] for r in rows if r["model"] == reference), None)
    other = other_checkpoint(checkpoint)
    header = ["model", "family", "params", "int8 bytes", "MACs", f"float acc ({checkpoint}.pt)",
              f"int8 acc (QAT sim, {checkpoint}.pt)", "int8 macro acc (QAT sim)", "int8 unseen acc s4-s6 (QAT sim)",
              "int8 acc (ONNX)", "ONNX = QAT top-1", f"int8 acc (QAT sim, {other}.pt)",
              "train clips/s (wall)", "train clips/CPU-s", f"train speed vs {reference}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for r in rows:
        ratio = f"{r[key] / speed_ref:.2f}x" if speed_ref else "-"
        cpu = r.get("train_clips_per_cpu_second")
        cells = [r["model"], r["family"], f"{r['params']:,}", f"{r['int8_bytes']:,}", f"{r['macs'] / 1e6:.2f} M",
                 fmt_pct(r.get("float_accuracy")), fmt_pct(r.get("qat_accuracy")),
                 fmt_pct(r.get("qat_macro_accuracy")), fmt_pct(r.get("qat_unseen_accuracy")), onnx_cell(r),
                 fmt_pct(r.get("onnx_qat_agreement")), fmt_pct(r.get("qat_other_accuracy")),
                 f"{r['train_clips_per_second']:.1f}", "-" if cpu is None else f"{cpu:.1f}", ratio]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def onnx_cell(row: dict[str, Any]) -> str:
    """ONNX accuracy, marked when the export fails the check `dsmn export` applies (99 % top-1 agreement)."""
    if "onnx_error" in row:
        return "export failed"
    if "onnx_accuracy" not in row:
        return "-"
    return fmt_pct(row["onnx_accuracy"]) + ("" if row.get("onnx_check_passed", True) else " (check failed)")


def fmt_pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.1f} %"


def describe_budget(budget: Budget, data: Path, rows: list[dict[str, Any]]) -> str:
    config = budget.train_config(rows[0]["model"]) if rows else budget.train_config("model1")
    clips = rows[0].get("train_clips") if rows else None
    lines = [
        f"- data: `{data}`; scored on `{EVAL_SPLIT}` ({rows[0].get('qat_eval_clips', '?') if rows else '?'} clips,"
        " devices a, b, c, s1..s6)",
        f"- recipe: config `{budget.config}` + overrides `{json.dumps(budget.overrides)}` -> epochs {config.epochs},"
        f" batch {config.batch_size}, lr {config.optimizer.lr}, QAT {'on' if config.qat.enabled else 'off'},"
        f" multitask {config.multitask.mode} ({config.multitask.pcgrad}), seed {config.seed}"
        + (f"; {clips:,} training clips seen per model" if clips else ""),
        f"- checkpoint scored: {budget.checkpoint}.pt in every accuracy column but the one naming "
        f"{other_checkpoint(budget.checkpoint)}.pt; best.pt = the selected checkpoint, lowest validation loss on "
        f"{describe_validation(config.to_dict()['data'])}"
        + (" (the split scored here, so its figures are optimistic)" if config.data.validation == "evaluate" else "")
        + "; last.pt = the last epoch",
        "- int8 (QAT sim): the QAT network in eval mode (int8 weights and activations simulated, BatchNorm folded);"
        " int8 (ONNX): the model exported by `dsmn.deploy.export_onnx` (int8 QDQ) run by ONNX Runtime;"
        " ONNX = QAT top-1: share of evaluate clips where both predict the same scene. `(check failed)`:"
        f" below the {MIN_AGREEMENT:.0%} top-1 agreement with the QAT network that `dsmn export` requires"
        " (measured on every 4th evaluate clip), i.e. the exported file does not compute what QAT simulated",
        "- train clips/s: clips seen / wall time of the training epochs (trainer's timing, validation excluded);"
        " clips/CPU-s: the same clips / CPU time of the training process in those epochs. Models train one"
        " after another on a shared machine, so the wall-clock rate depends on what else ran; the ratio"
        f" column uses {'CPU' if speed_key(rows) == 'train_clips_per_cpu_second' else 'wall'} time",
    ]
    failures = [f"{r['model']}: {r['onnx_error']}" for r in rows if "onnx_error" in r]
    if failures:
        lines.append("- int8 ONNX export failed for " + "; ".join(failures))
    return "\n".join(lines)


def write_outputs(rows: list[dict[str, Any]], markdown: str, results: Path, out: Path,
                  name: str = "compare_families") -> None:
    results.parent.mkdir(parents=True, exist_ok=True)
    notes = ""  # hand-written notes below the marker survive a rerun
    if results.is_file() and NOTES_MARKER in (old := results.read_text(encoding="utf-8")):
        notes = "\n" + old[old.index(NOTES_MARKER):]
    results.write_text(markdown + "\n" + notes, encoding="utf-8")
    write_json(out / f"{name}.json", rows)
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys and k != "budget")
    with open(out / f"{name}.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: Path, payload: Any) -> None:
    files.write_json(path, payload, default=str)


# --- command line ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="TAU-format dataset folder (dsmn synth)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the run folders OUT/<model>/")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--config", default="demo", help="training config every model shares (default: demo)")
    parser.add_argument("--epochs", type=int, help="epochs per model (default: the config's)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-batches", type=int, help="cut every epoch to this many batches (smoke runs)")
    parser.add_argument("--val-max-clips", type=int, help="validate during training on an even subset")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="any further config override, the same for every model")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--no-onnx", action="store_true", help="skip the int8 ONNX export and its evaluation")
    parser.add_argument("--cache", help="feature cache folder (default DATA/.dsmn_cache)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="Markdown results file")
    return parser.parse_args(argv)


def budget_from(args: argparse.Namespace) -> Budget:
    flags = {"epochs": args.epochs, "batch_size": args.batch_size, "max_batches_per_epoch": args.max_batches,
             "threads": args.threads, "device": args.device}
    overrides: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    if args.val_max_clips is not None:
        overrides["data"] = {"val_max_clips": args.val_max_clips}
    if args.cache is not None:
        overrides.setdefault("data", {})["cache_dir"] = args.cache
    overrides["progress"] = False
    for key, value in parse_overrides(args.sets).items():
        overrides[key] = {**overrides.get(key, {}), **value} if isinstance(value, dict) else value
    return Budget(args.config, overrides, args.checkpoint, not args.no_onnx)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    budget = budget_from(args)
    for model in args.models:
        budget.train_config(model)  # fail on an unknown model or a bad override before hours of training
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run_model(model, args.data, args.out, budget, args.cache) for model in args.models]
    markdown = "\n".join([
        "# Model families side by side",
        "",
        f"Written by `benchmarks/compare_families.py` on {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        describe_budget(budget, args.data, rows),
        "",
        markdown_table(rows, checkpoint=budget.checkpoint),
    ])
    print("\n" + markdown, flush=True)
    write_outputs(rows, markdown, args.results, args.out)
    return rows


if __name__ == "__main__":
    main()
