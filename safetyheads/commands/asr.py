"""``safetyheads asr``: generate (resumable) and judge in one command; prints ASR with its bootstrap CI.

The completions stay on disk (``--out``), so other judges can re-run on them with
``safetyheads judge`` without regenerating; the judged rows go to ``<out stem>.judged-<judge>.jsonl``.
"""

from __future__ import annotations

from pathlib import Path

from ..distributed import is_main
from ..errors import SafetyheadsError
from ..judge_job import FILTERS, JudgeJob, is_judged_file
from ..judges import DEFAULT_MAX_NLL, JUDGES
from ..models import DEFAULT_MODEL
from ..outputs import check_output, claim_output
from .generate import add_generate_args, check_outputs, generate
from .judge import add_classifier_args, check_judge_values, classifier_settings, print_report


def register(subparsers) -> None:
    p = subparsers.add_parser("asr", help="generate under an ablation (or none) and judge: attack success rate with CI")
    add_generate_args(p)
    j = p.add_argument_group("judging (see `safetyheads judge --help`)")
    j.add_argument("--judge", default="keyword-fixed", help=f"{', '.join(JUDGES)} (default keyword-fixed)")
    j.add_argument("--gibberish-filter", default="default", choices=FILTERS,
                   help="the judge's default, none, repetition, words, or nll (reference-model fluency)")
    j.add_argument("--reference-model", default=None, help="model scoring NLL for --gibberish-filter nll (default: the embedded model)")
    j.add_argument("--max-nll", type=float, default=DEFAULT_MAX_NLL, help=f"NLL threshold for the nll filter (default {DEFAULT_MAX_NLL:g})")
    j.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples for the CI (default 10000)")
    j.add_argument("--judged-out", help="judged rows (default: <out>.judged-<judge>.jsonl beside the completions)")
    add_classifier_args(j)  # --allow-download and --device are the generating model's too
    p.set_defaults(func=cmd_asr)


def judged_path(args, completions: Path) -> Path:
    return Path(args.judged_out) if args.judged_out is not None else completions.with_name(
        f"{completions.stem}.judged-{args.judge}.jsonl")


def check_judged_out(args, completions: Path) -> None:
    """The judged file is redone on every run, so an existing one is replaced only when it is the
    judged file of these completions (or with --overwrite)."""
    judged = judged_path(args, completions)
    if judged.suffix != ".jsonl":
        raise SafetyheadsError(f"--judged-out must be a .jsonl file, not {judged.suffix or 'no extension'}")
    check_output(judged, "--judged-out", inputs={"--data": args.data}, others={"--out": completions},
                 overwrite=args.overwrite, replaceable=lambda p: is_judged_file(p, completions))
    if is_main():  # under `accelerate launch` only the main process judges
        claim_output(judged, "--judged-out")


def cmd_asr(args) -> int:
    # Before any generation: the judging settings, the completions file, and the judged file when
    # its path is known.
    check_judge_values(args, with_seed=False)
    job = JudgeJob(judge=args.judge, gibberish_filter=args.gibberish_filter,
                   reference_model=args.reference_model or DEFAULT_MODEL, max_nll=args.max_nll, n_boot=args.n_boot,
                   **classifier_settings(args))
    job.check_judge_available(args.device)  # a classifier's missing weights, before hours of generation
    check_outputs(args)
    if args.out is not None:
        check_judged_out(args, Path(args.out))
    elif args.judged_out is not None:
        check_output(args.judged_out, "--judged-out", inputs={"--data": args.data}, overwrite=args.overwrite,
                     replaceable=is_judged_file)
    completions = generate(args)
    if not is_main():  # under `accelerate launch` the main process judges
        return 0
    check_judged_out(args, completions)
    judged = judged_path(args, completions)
    print()
    # judging by rules is cheap and deterministic: always redone from the completions (a model judge resumes
    # from its partial file instead)
    print_report(job.run(completions, judged, device=args.device, overwrite=args.overwrite), judged)
    return 0
