"""Benchmark: the harness's ci profile on one process against two (``accelerate launch``, gloo on this CPU).

Each run starts from its own empty store, so it computes everything: one process with torch's default
threads (every core), then two processes of one thread each (the same cores, split). It prints both wall
times side by side, what the dry run predicts for 2 and 8 processes (``wall_lines`` in
replication/compute/plan.py: each step's pieces dealt round-robin), and whether the outputs agree:
- the two-process outputs against a one-process run of one thread (as each of the two) that reads the
  two-process store (must be byte for byte the same: the harness's promise, a failure exits 1; table2 names
  the threads of the run that writes it);
- the two-process outputs against the cold one-process run (``metrics.json``, ``outcomes.json``, tables,
  diffs, responses), which may differ only where a metric is a measured time (table2) or where float
  sums of one and two threads round apart; every difference is listed.

A 2-core machine bounds the gain: two processes of one thread against one of two threads share the same
cores, and gain only where one process leaves a core idle (small batches, the Python between kernels).

    nox -s bench_processes        # or: python benchmarks/bench_processes.py [--artefacts table1 figure2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from bench_ships import cpu_name

ROOT = Path(__file__).resolve().parent.parent
COMPARED = ("metrics.json", "outcomes.json", "table.md", "table.tex", "diff.md", "responses.jsonl.gz")
OUT = ROOT / "benchmarks" / "results" / "bench_processes.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(processes: int, artefacts: list[str], folder: Path, *, store: Path | None = None, dry_run: bool = False,
        extra: tuple = (), threads: int | None = None) -> tuple[float, str]:
    """One harness run into ``folder`` (its store and outputs); -> (wall seconds, stdout). ``threads``: torch's
    threads per process (default: every core for one process, one each for several)."""
    store = store or folder / "store"
    args = ["-m", "replication", "run", *artefacts, "--profile", "ci", "--store", str(store), "--quiet", *extra]
    if dry_run:
        args.append("--dry-run")
    if processes > 1:
        args = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines",
                "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), *args]
    env = {**os.environ, "SAFETYHEADS_GENERATED": str(folder / "generated"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if processes > 1 or threads:
        env["OMP_NUM_THREADS"] = str(threads or 1)  # several processes: the cores split between them
    (folder / "generated").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode not in (0, 1):  # 1: a metric FAILed (reported by the comparison, not a crash)
        sys.exit(f"bench_processes: {processes}-process run failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def differences(a: Path, b: Path) -> list[str]:
    """The compared files of every artefact that differ between two generated folders (a file one lacks differs)."""
    def read(path: Path) -> bytes | None:
        return path.read_bytes() if path.is_file() else None

    names = sorted({d.name for folder in (a, b) for d in (folder / "ci").iterdir() if d.is_dir()})
    return [f"{n}/{f}" for n in names for f in COMPARED if read(a / "ci" / n / f) != read(b / "ci" / n / f)]


def predicted(artefacts: list[str], folder: Path) -> dict:
    """The dry run's share of the one-process wall time for 2 and 8 processes, from an empty store."""
    _, text = run(1, artefacts, folder, dry_run=True, extra=("--processes", "8"))
    line = next(x for x in text.splitlines() if x.startswith("wall time by processes"))
    return {int(n): int(p) / 100 for n, p in re.findall(r"(\d+): (\d+)%", line.split("):", 1)[1])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artefacts", nargs="+", default=["all"])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    names = args.artefacts
    with tempfile.TemporaryDirectory(prefix="bench-processes-") as tmp:
        tmp = Path(tmp)
        share = predicted(names, tmp / "plan")
        one, _ = run(1, names, tmp / "one")
        two, _ = run(2, names, tmp / "two")
        shutil.copytree(tmp / "two" / "store", tmp / "reread" / "store")
        run(1, names, tmp / "reread", threads=1)  # as each of the two: table2 names the threads of the run
        same_store = differences(tmp / "two" / "generated", tmp / "reread" / "generated")
        cold = differences(tmp / "one" / "generated", tmp / "two" / "generated")
    rows = [["1 process x all threads", f"{one:.0f}", "1.00", "1.00"],
            ["2 processes x 1 thread", f"{two:.0f}", f"{one / two:.2f}", f"{1 / share[2]:.2f}"],
            ["8 processes (GPUs), predicted", "-", "-", f"{1 / share[8]:.2f}"]]
    print(tabulate(rows, headers=["ci profile, from an empty store", "wall s", "speed-up measured",
                                  "speed-up the dry run predicts"], tablefmt="github"))
    print(f"two-process outputs vs one process reading the same store: {same_store or 'identical'}")
    print(f"two-process outputs vs the cold one-process run: {cold or 'identical'}")
    result = {"artefacts": names, "one_process_s": round(one, 1), "two_processes_s": round(two, 1),
              "predicted_share": share, "same_store_differences": same_store, "cold_differences": cold,
              "cpu": cpu_name(), "cores": os.cpu_count(), "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written: {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 1 if same_store else 0


if __name__ == "__main__":
    sys.exit(main())
