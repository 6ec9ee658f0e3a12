"""The computations artefacts share, each cached in the content-addressed store.

An artefact asks for "Sahara of the aligned model on MaliciousInstruct with UA" or "completions of
these queries with these heads ablated"; the first artefact that asks computes it (resumably), every
later one reads it back. In ``plan_only`` mode (``--dry-run``) nothing is loaded or computed: each
step records what it would compute and its cost, and returns a placeholder of the right shape so the
artefact's code runs through.

A step computes an entry while holding its lock (``computing``): a second harness run on the same
store that asks for the same entry meanwhile waits for it, then reads it, so two runs at once leave
the entries one run would.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace

from safetyheads.ablation import AblationSpec
from safetyheads.errors import SafetyheadsError
from safetyheads.files import replacing
from safetyheads.generation import DecodingSpec
from safetyheads.heads import HeadRef
from safetyheads.jobs import GenerateJob, SaharaJob, ShipsJob, whole_units
from safetyheads.store import Store

from .profiles import Profile

# Bump when a step's output for the same inputs would change.
VERSIONS = {"sahara": 1, "ships": 1, "completions": 1, "small": 1, "sweep": 1, "verdicts": 1}
GEN_BATCH = 32
# What a completions entry keeps of each generated row: the text, its length and, for early-stopped
# generation, where and for which judges it stopped (so a re-judge by another judge can be refused).
COMPLETION_FIELDS = ("prompt_id", "response", "n_new_tokens", "stopped_early", "stop_token", "settled_for")


@dataclass
class PlanItem:
    kind: str
    key: str
    what: str
    forward_passes: int
    cached: bool
    judge_only: bool = False  # completions read only by the judge: early stop would apply (dry-run estimate)
    new_tokens: int = 0  # tokens generation decodes, at most (every response to the token limit)


@dataclass
class ClassifierItem:
    """A model judge's verdicts of one completions entry, for --dry-run: its own weights and cost, counted
    apart from the profile's models (``run.plan``)."""

    judge: str
    key: str  # of the verdicts entry
    completions: str  # key of the completions entry it reads
    rows: int
    response_tokens: int  # the completions' token limit: the longest response it reads
    cached: bool


@dataclass
class Queries:
    set: str
    sha256: str
    ids: list
    prompts: list

    def spec(self) -> dict:
        return {"set": self.set, "sha256": self.sha256, "ids": self.ids}


@dataclass
class Geometry:
    n_layers: int
    n_heads: int


PAPER_GEOMETRY = {"meta-llama/Llama-2-7b-chat-hf": Geometry(32, 32), "lmsys/vicuna-7b-v1.5": Geometry(32, 32),
                  "meta-llama/Llama-2-7b-hf": Geometry(32, 32)}


