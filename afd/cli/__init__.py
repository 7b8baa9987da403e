"""The ``afd`` command. Each command group lives in its own module and registers itself here.

Building the parser imports no torch: command modules import what they run inside their command
functions, so ``--help`` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys

from afd.teacher.base import TeacherError

# Modules that define ``register(subparsers)``; order is the order in ``afd --help``.
COMMAND_MODULES = ["afd.cli.world", "afd.cli.eval", "afd.cli.demo", "afd.cli.bench", "afd.cli.teacher", "afd.cli.train",
                   "afd.cli.probe", "afd.cli.sample", "afd.cli.student", "afd.cli.codec", "afd.cli.reproduce"]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where the help already words it or there is none
    (None, a flag's False), and keeps the lines of an ``examples`` epilog as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text.lower() or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(EXAMPLES):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


class Parser(argparse.ArgumentParser):
    """Every afd parser and subparser: defaults shown, and no prefix matching, so that
    ``--prompt`` is never read as ``--prompts``. Subparsers inherit the class."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


EXAMPLES = "examples:\n"


def examples(*lines: str) -> str:
    """An epilog listing example command lines, one per line as written."""
    return EXAMPLES + "\n".join(f"  {line}" for line in lines)


def version() -> str:
    """The installed package's version, else ``afd.__version__``, else "unknown"."""
    from importlib import metadata

    try:
        return metadata.version("afd")
    except metadata.PackageNotFoundError:
        import afd

        return getattr(afd, "__version__", "unknown")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = Parser(
        prog="afd", description="Adversarial Flow Distillation: black-box video teacher -> causal AR student.",
        epilog=examples("afd train --config configs/train/afd-state.yaml   # the main job (make afd)",
                        "afd demo --out demo",
                        "afd sample --checkpoint afd-state --prompt 'a red ball falls' --out clips",
                        "afd COMMAND --help"),
    )
    parser.add_argument("--version", action="version", version=f"afd {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops collecting positional ``key=value`` overrides at the first option after them
    # (``... run.dir=x --resume train.steps=40``); the ones after it are overrides too.
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*(args.overrides or []), *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
