"""``safetyheads sahara``: greedy search for the safety-head group (generalized Ships per step), resumable
step by step; prints each step's top heads and the group."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from tabulate import tabulate

from ..data import BUNDLED, load_prompts
from ..distributed import is_main
from ..errors import SafetyheadsError
from ..heads import all_heads, parse_heads
from ..jobs import SaharaJob
from ..outputs import DEFAULT_OUT_DIR, check_output, check_writable_folder, claim_output
from ..prompts import TEMPLATES
from ..provenance import model_source, provenance
from ..results import ResultsWriter, check_results_file, read_results
from ..sahara import MAX_STEPS, SCOREBOARD_COLUMNS
from ..ships import DEFAULT_BATCH_SIZE
from .args import (add_ablation_args, add_model_args, add_output_args, check_batch_size, load_from_args,
                   resume_on_main, slug)


def register(sub) -> None:
    p = sub.add_parser("sahara", help="greedy search for the group of heads that moves the dataset's activations most")
    add_model_args(p)
    p.add_argument("--data", default="maliciousinstruct", help=f"bundled set ({', '.join(BUNDLED)}) or .csv/.jsonl file")
    p.add_argument("--column", help="column holding the prompts")
    p.add_argument("--limit", type=int, help="use only the first N prompts")
    p.add_argument("--template", default="paper", choices=TEMPLATES)
    p.add_argument("--system-prompt", help="system prompt for --template chat")
    add_ablation_args(p, heads_required=False)  # --heads restricts the candidate heads (default: all)
    p.add_argument("--steps", type=int, default=3, help=f"group size S, 1..{MAX_STEPS} (default 3)")
    p.add_argument("--r", type=int, default=1, help="leading singular directions compared (default 1, as the authors' code)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    add_output_args(p, "scoreboard .jsonl/.csv (default safetyheads-out/sahara_<model>_<method>-<target>_<data>.jsonl)")
    p.set_defaults(func=cmd_sahara)


def check_enough_candidates(n_candidates: int, steps: int) -> None:
    if n_candidates < steps:
        raise SafetyheadsError(f"--steps {steps} needs at least {steps} candidate heads, got {n_candidates}: "
                               "give more --heads or fewer --steps")


def cmd_sahara(args) -> int:
    # Everything that can be checked without the model fails before it loads.
    if not 1 <= args.steps <= MAX_STEPS:
        raise SafetyheadsError(f"--steps must be between 1 and {MAX_STEPS}, got {args.steps}")
    check_batch_size(args)
    if args.out is not None:  # an empty --out is refused, not taken for the default
        check_output(args.out, inputs={"--data": args.data}, overwrite=args.overwrite, resumable=True)
        check_results_file(Path(args.out), args.overwrite)
        if is_main():  # under `accelerate launch` only the main process writes it
            claim_output(args.out)
    else:
        check_writable_folder(DEFAULT_OUT_DIR, "--out")
    prompts = load_prompts(args.data, column=args.column, limit=args.limit)
    if not 1 <= args.r <= len(prompts.prompts):
        raise SafetyheadsError(f"--r must be between 1 and the number of queries ({len(prompts.prompts)}), got {args.r}")
    pool = parse_heads(args.heads) if args.heads is not None else None  # "" is an error, not all heads
    job = SaharaJob(prompts.prompts, args.steps, method=args.method, eps=args.eps, target=args.target, r=args.r,
                    template=args.template, system_prompt=args.system_prompt, batch_size=args.batch_size)
    if pool is not None:  # the candidates join once this command has said, in its words, whether they are enough
        check_enough_candidates(len(pool), args.steps)
        job = replace(job, candidates=pool)

    model, tok = load_from_args(args)
    check_enough_candidates(len(pool or all_heads(model)), args.steps)  # before the results file is made
    named = job.for_model(model)  # every head of the model when --heads is not given
    named.check_fits(model, tok)  # template and length problems surface before any compute
    src = model_source(model)
    out = Path(args.out or DEFAULT_OUT_DIR / f"sahara_{slug(src['model'])}_{named.method}-{named.target}_{slug(prompts.name)}.jsonl")
    if not args.out:
        check_output(out, "--out", overwrite=args.overwrite, resumable=True)
        check_results_file(out, args.overwrite)
        if is_main():
            claim_output(out)
    run = {"kind": "sahara", "model": src.get("model"), "model_sha256": src.get("sha256"), "revision": src.get("revision"),
           "dtype": src.get("dtype"), "dataset": prompts.provenance(), "template": args.template,
           "system_prompt": args.system_prompt, "method": named.method, "eps": named.eps, "target": named.target,
           "candidates": "all" if pool is None else [str(h) for h in named.candidates], "r": args.r,
           "score": "generalized Ships: sum of the r principal angles, degrees"}
    header = {"run": run, "provenance": provenance(model, seeds=None, judge=None, decoding=None)}
    n = len(named.candidates)
    # Under `accelerate launch` only the main process touches the file; the others get its finished steps.
    sink = ResultsWriter(out, header, SCOREBOARD_COLUMNS, key="step", group_size=lambda step: n - (int(step) - 1),
                         overwrite=args.overwrite) if is_main() else None
    resumed = sink is not None and bool(sink.rows())
    finished = resume_on_main(named, sink)
    if resumed:
        done = f"steps 1..{len(finished)} already done" if finished else "no step finished yet, the first resumes"
        print(f"resuming {out}: {done}", file=sys.stderr)
    print(f"Sahara over {n} heads ({named.method} on {named.target}, eps {named.eps:g}), {args.steps} steps, "
          f"{len(prompts.prompts)} queries from {prompts.name}, r={args.r} -> {out}", file=sys.stderr)
    result = named.run(model, tok, sink, finished=finished, progress=not args.quiet)
    if not is_main():
        return 0
    print_steps(out, args.steps, result["group"])
    return 0


def print_steps(out: Path, steps: int, group: list[str]) -> None:
    """Each step's top 5 heads from the finished scoreboard, then the group."""
    table, _ = read_results(out)
    for step in range(1, steps + 1):
        t = table[table["step"] == step].sort_values("rank").head(5)
        print(f"\nstep {step} (group before: {t['group_before'].iloc[0] or '-'}): top 5 of {len(table[table['step'] == step])}")
        print(tabulate(t[["rank", "head_name", "score"]], headers=["rank", "head", "generalized Ships (deg)"],
                       tablefmt="github", floatfmt=".4g", showindex=False))
    print(f"\nSahara group: {', '.join(group)}\nscoreboard: {out}")
