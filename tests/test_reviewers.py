"""docs/reviewers.md: its tables are what the committed run records (else docs/harness.md's hand
measurements) say, every nox session it names exists, and the README and docs/README.md link it; the mini
profile's printed cost is read from committed files, not typed."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # replication/ lives beside the package

from replication.claims import reviewers  # noqa: E402
from replication.spec import measured  # noqa: E402
from replication.spec.profiles import MINI  # noqa: E402

PAGE = ROOT / "docs" / "reviewers.md"


def nox_sessions(monkeypatch) -> set[str]:
    """The sessions noxfile.py defines, with nox replaced by a stub that records each one's name."""
    names = set()

    def session(*args, **kwargs):
        if args and callable(args[0]):
            names.add(args[0].__name__)
            return args[0]

        def register(f):
            names.add(kwargs.get("name") or f.__name__)
            return f
        return register

    monkeypatch.setitem(sys.modules, "nox", types.SimpleNamespace(options=types.SimpleNamespace(), session=session,
                                                                  Session=object))
    spec = importlib.util.spec_from_file_location("noxfile_sessions", ROOT / "noxfile.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    return names


def test_every_session_the_page_names_exists(monkeypatch):
    sessions = nox_sessions(monkeypatch)
    assert {"reproduce_all", "reproduce_figure2", "claims"} <= sessions
    named = set(re.findall(r"nox -s ([\w-]+)", PAGE.read_text(encoding="utf-8")))
    assert len(named) >= 14
    assert not named - sessions, f"docs/reviewers.md names sessions the noxfile lacks: {sorted(named - sessions)}"


def test_the_page_check_catches_a_missing_session(monkeypatch):
    sessions = nox_sessions(monkeypatch)
    assert "reproduce_figure8" not in sessions  # Figure 8 has none: the page must not name one


def test_the_pages_tables_are_what_the_committed_records_say():
    assert reviewers.page_block() == reviewers.block(), \
        "docs/reviewers.md is stale: run `python -m replication reviewers` and commit it"


def test_a_profile_without_a_record_says_so_and_names_the_hand_measurement(tmp_path, monkeypatch):
    monkeypatch.setattr(measured, "COMMITTED", tmp_path)  # no run record of any profile
    hand = measured.hand_timed("mini")  # docs/harness.md's Sessions table and the date above it
    assert hand and hand["sessions"]["reproduce_all"] > 0 and re.fullmatch(r"\d{4}-\d\d-\d\d", hand["date"])
    assert (f"not yet measured by the run record; last measured by hand: {hand['sessions']['reproduce_all']} s on "
            f"{hand['date']}, see docs/harness.md") in reviewers.block()


def test_a_record_replaces_the_hand_measurement(tmp_path, monkeypatch):
    monkeypatch.setattr(measured, "COMMITTED", tmp_path)
    (tmp_path / "mini").mkdir()
    cold = {"seconds": 812.4, "computed": 3, "read": 1, "read_before": 0, "store_mib": 1.5, "outputs_mib": 0.25,
            "peak_rss_mib": {"self": 1234.0, "children": 0.0}, "utc": "2027-01-02T03:04:05Z", "commit": "abcdef123456"}
    run = {**cold, "machine": {"cpu": "Some CPU", "cores": 2, "torch_threads": 2, "device": "cpu"}, "artefacts": ["table1"],
           "whole_from_empty": True}
    (tmp_path / "mini" / "run_record.json").write_text(json.dumps(
        {"artefacts": {"table1": {"cold": cold}}, "runs": {"cold": run, "whole_from_empty": run}}))
    text = reviewers.block()
    assert "| 812 s" in text and "1234 MiB" in text and "store 1.5 MiB, outputs 0.25 MiB" in text
    assert "2027-01-02, commit abcdef1234, Some CPU, 2 cores" in text
    assert measured.whole_run_text("mini").startswith("812 s = 13.5 min from an empty store on 2027-01-02")
    table1 = next(line for line in text.splitlines() if line.startswith("| `nox -s reproduce_table1`"))
    assert "812 s" in table1 and "by hand: 219 s" not in table1  # the ci column still names its hand measurement


def test_the_mini_profiles_printed_costs_come_from_committed_files():
    text = " ".join(MINI.departures)
    assert "115 min" not in text and "about 6 CPU-seconds" not in text
    assert measured.whole_run_text("mini") in text and measured.ships_seconds_text("mini") in text
    metrics = json.loads((ROOT / "paper_tables/generated/mini/table2/metrics.json").read_text())["metrics"]
    ships = next(m["value"] for m in metrics if m["name"] == "ships_seconds_per_query")
    assert f"{ships:.2f} CPU-seconds per query" in text


def test_the_readme_and_the_docs_index_link_the_page():
    first_screen = "\n".join((ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:30])
    assert "docs/reviewers.md" in first_screen
    assert "reviewers.md" in (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
