"""Completions, judged: generated once (resumably) and kept in the store (``stored.stored_step``), then
judged on every run by the profile's judge and its side judges; a model judge's verdicts are kept in the
store too. Early stop, where the profile asks for it, cuts a completion once the judge's verdict is
settled; ``ctx.generation`` counts what that saved."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace

from safetyheads.ablation import row_family
from safetyheads.generation import DecodingSpec
from safetyheads.jobs import GenerateJob
from safetyheads.sinks import whole_units
from safetyheads.judges import Verdict, asr_report

from .context import ClassifierItem, Context, Queries
from .stored import VERSIONS, Step, stored_step

GEN_BATCH = 32
# What a completions entry keeps of each generated row: the text, its length and, for early-stopped
# generation, where and for which judges it stopped (so a re-judge by another judge can be refused).
COMPLETION_FIELDS = ("prompt_id", "response", "n_new_tokens", "stopped_early", "stop_token", "settled_for")


@dataclass
class Judged:
    rows: list = field(default_factory=list)
    asr: float = 0.0
    report: dict = field(default_factory=dict)
    key: str = ""
    three_way: bool = False  # its judge tells broken from refused: the rows' labels carry a broken rate

    @property
    def n(self) -> int:
        return len(self.rows)


def restrict(judged: Judged, ids) -> Judged:
    """The judged rows of ``ids`` only (a subset of the queries judged), with their ASR: the vanilla
    baseline of the query-level experiments, which run on the first queries of the evaluation set."""
    keep = set(ids)
    rows = [r for r in judged.rows if r["prompt_id"] in keep]
    asr = sum(not r["refused"] for r in rows) / len(rows) if rows else 0.0
    return Judged(rows, asr, {}, judged.key, judged.three_way)


def completions(ctx: Context, role: str, q: Queries, *, ablation=None, decoding: DecodingSpec | None = None,
                template: str | None = None, prefill: str | None = None, system_prompt: str | None = None,
                variant: str | None = None, label: str = "", text_read: bool = False) -> Judged:
    """Generate (resumably, cached) and judge. ``ablation``: None, one AblationSpec, or a dict
    {prompt_id: AblationSpec | None}. ``text_read``: something besides the judge reads the responses
    (an NLL, a length), so they must not stop early under the profile's ``stop_when_settled``."""
    p = ctx.profile
    decoding = early_stop(ctx, decoding or DecodingSpec(max_new_tokens=p.max_new_tokens), text_read)
    template = template or p.template
    per_prompt = isinstance(ablation, dict)
    if per_prompt:
        abl_spec = {str(pid): (ablation[pid].to_dict() if ablation.get(pid) else None) for pid in q.ids}
    else:
        abl_spec = ablation.to_dict() if ablation is not None else None
    variant_spec = None if variant is None else {"name": variant, "donor": ctx.model_id("base")}
    spec = {"model": ctx.model_id(role), "variant": variant_spec, "queries": q.spec(), "template": template,
            "system_prompt": system_prompt, "prefill": prefill, "ablation": abl_spec, "per_prompt": per_prompt,
            "decoding": decoding.to_dict()}
    what = f"completions {role}{'/' + variant if variant else ''} {q.set} {label or ''}".rstrip()
    step = Step("completions", spec, what, len(q.ids) * decoding.max_new_tokens // 8, judge_only=not text_read,
                new_tokens=len(q.ids) * decoding.max_new_tokens, units=(generation_batches(q, ablation),))

    def compute(entry) -> dict:
        job = GenerateJob(tuple(q.prompts), prompt_ids=tuple(q.ids), template=template, system_prompt=system_prompt,
                          prefill=prefill, ablation=tuple(ablation.get(pid) for pid in q.ids) if per_prompt else ablation,
                          decoding=decoding, batch_size=GEN_BATCH)
        rows = _generate(ctx, entry, job, role, variant, what)
        return None if rows is None else {"rows": rows}

    def placeholder(entry) -> Judged:  # a plan judges nothing: it counts the model judges' verdicts apart
        for judge in (ctx.judge, *ctx.side_judges):
            if judge.classifier:
                plan_verdicts(ctx, judge, entry, len(q.ids), decoding.max_new_tokens)
        return Judged([{"prompt_id": pid, "response": "", "refused": True, "rule": "plan"} for pid in q.ids], 0.0)

    return stored_step(ctx, step, compute, placeholder, read_in_plan=False,
                       read=lambda entry, res: judge_completions(ctx, entry, res["rows"], q, prefill, what))


def judge_completions(ctx: Context, entry, rows: list, q: Queries, prefill: str | None, what: str) -> Judged:
    """The profile's judge's verdicts of a completions entry's rows (the prefill read as part of each
    response), with the side judges' labels beside them."""
    prompts = dict(zip(q.ids, q.prompts))
    texts = [(prefill or "") + r["response"] for r in rows]
    asked = [prompts[r["prompt_id"]] for r in rows]
    verdicts = judge_rows(ctx, ctx.judge, entry, texts, asked, what)
    out = [{**r, "prompt": prompts[r["prompt_id"]], "refused": v.refused, "rule": v.rule, "reason": v.reason,
            "label": v.label} for r, v in zip(rows, verdicts)]
    for side in ctx.side_judges:
        for r, v in zip(out, judge_rows(ctx, side, entry, texts, asked, what)):
            r.setdefault("side", {})[side.name] = v.label
    rep = asr_report(verdicts, ctx.judge, n_boot=1000)
    return Judged(out, rep.asr, rep.as_dict(), entry.key, ctx.judge.three_way)


