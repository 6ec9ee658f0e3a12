"""Jobs: the computations the CLI and the replication harness share, each a frozen spec checked when
it is made (before any model loads) plus a ``run`` that writes its rows to a resumable sink.

    job = ShipsJob(prompts=("How do I pick a lock?",), heads=("L2H26", "L3H8"))
    job.run(model, tok, sink)          # sink: a results file or a store entry

A sink (``sinks.Sink``) takes a job's rows one unit at a time (a prompt, or a Sahara step) and keeps them
on disk: a results file (``results.ResultsWriter``, what the CLI writes) or a store entry
(``store.Entry``, what the harness keeps). Resuming is written once, here: ``finished(sink)`` reads
which units the sink holds whole, rewrites it without the rest (a unit a crash cut short, a cut-off
last line), and ``run`` computes only the units still missing; a killed run loses at most the unit
in progress. A spec says what is computed, never where it goes; it round-trips through JSON
(``to_dict`` / ``from_dict``). ``shape`` (a ``run`` argument) is what the sink keeps of each row,
for a store whose rows are more compact than the job's.

The paper's main protocol, each prompt's own top-k Ships heads ablated while it is answered, is
``query_level.QueryLevelJob``, built on the spec checks here.

Specs check their values in library terms (``batch_size must be >= 1``); the CLI checks its flags
first, in its own words, then builds the spec. The judge job (``JudgeJob``, from
``safetyheads.judge_job``) reads a responses file instead of a model and is redone, not resumed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

from . import generation, sahara, ships
from .ablation import AblationSpec, method_settings
from .errors import SafetyheadsError
from .generation import DecodingSpec
from .heads import HeadRef, all_heads, parse_heads
from .judge_job import JudgeJob  # noqa: F401 (re-exported: one place for every job)
from .prompts import TEMPLATES, check_chars, check_fits, context_length, encode_prompt
from .sahara import MAX_STEPS
from .ships import DEFAULT_BATCH_SIZE, STRATEGIES, check_prob_floor
from .sinks import MainProcessRows, Sink, resumed, whole_units  # noqa: F401 (MainProcessRows: re-exported)
from .specs import JsonSpec, SpecError


class JobError(SpecError):
    """A job spec that cannot be run."""


class JobSpec(JsonSpec):
    """A job spec: its JSON round trip (``specs.JsonSpec``) refuses a bad dict as a ``JobError``."""

    spec_error = JobError


def check_prompts(job) -> None:
    """Prompts as a tuple of strings, their ids (when given) as a tuple of as many distinct names,
    and a known template."""
    if isinstance(job.prompts, str):
        raise JobError("prompts must be a sequence of strings")
    prompts = tuple(job.prompts)  # first: a generator would be used up by the check below
    if not all(isinstance(p, str) for p in prompts):
        raise JobError("prompts must be a sequence of strings")
    object.__setattr__(job, "prompts", prompts)
    ids = getattr(job, "prompt_ids", None)
    if ids is not None:
        ids = tuple(ids)
        _as_job_error(ships.check_prompt_ids, ids, len(job.prompts))
        object.__setattr__(job, "prompt_ids", ids)
    if job.template not in TEMPLATES:
        raise JobError(f"unknown prompt template {job.template!r}: choose one of {', '.join(TEMPLATES)}")


def _as_job_error(check: Callable, *args) -> None:
    """A check the library runs where it computes, run on a spec: its complaint as a ``JobError``."""
    try:
        check(*args)
    except SafetyheadsError as e:
        raise JobError(str(e)) from None


def _is_int(value) -> bool:
    """An int that is not a bool (``True`` would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def at_least(job, field: str, low: int) -> None:
    value = getattr(job, field)
    if not _is_int(value) or value < low:
        raise JobError(f"{field} must be an integer >= {low}, got {value!r}")


def resolve_ablation_settings(job) -> None:
    eps, target = method_settings(job.method, job.eps, job.target)
    object.__setattr__(job, "eps", eps)
    object.__setattr__(job, "target", target)


def with_candidates_named(job, model):
    """``job`` (a Sahara or per-query job) with its candidate heads named (every head of ``model`` when None)
    and checked against the model, and enough of them for the job (its ``check_enough_candidates``)."""
    spec = AblationSpec(job.candidates or all_heads(model), job.method, job.eps, job.target).check(model, stacklevel=4)
    named = replace(job, candidates=spec.heads)
    named.check_enough_candidates()
    return named


def _check_fits(job, model, tok) -> None:
    """Every prompt encodes and fits the model's context: template and length problems surface
    before any compute."""
    limit = context_length(model, tok)
    for pid, p in zip(job.ids, job.prompts):
        check_chars(len(p) + len(job.system_prompt or ""), limit, pid, p)
        check_fits(encode_prompt(tok, p, job.template, job.system_prompt).shape[1], limit, pid, p)


def _timed(append: Callable[[list[dict]], None], shape: Callable[[dict], dict] | None, row: int):
    """A function appending a unit's rows (each through ``shape``) once ``rows[row]["seconds"]`` is
    set to the time since the previous unit (or since this was made): a unit's time rides on one row."""
    last = [time.perf_counter()]

    def save(rows: list[dict]) -> None:
        now = time.perf_counter()
        rows[row]["seconds"] = now - last[0]
        last[0] = now
        append([shape(r) for r in rows] if shape else rows)

    return save


# ------------------------------------------------------------------------------------------------
# Ships: one prompt = one unit, a row per head


@dataclass(frozen=True)
class ShipsJob(JobSpec):
    """Ships of every head in ``heads`` (None: every head of the model) on every prompt: the KL
    between the clean and the ablated next-token distribution (``ships.ships_scores``).

    Rows: ``prompt_id, prompt, layer, head, head_name, ships``; a prompt's last row also has
    ``last`` (True) and ``seconds`` (its time)."""

    prompts: tuple[str, ...]
    prompt_ids: tuple | None = None  # the prompts' names in the rows (default 0..n-1)
    heads: tuple[HeadRef, ...] | None = None
    method: str = "ua"
    eps: float = 1e-5
    target: str | None = None  # None: the method's default
    template: str = "paper"
    system_prompt: str | None = None
    strategy: str = "prefix"
    batch_size: int = DEFAULT_BATCH_SIZE
    prob_floor: float = 0.0

    def __post_init__(self) -> None:
        check_prompts(self)
        if self.heads is not None:
            object.__setattr__(self, "heads", parse_heads(self.heads))
        resolve_ablation_settings(self)
        if self.strategy not in STRATEGIES:
            raise JobError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        at_least(self, "batch_size", 1)
        object.__setattr__(self, "prob_floor", check_prob_floor(self.prob_floor))

    @property
    def ids(self) -> tuple:
        return self.prompt_ids if self.prompt_ids is not None else tuple(range(len(self.prompts)))

    def for_model(self, model) -> "ShipsJob":
        """This job with its heads named (every head of ``model`` when None) and checked against the model."""
        spec = AblationSpec(self.heads or all_heads(model), self.method, self.eps, self.target).check(model, stacklevel=3)
        return replace(self, heads=spec.heads)

    def ablation_spec(self) -> AblationSpec:
        """The ablation of every head (once they are named)."""
        return AblationSpec(self.heads, self.method, self.eps, self.target)

    def check_fits(self, model, tok) -> None:
        _check_fits(self, model, tok)

    def finished(self, sink: Sink) -> set[str]:
        """Ids (as strings) of the prompts ``sink`` holds whole; the rows of any other prompt are dropped."""
        if self.heads is None:
            raise JobError("internal: name the heads (for_model) before resuming")
        n = len(self.heads)
        return set(whole_units(sink, lambda r: str(r["prompt_id"]), lambda _, rows: len(rows) == n))

    def todo(self, finished: set[str]) -> list:
        return [pid for pid in self.ids if str(pid) not in finished]

    def run(self, model, tok, sink: Sink | None, *, finished: set[str] | None = None,
            shape: Callable[[dict], dict] | None = None, progress: bool = False) -> dict | None:
        """Compute the prompts not ``finished`` (default: what ``sink`` holds whole) into ``sink``
        and finish it with ``{"rows", "seconds"}``. ``sink`` None (or a ``MainProcessRows``): compute
        only (a process of an ``accelerate launch`` other than the main one, given the main one's ``finished``)."""
        job = self if self.heads is not None else self.for_model(model)
        finished, sink = resumed(job, sink, finished, set())
        prompt_of = dict(zip(map(str, job.ids), job.prompts))
        todo = job.todo(finished)
        if todo:
            save = _timed(sink.append, shape, row=-1) if sink is not None else None

            def on_prompt(pid, rows):
                rows = [{**r, "prompt": prompt_of[str(pid)]} for r in rows]
                rows[-1]["last"] = True
                save(rows)

            ships.ships_scores(model, tok, [prompt_of[str(pid)] for pid in todo], job.heads, job.method, job.eps,
                               job.template, target=job.target, system_prompt=job.system_prompt,
                               strategy=job.strategy, batch_size=job.batch_size, prob_floor=job.prob_floor,
                               prompt_ids=todo, progress=progress, on_prompt=on_prompt if save else None)
        if sink is None:
            return None
        rows = sink.rows()
        return sink.finish({"rows": rows, "seconds": sum(r.get("seconds", 0.0) for r in rows)})


# ------------------------------------------------------------------------------------------------
# Sahara: one step = one unit, a row per candidate head of the step


@dataclass(frozen=True)
class SaharaJob(JobSpec):
    """Sahara's greedy search for the group of ``steps`` heads among ``candidates`` (None: every
    head) that moves the prompts' last-token states most (generalized Ships over ``r`` directions;
    ``sahara.sahara``). Rows: ``sahara.SCOREBOARD_COLUMNS``; a step's first row also has ``seconds``."""

    prompts: tuple[str, ...]
    steps: int = 3
    candidates: tuple[HeadRef, ...] | None = None
    method: str = "ua"
    eps: float = 1e-5
    target: str | None = None
    r: int = 1
    template: str = "paper"
    system_prompt: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        check_prompts(self)
        _as_job_error(sahara.check_search, self.steps, len(self.prompts), self.r)
        if self.candidates is not None:
            object.__setattr__(self, "candidates", parse_heads(self.candidates))
            self.check_enough_candidates()
        resolve_ablation_settings(self)
        at_least(self, "batch_size", 1)

    def check_enough_candidates(self) -> None:
        _as_job_error(sahara.check_candidates, self.steps, len(self.candidates))

    @property
    def ids(self) -> tuple:
        return tuple(range(len(self.prompts)))

    def for_model(self, model) -> "SaharaJob":
        """This job with its candidates named (every head of ``model`` when None) and checked against the model."""
        return with_candidates_named(self, model)

    def check_fits(self, model, tok) -> None:
        _check_fits(self, model, tok)

    def finished(self, sink: Sink) -> list[list[dict]]:
        """The rows of each step ``sink`` holds whole, from step 1 on (a step builds on the ones
        before it); the rows of any later step are dropped."""
        if self.candidates is None:
            raise JobError("internal: name the candidates (for_model) before resuming")
        n = len(self.candidates)
        kept = whole_units(sink, lambda r: int(r["step"]), lambda step, rows: len(rows) == n - (step - 1),
                           order=range(1, MAX_STEPS + 1))
        return list(kept.values())

    def run(self, model, tok, sink: Sink | None, *, finished: list | None = None,
            shape: Callable[[dict], dict] | None = None, progress: bool = False) -> dict | None:
        """Run the steps not ``finished`` (default: what ``sink`` holds whole) into ``sink`` and finish
        it with ``{"group", "scoreboard", "seconds", "n_queries", "n_candidates"}``. ``sink`` None (or a
        ``MainProcessRows``): compute only (a process of an ``accelerate launch`` other than the main one)."""
        job = self if self.candidates is not None else self.for_model(model)
        finished, sink = resumed(job, sink, finished, [])
        save = _timed(sink.append, shape, row=0) if sink is not None else None
        result = sahara.sahara(model, tok, list(job.prompts), job.steps, job.method, job.eps, target=job.target,
                               r=job.r, template=job.template, system_prompt=job.system_prompt,
                               candidates=job.candidates, batch_size=job.batch_size, done_steps=finished,
                               on_step=(lambda step, rows: save(rows)) if save else None, progress=progress)
        if sink is None:
            return None
        rows = sink.rows()
        return sink.finish({"group": [str(h) for h in result.group], "scoreboard": rows,
                            "seconds": sum(r["seconds"] for r in rows if "seconds" in r),
                            "n_queries": len(job.prompts), "n_candidates": len(job.candidates)})


# ------------------------------------------------------------------------------------------------
# Generation: one prompt = one unit, one row


def check_generation(job) -> None:
    """A generating job's decoding (a DecodingSpec, or its dict from JSON), prefill and batch size."""
    if isinstance(job.decoding, dict):
        d = dict(job.decoding)
        d["stop_when_settled"] = tuple(d.get("stop_when_settled") or ())
        object.__setattr__(job, "decoding", DecodingSpec(**d))
    if not isinstance(job.decoding, DecodingSpec):
        raise JobError(f"decoding must be a DecodingSpec, got {type(job.decoding).__name__}")
    if job.prefill is not None and not isinstance(job.prefill, str):
        raise JobError(f"prefill must be a string, got {type(job.prefill).__name__}")
    at_least(job, "batch_size", 1)


def check_generation_fits(job, model, tok) -> None:
    """Every prompt of a generating job, with its prefill and the tokens to generate, fits the model's context."""
    limit = context_length(model, tok)
    for pid, p in zip(job.ids, job.prompts):
        check_chars(len(p) + len(job.system_prompt or "") + len(job.prefill or ""), limit, pid, p)
        n = len(generation.encode_for_generation(tok, p, job.template, job.system_prompt, job.prefill))
        check_fits(n, limit, pid, p, new_tokens=job.decoding.max_new_tokens)


class OneResponsePerPrompt(JobSpec):
    """A job that answers prompts, one row per prompt (``GenerateJob``, ``query_level.QueryLevelJob``): what
    fits the model, which prompts a sink holds, which are left."""

    def check_fits(self, model, tok) -> None:
        """Every prompt, with its prefill and the tokens to generate, fits the model's context."""
        check_generation_fits(self, model, tok)

    def finished(self, sink: Sink) -> set[str]:
        """Ids (as strings) of the prompts ``sink`` holds a response to."""
        return set(whole_units(sink, lambda r: str(r["prompt_id"]), lambda _, rows: len(rows) == 1))

    def todo(self, finished: set[str]) -> list:
        return [pid for pid in self.ids if str(pid) not in finished]


@dataclass(frozen=True)
class GenerateJob(OneResponsePerPrompt):
    """A response to every prompt, plain or under an ablation (``generation.generate_responses``).
    ``ablation``: None, one AblationSpec for every prompt, or one AblationSpec or None per prompt.
    Rows: ``generate_responses``'s result dicts."""

    prompts: tuple[str, ...]
    prompt_ids: tuple | None = None
    template: str = "paper"
    system_prompt: str | None = None
    prefill: str | None = None
    ablation: AblationSpec | tuple | None = None
    decoding: DecodingSpec = DecodingSpec()
    batch_size: int = 8

    def __post_init__(self) -> None:
        check_prompts(self)
        object.__setattr__(self, "ablation", _ablation_of(self.ablation, len(self.prompts)))
        check_generation(self)

    @property
    def ids(self) -> tuple:
        return self.prompt_ids if self.prompt_ids is not None else tuple(range(len(self.prompts)))

    def check(self, model) -> None:
        """Every head of the ablation(s) exists in ``model`` (warning once about GQA groups)."""
        for spec in dict.fromkeys(self.ablation if isinstance(self.ablation, tuple) else (self.ablation,)):
            if spec is not None:
                spec.check(model, stacklevel=3)


    def run(self, model, tok, sink: Sink | None, *, finished: set[str] | None = None,
            shape: Callable[[dict], dict] | None = None, progress: bool = False) -> dict | None:
        """Generate for the prompts not ``finished`` (default: what ``sink`` holds) into ``sink``, a
        batch at a time, and finish it with ``{"rows"}`` in prompt order. ``sink`` None (or a ``MainProcessRows``): compute
        only."""
        finished, sink = resumed(self, sink, finished, set())
        index = [i for i, pid in enumerate(self.ids) if str(pid) not in finished]
        if index:
            ablation = [self.ablation[i] for i in index] if isinstance(self.ablation, tuple) else self.ablation
            save = None if sink is None else (lambda rows: sink.append([shape(r) for r in rows] if shape else rows))
            generation.generate_responses(
                model, tok, [self.prompts[i] for i in index], template=self.template, system_prompt=self.system_prompt,
                ablation=ablation, decoding=self.decoding, prefill=self.prefill, batch_size=self.batch_size,
                prompt_ids=[self.ids[i] for i in index], progress=progress, on_batch=save)
        if sink is None:
            return None
        got = {str(r["prompt_id"]): r for r in sink.rows()}
        return sink.finish({"rows": [got[str(pid)] for pid in self.ids]})


def _ablation_of(value, n_prompts: int):
    """None, an AblationSpec, or a tuple of one AblationSpec or None per prompt (dicts, as JSON
    holds them, are read back); the per-prompt form checked as generation checks it."""
    def one(v):
        if v is None or isinstance(v, AblationSpec):
            return v
        if isinstance(v, dict):
            return AblationSpec.from_dict(v)
        raise JobError(f"an ablation must be an AblationSpec or None, got {type(v).__name__}")

    if isinstance(value, (list, tuple)):
        specs = [one(v) for v in value]
        _as_job_error(generation.per_prompt_ablation, specs, n_prompts)
        return tuple(specs)
    return one(value)
