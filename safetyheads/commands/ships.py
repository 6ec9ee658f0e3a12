"""``safetyheads ships``: Ships of every head (or of --heads) on a prompt set, resumable; prints the
top heads by mean Ships."""

from __future__ import annotations

import sys
from pathlib import Path

from tabulate import tabulate

from ..distributed import is_main
from ..errors import SafetyheadsError
from ..heads import parse_heads
from ..jobs import ShipsJob
from ..files import write_durably
from ..outputs import DEFAULT_OUT_DIR, check_output, check_writable_folder, claim_output
from ..provenance import model_source, provenance
from ..results import ResultsWriter, check_results_file, read_results
from ..ships import DEFAULT_BATCH_SIZE, STRATEGIES, check_prob_floor, top_heads
from .args import (add_ablation_args, add_model_args, add_prompt_args, check_batch_size, first_line,
                   load_from_args, prompts_from_args, resume_on_main, slug)

SHIPS_COLUMNS = ["prompt_id", "prompt", "layer", "head", "head_name", "ships"]


def register(sub) -> None:
    p = sub.add_parser("ships", help="score every head's effect on the next-token distribution (Ships)")
    add_model_args(p)
    add_prompt_args(p)
    add_ablation_args(p, heads_required=False)
    p.add_argument("--out", help="results file, .jsonl or .csv (default safetyheads-out/ships_<model>_<method>_<template>.jsonl)")
    p.add_argument("--csv", help="also write the tidy table to this CSV")
    p.add_argument("--overwrite", action="store_true", help="replace --out instead of resuming it")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"ablated rows per pass (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--strategy", default="prefix", choices=STRATEGIES, help="prefix (fastest), batched or naive")
    p.add_argument("--prob-floor", type=float, default=0.0,
                   help="add this to both distributions before the log (1e-12 = the authors' code; default 0 = exact KL)")
    p.add_argument("--top", type=int, default=10, help="how many top heads to print (default 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or loading messages")
    p.set_defaults(func=cmd_ships)


def check_outputs(args) -> None:
    """Before any model loads: --out (when given) and --csv can be written."""
    if args.out is not None:  # an empty --out is refused, not taken for the default
        check_output(args.out, inputs={"--data": args.data}, others={"--csv": args.csv}, overwrite=args.overwrite,
                     resumable=True)
        check_results_file(Path(args.out), args.overwrite)
        if is_main():  # under `accelerate launch` only the main process writes it
            claim_output(args.out)
    else:
        check_writable_folder(DEFAULT_OUT_DIR, "--out")
    if args.csv is not None:
        if Path(args.csv).suffix != ".csv":
            raise SafetyheadsError(f"--csv must name a .csv file, got {args.csv!r}")
        check_output(args.csv, "--csv", inputs={"--data": args.data}, others={"--out": args.out},
                     overwrite=args.overwrite, replaceable=lambda p: first_line(p) == ",".join(SHIPS_COLUMNS))


def cmd_ships(args) -> int:
    # Everything that can be checked without the model fails before it loads.
    if args.prompt and args.data is not None:
        raise SafetyheadsError("give --data or --prompt, not both")
    check_batch_size(args)
    check_prob_floor(args.prob_floor, "--prob-floor")
    if args.top < 1:
        raise SafetyheadsError(f"--top must be >= 1 (how many heads to print), got {args.top}")
    check_outputs(args)
    prompts = prompts_from_args(args)
    job = ShipsJob(prompts.prompts, heads=parse_heads(args.heads) if args.heads is not None else None,  # "": an error
                   method=args.method, eps=args.eps, target=args.target, template=args.template,
                   system_prompt=args.system_prompt, strategy=args.strategy, batch_size=args.batch_size,
                   prob_floor=args.prob_floor)

    model, tok = load_from_args(args)
    named = job.for_model(model)  # every head of the model when --heads is not given
    named.check_fits(model, tok)  # template and length problems surface before any compute
    spec = named.ablation_spec()
    src = model_source(model)
    out = Path(args.out or DEFAULT_OUT_DIR / f"ships_{slug(src['model'])}_{spec.method}-{spec.target}_{args.template}.jsonl")
    if not args.out:
        check_output(out, "--out", overwrite=args.overwrite, resumable=True)
        check_results_file(out, args.overwrite)
        if is_main():
            claim_output(out)
    run = {
        "kind": "ships", "model": src.get("model"), "model_sha256": src.get("sha256"), "revision": src.get("revision"),
        "dtype": src.get("dtype"), "dataset": prompts.provenance(), "template": args.template,
        "system_prompt": args.system_prompt, "method": spec.method, "eps": spec.eps, "target": spec.target,
        "heads": "all" if job.heads is None else [str(h) for h in spec.heads], "prob_floor": args.prob_floor,
    }
    header = {"run": run, "provenance": provenance(model, seeds=None, judge=None, decoding=None)}
    # Under `accelerate launch` only the main process touches the file; the others learn what is done.
    sink = ResultsWriter(out, header, SHIPS_COLUMNS, key="prompt_id", group_size=len(spec.heads),
                         overwrite=args.overwrite) if is_main() else None
    finished = resume_on_main(named, sink)
    todo = named.todo(finished)
    if finished and is_main():
        print(f"resuming {out}: {len(finished)} of {len(prompts.prompts)} prompts already done", file=sys.stderr)
    print(f"Ships of {len(spec.heads)} heads ({spec.method} on {spec.target}, eps {spec.eps:g}) on "
          f"{len(todo)} prompts from {prompts.name}, template {args.template!r} -> {out}", file=sys.stderr)
    named.run(model, tok, sink, finished=finished, progress=not args.quiet)
    if not is_main():
        return 0
    table, _ = read_results(out)
    if args.csv:
        write_durably(Path(args.csv), table.to_csv(index=False))
    best = top_heads(table, args.top)
    best.insert(0, "rank", range(1, len(best) + 1))
    print(f"\nTop {len(best)} heads by mean Ships over {table['prompt_id'].nunique()} prompts "
          f"({spec.method} on {spec.target}, template {args.template}):")
    print(tabulate(best[["rank", "head_name", "mean_ships", "std_ships", "n_prompts"]],
                   headers=["rank", "head", "mean Ships", "std", "prompts"], tablefmt="github",
                   floatfmt=".4g", showindex=False))
    print(f"\nall scores: {out}")
    return 0
