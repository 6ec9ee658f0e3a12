"""Stored baselines of the mini and ci profiles: written only from generated results, only on
request, after showing what would change. The paper profile's expected values are transcribed from
the paper (paper_tables/expected/paper/) and never written by code.

Each baseline is replaced whole or not at all (``safetyheads.files.write_durably``): a kill or a full
disk during ``--write`` leaves the old file. A stored baseline that is not JSON (one an older version
left empty or cut short) is replaced by ``--write`` as if there were none, and said so."""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetyheads.errors import SafetyheadsError
from safetyheads.files import write_durably
from safetyheads.provenance import git_info, library_version

from ..artefacts import get_artefact
from ..results.paths import check_folder, generated_root, shown
from ..spec.profiles import PROFILES
from .expected import expected_path, expected_problem, load_expected
from .verdicts import diff, render_diff


def baseline_from(metrics_file) -> dict:
    folder = metrics_file.parent
    try:
        return _baseline_from(metrics_file)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise SafetyheadsError(f"{shown(folder)} holds damaged results ({type(e).__name__}: {e}): regenerate them with "
                               f"`python -m replication run {folder.name} --profile {folder.parent.name}`") from None


def _baseline_from(metrics_file) -> dict:
    data = json.loads(metrics_file.read_text(encoding="utf-8"))
    header = json.loads(metrics_file.with_name("results.jsonl").read_text(encoding="utf-8").splitlines()[0])["header"]
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


def _generated_files(profile: str, artefacts: list[str] | None) -> list[Path]:
    """The generated metrics.json files of ``profile`` (of ``artefacts`` only, when given); refuses none or missing ones."""
    folder = generated_root() / profile
    files = sorted(folder.glob("*/metrics.json")) if folder.is_dir() else []
    if artefacts:
        files = [f for f in files if f.parent.name in artefacts]
        missing = set(artefacts) - {f.parent.name for f in files}
        if missing:
            raise SafetyheadsError(f"no generated results for {', '.join(sorted(missing))} in {shown(folder)}: "
                                   f"run `python -m replication run ... --profile {profile}` first")
    if not files:
        raise SafetyheadsError(f"no generated results in {shown(folder)}: run `python -m replication run all --profile {profile}` first")
    return files


def _read_updates(files: list[Path], profile: str, write: bool = False) -> list[tuple[str, dict, dict | None]]:
    """(artefact, new baseline, stored baseline) of every file, each metric checked: every result and
    stored baseline read and checked before anything is written, so that a damaged one stops the whole
    update instead of leaving it half done. With ``write``, a stored baseline that is not JSON counts
    as none (``_stored``)."""
    updates = []
    for f in files:
        name = f.parent.name
        new = baseline_from(f)
        for metric, value in new["metrics"].items():
            problem = expected_problem(value)
            if problem:
                raise SafetyheadsError(f"{shown(f)}: metric {metric!r} {problem}; regenerate it with "
                                       f"`python -m replication run {name} --profile {profile}`")
        updates.append((name, new, _stored(profile, name, write)))
    return updates


def _stored(profile: str, name: str, write: bool) -> dict:
    """The stored baseline of ``name`` ({} when none). One that is not JSON at all (empty or cut
    short: what an interrupted write of an older version left) stops a look at the diff, whose error
    says how to restore it, but not ``--write``, which replaces it. One that parses but holds a wrong
    value was edited, and is refused either way."""
    try:
        return load_expected(profile, name)
    except SafetyheadsError as e:
        if not (write and _not_json(expected_path(profile, name))):
            raise
        print(f"note: {e}; --write replaces it")
        return {}


def _not_json(path: Path) -> bool:
    """Whether ``path`` is a file that does not hold JSON."""
    try:
        json.loads(path.read_bytes())
    except ValueError:
        return path.is_file()
    except OSError:
        return False
    return False


def update_baselines(profile: str, artefacts: list[str] | None, write: bool) -> int:
    if profile == "paper":
        raise SafetyheadsError("the paper profile's expected values are the published numbers; they are not baselines")
    if profile in PROFILES and not PROFILES[profile].expected_values:
        raise SafetyheadsError(f"the {profile} profile has no expected values by design (the paper has no numbers for "
                               "its models, and a baseline from one run would read as one): its metrics stay NEW and "
                               "CLAIMS.md's extension section reads them; nothing to update")
    for name in artefacts or []:
        get_artefact(name)
    files = _generated_files(profile, artefacts)
    dirty = git_info().get("git_dirty")
    updates = _read_updates(files, profile, write)
    if write:
        check_folder(expected_path(profile, updates[0][0]).parent, "the baselines folder")
        for name, _, _ in updates:
            path = expected_path(profile, name)
            if path.exists() and not (path.is_file() and os.access(path, os.W_OK)):
                raise SafetyheadsError(f"{shown(path)} cannot be replaced (not a writable file): fix its permissions")
    changed = 0
    for name, new, old in updates:
        rows = diff([{"name": k, **v} for k, v in new["metrics"].items()], old)
        moved = [r for r in rows if r["verdict"] not in ("PASS", "INFO")]
        print(f"\n== {name}: {len(moved)} metric(s) would change" + ("" if old else " (no baseline yet)"))
        if moved:
            print(render_diff(moved))
            changed += 1
        if write and (moved or not old):
            path = expected_path(profile, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_durably(path, json.dumps(new, indent=1) + "\n")
            print(f"wrote {shown(path)}")
    if not write:
        if changed:
            print(f"\n{changed} baseline(s) differ; nothing written. Rerun with --write to replace them "
                  "(say why in the commit).")
            return 1
        print("\nbaselines match the generated results")
    elif dirty:
        print(f"note: the working tree was dirty (safetyheads {library_version()}): commit the code with the baselines")
    return 0
