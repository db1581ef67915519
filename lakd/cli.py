"""`lakd` console entry point.

Each sub-command lives in its own module under `lakd.commands` and exposes
`register(subparsers)`; modules are imported lazily so `lakd --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from lakd.exit_codes import FAILED, INTERRUPTED, OK, USAGE

# sub-command name -> module implementing it (module.register(subparsers) adds the parser,
# and sets `func` on it; func(args) returns the exit status)
COMMANDS = {
    "shards": "lakd.commands.shards",
    "models": "lakd.commands.models",
    "train": "lakd.commands.train",
    "eval": "lakd.commands.eval",
    "demo": "lakd.commands.demo",
    "weights": "lakd.commands.weights",
    "report": "lakd.commands.report",
    "sweep": "lakd.sweep.cli",
    "predict": "lakd.commands.predict",
    "export": "lakd.commands.export",
}


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    from lakd import __version__

    parser = argparse.ArgumentParser(
        prog="lakd", description="Label-Assisted Distillation (LAD) for semantic segmentation at HPC scale."
    )
    parser.add_argument("--version", action="version", version=f"lakd {__version__}")
    # the deepspeed launcher starts `<python> -m lakd.cli --local_rank=N ...`; LOCAL_RANK in the environment
    # says the same, so the value is accepted and not used
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            importlib.import_module(module).register(sub)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return USAGE
    from lakd.log import keep_console, setup_logging

    setup_logging()
    # a run's console.log stays open until the last line below (or the traceback of what ends the command)
    with keep_console():
        try:
            return int(args.func(args) or OK)
        except UsageError as exc:
            print(f"lakd {args.command}: error: {exc}", file=sys.stderr)
            return USAGE
        except KeyboardInterrupt:  # Ctrl-C outside the places that save first: one line, not a traceback
            print(f"lakd {args.command}: interrupted", file=sys.stderr)
            return INTERRUPTED
        except OSError as exc:  # a full disk while writing a named file: one line (the writes are atomic)
            from lakd.io import describe_os_error, is_disk_full

            if exc.filename is None or not is_disk_full(exc):
                raise  # anything else is a bug: keep the traceback
            print(f"lakd {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
            return FAILED


if __name__ == "__main__":
    # `python -m lakd.cli` runs this file as `__main__`; dispatch through the imported `lakd.cli` so that the
    # `lakd.cli.UsageError` raised by the commands is the class `main` catches (exit 2, not a traceback)
    from lakd.cli import main as _main

    sys.exit(_main())
