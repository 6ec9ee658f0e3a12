"""``python -m replication``: regenerate the paper's tables and figures and diff them against
stored expected values.

  python -m replication list
  python -m replication run table3 [--profile mini|ci|paper] [--dry-run] [--store DIR]
  python -m replication run all --profile ci
  python -m replication run figure2 --profile extension [--model llama-3.1-8b-instruct] [--dry-run]
  python -m replication update-baselines --profile ci [--artefact table3] [--write]
  python -m replication claims
  python -m replication responses figure2 --cell aligned.ua.greedy.paper.maliciousinstruct.ablated [-n 5]

Every problem is reported as one line, ``replication: error: <what to fix>``, with exit status 2
(1 stays the verdict "some metric FAILed"); ``--debug`` or SAFETYHEADS_DEBUG=1 adds the traceback.
Ctrl-C, SIGTERM and SIGHUP end a command with one line saying what is kept (exit status 128 + the
signal's number).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from safetyheads.errors import SafetyheadsError
from safetyheads.interrupts import exit_status, signals_as_interrupts

PROG = "python -m replication"
DEBUG_ENV = "SAFETYHEADS_DEBUG"
RULES = ("keyword", "pattern", "short", "repetition", "nonword", "nll", "loop", "echo", "shell", "reader",
         "classifier", "unparsed", "none")  # safetyheads.judges' verdict rules


class UsageError(SafetyheadsError):
    """A command line that argparse rejects."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but its errors reach main() as one line instead of usage text and sys.exit(2).
    Subparsers are made with the parent's class, so they report the same way."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def non_negative_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} is negative: give 0 (all) or more")
    return n


def build_parser() -> ArgumentParser:
    from .artefacts import ARTEFACTS
    from .profiles import DEFAULT_PROFILE, PROFILES

    ap = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--debug", action="store_true", help=f"on an error, print the traceback too (or set {DEBUG_ENV}=1)")
    # the same flag after the command; SUPPRESS keeps a subcommand's default from hiding the main one's
    debug = ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the artefacts and profiles", parents=[debug])
    r = sub.add_parser("run", help="regenerate artefacts and diff them against expected values", parents=[debug])
    r.add_argument("artefacts", nargs="+", help=f"{', '.join(ARTEFACTS)}, or all")
    r.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILES))
    r.add_argument("--model", action="append", metavar="SLUG",
                   help="extension profile only: run these of its models (repeatable; default: every one; see `list`)")
    r.add_argument("--dry-run", action="store_true", help="validate the plan and count the work; load and compute nothing")
    r.add_argument("--store", help="content-addressed store folder (default: $SAFETYHEADS_STORE or the safetyheads cache)")
    r.add_argument("--device", default="auto")
    r.add_argument("--quiet", action="store_true")
    u = sub.add_parser("update-baselines", help="make the last generated results the stored mini/ci baselines",
                       parents=[debug])
    # extension stays a choice so that asking for it is answered with why it has no baselines
    u.add_argument("--profile", default=DEFAULT_PROFILE, choices=[p for p in PROFILES if p != "paper"])
    u.add_argument("--artefact", action="append", choices=list(ARTEFACTS),
                   help="only these (repeatable; default: every generated one)")
    u.add_argument("--write", action="store_true", help="overwrite the stored baselines (without it: show the diff only)")
    c = sub.add_parser("claims", help="regenerate paper_tables/CLAIMS.md from the generated results", parents=[debug])
    c.add_argument("--profile", action="append", choices=[p for p in PROFILES if not PROFILES[p].extension_models],
                   help="profiles to read, best first (default: mini, then ci); the extension's models get their own "
                        "section, always")
    s = sub.add_parser("responses", help="print a sample of an artefact's judged completions (any table cell)",
                       parents=[debug])
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
    """One line saying what went wrong and, where it can, what to fix."""
    if isinstance(e, SafetyheadsError):
        msg = str(e)
    elif isinstance(e, ImportError):
        msg = (f"{e.name or 'a module'} is not installed (or does not import: {e}): install the harness's "
               "dependencies with `pip install '.[replication]'`, or run through nox")
    elif isinstance(e, OSError) and e.filename is not None:
        msg = f"cannot use {e.filename}: {e.strerror or e} (check that the path exists and that you may write there)"
    elif isinstance(e, OSError):
        msg = f"{e.strerror or e} (an error from the operating system: check free disk space and permissions)"
    else:
        msg = (f"unexpected {type(e).__name__}: {e} (a bug: please report it with the output of the same command "
               f"run with --debug)")
    return " ".join(msg.split())  # one line, whatever the message held


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0") or "--debug" in argv
    args = None
    try:
        with signals_as_interrupts():
            args = build_parser().parse_args(argv)
            return _dispatch(args)
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM or SIGHUP
        print(f"replication: interrupted; {INTERRUPTED.get(getattr(args, 'command', None), NOTHING_HALF_WRITTEN)}",
              file=sys.stderr)
        return exit_status(e)
    except Exception as e:  # noqa: BLE001 - every failure of a command ends as one line (the traceback on request)
        if debug:
            traceback.print_exc()
        print(f"replication: error: {describe(e)}", file=sys.stderr)
        return 2


