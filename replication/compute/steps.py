"""The attribution steps artefacts share, each kept in the store (``stored.stored_step``): Sahara's
dataset-level groups and the per-query Ships sweeps; and the ablations built from them.

An artefact asks for "Sahara of the aligned model on MaliciousInstruct with UA"; the first artefact
that asks computes it (resumably), every later one reads it back. On a dry run (``--dry-run``) nothing
is loaded or computed: each step is planned with its cost and returns a placeholder of the right shape
so the artefact's code runs through.
"""

from __future__ import annotations

from safetyheads.ablation import AblationSpec
from safetyheads.heads import HeadRef
from safetyheads.jobs import SaharaJob, ShipsJob
from safetyheads.ships import DEFAULT_BATCH_SIZE

from .context import Context, Queries
from .stored import Step, stored_step


def sahara_group(ctx: Context, role: str, set_name: str, method: str, steps: int | None = None) -> dict:
    """-> {"group": [HeadRef...], "scoreboard": [rows], "seconds": float}."""
    p = ctx.profile
    steps = steps or p.sahara_steps
    q = ctx.queries(set_name, "attribution")
    cands = ctx.candidates(role)
    spec = {"model": ctx.model_id(role), "queries": q.spec(), "method": method, "eps": p.eps, "steps": steps,
            "r": 1, "template": p.template, "candidates": [str(h) for h in cands]}
    what = f"Sahara {method.upper()} {role} {set_name} ({len(q.ids)} queries, {steps} steps)"
    passes = sum(len(cands) - s for s in range(steps)) * len(q.ids)

    def compute(entry) -> dict:
        model, tok = ctx.model(role)
        job = SaharaJob(tuple(q.prompts), steps, candidates=tuple(cands), method=method, eps=p.eps, template=p.template)
        finished = job.finished(entry)  # whole steps only: a crash may have cut one short
        ctx.log(f"{what}: {len(finished)} step(s) done before")
        return job.run(model, tok, entry, finished=finished, progress=ctx.progress)

    # a stored group is read on a dry run too, so the plan keys what follows it exactly
    # under `accelerate launch` each step's candidates are dealt in chunks of the batch size (sahara._step_states)
    chunks = tuple(-(-(len(cands) - s) // DEFAULT_BATCH_SIZE) for s in range(steps))
    return stored_step(ctx, Step("sahara", spec, what, passes, units=chunks), compute,
                       placeholder=lambda entry: {"group": cands[:steps], "scoreboard": [], "seconds": 0.0},
                       read=lambda entry, res: {**res, "group": [HeadRef.parse(h) for h in res["group"]]})


def ships_per_query(ctx: Context, role: str, q: Queries, method: str, *, template: str | None = None,
                    system_prompt: str | None = None, eps: float | None = None) -> dict:
    """Ships of every candidate head on every query: {prompt_id: [(HeadRef, score), ...] best first}.
    ``template`` / ``system_prompt``: the input format the scores are computed on (Ships depends on
    it; default the profile's template); ``eps``: the ablation factor (default the profile's)."""
    return ships_sweep(ctx, role, q, method, template=template, system_prompt=system_prompt, eps=eps)[0]


def ships_sweep(ctx: Context, role: str, q: Queries, method: str, *, template: str | None = None,
                system_prompt: str | None = None, eps: float | None = None) -> tuple[dict, float]:
    """``ships_per_query``, and the seconds the sweep took when it was computed (0 on a dry run)."""
    p = ctx.profile
    template = template or p.template
    eps = p.eps if eps is None else eps
    cands = ctx.candidates(role)
    spec = {"model": ctx.model_id(role), "queries": q.spec(), "method": method, "eps": eps,
            "template": template, "candidates": [str(h) for h in cands]}
    if system_prompt is not None:  # only then, so the keys of earlier runs stay valid
        spec["system_prompt"] = system_prompt
    fmt = "" if template == p.template and system_prompt is None else f", {template} input"
    what = (f"Ships {method.upper()} {role} {q.set} ({len(q.ids)} queries x {len(cands)} heads{fmt}"
            f"{'' if eps == p.eps else f', eps {eps:g}'})")

    def compute(entry) -> dict:
        job = ShipsJob(tuple(q.prompts), prompt_ids=tuple(q.ids), heads=tuple(cands), method=method, eps=eps,
                       template=template, system_prompt=system_prompt)
        finished = job.finished(entry)  # a prompt cut short by a crash is dropped
        ctx.log(f"{what}: {len(finished)} done before")
        model, tok = ctx.model(role) if job.todo(finished) else (None, None)
        return job.run(model, tok, entry, finished=finished, shape=_stored_ships_row, progress=ctx.progress)

    return stored_step(ctx, Step("ships", spec, what, len(q.ids) * len(cands), units=(len(q.ids),)), compute,
                       placeholder=lambda entry: ({pid: [(h, 0.0) for h in cands] for pid in q.ids}, 0.0),
                       read=lambda entry, res: (_ranked(res["rows"]), res["seconds"]))


def _ranked(rows: list) -> dict:
    """{prompt_id: [(HeadRef, score), ...] best first (ties: the earlier head)} of a Ships entry's rows."""
    by: dict = {}
    for r in rows:
        by.setdefault(r["prompt_id"], []).append((HeadRef.parse(r["head"]), r["ships"]))
    for pid in by:
        by[pid].sort(key=lambda t: (-t[1], t[0]))
    return by


def _stored_ships_row(row: dict) -> dict:
    """A Ships row as the store keeps it: the head's name and score (a prompt's last row: its time too)."""
    out = {"prompt_id": row["prompt_id"], "head": row["head_name"], "ships": row["ships"]}
    if row.get("last"):
        out.update(last=True, seconds=row["seconds"])
    return out


def head_spec(heads, method: str, eps: float) -> AblationSpec:
    return AblationSpec(tuple(heads), method, eps)


def query_level(ships: dict, k: int, method: str, eps: float) -> dict:
    """Each query's own top-k Ships heads as a per-prompt ablation: {prompt_id: AblationSpec}."""
    return {pid: head_spec([h for h, _ in ranked[:k]], method, eps) for pid, ranked in ships.items()}
