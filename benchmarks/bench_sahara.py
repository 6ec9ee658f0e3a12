"""Benchmark: seconds per Sahara step (all candidate heads scored over N queries) on the embedded model.

    nox -s bench_sahara              # or: python benchmarks/bench_sahara.py [--queries 32] [--steps 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tabulate import tabulate

from safetyheads import load_model
from safetyheads.data import load_prompts
from safetyheads.provenance import provenance
from safetyheads.sahara import sahara
from safetyheads.ships import DEFAULT_BATCH_SIZE

from bench_ships import cpu_name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data", default="maliciousinstruct")
    ap.add_argument("--queries", type=int, default=32)
    ap.add_argument("--steps", type=int, default=1, help="steps to time (each scores every remaining head)")
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--out", default="benchmarks/results/bench_sahara.json")
    args = ap.parse_args()

    model, tok = load_model(args.model)
    prompts = load_prompts(args.data, limit=args.queries).prompts
    step_times: list[float] = []
    t_last = [time.perf_counter()]

    def tick(step, rows):
        now = time.perf_counter()
        step_times.append(now - t_last[0])
        t_last[0] = now

    t_last[0] = time.perf_counter()
    result = sahara(model, tok, prompts, steps=args.steps, template="paper", batch_size=args.batch_size, on_step=tick)
    hw = f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, fp32, {model.config._attn_implementation}"
    rows = [[i + 1, len(prompts), f"{t:.1f}", f"{t / len(prompts):.2f}"] for i, t in enumerate(step_times)]
    print(f"\nSahara on {args.model}, {len(prompts)} {args.data} queries (paper template, UA, eps 1e-5); {hw}")
    print(tabulate(rows, headers=["step", "queries", "s / step", "s / query"], tablefmt="github"))
    print(f"group so far: {', '.join(map(str, result.group))}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"hardware": hw, "queries": len(prompts), "step_seconds": step_times,
                               "group": [str(h) for h in result.group], "provenance": provenance(model)}, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