class Context:
    """Everything an artefact runner needs: the profile, the store, the models (loaded once)."""

    def __init__(self, profile: Profile, store: Store | None = None, loader=None, device: str = "auto",
                 plan_only: bool = False, progress: bool = True):
        self.profile, self.store = profile, store or Store()
        self.loader, self.device, self.plan_only, self.progress = loader, device, plan_only, progress
        self._models: dict = {}
        self.used_roles: set = set()  # roles the current artefact used
        self.ids: dict = {}  # role -> model identity, as used in store keys (the models an artefact used)
        self.plan: list[PlanItem] = []
        self.plan_per_artefact: list = []  # set by run.plan: (artefact, new computations, forward passes, new tokens)
        self.timings: dict = {}  # store key -> seconds of the computation (when computed or read back)
        self.passes: dict = {}  # store key -> (kind, forward passes it counts), for a measured cost per row
        self.used_keys: list[dict] = []
        self.last_seconds = 0.0  # of the last Ships sweep asked for
        self.artefact_seconds: dict = {}  # wall time of each artefact run in this context
        self.generation = {"rows": 0, "tokens": 0, "budget": 0, "stopped": 0}  # see generation_counts
        self.classifier_plan: list[ClassifierItem] = []  # a plan's model-judge verdicts (dry run)
        self.judge = profile_judge(profile, profile.judge, device)
        # reported beside, decide nothing
        self.side_judges = [profile_judge(profile, name, device) for name in profile.side_judges]

    # ---- models

    def model(self, role: str):
        if self.plan_only:
            raise SafetyheadsError("internal: a plan-only run asked for a model")
        if role not in self._models:
            name = self.profile.models[role]
            if name is None:
                raise SafetyheadsError(f"internal: profile {self.profile.folder!r} has no {role} model")
            self._evict(self.profile.max_loaded_models)
            self.log(f"loading {role} model {name}")
            if self.loader is not None:
                self._models[role] = self.loader(role, name)
            else:
                from safetyheads.models import load_model

                impl = self.profile.attn_implementation.get(role)
                # HF_HUB_OFFLINE=0 lets a Hub model download (gated ones need a token); otherwise the HF cache only
                self._models[role] = load_model(name, dtype=self.profile.dtype, device=self.device,
                                                revision=self.profile.revisions.get(role),
                                                allow_download=os.environ.get("HF_HUB_OFFLINE") == "0",
                                                **({"attn_implementation": impl} if impl else {}))
        return self._models[role]

    def _evict(self, limit: int | None) -> None:
        """Keep fewer than ``limit`` models in memory (None: no limit), the oldest loaded going first, so
        that a GPU holds one 8B model at a time; a role asked for again is loaded again."""
        if not limit or len(self._models) < limit:
            return
        import gc

        import torch

        while len(self._models) >= limit:
            gone = next(iter(self._models))
            self.log(f"unloading {gone} model to make room")
            del self._models[gone]
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def model_id(self, role: str) -> dict:
        self.used_roles.add(role)
        if role not in self.ids:
            self.ids[role] = self._model_id(role)
        return self.ids[role]

    def _model_id(self, role: str) -> dict:
        """What identifies the role's weights in store keys. Embedded models and organisms are
        identified by their file hashes without loading them, so a rerun that finds everything in
        the store loads nothing."""
        name = self.profile.models[role]
        if self.loader is None:
            from safetyheads.models import EMBEDDED_MODELS, _resolve_device
            from safetyheads.organisms import ORGANISMS, read_manifest

            where = {"dtype": self.profile.dtype, "device": _resolve_device(self.device).split(":")[0]}
            if name in EMBEDDED_MODELS:
                return {"model": name, "sha256": EMBEDDED_MODELS[name].sha256, **where}
            if name in ORGANISMS:
                m = read_manifest(name)
                return {"model": name, "adapter_sha256": m["adapter"]["sha256"], "base_sha256": m["base"]["sha256"], **where}
        if self.plan_only:  # a Hub model is identified by its loaded weights; a plan loads nothing
            return {"model": name, "revision": self.profile.revisions.get(role), "dtype": self.profile.dtype}
        from safetyheads.provenance import model_source

        return model_source(self.model(role)[0])

    def geometry(self, role: str) -> Geometry:
        if self.plan_only:
            name = self.profile.models[role]
            if role in self.profile.plan_geometry:
                return Geometry(*self.profile.plan_geometry[role])
            if name not in PAPER_GEOMETRY:
                from safetyheads.models import EMBEDDED_MODELS

                return Geometry(30, 9) if name in EMBEDDED_MODELS or name.startswith("organism") else Geometry(32, 32)
            return PAPER_GEOMETRY[name]
        def compute():
            from safetyheads.arch import geometry

            g = geometry(self.model(role)[0])
            return [g.n_layers, g.n_heads]

        # kept in the store, so a rerun that finds everything there loads no model
        return Geometry(*cached(self, "geometry", {"model": self.model_id(role)}, compute))

    def candidates(self, role: str) -> list[HeadRef]:
        g = self.geometry(role)
        layers = self.profile.candidate_layers
        return [HeadRef(layer, h) for layer in range(g.n_layers) for h in range(g.n_heads)
                if layers is None or layer in layers]

    def variant(self, role: str, variant: str):
        """A modified copy of a model: ``attn-from-base`` = the role's model with the base model's
        attention weights (Figure 6a)."""
        key = (role, variant)
        if key not in self._models:
            if variant != "attn-from-base":
                raise SafetyheadsError(f"unknown model variant {variant!r}")
            from safetyheads.surgery import swap_attention

            model, tok = self.model(role)
            donor, _ = self.model("base")
            new = copy.deepcopy(model)
            swap_attention(new, donor)
            new.safetyheads_source = {**model.safetyheads_source, "variant": "attention weights from " +
                                      str(donor.safetyheads_source.get("model"))} if hasattr(model, "safetyheads_source") \
                else {"model": "in-memory", "variant": variant}
            self._models[key] = (new, tok)
        return self._models[key]

    # ---- data

    def queries(self, set_name: str, purpose: str) -> Queries:
        """``attribution``: the first n_attribution queries; ``eval``: the evaluation queries
        (held out from attribution when the profile says so); ``heatmap``: the first heatmap_n
        evaluation queries."""
        from safetyheads.data import load_prompts

        ps = load_prompts(set_name)
        p = self.profile
        n_all = len(ps.prompts)
        if purpose == "attribution":
            lo, hi = 0, min(p.n_attribution, n_all)
        elif purpose in ("eval", "heatmap"):
            lo = min(p.n_attribution, n_all) if p.heldout_eval else 0
            hi = n_all if p.n_eval is None else min(lo + p.n_eval, n_all)
            if purpose == "heatmap":
                hi = min(lo + p.heatmap_n, hi)
        else:
            raise ValueError(purpose)
        if hi <= lo:
            raise SafetyheadsError(f"profile {p.name!r} leaves no {purpose} queries in {set_name} ({n_all} queries)")
        return Queries(set_name, ps.sha256, list(range(lo, hi)), list(ps.prompts[lo:hi]))

    def ships_queries(self, set_name: str) -> Queries:
        """The evaluation queries of the query-level experiments (each needs its own Ships sweep of
        every head): the first ``n_ships_eval`` evaluation queries (all of them when None)."""
        q = self.queries(set_name, "eval")
        n = self.profile.n_ships_eval
        return q if n is None else Queries(q.set, q.sha256, q.ids[:n], q.prompts[:n])

    def benign_queries(self) -> Queries:
        from safetyheads.data import load_prompts
        from safetyheads.organisms.dataset import heldout_benign

        # the first N of the organisms' 100 held-out prompts (a smaller draw would pick other prompts)
        prompts = heldout_benign()[: self.profile.helpfulness_n]
        return Queries("alpaca-heldout", load_prompts("alpaca").sha256, list(range(len(prompts))), list(prompts))

    # ---- bookkeeping

    def log(self, msg: str) -> None:
        if self.progress:
            print(f"[{self.profile.name}] {msg}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def computing(self, entry, what: str):
        """Hold ``entry`` while computing it; another process computing it is waited for, with one
        line saying so (the entry is then usually done: check ``entry.done`` inside)."""
        def waiting(holder: str) -> None:
            print(f"[{self.profile.name}] {what}: waiting for {holder}, which is computing it", file=sys.stderr,
                  flush=True)

        with entry.computing(on_wait=waiting):
            yield

    def _entry(self, kind: str, spec: dict, what: str, forward_passes: int, judge_only: bool = False,
               new_tokens: int = 0):
        entry = self.store.entry(kind, spec, VERSIONS[kind], what=what)
        self.used_keys.append({"kind": kind, "key": entry.key, "what": what})
        self.passes[entry.key] = (kind, forward_passes)
        if self.plan_only:
            self.plan.append(PlanItem(kind, entry.key, what, forward_passes, entry.done, judge_only, new_tokens))
        return entry


def profile_judge(profile: Profile, name: str, device: str):
    """A judge of the profile by name; a model judge gets the profile's dtype and the run's device, and may
    download its weights where the profile's models may (HF_HUB_OFFLINE=0). Nothing loads here."""
    from safetyheads.judges import JUDGES, get_judge

    if not JUDGES[name].classifier:
        return get_judge(name)
    return get_judge(name, dtype=profile.dtype, device=device, allow_download=os.environ.get("HF_HUB_OFFLINE") == "0")


# ------------------------------------------------------------------------------------------------
# Sahara (dataset-level groups) and Ships (per query)


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
    entry = ctx._entry("sahara", spec, what, passes)
    if ctx.plan_only and not entry.done:  # a stored group is read, so the plan keys what follows exactly
        return {"group": cands[:steps], "scoreboard": [], "seconds": 0.0}
    if entry.done:
        res = entry.result()
    else:
        with ctx.computing(entry, what):
            res = entry.result() if entry.done else _sahara(ctx, entry, role, q, cands, method, steps, what)
    ctx.timings[entry.key] = res["seconds"]
    return {**res, "group": [HeadRef.parse(h) for h in res["group"]]}


def _sahara(ctx: Context, entry, role: str, q: Queries, cands: list, method: str, steps: int, what: str) -> dict:
    p = ctx.profile
    model, tok = ctx.model(role)
    job = SaharaJob(tuple(q.prompts), steps, candidates=tuple(cands), method=method, eps=p.eps, template=p.template)
    finished = job.finished(entry)  # whole steps only: a crash may have cut one short
    ctx.log(f"{what}: {len(finished)} step(s) done before")
    return job.run(model, tok, entry, finished=finished, progress=ctx.progress)


def ships_per_query(ctx: Context, role: str, q: Queries, method: str, *, template: str | None = None,
                    system_prompt: str | None = None, eps: float | None = None) -> dict:
    """Ships of every candidate head on every query: {prompt_id: [(HeadRef, score), ...] best first}.
    ``template`` / ``system_prompt``: the input format the scores are computed on (Ships depends on
    it; default the profile's template); ``eps``: the ablation factor (default the profile's)."""
    p = ctx.profile
    template = template or p.template
    eps = p.eps if eps is None else eps
    cands = ctx.candidates(role)
    spec = {"model": ctx.model_id(role), "queries": q.spec(), "method": method, "eps": eps,
            "template": template, "candidates": [str(h) for h in cands]}
    if system_prompt is not None:  # only then, so the keys of earlier runs stay valid
        spec["system_prompt"] = system_prompt
    fmt = "" if template == p.template and system_prompt is None else f", {template} input"
    what = f"Ships {method.upper()} {role} {q.set} ({len(q.ids)} queries x {len(cands)} heads{fmt}{'' if eps == p.eps else f', eps {eps:g}'})"
    entry = ctx._entry("ships", spec, what, len(q.ids) * len(cands))
    if ctx.plan_only and not entry.done:
        return {pid: [(h, 0.0) for h in cands] for pid in q.ids}
    if entry.done:
        res = entry.result()
    else:
        job = ShipsJob(tuple(q.prompts), prompt_ids=tuple(q.ids), heads=tuple(cands), method=method, eps=eps,
                       template=template, system_prompt=system_prompt)
        with ctx.computing(entry, what):
            res = entry.result() if entry.done else _ships(ctx, entry, job, role, what)
    ctx.timings[entry.key] = ctx.last_seconds = res["seconds"]
    by: dict = {}
    for r in res["rows"]:
        by.setdefault(r["prompt_id"], []).append((HeadRef.parse(r["head"]), r["ships"]))
    for pid in by:
        by[pid].sort(key=lambda t: (-t[1], t[0]))
    return by


def _ships(ctx: Context, entry, job: ShipsJob, role: str, what: str) -> dict:
    finished = job.finished(entry)  # a prompt cut short by a crash is dropped
    ctx.log(f"{what}: {len(finished)} done before")
    model, tok = ctx.model(role) if job.todo(finished) else (None, None)
    return job.run(model, tok, entry, finished=finished, shape=_stored_ships_row, progress=ctx.progress)


def _stored_ships_row(row: dict) -> dict:
    """A Ships row as the store keeps it: the head's name and score (a prompt's last row: its time too)."""
    out = {"prompt_id": row["prompt_id"], "head": row["head_name"], "ships": row["ships"]}
    if row.get("last"):
        out.update(last=True, seconds=row["seconds"])
    return out


def query_level(ships: dict, k: int, method: str, eps: float) -> dict:
    """Each query's own top-k Ships heads as a per-prompt ablation: {prompt_id: AblationSpec}."""
    return {pid: head_spec([h for h, _ in ranked[:k]], method, eps) for pid, ranked in ships.items()}


# ------------------------------------------------------------------------------------------------
# Completions, judged


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
    model_id = ctx.model_id(role)
    variant_spec = None if variant is None else {"name": variant, "donor": ctx.model_id("base")}
    spec = {"model": model_id, "variant": variant_spec, "queries": q.spec(), "template": template,
            "system_prompt": system_prompt, "prefill": prefill, "ablation": abl_spec, "per_prompt": per_prompt,
            "decoding": decoding.to_dict()}
    what = f"completions {role}{'/' + variant if variant else ''} {q.set} {label or ''}".rstrip()
    entry = ctx._entry("completions", spec, what, len(q.ids) * decoding.max_new_tokens // 8, judge_only=not text_read,
                       new_tokens=len(q.ids) * decoding.max_new_tokens)
    if ctx.plan_only:
        for judge in (ctx.judge, *ctx.side_judges):
            if judge.classifier:
                plan_verdicts(ctx, judge, entry, len(q.ids), decoding.max_new_tokens)
        return Judged([{"prompt_id": pid, "response": "", "refused": True, "rule": "plan"} for pid in q.ids], 0.0)
    if entry.done:
        rows = entry.result()["rows"]
    else:
        job = GenerateJob(tuple(q.prompts), prompt_ids=tuple(q.ids), template=template, system_prompt=system_prompt,
                          prefill=prefill, ablation=tuple(ablation.get(pid) for pid in q.ids) if per_prompt else ablation,
                          decoding=decoding, batch_size=GEN_BATCH)
        with ctx.computing(entry, what):
            rows = entry.result()["rows"] if entry.done else _generate(ctx, entry, job, role, variant, what)
    from safetyheads.judges import asr_report

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
    (cheap); a model judge's verdicts are kept in the store (``verdicts_entry``), each batch appended as it
    is classified, so a rerun reads them back and a killed run resumes with the rest."""
    if not judge.classifier:
        return judge.judge(texts, asked)
    from safetyheads.judges import Verdict

    entry = verdicts_entry(ctx, judge, completions_entry, len(texts), what)
    ctx.used_keys.append({"kind": "verdicts", "key": entry.key, "what": entry.what})
    if entry.done:
        return [Verdict(**v) for v in entry.result()["verdicts"]]
    with ctx.computing(entry, entry.what):
        if entry.done:
            return [Verdict(**v) for v in entry.result()["verdicts"]]
        done = whole_units(entry, lambda r: r["row"], lambda row, rs: len(rs) == 1)
        verdicts = judge.verdicts(asked, texts, done={row: Verdict(**rs[0]["verdict"]) for row, rs in done.items()},
                                  save=lambda found: entry.append([{"row": i, "verdict": asdict(v)} for i, v in found]))
        entry.finish({"verdicts": [asdict(v) for v in verdicts], "classifier": judge.source()})
    return verdicts


def verdicts_entry(ctx: Context, judge, completions_entry, n: int, what: str):
    """The store entry of a model judge's verdicts of a completions entry: keyed by that entry and the
    judge's settings (classifier weights, dtype, prompt, decoding)."""
    spec = {"completions": completions_entry.key, "judge": judge.settings()}
    return ctx.store.entry("verdicts", spec, VERSIONS["verdicts"], what=f"{judge.name} verdicts of {what} ({n} rows)")


def plan_verdicts(ctx: Context, judge, completions_entry, n: int, response_tokens: int) -> None:
    """--dry-run: the model judge's verdicts of a completions entry, counted apart (``ctx.classifier_plan``)."""
    entry = verdicts_entry(ctx, judge, completions_entry, n, completions_entry.what or "")
    ctx.classifier_plan.append(ClassifierItem(judge.name, entry.key, completions_entry.key, n, response_tokens,
                                              entry.done))


def _generate(ctx: Context, entry, job: GenerateJob, role: str, variant: str | None, what: str) -> list:
    """Generate the completions ``entry`` does not hold yet; -> every row, in query order."""
    finished = job.finished(entry)
    todo = job.todo(finished)
    model, tok = (ctx.variant(role, variant) if variant else ctx.model(role)) if todo else (None, None)
    t0 = time.perf_counter()
    rows = job.run(model, tok, entry, finished=finished, shape=_stored_completion,
                   progress=ctx.progress and len(todo) > 4 * GEN_BATCH)["rows"]
    if todo:
        new = {str(pid) for pid in todo}
        generation_counts(ctx, [r for r in rows if str(r["prompt_id"]) in new], job.decoding)
        ctx.log(f"{what}: {len(todo)} generated in {time.perf_counter() - t0:.1f} s")
    return rows


def _stored_completion(row: dict) -> dict:
    return {k: row[k] for k in COMPLETION_FIELDS if k in row}


HEADS_PER_ENTRY = 32


def single_head_asr(ctx: Context, role: str, set_name: str) -> tuple[Judged, dict]:
    """Figure 4b's grid: every candidate head UA-ablated alone on the profile's heatmap queries
    (greedy, ``heatmap_max_new_tokens``). -> (vanilla, {head name: [(query id, complied, row)]})."""
    p = ctx.profile
    dec = DecodingSpec("greedy", max_new_tokens=p.heatmap_max_new_tokens)
    q = ctx.queries(set_name, "heatmap")
    van = completions(ctx, role, q, decoding=dec, label="heatmap vanilla")
    cands = ctx.candidates(role)
    # every (head, query) pair, in store entries of HEADS_PER_ENTRY heads: rows that ablate different
    # heads share generation batches, and a killed run resumes within an entry
    by_head: dict = {str(h): [] for h in cands}
    for c in range(0, len(cands), HEADS_PER_ENTRY):
        pairs = [(h, pid, pr) for h in cands[c : c + HEADS_PER_ENTRY] for pid, pr in zip(q.ids, q.prompts)]
        grid = Queries(q.set, q.sha256, [f"{h}|{pid}" for h, pid, _ in pairs], [pr for _, _, pr in pairs])
        spec = {f"{h}|{pid}": head_spec([h], "ua", p.eps) for h, pid, _ in pairs}
        res = completions(ctx, role, grid, ablation=spec, decoding=dec, label=f"heatmap, heads {c}..")
        for r in res.rows:
            head, pid = r["prompt_id"].split("|")
            by_head[head].append((int(pid), not r["refused"], r))
    return van, by_head


def strongest_single_head(ctx: Context, role: str, set_name: str) -> tuple[HeadRef, float]:
    """The head whose ablation alone gives the highest ASR in Figure 4b's grid (ties: the earliest
    head), with that ASR: the head that demonstrably lowers safety."""
    return strongest_of(single_head_asr(ctx, role, set_name)[1])


def strongest_of(by_head: dict) -> tuple[HeadRef, float]:
    """``strongest_single_head`` of a grid already read (``single_head_asr``'s second value)."""
    asr = {h: (sum(c for _, c, _ in rows) / len(rows) if rows else 0.0) for h, rows in by_head.items()}
    best = max(asr, key=lambda h: (asr[h], -HeadRef.parse(h).layer, -HeadRef.parse(h).head))
    return HeadRef.parse(best), asr[best]


def restrict(judged: Judged, ids) -> Judged:
    """The judged rows of ``ids`` only (a subset of the queries judged), with their ASR: the vanilla
    baseline of the query-level experiments, which run on the first queries of the evaluation set."""
    keep = set(ids)
    rows = [r for r in judged.rows if r["prompt_id"] in keep]
    asr = sum(not r["refused"] for r in rows) / len(rows) if rows else 0.0
    return Judged(rows, asr, {}, judged.key, judged.three_way)


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
    g["rows"] += len(rows)
    g["tokens"] += sum(int(r.get("n_new_tokens") or 0) for r in rows)
    g["budget"] += len(rows) * decoding.max_new_tokens
    g["stopped"] += sum(bool(r.get("stopped_early")) for r in rows)


def cached(ctx: Context, what: str, spec: dict, compute):
    """A small JSON-able result (an NLL, a parameter count, attention maps) kept in the store, so a
    rerun does not load a model to recompute it. ``compute()`` runs only on a miss."""
    if ctx.plan_only:
        return None
    entry = ctx._entry("small", {"what": what, **spec}, what, 0)
    if entry.done:
        return entry.result()["value"]
    with ctx.computing(entry, what):
        return entry.result()["value"] if entry.done else entry.finish({"value": compute()})["value"]


def head_spec(heads, method: str, eps: float) -> AblationSpec:
    return AblationSpec(tuple(heads), method, eps)


# ------------------------------------------------------------------------------------------------
# One Sahara step scored for several (N, r) at once (the sensitivity artefact)


def candidate_sweep(ctx: Context, role: str, q: Queries, method: str, group: list, cells: list) -> dict:
    """Generalized Ships of every candidate head not in ``group``, ablated on top of ``group``, against
    the clean model, for each cell (n, r) of ``cells``: over the first n queries of ``q``, summing r
    principal angles. One sweep serves every cell: a query's last-token states do not depend on the
    other queries, so the first n rows of the states of ``q`` are those of a sweep over n queries.
    -> {"candidates": [HeadRef...], "scores": {(n, r): [degrees, per candidate]}, "seconds": float}.

    Each query's states go to a side file of the store entry as soon as they are computed (a killed
    run resumes at the next query) and are deleted once every cell is scored: the entry keeps the
    scores only (the states of a sweep of 1024 heads x 100 queries x 4096 dimensions are 1.7 GB)."""
    p = ctx.profile
    cands = [h for h in ctx.candidates(role) if h not in group]
    cells = sorted({(int(n), int(r)) for n, r in cells})
    if max(n for n, _ in cells) > len(q.ids):
        raise SafetyheadsError(f"internal: a cell asks for {max(n for n, _ in cells)} queries of a {len(q.ids)}-query sweep")
    spec = {"model": ctx.model_id(role), "queries": q.spec(), "method": method, "eps": p.eps, "template": p.template,
            "candidates": [str(h) for h in cands], "group": [str(h) for h in group], "cells": [list(c) for c in cells]}
    what = (f"sweep {method.upper()} {role} {q.set} ({len(q.ids)} queries x {len(cands)} heads, "
            f"group {','.join(map(str, group)) or 'none'})")
    entry = ctx._entry("sweep", spec, what, len(q.ids) * (len(cands) + 1))
    if ctx.plan_only and not entry.done:
        # a different best head for every cell, so that the plan counts the most sweeps the next step can need
        return {"candidates": cands, "seconds": 0.0,
                "scores": {c: [float(j == i % len(cands)) for j in range(len(cands))] for i, c in enumerate(cells)}}
    if not entry.done:
        with ctx.computing(entry, what):
            if not entry.done:
                _sweep(ctx, entry, role, q, method, group, cands, cells, what)
    for left in entry.path.glob("states-*"):  # a run killed after finishing the entry, before removing them
        left.unlink(missing_ok=True)
    res = entry.result()
    ctx.timings[entry.key] = res["seconds"]
    return {"candidates": [HeadRef.parse(h) for h in res["candidates"]], "seconds": res["seconds"],
            "scores": {(n, r): scores for (n, r), scores in zip(res["cells"], res["scores"])}}


def _sweep(ctx: Context, entry, role: str, q: Queries, method: str, group: list, cands: list, cells: list,
           what: str) -> None:
    # deferred, as in the other steps: the model code loads only when something is computed
    import numpy as np
    import torch

    from safetyheads.ablation import RowEditor
    from safetyheads.prompts import encode_prompt
    from safetyheads.sahara import candidate_states
    from safetyheads.ships import clean_pass
    from safetyheads.subspace import generalized_ships_batch
    from tqdm.auto import tqdm

    p = ctx.profile
    model, tok = ctx.model(role)
    ablation = AblationSpec(tuple(ctx.candidates(role)), method, p.eps).check(model)
    # lossless: the states are computed in the model's dtype (float64 only for a float64 model)
    kept = np.float64 if model.dtype == torch.float64 else np.float32
    files = {pid: entry.side_file(f"states-{pid}.npz") for pid in q.ids}
    # a query is done once its side file is there (its row is appended after the file is written)
    done = whole_units(entry, lambda r: r["prompt_id"], lambda pid, rows: files[pid].exists())
    seconds = {pid: rows[-1]["seconds"] for pid, rows in done.items()}
    ctx.log(f"{what}: {len(seconds)} of {len(q.ids)} queries done before")
    bar = tqdm(total=len(q.ids), initial=len(seconds), unit="query", disable=not ctx.progress, desc="sweep")
    for pid, prompt in zip(q.ids, q.prompts):
        if pid in seconds:
            continue
        t0 = time.perf_counter()
        ids = encode_prompt(tok, prompt, p.template)
        clean = clean_pass(model, ids).last_state.double().cpu()  # before the editor's hooks, as sahara() does
        with RowEditor(model, ablation.target).install() as editor:
            states = candidate_states(model, ids, cands, group, ablation, editor)
        with replacing(files[pid]) as f:
            np.savez(f, clean=clean.numpy().astype(kept), states=states.numpy().astype(kept))
        seconds[pid] = time.perf_counter() - t0
        entry.append([{"prompt_id": pid, "seconds": seconds[pid]}])
        bar.update(1)
    bar.close()
    loaded = []
    for pid in q.ids:
        with np.load(files[pid]) as x:  # closed at once: one open file per query otherwise
            loaded.append((x["clean"], x["states"]))
    clean = torch.from_numpy(np.stack([c for c, _ in loaded])).double()  # [N, d]
    states = torch.from_numpy(np.stack([st for _, st in loaded], axis=1)).double()  # [H, N, d]
    scores = [generalized_ships_batch(clean[:n], states[:, :n], r=r).tolist() for n, r in cells]
    entry.finish({"candidates": [str(h) for h in cands], "cells": [list(c) for c in cells], "scores": scores,
                  "seconds": sum(seconds[pid] for pid in q.ids), "n_queries": len(q.ids)})
    for path in files.values():
        path.unlink(missing_ok=True)
