"""`dsmn train`: train a network with the DCASE 2023 recipe (or any config) on a dataset folder.

Runs as one process, or under `torchrun --nproc_per_node N -m dsmn.cli.train ...` (same flags) as
data-parallel DDP training.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model (multi-task PCGrad, mixup, spectrum correction, SpecAugment, QAT)",
        description="Train a registered network on a TAU-format (or generic) dataset folder with a YAML recipe\n"
        "(default: configs/<model>.yaml, the DCASE 2023 recipe). Writes RUN_DIR/config.yaml,\n"
        "checkpoints/best.pt (lowest validation loss) and last.pt, metrics.csv, metrics.json, curves.png\n"
        "and tensorboard/. Under torchrun it trains with DDP (NCCL on GPUs, gloo on the CPU).",
        epilog="examples:\n  dsmn train --data data/tau --model model1 --out runs/m1\n"
        "  dsmn train --data data/demo --config demo --out runs/demo --set mixup.enabled=false\n"
        "  torchrun --nproc_per_node 2 -m dsmn.cli.train --data data/tau --model model2 --out runs/m2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, help="dataset folder (TAU layout or generic)")
    parser.add_argument("--model", help="registered model name (default: the config's, else model1)")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--config", help="YAML config file or shipped config name (default: the model's "
                        "configs/<model>.yaml if shipped, else dcase2023)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--subset", help="train on a DCASE 2024 subset (split5, split10, split25, split50, split100)")
    parser.add_argument("--val-split", help="validation split (default: evaluate, i.e. fold1_evaluate)")
    parser.add_argument("--validation", choices=("evaluate", "holdout"),
                        help="choose best.pt on the validation split (evaluate: the authors' recipe) or on a few "
                        "training locations per scene held out of training (holdout; data.holdout_locations)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--workers", type=int, help="threads reading cache rows ahead of the step")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--cache", help="feature cache folder (default: DATA/.dsmn_cache)")
    parser.add_argument("--teacher", help="teacher logit table (`dsmn teach`, or tab/comma-separated `filename` + "
                        "the ten scenes): distil with kd_lambda / temperature of the config's `distillation`")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config value, e.g. --set mixup.enabled=false --set qat.start_epoch=80")
    parser.add_argument("--resume", action="store_true", help="continue RUN_DIR from checkpoints/last.pt")
    parser.add_argument("--allow-changes", action="store_true",
                        help="with --resume: continue although --data or settings differ from the run's "
                        "(the changes are recorded in its checkpoints)")
    parser.add_argument("--overwrite", action="store_true", help="start afresh in a RUN_DIR that holds a run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run, interrupt_hint=interrupt_hint)


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given on the command line as a nested config dict (absent flags change nothing)."""
    from dsmn.training import parse_overrides
    from dsmn.training.config import deep_merge

    flat = {
        "model": args.model, "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
        "device": args.device, "threads": args.threads,
    }
    out: dict[str, Any] = {k: v for k, v in flat.items() if v is not None}
    data = {"subset": args.subset, "val_split": args.val_split, "validation": args.validation,
            "workers": args.workers, "cache_dir": args.cache}
    data = {k: v for k, v in data.items() if v is not None}
    if data:
        out["data"] = data
    if args.lr is not None:
        out["optimizer"] = {"lr": args.lr}
    if args.teacher is not None:  # absolute: a resumed run finds it from any working directory
        from pathlib import Path

        out["distillation"] = {"teacher": str(Path(args.teacher).resolve())}
    if args.no_progress:
        out["progress"] = False
    return deep_merge(out, parse_overrides(args.set))


def default_config_name(model: str | None) -> str:
    from dsmn.training.config import CONFIG_DIR

    if model and (CONFIG_DIR / f"{model}.yaml").is_file():
        return model
    return "dcase2023"


def run(args: argparse.Namespace) -> int:
    """Errors the user can fix (config, data, run folder, a stopped run) reach `dsmn.cli.main` as
    `UserError`s: one line, exit status 2."""
    from dsmn.errors import UserError
    from dsmn.training import load_config, train

    overrides = cli_overrides(args)
    config = load_config(args.config or default_config_name(args.model), overrides)
    try:
        result = train(config, args.data, args.out, resume=args.resume, overwrite=args.overwrite,
                       overrides=overrides, allow_changes=args.allow_changes)
    except (ValueError, FileNotFoundError) as error:  # named inputs the library rejects (teacher tables, IRs)
        if isinstance(error, UserError):
            raise
        raise UserError(str(error)) from error
    from dsmn.data.holdout import describe_validation

    where = describe_validation(config.to_dict()["data"])
    checkpoints = result.run_dir / "checkpoints"
    if result.best_epoch is not None:
        print(f"best epoch {result.best_epoch + 1} (selected: lowest validation loss on {where}): "
              f"{_scores(result.best_metrics)} -> {checkpoints / 'best.pt'}")
    if result.history:
        last = result.history[-1]
        print(f"last epoch {int(last['epoch']) + 1} ({where}): {_scores(last)} -> {checkpoints / 'last.pt'}")
    return 0


def _scores(metrics: dict[str, Any]) -> str:
    nan = float("nan")
    return (f"val loss {metrics.get('val_loss', nan):.4f}, accuracy {metrics.get('val_accuracy', nan):.4f}, "
            f"macro {metrics.get('val_macro_accuracy', nan):.4f}")


def interrupt_hint(args: argparse.Namespace) -> str:
    """What Ctrl-C leaves behind and how to continue."""
    from pathlib import Path

    last = Path(args.out) / "checkpoints" / "last.pt"
    if not last.is_file():
        return "no epoch had finished, nothing to resume"
    return (f"{last} (the last finished epoch) is kept; continue with `dsmn train --data {args.data} "
            f"--out {args.out} --resume`")


if __name__ == "__main__":  # torchrun -m dsmn.cli.train --data ... (the flags of `dsmn train`)
    import os
    import sys

    from dsmn.cli import main

    code = main(["train", *sys.argv[1:]])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a torchrun worker: its group is destroyed, its run saved
        from dsmn.training.distributed import exit_worker

        exit_worker(code)
    sys.exit(code)
