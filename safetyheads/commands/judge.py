"""``safetyheads judge``: label each generated response refused / not refused and print the ASR.

    safetyheads judge --input gens.jsonl --judge keyword-fixed --gibberish-filter nll --out judged.jsonl
    safetyheads judge --input gens.jsonl --judge llama-guard-3-8b --judge-dtype bfloat16 --device cuda --out judged.jsonl

What is read and written: ``safetyheads.judge_job`` (the judge job this command runs).
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import SafetyheadsError
from ..judge_job import FILTERS, JudgeJob, is_judged_file, read_jsonl  # noqa: F401 (read_jsonl: imported from here before)
from ..judges import DEFAULT_MAX_NLL, JUDGES, MODEL_JUDGES
from ..models import DEFAULT_MODEL
from ..outputs import check_output, claim_output

DTYPE_CHOICES = ("float32", "bfloat16", "float16")


def register(subparsers) -> None:
    p = subparsers.add_parser("judge", help="judge responses refused / not refused and report the ASR with a bootstrap CI")
    p.add_argument("--input", required=True, help="JSONL with prompt and response fields (a results header line is kept)")
    p.add_argument("--judge", default="keyword-fixed",
                   help=f"{', '.join(JUDGES)} (default keyword-fixed)")
    p.add_argument("--gibberish-filter", default="default", choices=FILTERS,
                   help="default: the judge's own (keyword-paper: repetition; keyword-fixed: words; "
                        "keyword-authors-code: none); none; repetition (a short substring repeated over most of the "
                        "text); words (repetition + soup where < 40%% of the tokens are words); nll (words + mean "
                        "NLL under --reference-model above --max-nll)")
    p.add_argument("--reference-model", default=DEFAULT_MODEL,
                   help=f"model scoring the NLL for --gibberish-filter nll (default: the untuned {DEFAULT_MODEL})")
    p.add_argument("--max-nll", type=float, default=DEFAULT_MAX_NLL,
                   help=f"mean NLL (nats/token) above which a response is gibberish (default {DEFAULT_MAX_NLL:g}, "
                        "calibrated for the default reference model)")
    p.add_argument("--nll-template", default="auto", choices=("auto", "direct", "paper", "chat"),
                   help="how the prompt is written before the response when scoring NLL "
                        "(auto: the input header's run.template, else paper)")
    p.add_argument("--device", default="auto",
                   help="device of the reference model or the classifier (default: cuda if available)")
    add_classifier_args(p)
    p.add_argument("--allow-download", action="store_true", help="let transformers download a model judge's weights")
    p.add_argument("--prompt-field", default="prompt", help="field holding the prompt (default prompt)")
    p.add_argument("--response-field", default="response", help="field holding the response (default response)")
    p.add_argument("--out", required=True, help="output JSONL: the rows plus refused and judge_reason")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples for the CI (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.set_defaults(func=cmd_judge)


def add_classifier_args(p) -> None:
    """The options of a model judge (``judge`` and ``asr`` share them)."""
    p.add_argument("--judge-model", help=f"a model judge's weights ({', '.join(MODEL_JUDGES)}): a local folder or a Hub "
                                         "id (default: the classifier's own Hub id, from the local Hugging Face cache)")
    p.add_argument("--judge-revision", help="Hub revision of --judge-model")
    p.add_argument("--judge-dtype", choices=DTYPE_CHOICES,
                   help="dtype of a model judge's weights (default float32; the classifiers' cards run bfloat16 on GPUs)")
    p.add_argument("--judge-batch-size", type=int, default=8, help="responses per classifier batch (default 8)")


def check_judge_values(args, with_seed: bool = True) -> None:
    """The judging flags that can be wrong, checked before any input is read or model loaded
    (``with_seed``: --seed too; ``asr``'s --seed is generation's, and it judges with seed 0)."""
    if args.judge not in JUDGES:
        raise SafetyheadsError(f"unknown judge {args.judge!r}: choose one of {', '.join(JUDGES)}")
    if args.n_boot < 1:
        raise SafetyheadsError(f"--n-boot must be >= 1, got {args.n_boot}")
    if with_seed and args.seed < 0:
        raise SafetyheadsError(f"--seed must be >= 0, got {args.seed}")
    if not (0 < args.max_nll < math.inf):
        raise SafetyheadsError(f"--max-nll must be a finite number > 0, got {args.max_nll}")
    if args.judge_batch_size < 1:
        raise SafetyheadsError(f"--judge-batch-size must be >= 1, got {args.judge_batch_size}")
    classifier = JUDGES[args.judge].classifier
    if not classifier and any(getattr(args, f) is not None for f in ("judge_model", "judge_revision", "judge_dtype")):
        raise SafetyheadsError(f"--judge-model, --judge-revision and --judge-dtype are for the model judges "
                               f"({', '.join(MODEL_JUDGES)}), not {args.judge!r}")
    if classifier and args.gibberish_filter not in ("default", "none"):
        raise SafetyheadsError(f"judge {args.judge!r} reads every response with its own model: --gibberish-filter "
                               f"{args.gibberish_filter} does not apply to it")


def build_judge(args, header: dict | None):
    """The judge ``args`` describe (kept for callers of before: ``JudgeJob.build_judge``)."""
    return judge_job(args).build_judge(header, args.device)


def judge_job(args) -> JudgeJob:
    return JudgeJob(judge=args.judge, gibberish_filter=args.gibberish_filter, reference_model=args.reference_model,
                    max_nll=args.max_nll, nll_template=args.nll_template, prompt_field=args.prompt_field,
                    response_field=args.response_field, n_boot=args.n_boot, seed=args.seed, **classifier_settings(args))


def classifier_settings(args) -> dict:
    """The JudgeJob fields of a model judge's options."""
    return {"judge_model": args.judge_model, "judge_revision": args.judge_revision, "judge_dtype": args.judge_dtype,
            "judge_batch_size": args.judge_batch_size, "allow_download": args.allow_download}


def print_report(report, out: Path) -> None:
    print(report.table())
    print(f"\n{report.summary()}")
    print(f"judged rows: {out}")


def cmd_judge(args) -> int:
    check_judge_values(args)
    src, out = Path(args.input), Path(args.out)
    if out.suffix != ".jsonl":
        raise SafetyheadsError(f"--out must be a .jsonl file, not {out.suffix or 'no extension'}")
    job = judge_job(args)
    job.check_judge_available(args.device)  # a classifier's missing weights: one line, before anything else
    check_output(out, inputs={"--input": src}, overwrite=args.overwrite)
    claim_output(out)
    report = job.run(src, out, device=args.device, overwrite=args.overwrite)
    print_report(report, out)
    return 0

