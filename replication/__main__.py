"""``python -m replication``: regenerate the paper's tables and figures and diff them against
stored expected values.

  python -m replication list
  python -m replication run table3 [--profile mini|ci|paper] [--dry-run] [--store DIR]
  python -m replication run all --profile ci
  python -m replication update-baselines --profile ci [--artefact table3] [--write]
  python -m replication claims
  python -m replication responses figure2 --cell aligned.ua.greedy.paper.maliciousinstruct.ablated [-n 5]
"""

from __future__ import annotations

import argparse
import sys

from safetyheads.errors import SafetyheadsError


def main(argv: list[str] | None = None) -> int:
    from .artefacts import ARTEFACTS
    from .profiles import DEFAULT_PROFILE, PROFILES

    ap = argparse.ArgumentParser(prog="python -m replication", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the artefacts and profiles")
    r = sub.add_parser("run", help="regenerate artefacts and diff them against expected values")
    r.add_argument("artefacts", nargs="+", help=f"{', '.join(ARTEFACTS)}, or all")
    r.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILES))
    r.add_argument("--dry-run", action="store_true", help="validate the plan and count the work; load and compute nothing")
    r.add_argument("--store", help="content-addressed store folder (default: $SAFETYHEADS_STORE or the safetyheads cache)")
    r.add_argument("--device", default="auto")
    r.add_argument("--quiet", action="store_true")
    u = sub.add_parser("update-baselines", help="make the last generated results the stored mini/ci baselines")
    u.add_argument("--profile", default=DEFAULT_PROFILE, choices=[p for p in PROFILES if p != "paper"])
    u.add_argument("--artefact", action="append", help="only these (repeatable; default: every generated one)")
    u.add_argument("--write", action="store_true", help="overwrite the stored baselines (without it: show the diff only)")
    c = sub.add_parser("claims", help="regenerate paper_tables/CLAIMS.md from the generated results")
    c.add_argument("--profile", action="append", help="profiles to read, best first (default: mini, then ci)")
    s = sub.add_parser("responses", help="print a sample of an artefact's judged completions (any table cell)")
    s.add_argument("artefact")
    s.add_argument("--profile", default=DEFAULT_PROFILE, choices=[p for p in PROFILES if p != "paper"] + ["paper"])
    s.add_argument("--cell", help="an outcome cell (see --list); default: every cell")
    s.add_argument("--list", action="store_true", help="list the cells with their counts and ASR")
    s.add_argument("-n", type=int, default=5, help="how many to print (default 5; 0: all)")
    s.add_argument("--verdict", choices=["complied", "refused"], help="only responses judged so")
    s.add_argument("--rule", help="only responses decided by this rule (keyword, pattern, short, repetition, nonword, nll, none)")
    s.add_argument("--seed", type=int, default=0, help="which sample (default 0; the same seed prints the same rows)")
    args = ap.parse_args(argv)
    try:
        return _dispatch(args)
    except SafetyheadsError as e:
        print(f"replication: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("replication: interrupted; finished work is in the store and a rerun resumes it", file=sys.stderr)
        return 130


def _dispatch(args) -> int:
    from .artefacts import ARTEFACTS
    from .profiles import PROFILES, get_profile
    from .run import plan, run_artefact

    if args.command == "list":
        for a in ARTEFACTS.values():
            mins = ", ".join(f"{k} {v}" for k, v in a.minutes.items())
            print(f"{a.name:14s} {a.title}" + (f"  [{mins}]" if mins else ""))
        print("\nprofiles: " + ", ".join(PROFILES))
        return 0
    if args.command == "run":
        names = list(ARTEFACTS) if args.artefacts == ["all"] else args.artefacts
        for n in names:
            if n not in ARTEFACTS:
                raise SafetyheadsError(f"unknown artefact {n!r}: choose from {', '.join(ARTEFACTS)} or all")
        from safetyheads.store import Store

        from .steps import Context

        profile = get_profile(args.profile)
        ctx = Context(profile, Store(args.store), device=args.device, plan_only=args.dry_run, progress=not args.quiet)
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
    if args.command == "update-baselines":
        from .baselines import update_baselines

        return update_baselines(args.profile, args.artefact, args.write)
    if args.command == "claims":
        from .claims import write_claims

        path = write_claims(args.profile or ["mini", "ci"])
        print(path)
        return 0
    if args.command == "responses":
        from .run import print_responses

        return print_responses(args.artefact, args.profile, args.cell, args.list, args.n, args.verdict, args.rule, args.seed)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
