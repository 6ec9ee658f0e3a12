"""The ``safetyheads`` parser and ``main``: parse, run the subcommand, and turn any error into one line.

Bad input ends with ``safetyheads: error: <what to fix>`` and exit status 2; finished work is
already on disk, and rerunning the same command resumes it. Ctrl-C, SIGTERM and SIGHUP end a command
with one line saying so (exit status 128 + the signal's number), and the locks of its outputs are let
go when it ends, however it ends.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from .. import __version__
from ..errors import SafetyheadsError
from ..interrupts import exit_status, signals_as_interrupts
from ..outputs import release_outputs
from . import asr, datasets, export, generate, judge, models, organisms, sahara, ships

DESCRIPTION = "``safetyheads`` command line: thin wrappers over the library."
# In the order `safetyheads --help` lists them; each module has register(subparsers).
SUBCOMMANDS = (ships, export, models, datasets, generate, judge, sahara, asr, organisms)
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DEBUG_ENV = "SAFETYHEADS_DEBUG"


class UsageError(SafetyheadsError):
    """What argparse found wrong with the command line."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse with its complaints raised as one-line errors (``main`` prints them) instead of a
    usage block and ``sys.exit``; subcommand parsers inherit the class. Each parser takes
    ``--debug``, so it may come before or after the subcommand."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help=f"show the full traceback of an error (or set {DEBUG_ENV}=1)")

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="safetyheads", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"safetyheads {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in SUBCOMMANDS:
        command.register(sub)
    return parser


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def error_message(e: BaseException) -> str:
    """One line for any exception escaping a command: a SafetyheadsError says what to fix; an OS
    error names the file and what went wrong; anything else is named by its type (a bug, or a case
    no check foresaw) with a pointer to --debug."""
    if isinstance(e, SafetyheadsError):
        return _one_line(e) or type(e).__name__
    if isinstance(e, OSError) and e.strerror:
        where = f"{e.filename}: " if e.filename else ""
        also = f" -> {e.filename2}" if e.filename2 else ""
        return f"{where}{e.strerror}{also} (rerun with --debug for the traceback)"
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    first = f": {lines[0]}" if lines else ""
    return f"unexpected {type(e).__name__}{first} (rerun with --debug for the traceback)"


def _debug_requested(argv: list[str], args) -> bool:
    if os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        return True
    if args is not None:
        return bool(getattr(args, "debug", False))
    return "--debug" in argv  # the command line did not parse


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = None
    try:
        with signals_as_interrupts():
            parser = build_parser()
            try:
                args = parser.parse_args(argv)
            except SystemExit as e:  # --help and --version
                return e.code if isinstance(e.code, int) else 0
            return args.func(args)
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM or SIGHUP
        print("safetyheads: interrupted; finished prompts are saved, rerun the same command to resume", file=sys.stderr)
        return exit_status(e, EXIT_INTERRUPTED)
    except Exception as e:  # every error ends as one line; the traceback only when asked for
        if _debug_requested(argv, args) and not isinstance(e, UsageError):  # argparse's own have none worth showing
            traceback.print_exc()
        print(f"safetyheads: error: {error_message(e)}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        release_outputs()
