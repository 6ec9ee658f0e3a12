"""``safetyheads`` command line: thin wrappers over the library.

Bad input ends with ``safetyheads: error: <what to fix>`` and exit status 2; finished work is
already on disk, and rerunning the same command resumes it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import traceback
from pathlib import Path

from .errors import SafetyheadsError
from .outputs import DEFAULT_OUT_DIR, check_output, check_writable_folder

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DEBUG_ENV = "SAFETYHEADS_DEBUG"
COMMAND_MODULES = ("datasets", "generate", "judge", "sahara", "asr", "organisms")
SHIPS_COLUMNS = ["prompt_id", "prompt", "layer", "head", "head_name", "ships"]


class UsageError(SafetyheadsError):
    """What argparse found wrong with the command line."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse with its complaints raised as one-line errors (``main`` prints them) instead of a
    usage block and ``sys.exit``; subcommand parsers inherit the class. Each parser takes
    ``--debug``, so it may come before or after the subcommand."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help=f"show the full traceback of an error (or set {DEBUG_ENV}=1)")

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    from .models import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"embedded model name, .gguf file, local folder, or cached Hub id (default: {DEFAULT_MODEL})")
    p.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="weights dtype (default float32; half precision is meant for GPUs)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="attention kernel (default sdpa)")
    p.add_argument("--allow-download", action="store_true", help="let transformers download a Hub model")
    p.add_argument("--trust-remote-code", action="store_true", help="run a Hub model's own modeling code")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice; use 1 on a busy machine)")


def add_prompt_args(p: argparse.ArgumentParser):
    """--data/--column/--limit/--prompt/--template/--system-prompt; returns the argument group."""
    from .data import BUNDLED
    from .prompts import TEMPLATES

    src = p.add_argument_group("prompts")
    src.add_argument("--data", help=f"bundled set ({', '.join(BUNDLED)}) or .csv/.jsonl file (default maliciousinstruct)")
    src.add_argument("--column", help="column holding the prompts (default: input/Goal/goal/prompt/...)")
    src.add_argument("--limit", type=int, help="use only the first N prompts")
    src.add_argument("--prompt", action="append", help="a prompt given inline (repeatable)")
    src.add_argument("--template", default="paper", choices=TEMPLATES,
                     help="direct (raw query), paper (## Query:...## Answer:, default) or chat (model's template)")
    src.add_argument("--system-prompt", help="system prompt for --template chat")
    return src


def add_ablation_args(p: argparse.ArgumentParser, heads_required: bool) -> None:
    from .ablation import METHODS, TARGETS

    p.add_argument("--heads", required=heads_required,
                   help="comma-separated heads, e.g. L2H26,L3H8 (0-indexed layer and head)")
    p.add_argument("--method", default="ua", choices=METHODS, help="ua, sc, mean or zero (default ua)")
    p.add_argument("--eps", type=float, default=1e-5, help="scaling factor for ua/sc (default 1e-5)")
    p.add_argument("--target", default=None, choices=TARGETS,
                   help="q, k, v or out (default: q for ua/mean, out for sc/zero)")


def load_from_args(args):
    from .models import load_model

    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise SafetyheadsError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    from .distributed import device_for_process

    quiet = getattr(args, "quiet", False)
    t0 = time.time()
    with _no_progress_bars(quiet):
        model, tok = load_model(args.model, dtype=args.dtype, device=device_for_process(args.device),
                                attn_implementation=args.attn, revision=args.revision,
                                allow_download=args.allow_download, trust_remote_code=args.trust_remote_code)
    if not quiet:
        print(f"loaded {args.model} in {time.time() - t0:.1f} s", file=sys.stderr)
    return model, tok


