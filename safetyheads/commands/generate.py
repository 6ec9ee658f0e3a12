"""``safetyheads generate``: responses to a prompt set, plain or under a head ablation, resumable."""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from collections import Counter
from pathlib import Path

from ..ablation import AblationSpec, GQAGroupWarning
from ..distributed import is_main
from ..errors import ResultsError, SafetyheadsError
from ..generation import MODES, DecodingSpec
from ..heads import parse_heads
from ..jobs import GenerateJob
from ..query_level import QueryLevelJob
from ..outputs import DEFAULT_OUT_DIR, check_output, check_writable_folder, claim_output
from ..provenance import model_source, provenance
from ..results import ResultsWriter, check_results_file, read_results
from .args import (add_ablation_args, add_model_args, add_output_args, add_prompt_args, check_batch_size,
                   load_from_args, prompts_from_args, resume_on_main, slug)

COLUMNS = ["prompt_id", "prompt", "template", "prefill", "response", "n_new_tokens", "stopped_at_eos",
           "ablation", "decoding"]
PER_QUERY_COLUMNS = [*COLUMNS, "ships_heads", "ships_scores"]  # --per-query-top-k: each prompt's own heads


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate responses, plain or under a head ablation (resumable)")
    add_generate_args(p)
    p.set_defaults(func=cmd_generate)


def add_generate_args(p) -> None:
    """Every option of ``generate`` (``asr`` takes them all too)."""
    add_model_args(p)
    src = add_prompt_args(p)
    src.add_argument("--prefill", help="text appended verbatim to the formatted prompt, which the model continues "
                                       "(e.g. 'Sure, here is'); recorded with each response")
    add_ablation_args(p, heads_required=False)  # no --heads: the vanilla model
    p.add_argument("--per-query-top-k", type=int, metavar="K",
                   help="the paper's query-level protocol: ablate each prompt's own top-K Ships heads, scored on that "
                        "prompt (in --template, with --method/--eps/--target) among every head, or among --heads when "
                        "given; each row names its heads (ships_heads, best first) and their Ships (ships_scores)")
    dec = p.add_argument_group("decoding (paper: 128 new tokens; greedy, or top-k with k=5 at T=1)")
    dec.add_argument("--decoding", default="greedy", help=f"{' or '.join(MODES)} (default greedy)")
    dec.add_argument("--k", type=int, default=5, help="top-k for --decoding topk (default 5)")
    dec.add_argument("--temperature", type=float, default=1.0, help="temperature for --decoding topk (default 1)")
    dec.add_argument("--max-new-tokens", type=int, default=128, help="stop after this many new tokens (default 128)")
    dec.add_argument("--seed", type=int, default=0,
                     help="sampling seed; each prompt draws from its own generator seeded by (seed, prompt id), "
                          "so resumed runs reproduce (default 0)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (default 8)")
    add_output_args(p, "results file, .jsonl (default safetyheads-out/generate_<model>_<data>_<ablation>_"
                       "<template>_<decoding>_<hash>.jsonl)")


def default_out(run: dict) -> Path:
    """``safetyheads-out/generate_<model>_<dataset>_<ablation>_<template>_<decoding>_<hash>.jsonl``; the
    hash covers every run setting, so two different runs never share a default file."""
    abl = run["ablation"]
    if abl is None:
        tag = "vanilla"
    elif "per_query_top_k" in abl:
        tag = f"{abl['method']}-{abl['target']}-own-top{abl['per_query_top_k']}"
    else:
        heads = "+".join(abl["heads"]) if len(abl["heads"]) <= 3 else f"{len(abl['heads'])}heads"
        tag = f"{abl['method']}-{abl['target']}-{heads}"
    digest = hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()[:8]
    name = "_".join(slug(str(x)) for x in (run["model"], run["dataset"]["dataset"], tag, run["template"],
                                            run["decoding"]["mode"], digest))
    return DEFAULT_OUT_DIR / f"generate_{name}.jsonl"


def check_outputs(args) -> None:
    """Before any model loads: the completions file can be written (``asr`` checks its judged file)."""
    judged = getattr(args, "judged_out", None)
    if args.out is not None:  # an empty --out is refused, not taken for the default
        check_output(args.out, inputs={"--data": args.data}, others={"--judged-out": judged},
                     overwrite=args.overwrite, resumable=True)
        check_results_file(Path(args.out), args.overwrite)
        if is_main():  # under `accelerate launch` only the main process writes it
            claim_output(args.out)
    else:
        check_writable_folder(DEFAULT_OUT_DIR, "--out")


def cmd_generate(args) -> int:
    generate(args)
    return 0


