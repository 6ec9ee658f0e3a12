"""What a profile is: the models, sizes, judges and settings one run of the harness uses, checked when it
is made. The profiles themselves are in ``replication.spec.profiles``; every place where one departs
from the paper says so in its ``departures`` (the texts: ``replication.spec.departures``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass

from safetyheads.errors import SafetyheadsError
from safetyheads.judges import JUDGES, check_rejudge

ROLES = ("aligned", "sibling", "base")
ALL_SETS = ("advbench", "jailbreakbench", "maliciousinstruct")


@dataclass(frozen=True)
class Profile:
    name: str
    models: dict  # role -> model name (load_model's argument); None: the profile has no model in that role
    labels: dict  # role -> what the model stands for, for captions
    revisions: dict = field(default_factory=dict)  # role -> Hub revision (paper profile)
    attn_implementation: dict = field(default_factory=dict)  # role -> load_model's attn_implementation (default sdpa)
    dtype: str = "float32"
    template: str = "paper"  # the paper's main input format: "## Query:{q}\n## Answer:"
    attribution_set: str = "maliciousinstruct"  # ranks heads for the one-head / three-head experiments
    n_attribution: int = 16  # queries Sahara / generalized Ships see (the first N of a set)
    n_eval: int | None = 84  # queries judged per set (None: all of it)
    heldout_eval: bool = True  # evaluate on the queries after the attribution ones, not on them
    n_ships_eval: int | None = None  # Ships-level rows of Tables 3/5: the first N evaluation queries (None: all)
    sets: tuple = ALL_SETS  # sets of the three-set artefacts (Figure 2, Tables 1 and 7, chat template)
    table_sets: tuple = ("maliciousinstruct", "jailbreakbench")  # sets of Tables 3 and 5, Figure 4
    sahara_steps: int = 5
    candidate_layers: tuple | None = None  # None: every head is a candidate
    eps: float = 1e-5  # UA / SC factor (the authors' Sahara code; their Ships code uses 1e-4)
    max_new_tokens: int = 64
    topk: int = 5
    seed: int = 0
    judge: str = "keyword-fixed"  # the judge whose verdicts every ASR and verdict reads
    # Judges whose ASR and broken rate each judged cell reports beside the profile's judge's (a column in
    # the tables, a field in outcomes.json and responses.jsonl.gz); they decide nothing
    side_judges: tuple = ()
    # The judge whose settled verdict stops early-stopped generation (None: the profile's judge); the
    # profile's judge must settle like it (Judge.settles_like), so that it reads the cut responses exactly
    stop_judge: str | None = None
    heatmap_n: int = 8
    heatmap_max_new_tokens: int = 24
    helpfulness_n: int = 100
    attention_scales: tuple = (5e-1, 1e-3, 1e-10)
    chat_system_prompt: str | None = "You are a helpful assistant"  # None: the chat template without a system turn
    input_formats: tuple = ("direct", "paper")  # Figure 2's inputs (the paper's two; "chat": the model's own template)
    gpu_seconds_per_forward: float = 0.0  # rough cost of one forward pass of one row, for --dry-run (0: not estimated)
    gpu_rate_note: str = "a rough planning figure: one row of a short prompt on one A100-80GB, fp32"
    # Early stop (safetyheads.generation, DecodingSpec.stop_when_settled): a completion whose only reader
    # is the profile's judge stops once that judge's verdict is settled. Exact for the verdict, so only
    # the cost changes; completions whose text is read otherwise (Figure 6b's NLL) always run to the end.
    stop_when_settled: bool = False
    # The sensitivity artefact (not in the paper): Sahara rerun for each number of attribution queries N
    # (the first N of a set) and each r of generalized Ships; query-level Ships ranked with each eps; ASR
    # judged on up to sensitivity_heldout queries after the largest N (None: all of them)
    sensitivity_n: tuple = (8, 16, 32, 48, 100)
    sensitivity_r: tuple = (1, 2, 4)
    sensitivity_eps: tuple = (1e-4, 1e-5, 1e-10)
    sensitivity_heldout: int | None = None
    sensitivity_group_sets: tuple | None = None  # sets whose whole greedy groups are searched (None: every table set)
    departures: tuple = ()
    # The extension profile: its table of models (ExtensionModel), the artefacts it runs (None: every
    # one), and, in the profile of one of its models (extension_profile), that model's slug, under
    # which its outputs are written; plan_geometry: role -> (layers, heads) for a plan, which loads nothing.
    extension_models: tuple = ()
    artefacts: tuple | None = None
    variant: str | None = None
    plan_geometry: dict = field(default_factory=dict)
    expected_values: bool = True  # False: no expected values can exist, every metric is NEW (no baselines)
    max_loaded_models: int | None = None  # models held in memory at once (None: every role stays loaded)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):
                object.__setattr__(self, f.name, tuple(v))
        missing = [r for r in ROLES if r not in self.models]
        if missing:
            raise SafetyheadsError(f"profile {self.name!r} names no model for role(s) {', '.join(missing)}")
        if self.n_eval is not None and self.n_eval < 1:
            raise SafetyheadsError(f"profile {self.name!r}: n_eval must be >= 1 or None (all)")
        for n in ("n_attribution", "sahara_steps", "max_new_tokens", "heatmap_n",
                  "heatmap_max_new_tokens", "helpfulness_n"):
            if getattr(self, n) < 1:
                raise SafetyheadsError(f"profile {self.name!r}: {n} must be >= 1")
        if self.helpfulness_n > 100:
            raise SafetyheadsError("helpfulness_n must be <= 100 (the organisms' held-out benign prompts)")
        if not 1 <= self.sahara_steps <= 5:
            raise SafetyheadsError("sahara_steps must be 1..5 (the paper's range)")
        if not self.sensitivity_n or not self.sensitivity_r or not self.sensitivity_eps:
            raise SafetyheadsError(f"profile {self.name!r}: sensitivity_n, sensitivity_r and sensitivity_eps need a value each")
        if min(self.sensitivity_n) < 1 or min(self.sensitivity_r) < 1 or not min(self.sensitivity_eps) > 0:
            raise SafetyheadsError(f"profile {self.name!r}: sensitivity_n and sensitivity_r must be >= 1, sensitivity_eps > 0")
        if self.sensitivity_heldout is not None and self.sensitivity_heldout < 1:
            raise SafetyheadsError(f"profile {self.name!r}: sensitivity_heldout must be >= 1 or None (all)")
        bad = [s for s in (*self.sets, *self.table_sets, self.attribution_set) if s not in ALL_SETS]
        if bad:
            raise SafetyheadsError(f"profile {self.name!r}: unknown set(s) {', '.join(bad)}; use {', '.join(ALL_SETS)}")
        if self.models.get("aligned") is None:
            raise SafetyheadsError(f"profile {self.name!r} needs an aligned model")
        self._check_judges()
        bad = [f for f in self.input_formats if f not in ("direct", "paper", "chat")]
        if bad or not self.input_formats:
            raise SafetyheadsError(f"profile {self.name!r}: input_formats must be some of direct, paper, chat")

    def _check_judges(self) -> None:
        unknown = [j for j in (self.judge, *self.side_judges, *([self.stop_judge] if self.stop_judge else [])) if j not in JUDGES]
        if unknown:
            raise SafetyheadsError(f"profile {self.name!r}: unknown judge {unknown[0]!r}; choose from {', '.join(JUDGES)}")
        if self.stop_judge and JUDGES[self.stop_judge].classifier:
            raise SafetyheadsError(f"profile {self.name!r}: stop_judge {self.stop_judge!r} is a model classifier, which "
                                   "never settles: name a rule-based judge")
        # the judge generation stops for (steps.early_stop): each judge must read a response cut for it exactly;
        # a model judge reads whole responses only, so a profile that stops early cannot name one
        stops_for = (self.stop_judge or self.judge) if self.stop_when_settled else self.stop_judge
        if stops_for:
            for j in (self.judge, *self.side_judges):
                try:
                    check_rejudge({"stopped_early": True, "settled_for": [stops_for]}, j)
                except SafetyheadsError:
                    raise SafetyheadsError(f"profile {self.name!r}: judge {j!r} cannot read responses stopped early for "
                                           f"{stops_for!r}; name a stop_judge it settles like, or turn stop_when_settled "
                                           "off (a model judge reads whole responses only)") from None

    def has(self, role: str) -> bool:
        """Whether the profile names a model for ``role`` (an extension model may have no sibling)."""
        return self.models.get(role) is not None

    @property
    def folder(self) -> str:
        """Where the profile's outputs go under paper_tables/generated/: its name, then the model's slug
        for one model of the extension profile."""
        return self.name if self.variant is None else f"{self.name}/{self.variant}"

    def to_dict(self) -> dict:
        def plain(v):
            if is_dataclass(v):
                return asdict(v)
            return [plain(x) for x in v] if isinstance(v, tuple) else v

        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes) -> "Profile":
        return type(self)(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


