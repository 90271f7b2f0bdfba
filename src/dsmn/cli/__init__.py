"""The `dsmn` command: a thin layer over the library API.

Each subcommand lives in its own module of this package and exposes `register(subparsers)`,
which adds its parser and sets `func` (called with the parsed arguments, returns the exit code).
Modules are imported lazily so `dsmn --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import dsmn  # noqa: F401 - sets OpenMP's passive wait before any command imports torch (dsmn.threads)

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
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (for bug reports)")
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
        sub = module.register(subparsers)
        if sub is None:
            sub = subparsers.choices.get(name)
        if sub is not None:  # also accepted after the command: `dsmn train ... --debug`
            sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. User errors (`dsmn.errors.UserError`) and Ctrl-C print one line and return 2;
    with --debug they keep their traceback. Other exceptions are bugs and propagate."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from dsmn.errors import UserError

    try:
        return int(args.func(args) or 0)
    except UserError as error:
        if args.debug:
            raise
        print(f"dsmn {args.command}: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        hint = getattr(args, "interrupt_hint", None)
        print(f"dsmn {args.command}: interrupted{'; ' + hint(args) if hint else ''}", file=sys.stderr)
        return 2


def one_line(error: BaseException) -> str:
    """An error message as one line (multi-line messages are joined)."""
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
