"""What the dry run says N processes take (``PlanItem.share``, ``plan.wall_lines``) and how a run of several
processes is kept apart in the run record, checked against counts done by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # replication/ lives beside the package

from replication.compute.plan import wall_lines  # noqa: E402
from replication.compute.stored import PlanItem  # noqa: E402
from replication.results import run_record  # noqa: E402


def item(units, passes=100, cached=False):
    return PlanItem("ships", f"k{units}{passes}", "w", passes, cached, units=tuple(units))


@pytest.mark.parametrize("units, processes, share", [
    ((1,), 8, 1.0),                 # not split: the main process alone
    ((8,), 2, 4 / 8), ((8,), 8, 1 / 8), ((8,), 16, 1 / 8),  # no gain past one piece each
    ((7,), 2, 4 / 7),               # the busiest process takes the odd piece
    ((11, 11, 10), 8, 6 / 32),      # Sahara: each step waits for its own slowest round
])
def test_share_counts_the_rounds_of_each_stage(units, processes, share):
    assert item(units).share(processes) == pytest.approx(share)


def test_wall_lines_sum_the_steps_not_cached():
    items = [item((4,), passes=300), item((1,), passes=100), item((4,), passes=1000, cached=True)]
    [line] = wall_lines(items, 36.0, 4)  # 36 s per pass: 400 passes = 4 h on one process
    assert "1: 4.0 h" in line and "2: 2.5 h" in line and "4: 1.8 h" in line  # 300/2+100, 300/4+100 passes
    [share] = wall_lines(items, None, 3)
    assert "1: 100%" in share and "4: 44%" in share  # 300/4 + 100 = 175 of 400 passes
    assert ", 3: " in share  # the asked count among the usual ones
    assert wall_lines([item((4,), cached=True)], 1.0, 2) == []


def test_a_run_of_several_processes_keeps_its_own_records(monkeypatch):
    monkeypatch.setattr(run_record, "world_size", lambda: 2)
    assert run_record.record_kind(3, 0) == "cold_2_processes"
    assert run_record.record_kind(3, 2) == "partial_2_processes"
    assert run_record.record_kind(0, 5) == "from_store_2_processes"
    run = {"utc": "t", "commit": "c", "machine": {}, "profile": "ci", "kind": "cold_2_processes", "processes": 2,
           "whole_from_empty": True, "seconds": 1.0}
    before = {"artefacts": {"table1": {"cold": {"seconds": 9.0}}}, "runs": {"cold": {"seconds": 9.0},
                                                                           "whole_from_empty": {"seconds": 9.0}}}
    merged = run_record.merge(before, run, [{"artefact": "table1", "kind": "cold_2_processes", "seconds": 1.0}])
    assert merged["runs"]["cold"] == {"seconds": 9.0} and merged["runs"]["whole_from_empty"] == {"seconds": 9.0}
    assert merged["runs"]["whole_from_empty_2_processes"]["seconds"] == 1.0
    assert merged["artefacts"]["table1"]["cold"] == {"seconds": 9.0}
    assert merged["artefacts"]["table1"]["cold_2_processes"]["seconds"] == 1.0


def test_the_paper_dry_run_prints_the_wall_time_for_the_asked_processes(tmp_path, capsys):
    from replication.cli.main import main

    assert main(["run", "table1", "--profile", "paper", "--dry-run", "--processes", "16", "--store", str(tmp_path)]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("wall time by processes")]
    hours = {int(n): float(h) for n, h in
             (part.split(": ") for part in line.split("counted): ", 1)[1].replace(" h", "").split(", "))}
    assert sorted(hours) == [1, 2, 4, 8, 16]
    assert hours[1] > hours[2] > hours[4] > hours[8] >= hours[16] > 0
    assert hours[2] >= hours[1] / 2  # never better than even
