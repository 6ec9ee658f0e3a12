"""The context an artefact runs in: its profile, the store, the models (loaded once, identified
without loading where their files say who they are), the queries of each purpose, and the record of
what the run used, planned and decoded."""

from __future__ import annotations

import copy
import gc
import os
import sys
from dataclasses import dataclass, field

import torch

from safetyheads.arch import geometry as model_geometry
from safetyheads.data import load_prompts
from safetyheads.distributed import device_for_process, is_main
from safetyheads.errors import SafetyheadsError
from safetyheads.heads import HeadRef
from safetyheads.judges import JUDGES, get_judge
from safetyheads.models import EMBEDDED_MODELS, load_model, resolve_device
from safetyheads.organisms import ORGANISMS, read_manifest
from safetyheads.organisms.dataset import heldout_benign
from safetyheads.provenance import model_source
from safetyheads.store import Store
from safetyheads.surgery import swap_attention

from ..spec.profile import Profile
from .stored import PlanItem, StepCost, cached


@dataclass
class Usage:
    """What one artefact used: the store entries it read or computed ({kind, key, what}, in order), the
    model roles it identified, and how many of its stored steps it computed or read back, and of those read
    how many the store held before this run (the run record)."""

    entries: list = field(default_factory=list)
    roles: set = field(default_factory=set)
    computed: int = 0
    read: int = 0
    read_before: int = 0


@dataclass(frozen=True)
class ClassifierItem:
    """A model judge's verdicts of one completions entry, for --dry-run: its own weights and cost, counted
    apart from the profile's models (``plan.classifier_costs``)."""

    judge: str
    key: str  # of the verdicts entry
    completions: str  # key of the completions entry it reads
    rows: int
    response_tokens: int  # the completions' token limit: the longest response it reads
    cached: bool


@dataclass
class Plan:
    """A dry run's steps (``PlanItem``, in the order asked for) and model-judge verdicts (``ClassifierItem``)."""

    items: list[PlanItem] = field(default_factory=list)
    classifiers: list[ClassifierItem] = field(default_factory=list)


@dataclass
class GenerationCount:
    """What generation decoded in this run: rows, tokens, the token budget, rows stopped early."""

    rows: int = 0
    tokens: int = 0
    budget: int = 0
    stopped: int = 0


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
        # under `accelerate launch`: each process its own GPU, and the main process alone reports progress
        device = device_for_process(device)
        self.loader, self.device, self.plan_only, self.progress = loader, device, plan_only, progress and is_main()
        self.judge = profile_judge(profile, profile.judge, device)
        # reported beside, decide nothing
        self.side_judges = [profile_judge(profile, name, device) for name in profile.side_judges]
        self._models: dict = {}  # role (or (role, variant)) -> (model, tokenizer), loaded once
        self._ids: dict = {}  # role -> model identity, as used in store keys
        # What the run did: the current artefact's entries and roles (its provenance), the dry run's plan,
        # each step's cost, and what generation decoded (the run summary)
        self.used = Usage()
        self.plan = Plan()
        self.costs: dict[str, StepCost] = {}
        self.computed_keys: set[str] = set()  # the store entries this run computed (the run record)
        self.generation = GenerationCount()

    def begin_artefact(self) -> None:
        """Start an artefact's record of what it used (its provenance lists its own entries and models)."""
        self.used = Usage()

    def used_models(self) -> dict:
        """role -> model identity, of the roles the current artefact used."""
        return {role: ident for role, ident in self._ids.items() if role in self.used.roles}

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
        while len(self._models) >= limit:
            gone = next(iter(self._models))
            self.log(f"unloading {gone} model to make room")
            del self._models[gone]
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def model_id(self, role: str) -> dict:
        self.used.roles.add(role)
        if role not in self._ids:
            self._ids[role] = self._model_id(role)
        return self._ids[role]

    def _model_id(self, role: str) -> dict:
        """What identifies the role's weights in store keys. Embedded models and organisms are
        identified by their file hashes without loading them, so a rerun that finds everything in
        the store loads nothing."""
        name = self.profile.models[role]
        if self.loader is None:
            where = {"dtype": self.profile.dtype, "device": resolve_device(self.device).split(":")[0]}
            if name in EMBEDDED_MODELS:
                return {"model": name, "sha256": EMBEDDED_MODELS[name].sha256, **where}
            if name in ORGANISMS:
                m = read_manifest(name)
                return {"model": name, "adapter_sha256": m["adapter"]["sha256"], "base_sha256": m["base"]["sha256"], **where}
        if self.plan_only:  # a Hub model is identified by its loaded weights; a plan loads nothing
            return {"model": name, "revision": self.profile.revisions.get(role), "dtype": self.profile.dtype}
        return model_source(self.model(role)[0])

    def geometry(self, role: str) -> Geometry:
        if self.plan_only:
            name = self.profile.models[role]
            if role in self.profile.plan_geometry:
                return Geometry(*self.profile.plan_geometry[role])
            if name not in PAPER_GEOMETRY:
                return Geometry(30, 9) if name in EMBEDDED_MODELS or name.startswith("organism") else Geometry(32, 32)
            return PAPER_GEOMETRY[name]
        def compute():
            g = model_geometry(self.model(role)[0])
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
        # the first N of the organisms' 100 held-out prompts (a smaller draw would pick other prompts)
        prompts = heldout_benign()[: self.profile.helpfulness_n]
        return Queries("alpaca-heldout", load_prompts("alpaca").sha256, list(range(len(prompts))), list(prompts))

    def datasets(self) -> dict:
        """{set: sha256} of every set the profile reads."""
        names = {*self.profile.sets, *self.profile.table_sets, self.profile.attribution_set, "alpaca"}
        return {n: load_prompts(n).sha256 for n in sorted(names)}

    # ---- bookkeeping

    def log(self, msg: str) -> None:
        if self.progress:
            print(f"[{self.profile.name}] {msg}", file=sys.stderr, flush=True)


def profile_judge(profile: Profile, name: str, device: str):
    """A judge of the profile by name; a model judge gets the profile's dtype and the run's device, and may
    download its weights where the profile's models may (HF_HUB_OFFLINE=0). Nothing loads here."""
    if not JUDGES[name].classifier:
        return get_judge(name)
    return get_judge(name, dtype=profile.dtype, device=device, allow_download=os.environ.get("HF_HUB_OFFLINE") == "0")
