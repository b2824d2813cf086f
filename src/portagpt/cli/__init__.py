"""The ``portagpt`` command: one subcommand per module in this package.

Each subcommand module defines ``add_parser(subparsers, parents)`` (which sets
``func``) and keeps heavy imports (torch, transformers) inside its ``run`` so
``portagpt --help`` stays fast. Deliberate errors (:class:`PortagptError`)
print one paragraph and exit 2 without a traceback unless ``--debug`` (given
before or after the subcommand). Bad arguments print one paragraph too (exit
2). Anything else is a bug: one paragraph that says so, exit 1, and the
traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import textwrap
from typing import NoReturn

COMMANDS = ("families", "load", "inspect", "convert", "generate", "chat", "train", "compare", "smoke")


class Parser(argparse.ArgumentParser):
    """argparse, with its usage errors in the one-paragraph ``portagpt: error:`` form."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        sys.exit(_fail(f"{self.prog}: {message}. See `{self.prog} --help`."))


def _common(top: bool = False) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # the subcommand's copy must not reset what `portagpt --debug CMD` set
    common.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="show full tracebacks on errors",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="portagpt",
        description="Train, load, convert and generate with LLM families behind one contract.",
        parents=[_common(top=True)],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"portagpt.cli.{name}")
        except ModuleNotFoundError as exc:  # a subcommand not built yet in this checkout
            if exc.name != f"portagpt.cli.{name}":
                raise
            continue
        module.add_parser(sub, [_common()])
    return parser


def _fail(message: str, code: int = 2) -> int:
    text = "\n".join(
        textwrap.fill(p, width=100, break_on_hyphens=False, break_long_words=False)  # paths stay whole
        for p in str(message).split("\n")
    )
    print(f"portagpt: error: {text}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    from ..errors import PortagptError

    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get("PORTAGPT_DEBUG") == "1"
    try:
        return int(args.func(args) or 0)
    except PortagptError as exc:
        if debug:
            raise
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except (OSError, MemoryError) as exc:
        if debug:
            raise
        return _fail(f"{type(exc).__name__}: {exc}. Re-run with --debug for the traceback.", 1)
    except (Exception, SystemExit) as exc:  # a bug (ours or a plugin's): say so, in one paragraph
        if debug:
            raise
        return _fail(internal_error(args.command, exc), 1)


def internal_error(command: str, exc: BaseException) -> str:
    """The paragraph for an exception nobody meant to raise."""
    what = (
        f"something called sys.exit({exc.code!r})"
        if isinstance(exc, SystemExit)
        else f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
    )
    return (
        f"internal error in `portagpt {command}` ({what}). This is a bug in portagpt or in a "
        f"family plugin, not a problem with your input as far as portagpt can tell; please report "
        f"it with the output of `portagpt --debug {command} ...` (the same command with --debug "
        "shows the traceback)."
    )
