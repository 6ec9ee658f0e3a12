"""``safetyheads generate``: responses to a prompt set, plain or under a head ablation, resumable."""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from pathlib import Path

from ..errors import ResultsError, SafetyheadsError
from ..outputs import DEFAULT_OUT_DIR, check_output, check_writable_folder
from ..results import check_results_file

COLUMNS = ["prompt_id", "prompt", "template", "prefill", "response", "n_new_tokens", "stopped_at_eos",
           "ablation", "decoding"]


def default_out(run: dict) -> Path:
    """``safetyheads-out/generate_<model>_<dataset>_<ablation>_<template>_<decoding>_<hash>.jsonl``; the
    hash covers every run setting, so two different runs never share a default file."""
    from ..cli import _slug

    abl = run["ablation"]
    if abl is None:
        tag = "vanilla"
    else:
        heads = "+".join(abl["heads"]) if len(abl["heads"]) <= 3 else f"{len(abl['heads'])}heads"
        tag = f"{abl['method']}-{abl['target']}-{heads}"
    digest = hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()[:8]
    name = "_".join(_slug(str(x)) for x in (run["model"], run["dataset"]["dataset"], tag, run["template"],
                                             run["decoding"]["mode"], digest))
    return DEFAULT_OUT_DIR / f"generate_{name}.jsonl"


def cmd_generate(args) -> int:
    from ..ablation import AblationSpec, GQAGroupWarning
    from ..cli import load_from_args
    from ..data import PromptSet, load_prompts
    from ..generation import DecodingSpec, encode_for_generation, generate_responses
    from ..heads import parse_heads
    from ..prompts import check_fits, context_length
    from ..provenance import model_source, provenance
    from ..results import ResultsWriter, read_results

    # Everything that can be checked without the model fails before it loads.
    if args.prompt and args.data is not None:
        raise SafetyheadsError("give --data or --prompt, not both")
    if args.batch_size < 1:
        raise SafetyheadsError(f"--batch-size must be >= 1, got {args.batch_size}")
    decoding = DecodingSpec(mode=args.decoding, k=args.k, temperature=args.temperature,
                            max_new_tokens=args.max_new_tokens, seed=args.seed)
    # An empty --heads is a mistake, not the vanilla model (that is no --heads at all).
    spec = AblationSpec(parse_heads(args.heads), args.method, args.eps, args.target) if args.heads is not None else None
    if args.out and Path(args.out).suffix != ".jsonl":
        raise ResultsError(f"{args.out}: generate writes .jsonl results (responses do not fit a CSV table)")
    check_outputs(args)
    if args.prompt:
        if any(not p.strip() for p in args.prompt):
            raise SafetyheadsError("--prompt must not be empty")
        blob = "\n".join(args.prompt).encode()
        prompts = PromptSet("command-line", tuple(args.prompt), hashlib.sha256(blob).hexdigest(), "--prompt")
    else:
        prompts = load_prompts("maliciousinstruct" if args.data is None else args.data, column=args.column, limit=args.limit)

    model, tok = load_from_args(args)
    if spec is not None:
        spec.check(model)
    limit = context_length(model, tok)
    for i, p in enumerate(prompts.prompts):  # template and length problems surface before any file is written
        n_tokens = len(encode_for_generation(tok, p, args.template, args.system_prompt, args.prefill))
        check_fits(n_tokens, limit, i, p, new_tokens=decoding.max_new_tokens)
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
    seeds = {"sampling": decoding.seed} if decoding.sampling else None
    header = {"run": run, "provenance": provenance(model, seeds=seeds, decoding=decoding.to_dict(), judge=None)}
    from ..distributed import broadcast, is_main

    # Under `accelerate launch` only the main process touches the file; the others learn what is done.
    writer = ResultsWriter(out, header, COLUMNS, key="prompt_id", group_size=1, overwrite=args.overwrite) if is_main() else None
    done = broadcast(sorted(writer.done) if writer else None)
    todo = [i for i in range(len(prompts.prompts)) if str(i) not in done]
    if done and is_main():
        print(f"resuming {out}: {len(done)} of {len(prompts.prompts)} prompts already done", file=sys.stderr)

    what = "no ablation" if spec is None else (
        f"{spec.method} on {spec.target} of {', '.join(map(str, spec.heads))}, eps {spec.eps:g}")
    how = "greedy" if not decoding.sampling else f"top-{decoding.k} sampling, T={decoding.temperature:g}, seed {decoding.seed}"
    print(f"generating for {len(todo)} prompts from {prompts.name} ({what}; {how}; up to {decoding.max_new_tokens} "
          f"new tokens; template {args.template!r}) -> {out}", file=sys.stderr)

    def save(rows):
        for r in rows:
            writer.append(r["prompt_id"], [r])

    if todo:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GQAGroupWarning)  # spec.check above has warned once
            generate_responses(model, tok, [prompts.prompts[i] for i in todo], prompt_ids=todo, template=args.template,
                               system_prompt=args.system_prompt, ablation=spec, decoding=decoding,
                               prefill=args.prefill, batch_size=args.batch_size, progress=not args.quiet,
                               on_batch=save)
    args.generated_out = out  # for `asr`, which judges this file next
    if not is_main():
        return 0
    table, _ = read_results(out)
    n_eos = int(table["stopped_at_eos"].sum()) if len(table) else 0
    mean_tokens = float(table["n_new_tokens"].mean()) if len(table) else 0.0
    print(f"{len(table)} responses ({n_eos} stopped at EOS, {mean_tokens:.1f} new tokens on average): {out}")
    args.generated_out = out  # for `asr`, which judges this file next
    return 0


def check_outputs(args) -> None:
    """Before any model loads: the completions file can be written (``asr`` checks its judged file)."""
    judged = getattr(args, "judged_out", None)
    if args.out is not None:  # an empty --out is refused, not taken for the default
        check_output(args.out, inputs={"--data": args.data}, others={"--judged-out": judged},
                     overwrite=args.overwrite, resumable=True)
        check_results_file(Path(args.out), args.overwrite)
    else:
        check_writable_folder(DEFAULT_OUT_DIR, "--out")


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate responses, plain or under a head ablation (resumable)")
    add_generate_args(p)
    p.set_defaults(func=cmd_generate)


def add_generate_args(p) -> None:
    """Every option of ``generate`` (``asr`` takes them all too)."""
    from ..cli import add_ablation_args, add_model_args, add_prompt_args
    from ..data import BUNDLED
    from ..generation import MODES
    from ..prompts import TEMPLATES

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
    p.add_argument("--out", help="results file, .jsonl (default safetyheads-out/generate_<model>_<data>_<ablation>_"
                                 "<template>_<decoding>_<hash>.jsonl)")
    p.add_argument("--overwrite", action="store_true", help="replace --out instead of resuming it")
    p.add_argument("--quiet", action="store_true", help="no progress bar or loading messages")
