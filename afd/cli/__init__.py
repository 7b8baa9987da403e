"""The ``afd`` command. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import argparse
import os
import sys

from afd.teacher.base import TeacherError

# Modules that define ``register(subparsers)``; order is the order in ``afd --help``.
COMMAND_MODULES = ["afd.cli.world", "afd.cli.eval", "afd.cli.demo", "afd.cli.bench", "afd.cli.teacher", "afd.cli.train", "afd.cli.probe", "afd.cli.sample", "afd.cli.reproduce"]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="afd", description="Adversarial Flow Distillation: black-box video teacher -> causal AR student."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("afd: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, FileNotFoundError, FileExistsError, TeacherError) as e:
        # Expected failures (bad prompt, bad file, budget exhausted, ...) carry clear messages;
        # anything else is a bug and keeps its traceback. AFD_DEBUG=1 shows it for these too.
        if os.environ.get("AFD_DEBUG"):
            raise
        print(f"afd {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