def generate(args) -> Path:
    """Run ``generate`` for ``args``; -> the results file (which ``asr`` judges next)."""
    # Everything that can be checked without the model fails before it loads.
    if args.prompt and args.data is not None:
        raise SafetyheadsError("give --data or --prompt, not both")
    check_batch_size(args)
    decoding = DecodingSpec(mode=args.decoding, k=args.k, temperature=args.temperature,
                            max_new_tokens=args.max_new_tokens, seed=args.seed)
    # An empty --heads is a mistake, not the vanilla model (that is no --heads at all).
    heads = parse_heads(args.heads) if args.heads is not None else None
    per_query = _check_per_query(args, heads)
    spec = AblationSpec(heads, args.method, args.eps, args.target) if heads is not None and not per_query else None
    if args.out and Path(args.out).suffix != ".jsonl":
        raise ResultsError(f"{args.out}: generate writes .jsonl results (responses do not fit a CSV table)")
    check_outputs(args)
    prompts = prompts_from_args(args)
    common = dict(template=args.template, system_prompt=args.system_prompt, prefill=args.prefill, decoding=decoding,
                  batch_size=args.batch_size)
    if per_query:  # --heads, when given, are the candidates each prompt's own top k are chosen from
        job = QueryLevelJob(prompts.prompts, k=args.per_query_top_k, candidates=heads, method=args.method,
                            eps=args.eps, target=args.target, **common)
    else:
        job = GenerateJob(prompts.prompts, ablation=spec, **common)

    model, tok = load_from_args(args)
    if per_query:
        job = job.for_model(model)  # names every head of the model when --heads is not given
    else:
        job.check(model)
    job.check_fits(model, tok)  # template and length problems surface before any file is written
    src = model_source(model)
    run = {
        "kind": "generate", "model": src.get("model"), "model_sha256": src.get("sha256"),
        "revision": src.get("revision"), "dtype": src.get("dtype"), "dataset": prompts.provenance(),
        "template": args.template, "system_prompt": args.system_prompt, "prefill": args.prefill or None,
        "ablation": _ablation_record(job, spec, heads, per_query), "decoding": decoding.to_dict(),
    }
    out = Path(args.out) if args.out else default_out(run)
    if not args.out:
        check_output(out, "--out", overwrite=args.overwrite, resumable=True)
        check_results_file(out, args.overwrite)
        if is_main():
            claim_output(out)
    seeds = {"sampling": decoding.seed} if decoding.sampling else None
    header = {"run": run, "provenance": provenance(model, seeds=seeds, decoding=decoding.to_dict(), judge=None)}
    # Under `accelerate launch` only the main process touches the file; the others learn what is done.
    sink = ResultsWriter(out, header, PER_QUERY_COLUMNS if per_query else COLUMNS, key="prompt_id", group_size=1,
                         overwrite=args.overwrite) if is_main() else None
    finished = resume_on_main(job, sink)
    if finished and is_main():
        print(f"resuming {out}: {len(finished)} of {len(prompts.prompts)} prompts already done", file=sys.stderr)
    print(f"generating for {len(job.todo(finished))} prompts from {prompts.name} ({_what(job, spec, decoding)}) "
          f"-> {out}", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GQAGroupWarning)  # job.check above has warned once
        job.run(model, tok, sink, finished=finished, progress=not args.quiet)
    if is_main():
        _summarise(out, per_query)
    return out


def _check_per_query(args, heads) -> bool:
    """Whether ``--per-query-top-k`` was given, after checking it against ``--heads``."""
    k = args.per_query_top_k
    if k is None:
        return False
    if k < 1:
        raise SafetyheadsError(f"--per-query-top-k must be >= 1 (heads ablated per prompt), got {k}")
    if heads is not None and len(heads) < k:
        raise SafetyheadsError(f"--per-query-top-k {k} picks {k} heads per prompt "
                               f"from --heads, which names {len(heads)}: name more heads or pick fewer")
    return True


def _ablation_record(job, spec, heads, per_query: bool) -> dict | None:
    """The run header's ``ablation``: the fixed heads' spec, or how each prompt's own heads are chosen."""
    if per_query:
        return {"per_query_top_k": job.k, "method": job.method, "eps": job.eps, "target": job.target,
                "candidates": "all" if heads is None else [str(h) for h in job.candidates]}
    return None if spec is None else spec.to_dict()


def _what(job, spec, decoding: DecodingSpec) -> str:
    """The ablation, decoding, length and template of a run, in words (its first line on stderr)."""
    if isinstance(job, QueryLevelJob):
        what = (f"{job.method} on {job.target} of each prompt's own top-{job.k} Ships heads among "
                f"{len(job.candidates)}, eps {job.eps:g}")
    else:
        what = "no ablation" if spec is None else (
            f"{spec.method} on {spec.target} of {', '.join(map(str, spec.heads))}, eps {spec.eps:g}")
    how = "greedy" if not decoding.sampling else f"top-{decoding.k} sampling, T={decoding.temperature:g}, seed {decoding.seed}"
    return f"{what}; {how}; up to {decoding.max_new_tokens} new tokens; template {job.template!r}"


def _summarise(out: Path, per_query: bool) -> None:
    table, _ = read_results(out)
    n_eos = int(table["stopped_at_eos"].sum()) if len(table) else 0
    mean_tokens = float(table["n_new_tokens"].mean()) if len(table) else 0.0
    print(f"{len(table)} responses ({n_eos} stopped at EOS, {mean_tokens:.1f} new tokens on average): {out}")
    if per_query and len(table):
        print(f"each prompt's own top head (ships_heads[0]), most frequent first: {most_frequent_heads(table)}")


def most_frequent_heads(table, shown: int = 5) -> str:
    """``L5H6 (33 of 48), L7H2 (9 of 48), ...``: how often each head is a prompt's own top head."""
    counts = Counter(heads[0] for heads in table["ships_heads"])
    n = len(table)
    listed = ", ".join(f"{head} ({count} of {n})" for head, count in counts.most_common(shown))
    return listed + (f", {len(counts) - shown} more" if len(counts) > shown else "")
