"""The judge job: label each response of a JSONL file complied / refused (and broken, for a three-way judge),
write the judged rows and report the ASR (complied only) with its bootstrap CI. Re-exported by ``safetyheads.jobs`` beside the jobs that need
a model; this one loads one only for the ``nll`` gibberish filter (its reference model).

Input: JSONL rows with a prompt and a response (other fields are kept); a first line
``{"header": {...}}`` (as ``safetyheads.results`` writes) is carried into the output header, with
the judge's name and settings added under ``"judge"`` (and in ``provenance.judge`` when the header
has that slot). Output: the same rows plus ``refused`` (bool: not complied), ``label`` and ``judge_reason``, written whole
(judging by rules is cheap and deterministic: it is redone, never resumed), replacing the output whole or
not at all, with the ``rows_sha256`` of its rows in the header. An input whose header holds a
``rows_sha256`` (a finished results file) must match it. A row that generation stopped early
(``stopped_early``) may only be judged by a judge in its ``settled_for``.

A model judge (a harm classifier: ``llama-guard-3-8b``, ``llama-guard-3-1b``, ``harmbench-cls``) is the long
run here: its weights are checked for before the input is read, and each batch's verdicts are appended to
``<out stem>.partial.jsonl`` (a results file, locked and resumable like the others), so a killed run
resumes with the responses not yet classified; the output is written from it at the end, and it goes.
Its rows carry ``judge_raw``, the classifier's output as written.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import models
from .errors import SafetyheadsError
from .files import write_durably
from .judges import DEFAULT_MAX_NLL, JUDGES, GibberishFilter, Verdict, asr_report, check_rejudge, get_judge
from .outputs import same_path
from .prompts import TEMPLATES
from .provenance import provenance
from .results import MAX_LINE_BYTES, ROWS_HASH, ResultsWriter, check_rows_hash
from .specs import JsonSpec

FILTERS = ("default", "none", "repetition", "words", "nll")
NLL_TEMPLATES = ("auto", *TEMPLATES)
# What the partial file of a model judge's run keeps per response: its row number and its verdict
PARTIAL_COLUMNS = ["row", "refused", "label", "rule", "reason", "raw"]


class _NonStandardNumber(ValueError):
    pass


def _not_json(constant: str):
    """json.loads reads NaN and Infinity by default; standard JSON has neither."""
    raise _NonStandardNumber(constant)


def read_jsonl(path: Path, prompt_field: str = "prompt", response_field: str = "response") -> tuple[dict | None, list[dict]]:
    """-> (header or None, rows); one-line SafetyheadsError for anything malformed."""
    if not path.is_file():
        raise SafetyheadsError(f"no such input file: {path}")
    header, rows = None, []
    body = hashlib.sha256()  # of the bytes after line 1, for a header's rows_sha256
    for lineno, line, raw in _text_lines(path):
        if lineno > 1:
            body.update(raw)
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
    if header is not None:
        check_rows_hash(path, header, body.hexdigest())
    return header, rows


def _text_lines(path: Path):
    """(line number, text, bytes) of each line, split at "\n" only (str.splitlines also splits at
    U+2028, U+2029 and U+0085, which a JSON string holds raw); a line longer than MAX_LINE_BYTES is
    refused before it is read whole."""
    offset = 0
    try:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
                if len(raw) > MAX_LINE_BYTES:
                    raise SafetyheadsError(f"{path} line {lineno} is longer than {MAX_LINE_BYTES >> 20} MiB: "
                                           "it is no row of responses")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise SafetyheadsError(f"{path} is not UTF-8 text ({e.reason} at byte {offset + e.start})") from None
                offset += len(raw)
                yield lineno, text.removesuffix("\n"), raw
    except OSError as e:
        raise SafetyheadsError(f"cannot read {path}: {e.strerror or e}") from None


def is_judged_file(path: Path, input_path: "str | Path | None" = None) -> bool:
    """Whether ``path`` is a file the judge job wrote (of ``input_path``, when given): what a rerun may replace."""
    try:
        with open(path, encoding="utf-8") as f:
            judge = json.loads(f.readline())["header"]["judge"]
        return input_path is None or same_path(judge["input"], input_path)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return False


@dataclass(frozen=True)
class JudgeJob(JsonSpec):
    """How to judge: the judge, its gibberish filter (``default``: the judge's own; ``nll`` scores
    the response under ``reference_model`` and calls it gibberish above ``max_nll``), which fields
    hold the prompt and the response, and the bootstrap of the ASR's CI."""

    judge: str = "keyword-fixed"
    gibberish_filter: str = "default"
    reference_model: str = models.DEFAULT_MODEL
    max_nll: float = DEFAULT_MAX_NLL
    nll_template: str = "auto"  # how the prompt is written before the response when scoring NLL
    prompt_field: str = "prompt"
    response_field: str = "response"
    n_boot: int = 10000
    seed: int = 0
    # A model judge's classifier: weights (None: its own Hub id), revision, dtype (None: float32, as load_model),
    # responses per batch, and whether transformers may download the weights
    judge_model: str | None = None
    judge_revision: str | None = None
    judge_dtype: str | None = None
    judge_batch_size: int = 8
    allow_download: bool = False

    def __post_init__(self) -> None:
        if self.judge not in JUDGES:
            raise SafetyheadsError(f"unknown judge {self.judge!r}: choose one of {', '.join(JUDGES)}")
        self._check_classifier_settings()
        if self.gibberish_filter not in FILTERS:
            raise SafetyheadsError(f"gibberish_filter must be one of {', '.join(FILTERS)}, got {self.gibberish_filter!r}")
        if self.nll_template not in NLL_TEMPLATES:
            raise SafetyheadsError(f"nll_template must be one of {', '.join(NLL_TEMPLATES)}, got {self.nll_template!r}")
        if isinstance(self.n_boot, bool) or not (isinstance(self.n_boot, int) and self.n_boot >= 1):
            raise SafetyheadsError(f"n_boot must be >= 1, got {self.n_boot}")
        if isinstance(self.seed, bool) or not (isinstance(self.seed, int) and self.seed >= 0):
            raise SafetyheadsError(f"seed must be >= 0, got {self.seed}")
        if not (0 < self.max_nll < math.inf):
            raise SafetyheadsError(f"max_nll must be a finite number > 0, got {self.max_nll}")

    def _check_classifier_settings(self) -> None:
        """The classifier settings fit the judge: only a model judge takes them, and it takes no filter."""
        classifier = JUDGES[self.judge].classifier
        if not classifier and (self.judge_model is not None or self.judge_revision is not None or self.judge_dtype is not None):
            raise SafetyheadsError(f"judge {self.judge!r} is not a model judge: the judge model, revision and dtype are "
                                   f"for {', '.join(n for n, j in JUDGES.items() if j.classifier)}")
        if classifier and self.gibberish_filter not in ("default", "none"):
            raise SafetyheadsError(f"judge {self.judge!r} reads every response with its own model: it takes no gibberish "
                                   f"filter (got {self.gibberish_filter!r})")
        if self.judge_dtype is not None and self.judge_dtype not in models.DTYPES:
            raise SafetyheadsError(f"judge_dtype must be one of float32, bfloat16, float16, got {self.judge_dtype!r}")
        if isinstance(self.judge_batch_size, bool) or not (isinstance(self.judge_batch_size, int) and self.judge_batch_size >= 1):
            raise SafetyheadsError(f"judge_batch_size must be >= 1, got {self.judge_batch_size}")

    def build_judge(self, header: dict | None = None, device: str = "auto"):
        """The judge with its filter; the ``nll`` filter loads the reference model (on ``device``) and
        writes the prompt as the input's run did (``nll_template`` auto: the header's run.template). A model
        judge gets its classifier's settings (and ``device``); it loads when it first judges."""
        if JUDGES[self.judge].classifier:
            return get_judge(self.judge, model=self.judge_model, revision=self.judge_revision, dtype=self.judge_dtype,
                             device=device, allow_download=self.allow_download, batch_size=self.judge_batch_size,
                             gibberish="default" if self.gibberish_filter == "default" else None)
        if self.gibberish_filter == "default":
            return get_judge(self.judge)
        if self.gibberish_filter == "none":
            return get_judge(self.judge, gibberish=None)
        if self.gibberish_filter == "repetition":
            return get_judge(self.judge, gibberish=GibberishFilter(min_word_fraction=None))
        if self.gibberish_filter == "words":
            return get_judge(self.judge, gibberish=GibberishFilter())
        template = self.nll_template
        if template == "auto":
            run_template = ((header or {}).get("run") or {}).get("template")
            template = run_template if run_template in TEMPLATES else "paper"
        t0 = time.time()
        model, tok = models.load_model(self.reference_model, device=device)
        print(f"loaded reference model {self.reference_model} in {time.time() - t0:.1f} s", file=sys.stderr)
        return get_judge(self.judge, gibberish=GibberishFilter(model, tok, max_nll=self.max_nll, template=template))

    def check_judge_available(self, device: str = "auto") -> None:
        """A model judge's weights are here (or may be downloaded): a one-line error otherwise, before any
        input is read or generated. Nothing to check for the rule-based judges."""
        if JUDGES[self.judge].classifier:
            self.build_judge(None, device).check_weights()

    def run(self, src: "str | Path", out: "str | Path", device: str = "auto", overwrite: bool = False):
        """Judge every response of ``src`` and write ``out`` (atomically, replacing it); -> ASRReport.
        The input is read and every row checked before a reference model or classifier loads; a model
        judge's run resumes from ``partial_path(out)`` (``overwrite``: starts it afresh)."""
        src, out = Path(src), Path(out)
        self.check_judge_available(device)
        header, rows = read_jsonl(src, self.prompt_field, self.response_field)
        for r in rows:
            check_rejudge(r, self.judge)
        judge = self.build_judge(header, device)
        responses, prompts = [r[self.response_field] for r in rows], [r[self.prompt_field] for r in rows]
        if judge.classifier:
            verdicts = self._classify(judge, src, out, prompts, responses, overwrite)
        else:
            verdicts = judge.judge(responses, prompts)
        report = asr_report(verdicts, judge, n_boot=self.n_boot, seed=self.seed)

        settings = judge.settings()
        new_header = {k: v for k, v in (header or {}).items() if k != ROWS_HASH}  # the input's rows, not these
        if isinstance(new_header.get("provenance"), dict) and "judge" in new_header["provenance"]:
            new_header["provenance"] = {**new_header["provenance"], "judge": settings}
        new_header["judge"] = {
            **settings,
            "input": str(src), "input_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
            "fields": {"prompt": self.prompt_field, "response": self.response_field},
            "report": report.as_dict(),
            "provenance": provenance(),
            **({"classifier": judge.source()} if judge.classifier else {}),
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        # Serialised before the file opens: a value JSON cannot hold fails without leaving a partial file.
        body = "".join(json.dumps({**r, "refused": v.refused, "label": v.label, "judge_reason": v.reason,
                                   **({"judge_raw": v.raw} if judge.classifier else {})},
                                  ensure_ascii=False, allow_nan=False) + "\n" for r, v in zip(rows, verdicts))
        new_header[ROWS_HASH] = hashlib.sha256(body.encode("utf-8")).hexdigest()
        head = json.dumps({"header": new_header}, ensure_ascii=False, allow_nan=False) + "\n"
        write_durably(out, head + body)
        if judge.classifier:
            partial_path(out).unlink(missing_ok=True)  # the output holds every verdict now
        return report

    def _classify(self, judge, src: Path, out: Path, prompts: list[str], responses: list[str],
                  overwrite: bool) -> list[Verdict]:
        """A model judge's verdicts, each batch appended to the partial file as it is classified, and the
        verdicts a killed run left there read back instead of classified again."""
        partial = partial_path(out)
        run = {"kind": "judge", "judge": judge.settings(), "input_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
               "fields": {"prompt": self.prompt_field, "response": self.response_field}}
        sink = ResultsWriter(partial, {"run": run, "provenance": provenance()}, PARTIAL_COLUMNS, key="row",
                             group_size=1, overwrite=overwrite)
        try:
            done = {int(r["row"]): Verdict(r["refused"], r["reason"], r["rule"], r["label"], r["raw"])
                    for r in sink.rows() if 0 <= int(r["row"]) < len(responses)}
            print(f"{judge.name}: classifying {len(responses) - len(done)} of {len(responses)} responses with "
                  f"{judge.model}" + (f" ({len(done)} done before, in {partial})" if done else ""), file=sys.stderr)

            def save(found: list) -> None:
                sink.append([{"row": i, "refused": v.refused, "label": v.label, "rule": v.rule, "reason": v.reason,
                              "raw": v.raw} for i, v in found])

            return judge.verdicts(prompts, responses, done=done, save=save)
        finally:
            sink.close()


def partial_path(out: "str | Path") -> Path:
    """Where a model judge's run keeps the verdicts it has so far: ``<out stem>.partial.jsonl`` beside ``out``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.partial.jsonl")
