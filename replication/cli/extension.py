"""The extension profile: the headline experiments (Figures 2, 4, 5 and Table 3) on GQA chat models of
2024, under the paper profile's protocol, judges and verdict rules, one model at a time.

``python -m replication run figure2 --profile extension [--model SLUG ...] [--dry-run]`` runs (or plans)
the artefacts once per model of ``spec.extension_models.EXTENSION_MODELS``, each with the profile of that model
(``spec.profiles.extension_profile``), into ``paper_tables/generated/extension/<slug>/<artefact>/``. No
expected values exist for these models: every metric is NEW, and CLAIMS.md's extension section says
per model whether the paper's claims hold there (``claims.extension``).

The plan's GPU-hours use the seconds per forward row that a run of that model measured (its Ships and
Sahara computations, written to ``timing.json`` beside its artefacts) when there is one, else an
assumption scaled from the paper profile's planning figure, marked as such.
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate

from safetyheads.distributed import is_main
from safetyheads.errors import SafetyheadsError
from safetyheads.store import Store

from ..artefacts import check_artefacts
from ..compute.context import Context
from ..compute.plan import classifier_costs
from ..results.paths import generated_root, shown
from ..results.run_record import artefact_record, write_run_record
from ..results.timing import read_timing, write_timing
from ..spec.extension_models import extension_model
from ..spec.profile import Profile
from ..spec.profiles import extension_profile
from .artefact import run_artefact, start_processes
from .plan import plan
from .preflight import preflight


def fixed_models(profile: Profile, model: list | str | None) -> None:
    """``--model`` is for the extension profile only."""
    if model:
        raise SafetyheadsError(f"--model picks models of the extension profile; the {profile.name} profile's "
                               "models are fixed")


def run_extension(profile: Profile, args) -> int:
    """``run --profile extension``: the chosen artefacts once per chosen model (or their plan)."""
    names = artefact_names(profile, args.artefacts)
    check_artefacts(profile, names)
    profiles = select(profile, args.model)
    store = Store(args.store)
    start_processes()
    if args.dry_run:
        for p in profiles:
            preflight(p.folder, names, store.root, dry_run=True)
        if is_main():
            print(plan_all(profiles, names, store, generated_root(), processes=args.processes))
        return 0
    if is_main():
        print(f"replication: the extension profile loads {len(profiles)} model(s) of 7-9B parameters (and their "
              "sibling and base models) from the Hugging Face cache in bf16 (set HF_HUB_OFFLINE=0 to let them download; "
              "Llama and Gemma are gated: accept their licences and set HF_TOKEN) and wants a GPU", file=sys.stderr)
    return run_all(profiles, names, store, device=args.device, quiet=args.quiet)


def artefact_names(profile: Profile, names: list[str]) -> list[str]:
    """``all`` -> the artefacts the profile runs; anything else is checked by ``run.check_artefacts``."""
    return list(profile.artefacts) if names == ["all"] else list(names)


def select(profile: Profile, slugs: list[str] | None) -> list[Profile]:
    """The profile of each chosen model (every model of the table when ``slugs`` is empty)."""
    for s in slugs or []:
        extension_model(s, profile.extension_models)  # refuses a model the profile's table lacks
    chosen = [m.slug for m in profile.extension_models if not slugs or m.slug in slugs]
    return [extension_profile(s, profile) for s in chosen]


def with_rate(profile: Profile, out_root: Path) -> Profile:
    """The profile with the measured seconds per row of its model, where a run measured one."""
    t = read_timing(profile, out_root)
    if t is None:
        return profile
    return profile.replace(gpu_seconds_per_forward=round(float(t["seconds_per_forward"]), 6),
                           gpu_rate_note=(f"MEASURED: {t['seconds_per_forward']:.4g} s per row over {t['rows']:,} Ships/Sahara "
                                          f"rows on {t.get('device')} ({t.get('dtype')}, {t.get('measured_utc')})"))


def plan_all(profiles: list[Profile], names: list[str], store, out_root: Path, loader=None, processes: int = 1) -> str:
    """--dry-run: each model's plan (as the paper profile's), then forward passes, new tokens and
    GPU-hours per model and artefact."""
    parts, rows = [], []
    grand = [0, 0, 0.0]
    for p in profiles:
        p = with_rate(p, out_root)
        ctx = Context(p, store, loader=loader, plan_only=True, progress=False)
        text, per_artefact = plan(ctx, names, processes)
        parts += [f"== {p.variant}: {p.labels['aligned']} ({p.models['aligned']}@{p.revisions['aligned']})", text, ""]
        source = "measured" if p.gpu_rate_note.startswith("MEASURED") else "assumed"
        total = [0, 0, 0.0]
        for a, _, fp, tk in per_artefact:
            h = fp * p.gpu_seconds_per_forward / 3600
            rows.append([p.variant, a, f"{fp:,}", f"{tk:,}", f"{h:.1f}", source])
            total = [total[0] + fp, total[1] + tk, total[2] + h]
        for c in classifier_costs(ctx):  # a model judge's own weights: its passes apart, its hours in the total
            rows.append([p.variant, f"(judge {c['judge']})", f"{c['passes']:,}", "-", f"{c['hours']:.1f}", "estimated"])
            total[2] += c["hours"]
        rows.append([p.variant, "(model total)", f"{total[0]:,}", f"{total[1]:,}", f"{total[2]:.1f}", source])
        grand = [g + t for g, t in zip(grand, total)]
    rows.append(["all models", "(total)", f"{grand[0]:,}", f"{grand[1]:,}", f"{grand[2]:.1f}", ""])
    parts += ["== extension: cost per model and artefact",
              tabulate(rows, headers=["model", "artefact", "forward passes (rows)", "new tokens (at most)", "GPU-hours",
                                      "seconds per row"], tablefmt="github"),
              "",
              "GPU-hours: forward rows x seconds per row. 'assumed': nothing has been measured on a GPU for that "
              "model yet; the figure is the paper profile's 0.03 s per row (a 6.7B model in fp32 on an A100-80GB) scaled "
              "by parameter count and halved for bf16. 'measured': the Ships and Sahara rows of an earlier run of that "
              "model (its timing.json). New tokens: every response decoded to the token limit (an upper bound). "
              "'(judge ...)' rows: a model judge's classifier (its own weights; forward passes not in the model "
              "total, GPU-hours in it), estimated as each model's plan says."]
    return "\n".join(parts)


def run_all(profiles: list[Profile], names: list[str], store, *, device: str = "auto", quiet: bool = False,
            out_root: Path | None = None, loader=None) -> int:
    """Run the artefacts for each model in turn (its models are freed before the next one loads)."""
    out_root = Path(out_root or generated_root())
    for p in profiles:  # everything that can refuse the run, for every model, before anything loads
        preflight(p.folder, names, store.root, device=device, out_root=out_root)
    worst = 0
    summary = []
    for p in profiles:
        ctx = Context(p, store, loader=loader, device=device, progress=not quiet)
        ctx.log(f"extension model {p.variant}: {p.models['aligned']}")
        records, t0 = [], time.perf_counter()
        for n in names:
            code, rows, seconds = run_artefact(ctx, n, out_root=out_root, quiet=quiet)
            worst = max(worst, code)
            summary.append((p.variant, n, seconds,
                            {v: sum(r["verdict"] == v for r in rows) for v in ("PASS", "DRIFT", "FAIL", "NEW", "INFO")}))
            if is_main():
                records.append(artefact_record(ctx, n, seconds, out_root))
        if is_main():  # under `accelerate launch` the main process writes
            write_run_record(ctx, records, time.perf_counter() - t0, out_root)  # the model's own, beside its artefacts
            timing = write_timing(ctx, out_root)
            if timing and not quiet:
                print(f"measured cost per row: {shown(timing)}")
        del ctx
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if not quiet and is_main():
        print("\nsummary (extension):")
        for slug, n, s, c in summary:
            print(f"  {slug:26s} {n:10s} {s:7.0f} s  " + ", ".join(f"{k} {v}" for k, v in c.items() if v))
        print("verdicts per model: `python -m replication claims` writes CLAIMS.md's extension section")
    return worst
