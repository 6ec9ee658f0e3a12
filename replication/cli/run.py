"""``run``: regenerate artefacts (spec -> compute -> results -> diff), print each one's diff and a summary, and
fold the run's times, memory and sizes into the profile's run_record.json (``results.run_record``);
``--dry-run`` prints the plan instead (``cli.plan``); the extension profile runs once per model
(``cli.extension``).

Under ``accelerate launch`` every process runs every artefact (they meet in ``compute.stored``) and the
main process alone plans, prints and writes."""

from __future__ import annotations

import sys
import time

from safetyheads.distributed import is_main
from safetyheads.errors import SafetyheadsError
from safetyheads.store import Store

from ..artefacts import ARTEFACTS
from ..compute.context import Context
from ..results.paths import shown
from ..results.run_record import artefact_record, write_run_record
from ..spec.profiles import get_profile
from .artefact import SUMMARY_VERDICTS, print_summary, run_artefact, start_processes
from .extension import fixed_models, run_extension
from .plan import plan
from .preflight import preflight


def run_command(args) -> int:
    profile = get_profile(args.profile)
    if profile.extension_models:
        return run_extension(profile, args)
    fixed_models(profile, args.model)
    names = list(ARTEFACTS) if args.artefacts == ["all"] else args.artefacts
    for n in names:
        if n not in ARTEFACTS:
            raise SafetyheadsError(f"unknown artefact {n!r}: choose from {', '.join(ARTEFACTS)} or all")
    store = Store(args.store)
    # everything the run can be refused for, before any model loads or anything is computed or written
    preflight(profile.name, names, store.root, dry_run=args.dry_run, device=args.device)
    start_processes()
    ctx = Context(profile, store, device=args.device, plan_only=args.dry_run, progress=not args.quiet)
    if args.dry_run:
        if is_main():
            print(plan(ctx, names, processes=args.processes)[0])
        return 0
    if profile.name == "paper":
        print("replication: the paper profile loads 7B models from the Hugging Face cache (set HF_HUB_OFFLINE=0 "
              "to let them download) and wants a GPU", file=sys.stderr)
    worst, summary, records, t0 = 0, [], [], time.perf_counter()
    for n in names:
        code, rows, seconds = run_artefact(ctx, n, quiet=args.quiet)
        worst = max(worst, code)
        summary.append((n, seconds, {v: sum(r["verdict"] == v for r in rows) for v in SUMMARY_VERDICTS}))
        if is_main():
            records.append(artefact_record(ctx, n, seconds))
    if not is_main():  # the main process reports and writes
        return 0
    print_summary(ctx, summary)
    path = write_run_record(ctx, records, time.perf_counter() - t0)
    if not args.quiet:
        print(f"run record: {shown(path)}")
    return worst

