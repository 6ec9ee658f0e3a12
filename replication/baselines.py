"""Stored baselines of the mini and ci profiles: written only from generated results, only on
request, after showing what would change. The paper profile's expected values are transcribed from
the paper (paper_tables/expected/paper/) and never written by code."""

from __future__ import annotations

import json

from safetyheads.errors import SafetyheadsError
from safetyheads.provenance import git_info, library_version

from .run import GENERATED, diff, expected_path, load_expected, render_diff


def baseline_from(metrics_file) -> dict:
    data = json.loads(metrics_file.read_text())
    header = json.loads(metrics_file.with_name("results.jsonl").read_text().splitlines()[0])["header"]
    source = (f"baseline: {data['profile']} run of {header['provenance'].get('created_utc')}, "
              f"commit {str(header['provenance'].get('git_commit'))[:10]}")
    return {
        "artefact": data["artefact"], "profile": data["profile"],
        "note": "Written by `python -m replication update-baselines --write` from generated results; never edit by hand.",
        "models": header.get("models"), "store_entries": header.get("store", {}).get("entries"),
        "provenance": header.get("provenance"),
        "metrics": {m["name"]: {"value": m["value"], "kind": m["kind"], "tolerance": m["tolerance"],
                                "description": m["description"], "source": source} for m in data["metrics"]},
    }


def update_baselines(profile: str, artefacts: list[str] | None, write: bool) -> int:
    if profile == "paper":
        raise SafetyheadsError("the paper profile's expected values are the published numbers; they are not baselines")
    folder = GENERATED / profile
    files = sorted(folder.glob("*/metrics.json")) if folder.exists() else []
    if artefacts:
        files = [f for f in files if f.parent.name in artefacts]
        missing = set(artefacts) - {f.parent.name for f in files}
        if missing:
            raise SafetyheadsError(f"no generated results for {', '.join(sorted(missing))} in {folder}: "
                                   f"run `python -m replication run ... --profile {profile}` first")
    if not files:
        raise SafetyheadsError(f"no generated results in {folder}: run `python -m replication run all --profile {profile}` first")
    dirty = git_info().get("git_dirty")
    changed = 0
    for f in files:
        name = f.parent.name
        new = baseline_from(f)
        old = load_expected(profile, name)
        rows = diff([{"name": k, **v} for k, v in new["metrics"].items()], old)
        moved = [r for r in rows if r["verdict"] not in ("PASS", "INFO")]
        print(f"\n== {name}: {len(moved)} metric(s) would change" + ("" if old else " (no baseline yet)"))
        if moved:
            print(render_diff(moved))
            changed += 1
        if write and (moved or not old):
            path = expected_path(profile, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(new, indent=1) + "\n")
            print(f"wrote {path}")
    if not write:
        if changed:
            print(f"\n{changed} baseline(s) differ; nothing written. Rerun with --write to replace them "
                  "(say why in the commit).")
            return 1
        print("\nbaselines match the generated results")
    elif dirty:
        print(f"note: the working tree was dirty (safetyheads {library_version()}): commit the code with the baselines")
    return 0
