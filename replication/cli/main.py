"""``python -m replication``: regenerate the paper's tables and figures and diff them against
stored expected values.

  python -m replication list
  python -m replication run table3 [--profile mini|ci|paper] [--dry-run] [--store DIR]
  python -m replication run all --profile ci
  python -m replication run figure2 --profile extension [--model llama-3.1-8b-instruct] [--dry-run]
  python -m replication update-baselines --profile ci [--artefact table3] [--write]
  python -m replication claims
  python -m replication reviewers
  python -m replication responses figure2 --cell aligned.ua.greedy.paper.maliciousinstruct.ablated [-n 5]

Every problem is reported as one line, ``replication: error: <what to fix>``, with exit status 2
(1 stays the verdict "some metric FAILed"); ``--debug`` or SAFETYHEADS_DEBUG=1 adds the traceback.
Ctrl-C, SIGTERM and SIGHUP end a command with one line saying what is kept (exit status 128 + the
signal's number). The one-line errors and the parser that raises them are the library's command
line's (``safetyheads.commands.parser``); only what is the harness's own is added here.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from safetyheads.commands.parser import DEBUG_ENV, EXIT_USAGE, OneLineArgumentParser, error_message
from safetyheads.distributed import world_size
from safetyheads.errors import SafetyheadsError
from safetyheads.interrupts import exit_status, signals_as_interrupts
from safetyheads.judges import RULES

from ..artefacts import ARTEFACTS
from ..claims.report import write_claims
from ..claims.reviewers import update_page
from ..diff.baselines import update_baselines
from ..spec.profiles import DEFAULT_PROFILE, PROFILES
from .responses import responses_command
from .run import run_command

PROG = "python -m replication"


def non_negative_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} is negative: give 0 (all) or more")
    return n


def positive_int(text: str) -> int:
    n = non_negative_int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("give 1 or more")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The parser: the library's one-line parser, which takes ``--debug`` before or after the command."""
    ap = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the artefacts and profiles")
    r = sub.add_parser("run", help="regenerate artefacts and diff them against expected values")
    r.add_argument("artefacts", nargs="+", help=f"{', '.join(ARTEFACTS)}, or all")
    r.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILES))
    r.add_argument("--model", action="append", metavar="SLUG",
                   help="extension profile only: run these of its models (repeatable; default: every one; see `list`)")
    r.add_argument("--dry-run", action="store_true", help="validate the plan and count the work; load and compute nothing")
    r.add_argument("--store", help="content-addressed store folder (default: $SAFETYHEADS_STORE or the safetyheads cache)")
    r.add_argument("--processes", type=positive_int, default=world_size(), metavar="N",
                   help="--dry-run: also estimate the wall time on N processes (accelerate launch, one GPU each; "
                        "default: the launcher's count, else 1)")
    r.add_argument("--device", default="auto")
    r.add_argument("--quiet", action="store_true")
    u = sub.add_parser("update-baselines", help="make the last generated results the stored mini/ci baselines")
    # extension stays a choice so that asking for it is answered with why it has no baselines
    u.add_argument("--profile", default=DEFAULT_PROFILE, choices=[p for p in PROFILES if p != "paper"])
    u.add_argument("--artefact", action="append", choices=list(ARTEFACTS),
                   help="only these (repeatable; default: every generated one)")
    u.add_argument("--write", action="store_true", help="overwrite the stored baselines (without it: show the diff only)")
    c = sub.add_parser("claims", help="regenerate paper_tables/CLAIMS.md from the generated results")
    c.add_argument("--profile", action="append", choices=[p for p in PROFILES if not PROFILES[p].extension_models],
                   help="profiles to read, best first (default: mini, then ci); the extension's models get their own "
                        "section, always")
    sub.add_parser("reviewers", help="regenerate docs/reviewers.md's tables of sessions, times, memory and disk from the "
                   "committed run records")
    s = sub.add_parser("responses", help="print a sample of an artefact's judged completions (any table cell)")
    s.add_argument("artefact", choices=list(ARTEFACTS))
    s.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILES))
    s.add_argument("--model", metavar="SLUG", help="extension profile: which of its models (required there)")
    s.add_argument("--cell", help="an outcome cell (see --list); default: every cell")
    s.add_argument("--list", action="store_true", help="list the cells with their counts and ASR")
    s.add_argument("-n", type=non_negative_int, default=5, help="how many to print (default 5; 0: all)")
    s.add_argument("--verdict", choices=["complied", "refused", "broken"],
                   help="only responses judged so (broken: by a three-way judge)")
    s.add_argument("--rule", choices=RULES, help="only responses decided by this rule")
    s.add_argument("--seed", type=int, default=0, help="which sample (default 0; the same seed prints the same rows)")
    return ap


def describe(e: BaseException) -> str:
    """One line saying what went wrong and what to fix: the library's words (``error_message``), and for a
    module that does not import, the harness's extra to install."""
    if isinstance(e, ImportError) and not isinstance(e, SafetyheadsError):
        return (f"{e.name or 'a module'} is not installed (or does not import: {e}): install the harness's "
                "dependencies with `pip install '.[replication]'`, or run through nox")
    return error_message(e)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0") or "--debug" in argv
    args = None
    try:
        with signals_as_interrupts():
            args = build_parser().parse_args(argv)
            return dispatch(args)
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM or SIGHUP
        print(f"replication: interrupted; {INTERRUPTED.get(getattr(args, 'command', None), NOTHING_HALF_WRITTEN)}",
              file=sys.stderr)
        return exit_status(e)
    except Exception as e:  # noqa: BLE001 - every failure of a command ends as one line (the traceback on request)
        if debug:
            traceback.print_exc()
        print(f"replication: error: {describe(e)}", file=sys.stderr)
        return EXIT_USAGE


# What an interrupted command leaves, by command: every file the harness replaces is replaced whole
# or not at all (safetyheads.files.replacing).
NOTHING_HALF_WRITTEN = "no file was left half-written; rerun the same command"
INTERRUPTED = {
    "run": "finished work is in the store and a rerun resumes it (no file was left half-written)",
    "update-baselines": "each baseline is the old one or the new one, none half-written; rerun the same command",
    "claims": "CLAIMS.md and README.md are each the old one or the new one, neither half-written; rerun the same "
              "command to write both",
    "reviewers": "docs/reviewers.md is the old one or the new one, not half-written; rerun the same command",
}


def list_command(args) -> int:
    for a in ARTEFACTS.values():
        mins = ", ".join(f"{k} {v}" for k, v in a.minutes.items())
        print(f"{a.name:14s} {a.title}" + (f"  [{mins}]" if mins else ""))
    print("\nprofiles: " + ", ".join(PROFILES))
    for p in PROFILES.values():
        if p.extension_models:
            print(f"\n{p.name} profile: {', '.join(p.artefacts)} for each of its models (--model SLUG):")
            for m in p.extension_models:
                print(f"  {m.slug:26s} {m.aligned.id}" + (f" (sibling {m.sibling.id})" if m.sibling else ""))
    return 0


def claims_command(args) -> int:
    print(write_claims(args.profile or ["mini", "ci"]))
    return 0


# Each subcommand's function, by name: args -> exit status.
COMMANDS = {
    "list": list_command,
    "run": run_command,
    "update-baselines": lambda args: update_baselines(args.profile, args.artefact, args.write),
    "claims": claims_command,
    "responses": responses_command,
    "reviewers": lambda args: print(update_page()) or 0,
}


def dispatch(args) -> int:
    return COMMANDS[args.command](args)
