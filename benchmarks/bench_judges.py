"""Benchmark: every judge over every committed completion of a profile (default mini).

Reads each artefact's responses.jsonl.gz under paper_tables/generated/<profile>/, keeps the distinct
(query, response) pairs (the harness judges one completion once per process, whatever the number of
cells it sits in), and times each judge over all of them in this one process: keyword-fixed, and the
three-way judge, whose cost is its reader (a forward pass of the float64 embedded model with the reader's
adapter merged in, for each response its rules leave open). The three-way row includes loading that model. The issue's
budget: every mini completion judged in under 5 minutes on a 2-core CPU.

    nox -s bench_judges        # or: python benchmarks/bench_judges.py [--profile mini] [--limit N]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

from tabulate import tabulate

from safetyheads.judges import get_judge
from safetyheads.provenance import provenance

from bench_ships import cpu_name

ROOT = Path(__file__).resolve().parents[1]
JUDGES = ("keyword-fixed", "three-way")
BUDGET_S = 300  # every mini completion, on a 2-core CPU


def committed_pairs(profile: str) -> tuple[list[tuple[str, str]], int, int]:
    """(distinct (query, response) pairs in a stable order, completions read, artefacts read)."""
    seen, rows, files = {}, 0, 0
    for path in sorted((ROOT / "paper_tables" / "generated" / profile).glob("*/responses.jsonl.gz")):
        files += 1
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                rows += 1
                seen.setdefault((row["prompt"], row["response"]), None)
    return list(seen), rows, files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="mini")
    ap.add_argument("--limit", type=int, default=None, help="judge only the first N distinct completions")
    ap.add_argument("--out", default="benchmarks/results/bench_judges.json")
    args = ap.parse_args()
    pairs, n_rows, n_files = committed_pairs(args.profile)
    if not pairs:
        print(f"no responses.jsonl.gz under paper_tables/generated/{args.profile}/: run that profile first", file=sys.stderr)
        return 2
    pairs = pairs[: args.limit] if args.limit else pairs
    queries, responses = [q for q, _ in pairs], [r for _, r in pairs]
    table = []
    for name in JUDGES:
        judge = get_judge(name)
        t0 = time.perf_counter()
        verdicts = judge.judge(responses, queries)
        seconds = time.perf_counter() - t0
        rules = {}
        for v in verdicts:
            rules[v.rule] = rules.get(v.rule, 0) + 1
        labels = {}
        for v in verdicts:
            labels[v.label] = labels.get(v.label, 0) + 1
        table.append({"judge": name, "completions": len(pairs), "seconds": round(seconds, 1),
                      "ms per completion": round(1000 * seconds / len(pairs), 2),
                      "read by the reader": rules.get("reader", 0),
                      "labels": ", ".join(f"{k} {n}" for k, n in sorted(labels.items())),
                      "within budget": "yes" if seconds <= BUDGET_S else "no"})
    print(f"{n_rows} committed completions of the {args.profile} profile in {n_files} artefacts; "
          f"{len(pairs)} distinct (query, response) pairs judged; {cpu_name()}")
    print(tabulate(table, headers="keys", tablefmt="github"))
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"profile": args.profile, "completions": n_rows, "distinct": len(pairs),
                               "cpu": cpu_name(), "budget_s": BUDGET_S, "rows": table,
                               "provenance": provenance()}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
