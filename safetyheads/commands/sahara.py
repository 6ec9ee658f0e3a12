"""``safetyheads sahara``: greedy search for the safety-head group (generalized Ships per step)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import SafetyheadsError
from ..outputs import DEFAULT_OUT_DIR, check_output, check_writable_folder
from ..results import check_results_file


def register(sub) -> None:
    from ..cli import add_ablation_args, add_model_args
    from ..data import BUNDLED
    from ..prompts import TEMPLATES
    from ..sahara import MAX_STEPS
    from ..ships import DEFAULT_BATCH_SIZE

    p = sub.add_parser("sahara", help="greedy search for the group of heads that moves the dataset's activations most")
    add_model_args(p)
    p.add_argument("--data", default="maliciousinstruct", help=f"bundled set ({', '.join(BUNDLED)}) or .csv/.jsonl file")
    p.add_argument("--column", help="column holding the prompts")
    p.add_argument("--limit", type=int, help="use only the first N prompts")
    p.add_argument("--template", default="paper", choices=TEMPLATES)
    p.add_argument("--system-prompt", help="system prompt for --template chat")
    add_ablation_args(p, heads_required=False)
    p.add_argument("--steps", type=int, default=3, help=f"group size S, 1..{MAX_STEPS} (default 3)")
    p.add_argument("--r", type=int, default=1, help="leading singular directions compared (default 1, as the authors' code)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--out", help="scoreboard .jsonl/.csv (default safetyheads-out/sahara_<model>_<method>-<target>_<data>.jsonl)")
    p.add_argument("--overwrite", action="store_true", help="replace --out instead of resuming it")
    p.add_argument("--quiet", action="store_true", help="no progress bar or loading messages")
    p.set_defaults(func=cmd_sahara)
    # --heads, from the shared ablation arguments, restricts the candidate heads (default: all).


def check_enough_candidates(n_candidates: int, steps: int) -> None:
    if n_candidates < steps:
        raise SafetyheadsError(f"--steps {steps} needs at least {steps} candidate heads, got {n_candidates}: "
                               "give more --heads or fewer --steps")


def cmd_sahara(args) -> int:
    from tabulate import tabulate

    from ..ablation import AblationSpec
    from ..cli import _slug, load_from_args
    from ..data import load_prompts
    from ..heads import all_heads, parse_heads
    from ..prompts import check_fits, context_length, encode_prompt
    from ..provenance import model_source, provenance
    from ..results import ResultsWriter, read_results
    from ..sahara import MAX_STEPS, SCOREBOARD_COLUMNS, sahara

    if not 1 <= args.steps <= MAX_STEPS:
        raise SafetyheadsError(f"--steps must be between 1 and {MAX_STEPS}, got {args.steps}")
    if args.batch_size < 1:
        raise SafetyheadsError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.out is not None:  # an empty --out is refused, not taken for the default
        check_output(args.out, inputs={"--data": args.data}, overwrite=args.overwrite, resumable=True)
        check_results_file(Path(args.out), args.overwrite)
    else:
        check_writable_folder(DEFAULT_OUT_DIR, "--out")
    prompts = load_prompts(args.data, column=args.column, limit=args.limit)
    if not 1 <= args.r <= len(prompts.prompts):
        raise SafetyheadsError(f"--r must be between 1 and the number of queries ({len(prompts.prompts)}), got {args.r}")
    pool_arg = parse_heads(args.heads) if args.heads is not None else None  # "" is an error, not all heads
    AblationSpec(pool_arg or ("L0H0",), args.method, args.eps, args.target)
    if pool_arg is not None:
        check_enough_candidates(len(pool_arg), args.steps)
    model, tok = load_from_args(args)
    pool = pool_arg or all_heads(model)
    spec = AblationSpec(pool, args.method, args.eps, args.target).check(model)
    check_enough_candidates(len(spec.heads), args.steps)  # before the results file is made
    limit = context_length(model, tok)
    for i, p in enumerate(prompts.prompts):  # template and length problems surface before any compute
        check_fits(encode_prompt(tok, p, args.template, args.system_prompt).shape[1], limit, i, p)
    src = model_source(model)
    out = Path(args.out or DEFAULT_OUT_DIR / f"sahara_{_slug(src['model'])}_{spec.method}-{spec.target}_{_slug(prompts.name)}.jsonl")
    if not args.out:
        check_output(out, "--out", overwrite=args.overwrite, resumable=True)
        check_results_file(out, args.overwrite)
    run = {"kind": "sahara", "model": src.get("model"), "model_sha256": src.get("sha256"), "revision": src.get("revision"),
           "dtype": src.get("dtype"), "dataset": prompts.provenance(), "template": args.template,
           "system_prompt": args.system_prompt, "method": spec.method, "eps": spec.eps, "target": spec.target,
           "candidates": "all" if pool_arg is None else [str(h) for h in spec.heads], "r": args.r,
           "score": "generalized Ships: sum of the r principal angles, degrees"}
    header = {"run": run, "provenance": provenance(model, seeds=None, judge=None, decoding=None)}
    n = len(spec.heads)
    from ..distributed import broadcast, is_main

    # Under `accelerate launch` only the main process touches the file; the others get its finished steps.
    writer = ResultsWriter(out, header, SCOREBOARD_COLUMNS, key="step",
                           group_size=lambda step: n - (int(step) - 1), overwrite=args.overwrite) if is_main() else None
    done = []
    if writer is not None and writer.resumed_rows:
        for step in range(1, MAX_STEPS + 1):
            rows = [r for r in writer.resumed_rows if int(r["step"]) == step]
            if not rows:
                break
            done.append(rows)
        print(f"resuming {out}: steps 1..{len(done)} already done", file=sys.stderr)
    done = broadcast(done)
    print(f"Sahara over {n} heads ({spec.method} on {spec.target}, eps {spec.eps:g}), {args.steps} steps, "
          f"{len(prompts.prompts)} queries from {prompts.name}, r={args.r} -> {out}", file=sys.stderr)
    result = sahara(model, tok, prompts.prompts, args.steps, spec.method, spec.eps, target=spec.target, r=args.r,
                    template=args.template, system_prompt=args.system_prompt, candidates=spec.heads,
                    batch_size=args.batch_size, done_steps=done, on_step=writer.append if writer else None,
                    progress=not args.quiet)
    if not is_main():
        return 0
    table, _ = read_results(out)
    for step in range(1, args.steps + 1):
        t = table[table["step"] == step].sort_values("rank").head(5)
        print(f"\nstep {step} (group before: {t['group_before'].iloc[0] or '-'}): top 5 of {len(table[table['step'] == step])}")
        print(tabulate(t[["rank", "head_name", "score"]], headers=["rank", "head", "generalized Ships (deg)"],
                       tablefmt="github", floatfmt=".4g", showindex=False))
    print(f"\nSahara group: {', '.join(map(str, result.group))}\nscoreboard: {out}")
    return 0
