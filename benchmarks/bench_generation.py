"""Benchmark: generation with and without early stop (``DecodingSpec(stop_when_settled=...)``).

organism-a (the stand-in for Llama-2-7b-chat), vanilla and with one safety head ablated (UA), 48
MaliciousInstruct queries under the paper's template, greedy, 40 and 128 new tokens, batch sizes 8
and 32. Each cell runs the same prompts twice, decoding to the limit and stopping each row once the
keyword-fixed judge's verdict is settled, and reports the wall time, the tokens decoded, and how
often the two runs' verdicts agree (exactness demands 100%; the run fails otherwise). It also
times a floor that no early stop decoding these rows one step at a time can beat: the rows that
never settle, decoded alone (they run to EOS or the limit either way, one token per step), plus
the prefill of every other prompt (one new token each; every prompt must be read once). Full / floor
is the best speed-up possible on these queries.

Default head: L7H2, organism-a's dataset-level top-1 Sahara UA head at the mini profile (CLAIMS.md).

    nox -s bench_generation        # or: python benchmarks/bench_generation.py [--queries 48] [--head L7H2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate

from safetyheads import load_model
from safetyheads.ablation import AblationSpec
from safetyheads.data import load_prompts
from safetyheads.generation import DecodingSpec, generate_responses
from safetyheads.judges import get_judge
from safetyheads.provenance import provenance

from bench_ships import cpu_name

JUDGE = "keyword-fixed"


def squeeze(text: str) -> str:
    return "".join(text.split())


def timed_generation(model, tok, prompts, ablation, decoding, batch_size) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    rows = generate_responses(model, tok, prompts, template="paper", ablation=ablation, decoding=decoding,
                              batch_size=batch_size)
    return time.perf_counter() - t0, rows


def measure_cell(model, tok, judge, prompts: list, name: str, ablation, n_tokens: int, batch_size: int) -> dict:
    """One condition, token limit and batch size: full generation against early stop (time, tokens,
    verdicts, text), and the floor early stop could reach (the unsettled rows alone plus the prefill)."""
    full_dec = DecodingSpec(max_new_tokens=n_tokens)
    stop_dec = DecodingSpec(max_new_tokens=n_tokens, stop_when_settled=(JUDGE,))
    t_full, full = timed_generation(model, tok, prompts, ablation, full_dec, batch_size)
    t_stop, stop = timed_generation(model, tok, prompts, ablation, stop_dec, batch_size)
    v_full = [v.refused for v in judge([r["response"] for r in full], prompts)]
    v_stop = [v.refused for v in judge([r["response"] for r in stop], prompts)]
    agree = sum(a == b for a, b in zip(v_full, v_stop))
    # the stopped text must be where the full one began (same tokens up to the stop); spaces are
    # ignored because decoding a cut token list may tidy spaces before punctuation differently
    prefix = sum(squeeze(f["response"]).startswith(squeeze(s["response"].rstrip("\ufffd")))
                 for f, s in zip(full, stop))
    tok_full, tok_stop = (sum(r["n_new_tokens"] for r in rs) for rs in (full, stop))
    unsettled = [p for p, r in zip(prompts, stop) if not r["stopped_early"]]
    settled = [p for p, r in zip(prompts, stop) if r["stopped_early"]]
    t_unsettled, _ = timed_generation(model, tok, unsettled, ablation, stop_dec, batch_size)
    t_prefill, _ = timed_generation(model, tok, settled, ablation, DecodingSpec(max_new_tokens=1),
                                    batch_size)
    t_floor = t_unsettled + t_prefill
    cell = {"condition": name, "max_new_tokens": n_tokens, "batch_size": batch_size,
            "seconds_full": t_full, "seconds_early_stop": t_stop, "tokens_full": tok_full,
            "tokens_early_stop": tok_stop,
            "unsettled_rows": len(unsettled), "seconds_unsettled_alone": t_unsettled,
            "seconds_prefill_settled": t_prefill, "seconds_floor": t_floor,
            "stopped_early": sum(bool(r["stopped_early"]) for r in stop),
            "asr": 1 - sum(v_full) / len(v_full), "verdicts_agree": agree, "prefix_agree": prefix,
            "n": len(prompts)}
    return cell


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="organism-a")
    ap.add_argument("--data", default="maliciousinstruct")
    ap.add_argument("--queries", type=int, default=48)
    ap.add_argument("--head", default="L7H2", help="the safety head ablated in the 'one head' rows")
    ap.add_argument("--tokens", type=int, nargs="+", default=[40, 128])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--out", default="benchmarks/results/bench_generation.json")
    args = ap.parse_args()

    model, tok = load_model(args.model)
    prompts = load_prompts(args.data, limit=args.queries).prompts
    judge = get_judge(JUDGE)
    conditions = [("vanilla", None), (f"{args.head} ablated (UA)", AblationSpec((args.head,), "ua", 1e-5))]
    # One short run first, so that no timed cell pays for lazy initialisation.
    generate_responses(model, tok, prompts[:2], template="paper", decoding=DecodingSpec(max_new_tokens=4))
    table, cells = [], []
    for name, ablation in conditions:
        for n_tokens in args.tokens:
            for batch_size in args.batch_sizes:
                cell = measure_cell(model, tok, judge, prompts, name, ablation, n_tokens, batch_size)
                cells.append(cell)
                t_full, t_stop, t_floor = cell["seconds_full"], cell["seconds_early_stop"], cell["seconds_floor"]
                table.append([name, n_tokens, batch_size, f"{t_full:.1f}", f"{t_stop:.1f}", f"{t_full / t_stop:.1f}x",
                              f"{t_floor:.1f}", f"{t_full / t_floor:.1f}x",
                              f"{cell['tokens_full']:,}", f"{cell['tokens_early_stop']:,}",
                              f"{cell['stopped_early']}/{len(prompts)}", f"{cell['asr']:.2f}",
                              f"{cell['verdicts_agree'] / len(prompts):.0%}"])
                print(f"  {name}, {n_tokens} tokens, batch {batch_size}: {t_full:.1f} s -> {t_stop:.1f} s",
                      file=sys.stderr, flush=True)
    hw = f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, fp32, {model.config._attn_implementation}"
    print(f"\nGeneration on {args.model}, {len(prompts)} {args.data} queries (paper template, greedy), "
          f"early stop for {JUDGE}; {hw}")
    print(tabulate(table, headers=["condition", "new tokens", "batch", "s full", "s early stop", "speed-up",
                                   "s floor", "best possible",
                                   "tokens full", "tokens early stop", "stopped early", "ASR", "same verdict"],
                   tablefmt="github"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"hardware": hw, "judge": JUDGE, "head": args.head, "data": args.data, "cells": cells,
                               "provenance": provenance(model)}, indent=2) + "\n")
    print(f"written: {out}")
    bad = [c for c in cells if c["verdicts_agree"] != c["n"] or c["prefix_agree"] != c["n"]]
    if bad:
        print(f"bench_generation: error: early stop changed {len(bad)} cell(s)' verdicts or text", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