def judge_rows(ctx: Context, judge, completions_entry, texts: list, asked: list, what: str) -> list:
    """``judge``'s verdicts of a completions entry's texts. A rule-based judge judges them again on every run
    (cheap); a model judge's verdicts are kept in the store (``verdicts_step``), each batch appended as it
    is classified, so a rerun reads them back and a killed run resumes with the rest."""
    if not judge.classifier:
        return judge.judge(texts, asked)

    def compute(entry) -> dict:
        done = whole_units(entry, lambda r: r["row"], lambda row, rs: len(rs) == 1)
        verdicts = judge.verdicts(asked, texts, done={row: Verdict(**rs[0]["verdict"]) for row, rs in done.items()},
                                  save=lambda found: entry.append([{"row": i, "verdict": asdict(v)} for i, v in found]))
        return entry.finish({"verdicts": [asdict(v) for v in verdicts], "classifier": judge.source()})

    return stored_step(ctx, verdicts_step(judge, completions_entry, len(texts), what), compute,
                       read=lambda entry, res: [Verdict(**v) for v in res["verdicts"]])


def verdicts_step(judge, completions_entry, n: int, what: str) -> Step:
    """The stored step of a model judge's verdicts of a completions entry: keyed by that entry and the
    judge's settings (classifier weights, dtype, prompt, decoding)."""
    spec = {"completions": completions_entry.key, "judge": judge.settings()}
    return Step("verdicts", spec, f"{judge.name} verdicts of {what} ({n} rows)")


def plan_verdicts(ctx: Context, judge, completions_entry, n: int, response_tokens: int) -> None:
    """--dry-run: the model judge's verdicts of a completions entry, counted apart (``ctx.plan.classifiers``)."""
    step = verdicts_step(judge, completions_entry, n, completions_entry.what or "")
    entry = ctx.store.entry(step.kind, step.spec, VERSIONS[step.kind], what=step.what)
    ctx.plan.classifiers.append(ClassifierItem(judge.name, entry.key, completions_entry.key, n, response_tokens,
                                               entry.done))


def _generate(ctx: Context, entry, job: GenerateJob, role: str, variant: str | None, what: str) -> list | None:
    """Generate the completions ``entry`` does not hold yet; -> every row, in query order (None on a process
    other than the main one of an ``accelerate launch``: ``entry`` is then the main entry's rows)."""
    finished = job.finished(entry)
    todo = job.todo(finished)
    model, tok = (ctx.variant(role, variant) if variant else ctx.model(role)) if todo else (None, None)
    t0 = time.perf_counter()
    result = job.run(model, tok, entry, finished=finished, shape=_stored_completion,
                     progress=ctx.progress and len(todo) > 4 * GEN_BATCH)
    if result is None:
        return None
    rows = result["rows"]
    if todo:
        new = {str(pid) for pid in todo}
        generation_counts(ctx, [r for r in rows if str(r["prompt_id"]) in new], job.decoding)
        ctx.log(f"{what}: {len(todo)} generated in {time.perf_counter() - t0:.1f} s")
    return rows


def _stored_completion(row: dict) -> dict:
    return {k: row[k] for k in COMPLETION_FIELDS if k in row}


def generation_batches(q: Queries, ablation) -> int:
    """How many batches generation deals over the processes: prompts of one ablation family share batches
    of ``GEN_BATCH`` (``generation.generate_responses``)."""
    if not isinstance(ablation, dict):
        return -(-len(q.ids) // GEN_BATCH)
    families = Counter(row_family(ablation.get(pid)) for pid in q.ids)
    return sum(-(-n // GEN_BATCH) for n in families.values())


def early_stop(ctx: Context, decoding: DecodingSpec, text_read: bool) -> DecodingSpec:
    """``decoding`` with ``stop_when_settled`` set to the profile's ``stop_judge`` (default its judge) where the
    profile asks for it and only the judges read the text (an early-stopped response is exact for the
    verdicts of the judges that settle like that one, nothing else; the profile checks its judges do)."""
    if not ctx.profile.stop_when_settled or text_read or decoding.stop_when_settled:
        return decoding
    return replace(decoding, stop_when_settled=(ctx.profile.stop_judge or ctx.judge.name,))


def generation_counts(ctx: Context, rows: list, decoding: DecodingSpec) -> None:
    """Add a completions run's decoded tokens, token budget and early-stopped rows to ``ctx.generation``
    (printed in the run summary: what early stop saved)."""
    g = ctx.generation
    g.rows += len(rows)
    g.tokens += sum(int(r.get("n_new_tokens") or 0) for r in rows)
    g.budget += len(rows) * decoding.max_new_tokens
    g.stopped += sum(bool(r.get("stopped_early")) for r in rows)