# What an interrupted command leaves, by command: every file the harness replaces is replaced whole
# or not at all (safetyheads.files.replacing).
NOTHING_HALF_WRITTEN = "no file was left half-written; rerun the same command"
INTERRUPTED = {
    "run": "finished work is in the store and a rerun resumes it (no file was left half-written)",
    "update-baselines": "each baseline is the old one or the new one, none half-written; rerun the same command",
    "claims": "CLAIMS.md and README.md are each the old one or the new one, neither half-written; rerun the same "
              "command to write both",
}


def _dispatch(args) -> int:
    if args.command == "list":
        return _list()
    if args.command == "run":
        return _run(args)
    if args.command == "update-baselines":
        from .baselines import update_baselines

        return update_baselines(args.profile, args.artefact, args.write)
    if args.command == "claims":
        from .claims import write_claims

        path = write_claims(args.profile or ["mini", "ci"])
        print(path)
        return 0
    if args.command == "responses":
        return _responses(args)
    raise AssertionError(args.command)


def _list() -> int:
    from .artefacts import ARTEFACTS
    from .profiles import PROFILES

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


def _fixed_models(profile, args) -> None:
    if args.model:
        raise SafetyheadsError(f"--model picks models of the extension profile; the {profile.name} profile's "
                               "models are fixed")


def _run(args) -> int:
    from .artefacts import ARTEFACTS
    from .profiles import get_profile
    from .run import plan, preflight, run_artefact

    profile = get_profile(args.profile)
    if profile.extension_models:
        return _run_extension(profile, args)
    _fixed_models(profile, args)
    names = list(ARTEFACTS) if args.artefacts == ["all"] else args.artefacts
    for n in names:
        if n not in ARTEFACTS:
            raise SafetyheadsError(f"unknown artefact {n!r}: choose from {', '.join(ARTEFACTS)} or all")
    from safetyheads.store import Store

    from .steps import Context

    store = Store(args.store)
    # everything the run can be refused for, before any model loads or anything is computed or written
    preflight(profile.name, names, store.root, dry_run=args.dry_run, device=args.device)
    ctx = Context(profile, store, device=args.device, plan_only=args.dry_run, progress=not args.quiet)
    if args.dry_run:
        print(plan(ctx, names))
        return 0
    if profile.name == "paper":
        print("replication: the paper profile loads 7B models from the Hugging Face cache (set HF_HUB_OFFLINE=0 "
              "to let them download) and wants a GPU", file=sys.stderr)
    worst = 0
    summary = []
    for n in names:
        code, rows = run_artefact(ctx, n, quiet=args.quiet)
        worst = max(worst, code)
        summary.append((n, {v: sum(r["verdict"] == v for r in rows) for v in ("PASS", "DRIFT", "FAIL", "NEW")}))
    if len(names) > 1:
        print("\nsummary:")
        for n, c in summary:
            print(f"  {n:14s} {ctx.artefact_seconds.get(n, 0):7.0f} s  " + ", ".join(f"{k} {v}" for k, v in c.items() if v))
        print(f"  {'total':14s} {sum(ctx.artefact_seconds.values()):7.0f} s (shared results are computed by the "
              "first artefact that needs them)")
    if ctx.generation["rows"]:
        g = ctx.generation
        print(f"generation: {g['rows']} completions, {g['tokens']:,} tokens decoded of a {g['budget']:,}-token budget "
              f"({g['tokens'] / g['budget']:.0%}); {g['stopped']} stopped early once the verdict was settled")
    return worst


def _responses(args) -> int:
    from .profiles import get_profile
    from .run import print_responses

    profile = get_profile(args.profile)
    folder = profile.name
    if profile.extension_models:
        from .extension import select

        if not args.model:
            raise SafetyheadsError(f"the {profile.name} profile has one set of results per model: add --model SLUG "
                                   f"({', '.join(m.slug for m in profile.extension_models)})")
        folder = select(profile, [args.model])[0].folder
    else:
        _fixed_models(profile, args)
    return print_responses(args.artefact, folder, args.cell, args.list, args.n, args.verdict, args.rule, args.seed)


def _run_extension(profile, args) -> int:
    """``run --profile extension``: the chosen artefacts once per chosen model (see replication/extension.py)."""
    from safetyheads.store import Store

    from .extension import artefact_names, plan_all, run_all, select
    from .run import GENERATED, check_artefacts, preflight

    names = artefact_names(profile, args.artefacts)
    check_artefacts(profile, names)
    profiles = select(profile, args.model)
    store = Store(args.store)
    if args.dry_run:
        for p in profiles:
            preflight(p.folder, names, store.root, dry_run=True)
        print(plan_all(profiles, names, store, GENERATED))
        return 0
    print(f"replication: the extension profile loads {len(profiles)} model(s) of 7-9B parameters (and their "
          "sibling and base models) from the Hugging Face cache in bf16 (set HF_HUB_OFFLINE=0 to let them download; "
          "Llama and Gemma are gated: accept their licences and set HF_TOKEN) and wants a GPU", file=sys.stderr)
    return run_all(profiles, names, store, device=args.device, quiet=args.quiet)


if __name__ == "__main__":
    sys.exit(main())
