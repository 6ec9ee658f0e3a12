"""What the profiles' runs were measured to cost, read from committed files, never typed: the run record a
``run`` writes (paper_tables/generated/<profile>/run_record.json, ``results.run_record``), else the times
measured by hand before the record existed (docs/harness.md's Sessions table and the dates above it), and
the Ships sweep's seconds per query of the mini profile's Table 2 (its metrics.json). The mini profile's
departures quote these; docs/reviewers.md's tables are rendered from them (``claims.reviewers``).
Every reader returns None where its file is missing or damaged."""

from __future__ import annotations

import json
import re
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
COMMITTED = CHECKOUT / "paper_tables" / "generated"
HARNESS_PAGE = CHECKOUT / "docs" / "harness.md"
RUN_RECORD_FILE = "run_record.json"
HAND_COLUMNS = ("ci", "mini")  # the Sessions table's time columns, in order


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def committed_record(profile: str) -> dict | None:
    """The committed run record of ``profile``, or None."""
    data = _json(COMMITTED / profile / RUN_RECORD_FILE)
    ok = isinstance(data, dict) and isinstance(data.get("artefacts"), dict) and isinstance(data.get("runs"), dict)
    return data if ok else None


def hand_timed(profile: str) -> dict | None:
    """docs/harness.md's hand-measured times of ``profile`` (ci or mini): {"date", "sessions": {session: s}},
    the whole run under ``reproduce_all``; None if the page or its table is not there."""
    if profile not in HAND_COLUMNS:
        return None
    try:
        text = HARNESS_PAGE.read_text(encoding="utf-8")
    except OSError:
        return None
    date = re.search(rf"\*\*{profile}\*\*:\s*(\d{{4}}-\d\d-\d\d)", text)
    sessions = {}
    for line in text.splitlines():
        if line.startswith("| `reproduce_"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            found = re.match(r"(\d+) s\b", cells[2 + HAND_COLUMNS.index(profile)]) if len(cells) >= 4 else None
            if found:
                sessions[cells[0].strip("`")] = int(found.group(1))
    return {"date": date.group(1), "sessions": sessions} if date and "reproduce_all" in sessions else None


def whole_run(profile: str) -> dict | None:
    """The profile's cold total: {"seconds", "date", "source"}, from the run record's latest run of every
    artefact from an empty store, else docs/harness.md's hand measurement; None if neither exists."""
    run = (committed_record(profile) or {}).get("runs", {}).get("whole_from_empty")
    if isinstance(run, dict) and isinstance(run.get("seconds"), (int, float)):
        return {"seconds": run["seconds"], "date": str(run.get("utc", ""))[:10],
                "source": f"paper_tables/generated/{profile}/{RUN_RECORD_FILE}"}
    hand = hand_timed(profile)
    if hand:
        return {"seconds": hand["sessions"]["reproduce_all"], "date": hand["date"], "source": "docs/harness.md, by hand"}
    return None


def whole_run_text(profile: str) -> str:
    """``6810 s = 113.5 min from an empty store on 2026-12-03, docs/harness.md, by hand`` (or what the record says)."""
    t = whole_run(profile)
    if t is None:
        return "not measured yet"
    return f"{t['seconds']:.0f} s = {t['seconds'] / 60:.1f} min from an empty store on {t['date']}, {t['source']}"


def ships_seconds_text(profile: str = "mini") -> str:
    """The Ships sweep's seconds per query as the profile's Table 2 measured it, in words."""
    data = _json(COMMITTED / profile / "table2" / "metrics.json")
    metrics = data.get("metrics", []) if isinstance(data, dict) else []
    got = [m.get("value") for m in metrics if isinstance(m, dict) and m.get("name") == "ships_seconds_per_query"]
    if not got or not isinstance(got[0], (int, float)):
        return f"measured by the {profile} profile's Table 2"
    return f"{got[0]:.2f} CPU-seconds per query, measured by the {profile} profile's Table 2"
