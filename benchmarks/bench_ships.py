"""Benchmark: seconds per query for a full Ships sweep (every head) of the embedded model.

Three strategies on the same model and queries: one forward per head (naive), one batched
forward per chunk of heads (batched), and batched with clean-prefix reuse (prefix). Also the
layer-pass lower bound: the decoder-layer passes the sweep cannot avoid (a head in layer l needs
layers l..L-1 re-run), each costed at the measured per-row time of one layer on a full batch.

Reference: the authors' released implementation took 70.7 s per 14-token query for all 270
heads of this model on this kind of machine (fp32, 2 threads).

    nox -s bench_ships              # or: python benchmarks/bench_ships.py [--batch-size 96] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from tabulate import tabulate

from safetyheads import all_heads, geometry, load_model
from safetyheads.data import load_prompts
from safetyheads.prompts import encode_prompt
from safetyheads.provenance import provenance
from safetyheads.ships import DEFAULT_BATCH_SIZE, _call_layer, _layer_input, clean_pass, ships_for_ids

AUTHORS_SECONDS_14_TOKENS = 70.7


def pick_query(tok, n_tokens: int, template: str) -> tuple[str, torch.Tensor]:
    """The bundled query whose tokenisation is closest to ``n_tokens`` (first wins ties)."""
    best = None
    for name in ("maliciousinstruct", "jailbreakbench", "advbench"):
        for q in load_prompts(name).prompts:
            ids = encode_prompt(tok, q, template)
            d = abs(ids.shape[1] - n_tokens)
            if best is None or d < best[0]:
                best = (d, q, ids)
            if d == 0:
                return q, ids
    return best[1], best[2]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@torch.no_grad()
def layer_row_seconds(model, ids, batch_size: int, repeats: int = 3) -> float:
    """Seconds per batch row of one decoder layer pass (middle layer, full batch)."""
    clean = clean_pass(model, ids)
    layers = model.model.layers
    mid = len(layers) // 2
    hidden = _layer_input(clean.layer_calls[mid]).expand(batch_size, -1, -1).contiguous()
    _call_layer(layers[mid], clean.layer_calls[mid], hidden)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        _call_layer(layers[mid], clean.layer_calls[mid], hidden)
    return (time.perf_counter() - t0) / repeats / batch_size


def timed(fn, repeats: int):
    best = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--repeats", type=int, default=1, help="best of N timings per cell")
    ap.add_argument("--tokens", default="14,40", help="query lengths to time (tokens)")
    ap.add_argument("--skip-naive", action="store_true", help="skip the slow one-forward-per-head column")
    ap.add_argument("--out", default="benchmarks/results/bench_ships.json")
    args = ap.parse_args()

    model, tok = load_model(args.model)
    g = geometry(model)
    heads = all_heads(model)
    layer_passes = sum(g.n_layers - h.layer for h in heads)
    rows, records = [], []
    for n in [int(x) for x in args.tokens.split(",")]:
        template = "direct" if n < 20 else "paper"
        query, ids = pick_query(tok, n, template)
        T = ids.shape[1]
        per_row = layer_row_seconds(model, ids, args.batch_size)
        lower = layer_passes * per_row
        times, scores = {}, {}
        for strategy in ("naive", "batched", "prefix"):
            if strategy == "naive" and args.skip_naive:
                continue
            times[strategy], (_, scores[strategy]) = timed(
                lambda ids=ids, strategy=strategy: ships_for_ids(model, ids, heads, "ua", 1e-5, strategy=strategy,
                                                                 batch_size=args.batch_size),
                args.repeats,
            )
        ref = scores.get("naive", scores["batched"])
        max_rel = max(float(((s - ref).abs() / ref.abs().clamp_min(1e-6)).max()) for s in scores.values())
        for strategy, sec in times.items():
            rec = {"tokens": T, "template": template, "strategy": strategy, "seconds_per_query": sec,
                   "vs_lower_bound": sec / lower, "lower_bound_seconds": lower, "query": query,
                   "speedup_vs_authors_70.7s": (AUTHORS_SECONDS_14_TOKENS / sec) if T == 14 else None,
                   "max_rel_diff_vs_naive": max_rel}
            records.append(rec)
            rows.append([T, strategy, f"{sec:.2f}", f"{sec / lower:.2f}x",
                         f"{AUTHORS_SECONDS_14_TOKENS / sec:.1f}x" if T == 14 else "-"])
        rows.append([T, "layer-pass lower bound", f"{lower:.2f}", "1.00x", "-"])

    hw = f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, fp32, {model.config._attn_implementation}"
    print(f"\nShips sweep of all {len(heads)} heads of {args.model} (UA, eps 1e-5), batch {args.batch_size}; {hw}")
    print(tabulate(rows, headers=["query tokens", "strategy", "s / query", "vs lower bound", "vs authors (70.7 s)"],
                   tablefmt="github"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"hardware": hw, "heads": len(heads), "layer_passes": layer_passes,
                               "batch_size": args.batch_size, "results": records,
                               "provenance": provenance(model)}, indent=2) + "\n")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
