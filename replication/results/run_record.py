"""run_record.json, beside a profile's artefact folders (paper_tables/generated/<profile>/run_record.json; an
extension model's beside its own): what each ``run`` measured, so that the times, memory and sizes a
reviewer reads (docs/reviewers.md) come from a run, not from a hand.

Per artefact it keeps three records: the latest one that computed everything it used (``cold``: store
entries computed, none read that the store held before the run), the latest one that read everything from
the store (``from_store``), and the latest one that did some of each (``partial``: a resumed run, or a
change that needed a few new entries), so that neither a routine regeneration from a full store nor a
partial one overwrites the cold timings. The same for the whole run (``runs``),
and apart the latest run of every artefact that read nothing the store held before it
(``whole_from_empty``: the profile's cold total). A run of several processes (``accelerate launch``) keeps
its own records beside these (``cold_2_processes``, ``whole_from_empty_2_processes``, ...); its memory is the
main process's.
Metrics, outcomes, diffs and store keys do not depend on it; the mini profile's departures, printed under its
tables, quote the committed record's whole-run total (``spec.measured``).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from pathlib import Path

import torch

from safetyheads.distributed import world_size
from safetyheads.files import write_durably
from safetyheads.models import resolve_device
from safetyheads.provenance import cpu_info, git_info

from ..artefacts import ARTEFACTS
from ..compute.context import Context
from ..spec.measured import RUN_RECORD_FILE
from .paths import generated_root

KINDS = ("cold", "partial", "from_store")
MIB = 1 << 20


def record_path(profile_folder: str, out_root: Path | None = None) -> Path:
    return Path(out_root or generated_root()) / profile_folder / RUN_RECORD_FILE


def folder_bytes(path: Path) -> int:
    """Bytes on disk of the files under ``path`` (0 if it does not exist)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass  # removed meanwhile
    return total


def peak_rss_mib() -> dict:
    """The peak resident memory of this process and of its finished children so far, in MiB (Linux: KiB).
    On Linux a child forked from this process (git, for the provenance) counts the parent's pages it started
    with, so ``children`` is at least the parent's size at that fork, not memory of its own."""
    return {who: round(resource.getrusage(which).ru_maxrss / 1024, 1)
            for who, which in (("self", resource.RUSAGE_SELF), ("children", resource.RUSAGE_CHILDREN))}


def artefact_record(ctx: Context, name: str, seconds: float, out_root: Path | None = None) -> dict:
    """One artefact's record, read from ``ctx.used`` right after it ran: its wall seconds, the store
    entries it computed and read, the store entries' and its outputs' size, the process's peak memory so far."""
    used = ctx.used
    keys = {e["key"]: e["kind"] for e in used.entries}
    store_bytes = sum(folder_bytes(ctx.store.root / kind / key[:2] / key) for key, kind in keys.items())
    return {"artefact": name, "seconds": round(seconds, 1), "computed": used.computed, "read": used.read,
            "read_before": used.read_before,
            "kind": record_kind(used.computed, used.read_before),
            "store_entries": len(keys), "store_mib": round(store_bytes / MIB, 2),
            "outputs_mib": round(folder_bytes(Path(out_root or generated_root()) / ctx.profile.folder / name) / MIB, 2),
            "peak_rss_mib": peak_rss_mib()}


def record_kind(computed: int, read_before: int) -> str:
    """``cold`` (store entries computed, none read that the store held before), ``partial`` (some of each)
    or ``from_store`` (nothing computed); a run of several processes (``accelerate launch``) is kept apart,
    e.g. ``cold_2_processes``, so that it never replaces a one-process record."""
    kind = "from_store" if not computed else "partial" if read_before else "cold"
    return kind if world_size() == 1 else f"{kind}_{world_size()}_processes"


def machine(ctx: Context) -> dict:
    device = resolve_device(ctx.device)
    return {"cpu": cpu_info()["cpu_model"], "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "device": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else device}


def run_summary(ctx: Context, artefacts: list[dict], seconds: float, out_root: Path | None = None) -> dict:
    """The whole run: when, where, which commit, how long, its peak memory, the store's and outputs' size;
    ``whole_from_empty``: it ran every artefact and read nothing the store held before it (its time is the
    profile's cold total)."""
    names = [a["artefact"] for a in artefacts]
    return {"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "profile": ctx.profile.name,
            "commit": git_info()["git_commit"], "machine": machine(ctx),
            "kind": record_kind(sum(a["computed"] for a in artefacts), sum(a["read_before"] for a in artefacts)),
            "processes": world_size(),
            "artefacts": names, "seconds": round(seconds, 1),
            "computed": sum(a["computed"] for a in artefacts), "read": sum(a["read"] for a in artefacts),
            "read_before": sum(a["read_before"] for a in artefacts),
            "whole_from_empty": set(names) >= set(ARTEFACTS) and not any(a["read_before"] for a in artefacts),
            "peak_rss_mib": peak_rss_mib(),
            "store_mib": round(folder_bytes(ctx.store.root) / MIB, 1),
            "outputs_mib": round(folder_bytes(Path(out_root or generated_root()) / ctx.profile.folder) / MIB, 2)}


def read_record(path: Path) -> dict:
    """A record file's contents, or an empty record where there is none or it does not parse."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"artefacts": {}, "runs": {}}
    if not isinstance(data, dict) or not isinstance(data.get("artefacts"), dict) or not isinstance(data.get("runs"), dict):
        return {"artefacts": {}, "runs": {}}
    return data


def merge(record: dict, run: dict, artefacts: list[dict]) -> dict:
    """``record`` with this run's records in: each replaces only the latest record of its own kind."""
    out = {"file": "run_record.json: written by `python -m replication run`; see replication/results/run_record.py",
           "profile": run["profile"], "artefacts": dict(record.get("artefacts", {})), "runs": dict(record.get("runs", {}))}
    for a in artefacts:
        rec = {k: v for k, v in a.items() if k not in ("artefact", "kind")}
        rec.update(utc=run["utc"], commit=run["commit"], machine=run["machine"])
        out["artefacts"][a["artefact"]] = {**out["artefacts"].get(a["artefact"], {}), a["kind"]: rec}
    kept = {k: v for k, v in run.items() if k not in ("kind", "profile")}
    out["runs"][run["kind"]] = kept
    if run.get("whole_from_empty"):
        n = run.get("processes", 1)
        out["runs"]["whole_from_empty" if n == 1 else f"whole_from_empty_{n}_processes"] = kept
    out["artefacts"] = dict(sorted(out["artefacts"].items()))
    return out


def write_run_record(ctx: Context, artefacts: list[dict], seconds: float, out_root: Path | None = None) -> Path:
    """Fold this run into the profile's run_record.json (replaced whole); -> its path."""
    path = record_path(ctx.profile.folder, out_root)
    run = run_summary(ctx, artefacts, seconds, out_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_durably(path, json.dumps(merge(read_record(path), run, artefacts), indent=1) + "\n")
    return path
