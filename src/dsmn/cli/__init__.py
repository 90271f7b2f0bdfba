"""The `dsmn` command: a thin layer over the library API.

Each subcommand lives in its own module of this package and exposes `register(subparsers)`,
which adds its parser and sets `func` (called with the parsed arguments, returns the exit code).
Modules are imported lazily so `dsmn --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# OpenMP threads that spin while waiting make torch many times slower on a shared or oversubscribed
# CPU (measured: model1 batch-1 inference 890 ms -> 35 ms); must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# subcommand name -> module in dsmn.cli
COMMANDS: dict[str, str] = {
    "complexity": "complexity",
    "synth": "synth",
    "synth-irs": "synth_irs",
    "features": "features",
    "train": "train",
    "finetune": "finetune",
    "teach": "teach",
    "evaluate": "evaluate",
    "export": "export",
    "predict": "predict",
    "demo": "demo",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsmn", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            subparsers.add_parser(name, help=f"(see dsmn {name} --help)", add_help=False)
            continue
        try:
            module = importlib.import_module(f"dsmn.cli.{module_name}")
        except ModuleNotFoundError as error:
            if error.name != f"dsmn.cli.{module_name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
