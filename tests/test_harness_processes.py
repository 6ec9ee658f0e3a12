"""The harness under `accelerate launch`: two processes (gloo, on this CPU) write what one process writes.

Each run starts from its own empty store, so everything is computed: the one-process and the two-process
runs must agree on every output file byte for byte (the store entries too, but for the seconds they
record), and the two-process run must write each file once, from the main process. CI runs table1
(about two minutes); `nox -s processes` adds figure2 and sensitivity and a worker killed mid-run
(``-m processes``, about fifteen minutes on two cores).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import require_embedded_model

require_embedded_model()

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
# every file of an artefact's folder that does not carry a time (results.jsonl's header holds the run's seconds,
# a figure's PDF its date)
COMPARED = ("metrics.json", "outcomes.json", "table.md", "table.tex", "diff.md", "responses.jsonl.gz")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(processes: int, artefacts: list[str], store: Path) -> list[str]:
    run = ["-m", "replication", "run", *artefacts, "--profile", "ci", "--store", str(store), "--quiet"]
    if processes == 1:
        return [sys.executable, *run]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), *run]


def environment(generated: Path) -> dict:
    # one thread per process in both runs: the same kernels, so the same sums, whatever the process count
    return {**os.environ, "OMP_NUM_THREADS": "1", "SAFETYHEADS_GENERATED": str(generated),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def start(processes: int, artefacts: list[str], root: Path) -> subprocess.Popen:
    """A run into ``root``/store, writing under ``root``/generated."""
    (root / "generated").mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(command(processes, artefacts, root / "store"), cwd=ROOT, env=environment(root / "generated"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def run(processes: int, artefacts: list[str], root: Path) -> subprocess.CompletedProcess:
    proc = start(processes, artefacts, root)
    out, err = proc.communicate(timeout=1800)
    assert proc.returncode in (0, 1), err[-4000:]  # 1: a metric FAILed, which both runs must then agree on
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def results(store: Path) -> dict:
    """Every finished store entry's result, without the seconds it records (a measured time)."""
    def timeless(x):
        if isinstance(x, dict):
            return {k: timeless(v) for k, v in x.items() if k != "seconds"}
        if isinstance(x, list):
            return [timeless(v) for v in x]
        return x

    return {p.parent.name: timeless(json.loads(p.read_text())) for p in store.glob("*/*/*/result.json")}


def assert_same_outputs(one: Path, two: Path, artefacts: list[str]) -> None:
    for name in artefacts:
        for f in COMPARED:
            a, b = one / "generated" / "ci" / name / f, two / "generated" / "ci" / name / f
            assert a.read_bytes() == b.read_bytes(), f"{name}/{f} differs between one and two processes"


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """table1 from an empty store, one process: the reference."""
    root = tmp_path_factory.mktemp("one")
    done = run(1, ["table1"], root)
    return root, done


def test_two_processes_write_what_one_process_writes(one_process, tmp_path):
    one, single = one_process
    two = run(2, ["table1"], tmp_path)
    assert two.returncode == single.returncode
    assert_same_outputs(one, tmp_path, ["table1"])
    assert results(tmp_path / "store") == results(one / "store")
    # the main process alone wrote and reported: one summary line, and its run record kept apart
    assert two.stderr.count("2 processes (accelerate launch)") == 1
    record = json.loads((tmp_path / "generated" / "ci" / "run_record.json").read_text())
    assert set(record["runs"]) == {"cold_2_processes"} and record["runs"]["cold_2_processes"]["processes"] == 2
    assert set(record["artefacts"]["table1"]) == {"cold_2_processes"}
    # read back by one process from the two-process store: the same files again, nothing computed
    again = tmp_path / "again"
    shutil.copytree(tmp_path / "store", again / "store")
    run(1, ["table1"], again)
    assert_same_outputs(tmp_path, again, ["table1"])
    assert json.loads((again / "generated" / "ci" / "run_record.json").read_text())["runs"]["from_store"]["computed"] == 0


@pytest.mark.processes
def test_figure2_and_sensitivity_on_two_processes(tmp_path):
    names = ["figure2", "sensitivity"]
    run(1, names, tmp_path / "one")
    run(2, names, tmp_path / "two")
    assert_same_outputs(tmp_path / "one", tmp_path / "two", names)
    assert results(tmp_path / "two" / "store") == results(tmp_path / "one" / "store")


def worker_pids(launcher: int) -> dict[int, int]:
    """rank -> pid of the workers an `accelerate launch` started: its descendants whose environment has RANK."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parent.get(pid, 0)
            if pid == launcher:
                return True
        return False

    found = {}
    for pid in filter(descends, parent):
        try:
            env = dict(kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
                       .split("\0") if "=" in kv)
        except OSError:
            continue
        if "RANK" in env and "LOCAL_RANK" in env:
            found[int(env["RANK"])] = pid
    return found


@pytest.mark.processes
@pytest.mark.parametrize("victim", [0, 1])
def test_a_worker_killed_mid_run_resumes_to_the_same_result(one_process, tmp_path, victim):
    """Kill one worker (the main one, which writes, or the other) once the store holds a finished entry; the
    launcher ends the rest; a second two-process run resumes and writes what one process wrote."""
    one, _ = one_process
    proc = start(2, ["table1"], tmp_path)
    deadline = time.monotonic() + 900
    while not list((tmp_path / "store").glob("*/*/*/result.json")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no store entry finished in 15 minutes"
        time.sleep(0.5)
    workers = worker_pids(proc.pid)
    assert set(workers) == {0, 1}, workers
    os.kill(workers[victim], signal.SIGKILL)
    proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert not (tmp_path / "generated" / "ci" / "table1" / "metrics.json").exists()
    finished_before = len(results(tmp_path / "store"))
    run(2, ["table1"], tmp_path)
    assert_same_outputs(one, tmp_path, ["table1"])
    assert results(tmp_path / "store") == results(one / "store")
    record = json.loads((tmp_path / "generated" / "ci" / "run_record.json").read_text())
    assert record["runs"]["cold_2_processes"]["read_before"] >= finished_before >= 1
