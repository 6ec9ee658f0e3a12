"""docs/reviewers.md's generated block: each claim's session and expected values, and each session's time,
peak memory and disk, per profile, from the committed run records (``spec.measured``); where a profile has
no record yet, the page says so and names the hand measurement of docs/harness.md. ``python -m replication
reviewers`` rewrites the block between its markers; a test checks the page holds what the records say."""

from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from safetyheads.errors import SafetyheadsError
from safetyheads.files import write_durably

from ..artefacts import ARTEFACTS
from ..diff.expected import expected_path
from ..results.paths import ROOT, shown
from ..spec.measured import RUN_RECORD_FILE, committed_record, hand_timed
from .catalogue import CLAIMS

PAGE = ROOT / "docs" / "reviewers.md"
START, END = "<!-- run-record:start", "<!-- run-record:end -->"
PROFILES = ("ci", "mini")
RUNS = {"ci": ("kick the tires", "nox -s reproduce_all -- --profile ci"), "mini": ("the full mini run", "nox -s reproduce_all")}
NOT_MEASURED = "not yet measured by the run record"


def _session(artefact: str) -> str:
    return f"`nox -s reproduce_{artefact}`"


def _resources(rec: dict) -> tuple[str, str, str]:
    """(time, peak RAM, disk) cells of an artefact's or a run's record."""
    # the process's own peak: a child forked from it (git, for the provenance) reports the parent's pages as its
    # peak on Linux, so the record's ``children`` figure is kept but not shown as extra memory
    ram = rec.get("peak_rss_mib", {})
    return (f"{rec['seconds']:.0f} s", f"{ram.get('self', 0):.0f} MiB",
            f"store {rec.get('store_mib', 0):g} MiB, outputs {rec.get('outputs_mib', 0):g} MiB")


def _by_hand(profile: str, session: str) -> str:
    hand = hand_timed(profile)
    if not hand or session not in hand["sessions"]:
        return NOT_MEASURED
    return f"{NOT_MEASURED}; by hand: {hand['sessions'][session]} s on {hand['date']} (docs/harness.md)"


def totals_table() -> str:
    rows = []
    for p in PROFILES:
        label, command = RUNS[p]
        run = (committed_record(p) or {}).get("runs", {}).get("whole_from_empty")
        if run:
            time, ram, disk = _resources(run)
            m = run.get("machine", {})
            when = (f"{run['utc'][:10]}, commit {str(run.get('commit'))[:10]}, {m.get('cpu')}, {m.get('cores')} cores, "
                    f"{m.get('torch_threads')} torch threads, {m.get('device')}")
        else:
            hand = hand_timed(p)
            time = (f"{NOT_MEASURED}; last measured by hand: {hand['sessions']['reproduce_all']} s on {hand['date']}, "
                    "see docs/harness.md") if hand else NOT_MEASURED
            ram = disk = "not yet measured"
            when = "no run of every artefact from an empty store in the record yet"
        rows.append([f"**{label}** ({p})", f"`{command}`", time, ram, disk, when])
    return tabulate(rows, headers=["run", "command", "time (from an empty store)", "peak RAM", "disk", "measured"],
                    tablefmt="github")


def claims_table() -> str:
    rows = [[c.id, c.source, _session(c.artefact), ", ".join(f"`{shown(expected_path(p, c.artefact))}`"
                                                             for p in ("paper", *PROFILES)
                                                             if expected_path(p, c.artefact).is_file()) or "none"]
            for c in CLAIMS]
    return tabulate(rows, headers=["claim", "paper", "session", "expected values (those stored, of paper, ci, mini)"], tablefmt="github")


def sessions_table() -> str:
    rows = []
    for name in ARTEFACTS:
        row = [_session(name), ", ".join(c.id for c in CLAIMS if c.artefact == name) or "(none)"]
        for p in PROFILES:
            cold = (committed_record(p) or {}).get("artefacts", {}).get(name, {}).get("cold")
            if cold:
                row += list(_resources(cold)) + [f"{cold['utc'][:10]}, {str(cold.get('commit'))[:10]}"]
            else:
                row += [_by_hand(p, f"reproduce_{name}"), "not yet measured", "not yet measured", ""]
        rows.append(row)
    headers = ["session", "claims"] + [f"{p}: {h}" for p in PROFILES for h in ("time", "peak RAM", "disk", "measured")]
    return tabulate(rows, headers=headers, tablefmt="github")


def block() -> str:
    """The generated part of docs/reviewers.md, between its markers."""
    return "\n".join([
        "### The whole runs", "", totals_table(), "",
        "### Each claim: its session and expected values", "", claims_table(), "",
        "### Each session: time, peak RAM and disk (the latest run that computed everything it used)", "",
        sessions_table(), "",
        f"Read from `paper_tables/generated/<profile>/{RUN_RECORD_FILE}` (written by every `python -m replication "
        "run`) by `python -m replication reviewers`; do not edit by hand."])


def update_page(page: Path | None = None) -> str:
    """Rewrite the block between the page's markers (the file replaced whole); -> the page, as shown."""
    path = page or PAGE
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SafetyheadsError(f"{shown(path)} has no run-record block (its markers are gone): restore it with "
                               f"`git checkout {shown(path)}`, then rerun")
    head, rest = text.split(START, 1)
    marker_line, rest = rest.split("\n", 1)
    _, tail = rest.split(END, 1)
    write_durably(path, f"{head}{START}{marker_line}\n{block()}\n{END}{tail}")
    return shown(path)


def page_block(page: Path | None = None) -> str | None:
    """What the page holds between its markers now (None: no block)."""
    text = (page or PAGE).read_text(encoding="utf-8")
    if START not in text or END not in text:
        return None
    return text.split(START, 1)[1].split("\n", 1)[1].split(END, 1)[0].rstrip("\n")
