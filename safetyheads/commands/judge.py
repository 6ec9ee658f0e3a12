"""``safetyheads judge``: label each generated response refused / not refused and print the ASR.

    safetyheads judge --input gens.jsonl --judge keyword-fixed --gibberish-filter nll --out judged.jsonl

Input: JSONL rows with ``prompt`` and ``response`` (other fields are kept); a first line
``{"header": {...}}`` (as ``safetyheads.results`` writes) is carried into the output header, with
the judge's name and settings added under ``"judge"`` (and in ``provenance.judge`` when the header
has that slot). Output: the same rows plus ``refused`` (bool) and ``judge_reason``. A row that
generation stopped early (``stopped_early``) may only be judged by a judge in its ``settled_for``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

from ..errors import SafetyheadsError
from ..outputs import check_output, same_path

FILTERS = ("default", "none", "repetition", "words", "nll")


class _NonStandardNumber(ValueError):
    pass


def _not_json(constant: str):
    """json.loads reads NaN and Infinity by default; standard JSON has neither."""
    raise _NonStandardNumber(constant)


def read_jsonl(path: Path, prompt_field: str = "prompt", response_field: str = "response") -> tuple[dict | None, list[dict]]:
    """-> (header or None, rows); one-line SafetyheadsError for anything malformed."""
    if not path.is_file():
        raise SafetyheadsError(f"no such input file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SafetyheadsError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    header, rows = None, []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_not_json)
        except _NonStandardNumber as e:
            raise SafetyheadsError(f"{path} line {lineno} holds {e}, which is not JSON (judged files are standard JSON)") from None
        except json.JSONDecodeError as e:
            hint = " (judge reads JSONL: one JSON object per line)" if path.suffix != ".jsonl" else ""
            raise SafetyheadsError(f"{path} line {lineno} is not valid JSON: {e.msg} at column {e.colno}{hint}") from None
        if not isinstance(obj, dict):
            raise SafetyheadsError(f"{path} line {lineno} is a JSON {type(obj).__name__}, not an object")
        if header is None and not rows and set(obj) == {"header"}:
            if not isinstance(obj["header"], dict):
                raise SafetyheadsError(f"{path} line {lineno}: 'header' must be an object")
            header = obj["header"]
            continue
        for f in (prompt_field, response_field):
            if f not in obj:
                raise SafetyheadsError(f"{path} line {lineno} has no {f!r} field (it has: {', '.join(obj) or 'none'})")
            if not isinstance(obj[f], str):
                raise SafetyheadsError(f"{path} line {lineno}: {f!r} is {type(obj[f]).__name__}, not a string")
        rows.append(obj)
    if not rows:
        raise SafetyheadsError(f"{path} holds no responses to judge")
    return header, rows


def build_judge(args, header: dict | None):
    from ..judges import JUDGES, GibberishFilter, get_judge
    from ..prompts import TEMPLATES

    if args.judge not in JUDGES:
        raise SafetyheadsError(f"unknown judge {args.judge!r}: choose one of {', '.join(JUDGES)}")
    if args.gibberish_filter == "default":
        return get_judge(args.judge)
    if args.gibberish_filter == "none":
        return get_judge(args.judge, gibberish=None)
    if args.gibberish_filter == "repetition":
        return get_judge(args.judge, gibberish=GibberishFilter(min_word_fraction=None))
    if args.gibberish_filter == "words":
        return get_judge(args.judge, gibberish=GibberishFilter())
    template = args.nll_template
    if template == "auto":
        run_template = ((header or {}).get("run") or {}).get("template")
        template = run_template if run_template in TEMPLATES else "paper"
    from ..models import load_model

    t0 = time.time()
    model, tok = load_model(args.reference_model, device=args.device)
    print(f"loaded reference model {args.reference_model} in {time.time() - t0:.1f} s", file=sys.stderr)
    return get_judge(args.judge, gibberish=GibberishFilter(model, tok, max_nll=args.max_nll, template=template))


def check_judge_values(args) -> None:
    """The judging settings that can be wrong, checked before any input is read or model loaded."""
    from ..judges import JUDGES

    if args.judge not in JUDGES:
        raise SafetyheadsError(f"unknown judge {args.judge!r}: choose one of {', '.join(JUDGES)}")
    if args.n_boot < 1:
        raise SafetyheadsError(f"--n-boot must be >= 1, got {args.n_boot}")
    if args.seed < 0:
        raise SafetyheadsError(f"--seed must be >= 0, got {args.seed}")
    if not (0 < args.max_nll < math.inf):
        raise SafetyheadsError(f"--max-nll must be a finite number > 0, got {args.max_nll}")


def is_judged_file(path: Path, input_path: "str | Path | None" = None) -> bool:
    """Whether ``path`` is a file ``judge`` wrote (of ``input_path``, when given): what a rerun may replace."""
    try:
        with open(path, encoding="utf-8") as f:
            judge = json.loads(f.readline())["header"]["judge"]
        return input_path is None or same_path(judge["input"], input_path)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return False


def cmd_judge(args) -> int:
    from ..judges import asr_report, check_rejudge
    from ..provenance import provenance

    check_judge_values(args)
    src, out = Path(args.input), Path(args.out)
    if out.suffix != ".jsonl":
        raise SafetyheadsError(f"--out must be a .jsonl file, not {out.suffix or 'no extension'}")
    check_output(out, inputs={"--input": src}, overwrite=args.overwrite)
    header, rows = read_jsonl(src, args.prompt_field, args.response_field)
    for r in rows:  # before build_judge, which may load a reference model
        check_rejudge(r, args.judge)
    judge = build_judge(args, header)
    verdicts = judge.judge([r[args.response_field] for r in rows], [r[args.prompt_field] for r in rows])
    report = asr_report(verdicts, judge, n_boot=args.n_boot, seed=args.seed)

    settings = judge.settings()
    new_header = dict(header or {})
    if isinstance(new_header.get("provenance"), dict) and "judge" in new_header["provenance"]:
        new_header["provenance"] = {**new_header["provenance"], "judge": settings}
    new_header["judge"] = {
        **settings,
        "input": str(src), "input_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
        "fields": {"prompt": args.prompt_field, "response": args.response_field},
        "report": report.as_dict(),
        "provenance": provenance(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    # Serialised before the file opens: a value JSON cannot hold fails without leaving a partial file.
    lines = [json.dumps({"header": new_header}, ensure_ascii=False, allow_nan=False)]
    lines += [json.dumps({**r, "refused": v.refused, "judge_reason": v.reason}, ensure_ascii=False, allow_nan=False)
              for r, v in zip(rows, verdicts)]
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    os.replace(tmp, out)

    print(report.table())
    print(f"\n{report.summary()}")
    print(f"judged rows: {out}")
    return 0


def register(subparsers) -> None:
    from ..judges import DEFAULT_MAX_NLL, JUDGES
    from ..models import DEFAULT_MODEL

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
    p.add_argument("--device", default="auto", help="device of the reference model (default: cuda if available)")
    p.add_argument("--prompt-field", default="prompt", help="field holding the prompt (default prompt)")
    p.add_argument("--response-field", default="response", help="field holding the response (default response)")
    p.add_argument("--out", required=True, help="output JSONL: the rows plus refused and judge_reason")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples for the CI (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.set_defaults(func=cmd_judge)
