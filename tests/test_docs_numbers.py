"""Numbers the docs quote from committed files, checked against those files, and tables whose totals
must add up: a rerun that moves them, or an edit of one page, fails here instead of leaving two pages
that disagree."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CI_DIFFS = sorted((ROOT / "paper_tables" / "generated" / "ci").glob("*/diff.md"))


def verdict_totals(diffs: list[Path]) -> dict[str, int]:
    """The sums of the verdict counts on the last line of each diff.md (``PASS 12, INFO 6``)."""
    totals: dict[str, int] = {}
    for path in diffs:
        last = path.read_text(encoding="utf-8").strip().splitlines()[-1]
        for verdict, count in re.findall(r"\b([A-Z/]+) (\d+)\b", last):
            totals[verdict] = totals.get(verdict, 0) + int(count)
    return totals


def test_container_page_expects_the_committed_ci_verdicts():
    totals = verdict_totals(CI_DIFFS)
    assert len(CI_DIFFS) >= 10 and totals.get("PASS", 0) > 0
    text = (ROOT / "docs" / "container.md").read_text(encoding="utf-8")
    said = re.search(r"add up to (\d+) PASS and (\d+) INFO, no DRIFT, FAIL, NEW or N/A", text)
    assert said, "container.md no longer says what a current ci run prints"
    assert (int(said.group(1)), int(said.group(2))) == (totals.get("PASS", 0), totals.get("INFO", 0))
    assert not {"DRIFT", "FAIL", "NEW", "N/A"} & set(totals)


def _sessions_rows() -> dict[str, list[str]]:
    text = (ROOT / "docs" / "harness.md").read_text(encoding="utf-8")
    section = text[text.index("## Sessions"):text.index("## Run times")]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `reproduce_"):
            rows[cells[0].strip("`")] = cells[2:]
    return rows


def _seconds(cell: str) -> int:
    found = re.match(r"(\d+) s\b", cell)
    assert found, cell
    return int(found.group(1))


def test_the_sessions_table_totals_are_the_sums_of_their_columns():
    rows = _sessions_rows()
    total = rows.pop("reproduce_all")
    assert len(rows) >= 13
    for column in (0, 1):  # ci, mini: each artefact's time rounded to the second, so 1 s per row at most
        summed = sum(_seconds(r[column]) for r in rows.values())
        assert abs(summed - _seconds(total[column])) <= len(rows), (column, summed, total[column])


def test_the_readme_quotes_the_harness_pages_mini_total():
    mini_total = _seconds(_sessions_rows()["reproduce_all"][1])
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    said = re.search(r"took ([\d.]+) min \((\d+) s\) from an empty store", readme)
    assert said and int(said.group(2)) == mini_total
    assert abs(float(said.group(1)) - mini_total / 60) < 0.05


def test_the_sessions_table_is_the_committed_run_records():
    """Each artefact's cold seconds and the whole run's, as the run records of ci and mini say."""
    rows = _sessions_rows()
    for column, profile in enumerate(("ci", "mini")):
        record = json.loads((ROOT / "paper_tables" / "generated" / profile / "run_record.json").read_text())
        whole = record["runs"]["whole_from_empty"]
        assert _seconds(rows["reproduce_all"][column]) == round(whole["seconds"]), profile
        for artefact in whole["artefacts"]:
            cold = record["artefacts"][artefact].get("cold")  # none where the artefact computed nothing
            assert _seconds(rows[f"reproduce_{artefact}"][column]) == round(cold["seconds"] if cold else 0), \
                (profile, artefact)


def test_the_readmes_ranking_caveat_quotes_the_committed_correlation():
    metrics = json.loads((ROOT / "paper_tables/generated/mini/sensitivity/metrics.json").read_text())
    by_name = {m["name"]: m["value"] for m in (metrics["metrics"] if isinstance(metrics, dict) else metrics)}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for key, label in (("maliciousinstruct", "MaliciousInstruct"), ("jailbreakbench", "JailbreakBench")):
        rho = by_name[f"spearman.{key}.rho"]
        if str(rho).startswith("undefined"):
            assert f"undefined on {label}" in readme, label
        else:
            assert f"Spearman's rho {rho:.2f} over 270 heads on {label}" in readme, label


def test_the_organism_build_times_are_the_manifests():
    text = (ROOT / "docs" / "organisms.md").read_text(encoding="utf-8")
    for name in ("organism-a", "organism-b"):
        manifest = json.loads((ROOT / "safetyheads/organisms" / name / "manifest.json").read_text())
        minutes = f"{manifest['build']['seconds_train'] / 60:.1f} min ({name})"
        assert minutes in text, minutes
