"""``safetyheads generate``: responses to a prompt set, plain or under a head ablation, resumable."""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from pathlib import Path

from ..ablation import AblationSpec, GQAGroupWarning
from ..distributed import is_main
from ..errors import ResultsError, SafetyheadsError
from ..generation import MODES, DecodingSpec
from ..heads import parse_heads
from ..jobs import GenerateJob
from ..outputs import DEFAULT_OUT_DIR, check_output, check_writable_folder, claim_output
from ..provenance import model_source, provenance
from ..results import ResultsWriter, check_results_file, read_results
from .args import (add_ablation_args, add_model_args, add_output_args, add_prompt_args, check_batch_size,
                   load_from_args, prompts_from_args, resume_on_main, slug)

COLUMNS = ["prompt_id", "prompt", "template", "prefill", "response", "n_new_tokens", "stopped_at_eos",
           "ablation", "decoding"]


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
    spec = AblationSpec(parse_heads(args.heads), args.method, args.eps, args.target) if args.heads is not None else None
    if args.out and Path(args.out).suffix != ".jsonl":
        raise ResultsError(f"{args.out}: generate writes .jsonl results (responses do not fit a CSV table)")
    check_outputs(args)
    prompts = prompts_from_args(args)
    job = GenerateJob(prompts.prompts, template=args.template, system_prompt=args.system_prompt, prefill=args.prefill,
                      ablation=spec, decoding=decoding, batch_size=args.batch_size)

    model, tok = load_from_args(args)
    job.check(model)
    job.check_fits(model, tok)  # template and length problems surface before any file is written
    src = model_source(model)
    run = {
        "kind": "generate", "model": src.get("model"), "model_sha256": src.get("sha256"),
        "revision": src.get("revision"), "dtype": src.get("dtype"), "dataset": prompts.provenance(),
        "template": args.template, "system_prompt": args.system_prompt, "prefill": args.prefill or None,
        "ablation": None if spec is None else spec.to_dict(), "decoding": decoding.to_dict(),
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
    sink = ResultsWriter(out, header, COLUMNS, key="prompt_id", group_size=1, overwrite=args.overwrite) if is_main() else None
    finished = resume_on_main(job, sink)
    if finished and is_main():
        print(f"resuming {out}: {len(finished)} of {len(prompts.prompts)} prompts already done", file=sys.stderr)

    what = "no ablation" if spec is None else (
        f"{spec.method} on {spec.target} of {', '.join(map(str, spec.heads))}, eps {spec.eps:g}")
    how = "greedy" if not decoding.sampling else f"top-{decoding.k} sampling, T={decoding.temperature:g}, seed {decoding.seed}"
    print(f"generating for {len(job.todo(finished))} prompts from {prompts.name} ({what}; {how}; up to "
          f"{decoding.max_new_tokens} new tokens; template {args.template!r}) -> {out}", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GQAGroupWarning)  # job.check above has warned once
        job.run(model, tok, sink, finished=finished, progress=not args.quiet)
    if not is_main():
        return out
    table, _ = read_results(out)
    n_eos = int(table["stopped_at_eos"].sum()) if len(table) else 0
    mean_tokens = float(table["n_new_tokens"].mean()) if len(table) else 0.0
    print(f"{len(table)} responses ({n_eos} stopped at EOS, {mean_tokens:.1f} new tokens on average): {out}")
    return out
