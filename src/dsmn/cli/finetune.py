"""`dsmn finetune RUN --data DIR --out BUNDLE`: one fine-tuned copy of a trained run per known device."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a trained run per recording device (DCASE 2025): a bundle of device models",
        description="For each device, train a copy of RUN (float or QAT) on that device's training clips, validate "
        "it on that device's evaluate clips and keep its best checkpoint. Writes BUNDLE/manifest.json (device id "
        "-> model; unknown and unlisted ids -> the general model), models/, runs/<device>/ and complexity.json. "
        "The recipe is RUN's own with configs/finetune.yaml (or --config FILE) on top. A device without "
        "training clips is reported and left to the general model. Interrupted: rerun with --resume.",
        epilog="examples:\n  dsmn finetune runs/m1 --data data/tau --out bundles/m1\n"
        "  dsmn finetune runs/m1 --data data/tau --out bundles/m1-head --set finetune.trainable=[head]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", help="trained run folder or checkpoint (the general model)")
    parser.add_argument("--data", required=True, help="dataset folder the run was trained on")
    parser.add_argument("--out", required=True, help="bundle folder")
    parser.add_argument("--devices", default="a,b,c,s1,s2,s3", help="comma-separated device ids (default: %(default)s)")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs per device (default: the config's)")
    parser.add_argument("--config", help="fine-tuning config: keys that differ from the run's recipe "
                        "(default: the shipped finetune.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optimizer.lr=1e-4 --set finetune.trainable=[head]")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--resume", action="store_true", help="continue a bundle whose fine-tuning was interrupted")
    parser.add_argument("--overwrite", action="store_true", help="start afresh in a folder that holds a bundle")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsmn.data import DatasetError
    from dsmn.deploy.bundle import BundleError
    from dsmn.features import CacheError
    from dsmn.training import RunExistsError, parse_overrides
    from dsmn.training.config import deep_merge
    from dsmn.training.finetune import finetune

    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    if not devices:
        print("dsmn finetune: --devices names no device", file=sys.stderr)
        return 2
    try:
        overrides = parse_overrides(args.set)
    except ValueError as error:
        print(f"dsmn finetune: {error}", file=sys.stderr)
        return 2
    flat = {"epochs": args.epochs, "device": args.device, "threads": args.threads,
            "progress": False if args.no_progress else None}
    overrides = deep_merge({k: v for k, v in flat.items() if v is not None}, overrides)
    try:
        bundle, results = finetune(args.run, args.data, args.out, devices=devices, config_file=args.config,
                                   overrides=overrides, resume=args.resume, overwrite=args.overwrite)
    except (RunExistsError, DatasetError, CacheError, BundleError, FileNotFoundError, ValueError) as error:
        print(f"dsmn finetune: {error}", file=sys.stderr)
        return 2
    except KeyError as error:  # a split the dataset does not have
        print(f"dsmn finetune: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    print(f"bundle {bundle.root}: general model + {len(bundle.models) - 1} device model(s)")
    print(f"{'device':<8} {'model':<8} {'train':>6} {'val':>6} {'best epoch':>10} {'val acc':>8}  note")
    for r in results:
        epoch = "-" if r.best_epoch is None else str(r.best_epoch + 1)
        accuracy = "-" if r.val_accuracy is None else f"{100 * r.val_accuracy:.1f}"
        print(f"{r.device:<8} {r.model:<8} {r.train_clips:>6} {r.val_clips:>6} {epoch:>10} {accuracy:>8}  {r.note}")
    print("unknown and unlisted devices -> general")
    return 0
