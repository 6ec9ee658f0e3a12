"""What the subcommands share: their model, prompt and ablation options, loading the model they name,
reading the prompts they name, and naming default outputs."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import sys
import time
from pathlib import Path

import torch

from .. import models
from ..ablation import METHODS, TARGETS
from ..data import BUNDLED, PromptSet, load_prompts
from ..distributed import broadcast, device_for_process, is_main
from ..errors import SafetyheadsError
from ..prompts import TEMPLATES

DEFAULT_DATA = "maliciousinstruct"


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=models.DEFAULT_MODEL,
                   help=f"embedded model name, .gguf file, local folder, or cached Hub id (default: {models.DEFAULT_MODEL})")
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
    src = p.add_argument_group("prompts")
    src.add_argument("--data", help=f"bundled set ({', '.join(BUNDLED)}) or .csv/.jsonl file (default {DEFAULT_DATA})")
    src.add_argument("--column", help="column holding the prompts (default: input/Goal/goal/prompt/...)")
    src.add_argument("--limit", type=int, help="use only the first N prompts")
    src.add_argument("--prompt", action="append", help="a prompt given inline (repeatable)")
    src.add_argument("--template", default="paper", choices=TEMPLATES,
                     help="direct (raw query), paper (## Query:...## Answer:, default) or chat (model's template)")
    src.add_argument("--system-prompt", help="system prompt for --template chat")
    return src


def add_ablation_args(p: argparse.ArgumentParser, heads_required: bool) -> None:
    p.add_argument("--heads", required=heads_required,
                   help="comma-separated heads, e.g. L2H26,L3H8 (0-indexed layer and head)")
    p.add_argument("--method", default="ua", choices=METHODS, help="ua, sc, mean or zero (default ua)")
    p.add_argument("--eps", type=float, default=1e-5, help="scaling factor for ua/sc (default 1e-5)")
    p.add_argument("--target", default=None, choices=TARGETS,
                   help="q, k, v or out (default: q for ua/mean, out for sc/zero)")


def add_output_args(p: argparse.ArgumentParser, out_help: str) -> None:
    """--out (a results file the command resumes), --overwrite, --quiet."""
    p.add_argument("--out", help=out_help)
    p.add_argument("--overwrite", action="store_true", help="replace --out instead of resuming it")
    p.add_argument("--quiet", action="store_true", help="no progress bar or loading messages")


def check_batch_size(args) -> None:
    if args.batch_size < 1:
        raise SafetyheadsError(f"--batch-size must be >= 1, got {args.batch_size}")


def prompts_from_args(args) -> PromptSet:
    """The prompts given inline (--prompt) or the set named by --data (default MaliciousInstruct)."""
    if args.prompt:
        if any(not p.strip() for p in args.prompt):
            raise SafetyheadsError("--prompt must not be empty")
        blob = "\n".join(args.prompt).encode()
        return PromptSet("command-line", tuple(args.prompt), hashlib.sha256(blob).hexdigest(), "--prompt")
    return load_prompts(DEFAULT_DATA if args.data is None else args.data, column=args.column, limit=args.limit)


def load_from_args(args):
    """The model and tokenizer of --model (and the other model options); -> (model, tok)."""
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise SafetyheadsError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    quiet = getattr(args, "quiet", False)
    t0 = time.time()
    with _no_progress_bars(quiet):
        model, tok = models.load_model(args.model, dtype=args.dtype, device=device_for_process(args.device),
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


def resume_on_main(job, sink):
    """What ``sink`` already holds whole (``job.finished``), read by the main process and handed to
    every process (under ``accelerate launch`` only the main process touches the file)."""
    return broadcast(job.finished(sink) if is_main() else None)


def first_line(path: Path) -> str:
    """The first line of a text file ("" when unreadable): tells a table this command wrote before."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\n")
    except (OSError, UnicodeDecodeError):
        return ""


def slug(text: str) -> str:
    """``text`` (a model name or path) as a piece of a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(text).name or text).strip("-")