@contextlib.contextmanager
def _no_progress_bars(active: bool):
    """Hide transformers' weight-loading bar (for --quiet), then restore its setting."""
    if not active:
        yield
        return
    from transformers.utils import logging as hf_logging  # heavy: imported only when a model loads anyway

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _first_line(path: Path) -> str:
    """The first line of a text file ("" when unreadable): tells a table this command wrote before."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\n")
    except (OSError, UnicodeDecodeError):
        return ""


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(text).name or text).strip("-")


def cmd_ships(args) -> int:
    from tabulate import tabulate

    from .ablation import AblationSpec
    from .data import PromptSet, load_prompts
    from .heads import all_heads, parse_heads
    from .prompts import check_fits, context_length, encode_prompt
    from .provenance import model_source, provenance
    from .results import ResultsWriter, check_results_file, read_results
    from .ships import STRATEGIES, check_prob_floor, ships_scores, top_heads

    if args.prompt and args.data is not None:
        raise SafetyheadsError("give --data or --prompt, not both")
    if args.batch_size < 1:
        raise SafetyheadsError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.strategy not in STRATEGIES:
        raise SafetyheadsError(f"--strategy must be one of {', '.join(STRATEGIES)}")
    check_prob_floor(args.prob_floor, "--prob-floor")
    if args.top < 1:
        raise SafetyheadsError(f"--top must be >= 1 (how many heads to print), got {args.top}")
    if args.out is not None:  # an empty --out is refused, not taken for the default
        check_output(args.out, inputs={"--data": args.data}, others={"--csv": args.csv}, overwrite=args.overwrite,
                     resumable=True)
        check_results_file(Path(args.out), args.overwrite)
    else:
        check_writable_folder(DEFAULT_OUT_DIR, "--out")
    if args.csv is not None:
        if Path(args.csv).suffix != ".csv":
            raise SafetyheadsError(f"--csv must name a .csv file, got {args.csv!r}")
        check_output(args.csv, "--csv", inputs={"--data": args.data}, others={"--out": args.out},
                     overwrite=args.overwrite, replaceable=lambda p: _first_line(p) == ",".join(SHIPS_COLUMNS))
    if args.prompt:
        import hashlib

        blob = "\n".join(args.prompt).encode()
        prompts = PromptSet("command-line", tuple(args.prompt), hashlib.sha256(blob).hexdigest(), "--prompt")
        if any(not p.strip() for p in prompts.prompts):
            raise SafetyheadsError("--prompt must not be empty")
    else:
        prompts = load_prompts("maliciousinstruct" if args.data is None else args.data, column=args.column, limit=args.limit)
    heads_arg = parse_heads(args.heads) if args.heads is not None else None  # "" is an error, not all heads
    AblationSpec(heads_arg or ("L0H0",), args.method, args.eps, args.target)  # fail on bad spec before loading

    model, tok = load_from_args(args)
    heads = heads_arg or all_heads(model)
    spec = AblationSpec(heads, args.method, args.eps, args.target).check(model)
    limit = context_length(model, tok)
    for i, p in enumerate(prompts.prompts):  # template and length problems surface before any compute
        check_fits(encode_prompt(tok, p, args.template, args.system_prompt).shape[1], limit, i, p)
    src = model_source(model)
    out = Path(args.out or DEFAULT_OUT_DIR / f"ships_{_slug(src['model'])}_{spec.method}-{spec.target}_{args.template}.jsonl")
    if not args.out:
        check_output(out, "--out", overwrite=args.overwrite, resumable=True)
        check_results_file(out, args.overwrite)
    run = {
        "kind": "ships", "model": src.get("model"), "model_sha256": src.get("sha256"), "revision": src.get("revision"),
        "dtype": src.get("dtype"), "dataset": prompts.provenance(), "template": args.template,
        "system_prompt": args.system_prompt, "method": spec.method, "eps": spec.eps, "target": spec.target,
        "heads": "all" if heads_arg is None else [str(h) for h in spec.heads], "prob_floor": args.prob_floor,
    }
    header = {"run": run, "provenance": provenance(model, seeds=None, judge=None, decoding=None)}
    columns = SHIPS_COLUMNS
    from .distributed import broadcast, is_main

    # Under `accelerate launch` only the main process touches the file; the others learn what is done.
    writer = ResultsWriter(out, header, columns, key="prompt_id", group_size=len(spec.heads),
                           overwrite=args.overwrite) if is_main() else None
    done = broadcast(sorted(writer.done) if writer else None)
    todo = [(i, p) for i, p in enumerate(prompts.prompts) if str(i) not in done]
    if done and is_main():
        print(f"resuming {out}: {len(done)} of {len(prompts.prompts)} prompts already done", file=sys.stderr)

    def save(pid, rows):
        writer.append(pid, [{**r, "prompt": prompts.prompts[pid]} for r in rows])

    print(f"Ships of {len(spec.heads)} heads ({spec.method} on {spec.target}, eps {spec.eps:g}) on "
          f"{len(todo)} prompts from {prompts.name}, template {args.template!r} -> {out}", file=sys.stderr)
    if todo:
        ships_scores(model, tok, [p for _, p in todo], spec.heads, spec.method, spec.eps, args.template,
                     target=spec.target, system_prompt=args.system_prompt, strategy=args.strategy,
                     batch_size=args.batch_size, prob_floor=args.prob_floor, prompt_ids=[i for i, _ in todo],
                     progress=not args.quiet, on_prompt=save)
    if not is_main():
        return 0
    table, _ = read_results(out)
    if args.csv:
        table.to_csv(args.csv, index=False)
    best = top_heads(table, args.top)
    best.insert(0, "rank", range(1, len(best) + 1))
    print(f"\nTop {len(best)} heads by mean Ships over {table['prompt_id'].nunique()} prompts "
          f"({spec.method} on {spec.target}, template {args.template}):")
    print(tabulate(best[["rank", "head_name", "mean_ships", "std_ships", "n_prompts"]],
                   headers=["rank", "head", "mean Ships", "std", "prompts"], tablefmt="github",
                   floatfmt=".4g", showindex=False))
    print(f"\nall scores: {out}")
    return 0


def cmd_export(args) -> int:
    from .ablation import AblationSpec
    from .heads import parse_heads
    from .surgery import export_ablated

    spec = AblationSpec(parse_heads(args.heads), args.method, args.eps, args.target)
    # The source model's own folder is an input: exporting into it would replace its weights.
    out = check_output(args.out, inputs={"--model": args.model}, overwrite=args.overwrite, folder=True)
    model, tok = load_from_args(args)
    export_ablated(model, spec, out_dir=out, tokenizer=tok)
    print(f"wrote {out} ({spec.method} on {spec.target} of {', '.join(map(str, spec.heads))}, eps {spec.eps:g}); "
          f"load it with AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return 0


def cmd_models(args) -> int:
    from tabulate import tabulate

    from .arch import SUPPORTED_FAMILIES
    from .models import EMBEDDED_MODELS, available_models, cache_dir, load_model

    if args.prepare:
        # Dequantise every installed embedded model into the cache and load every organism once
        # (adapter sha256 checked, merge exercised), so that later runs start offline and fast:
        # the Docker image runs this at build time.
        from .organisms import ORGANISMS

        for name in (*EMBEDDED_MODELS, *ORGANISMS):
            model, _ = load_model(name, device="cpu")
            src = model.safetyheads_source
            print(f"ready: {name} ({src.get('kind')}, sha256 {str(src.get('adapter_sha256') or src.get('sha256'))[:16]}...)")
            del model
    rows = available_models()
    print(tabulate(rows, headers="keys", tablefmt="github"))
    print(f"\ncache: {cache_dir()}   supported families: {SUPPORTED_FAMILIES}")
    print("also accepted by --model: a .gguf file, or a local folder with config.json and *.safetensors")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .ships import DEFAULT_BATCH_SIZE, STRATEGIES

    parser = OneLineArgumentParser(prog="safetyheads", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"safetyheads {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

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

    p = sub.add_parser("export", help="write an ablation into the weights and save a plain checkpoint")
    add_model_args(p)
    add_ablation_args(p, heads_required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("models", help="list the models available offline")
    p.add_argument("--prepare", action="store_true",
                   help="first dequantise the embedded models into the cache and check that every organism loads")
    p.set_defaults(func=cmd_models)

    # Further subcommands live in safetyheads/commands/<name>.py, each with register(subparsers).
    import importlib

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def error_message(e: BaseException) -> str:
    """One line for any exception escaping a command: a SafetyheadsError says what to fix; an OS
    error names the file and what went wrong; anything else is named by its type (a bug, or a case
    no check foresaw) with a pointer to --debug."""
    if isinstance(e, SafetyheadsError):
        return _one_line(e) or type(e).__name__
    if isinstance(e, OSError) and e.strerror:
        where = f"{e.filename}: " if e.filename else ""
        also = f" -> {e.filename2}" if e.filename2 else ""
        return f"{where}{e.strerror}{also} (rerun with --debug for the traceback)"
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    first = f": {lines[0]}" if lines else ""
    return f"unexpected {type(e).__name__}{first} (rerun with --debug for the traceback)"


def _debug_requested(argv: list[str], args) -> bool:
    if os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        return True
    if args is not None:
        return bool(getattr(args, "debug", False))
    return "--debug" in argv  # the command line did not parse


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = None
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help and --version
            return e.code if isinstance(e.code, int) else 0
        return args.func(args)
    except KeyboardInterrupt:
        print("safetyheads: interrupted; finished prompts are saved, rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # every error ends as one line; the traceback only when asked for
        if _debug_requested(argv, args) and not isinstance(e, UsageError):  # argparse's own have none worth showing
            traceback.print_exc()
        print(f"safetyheads: error: {error_message(e)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
