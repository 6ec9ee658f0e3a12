"""Profiles: one code path, three sizes.

``paper``: the authors' models and settings (needs the Hub weights and a GPU; expected values are
the published numbers). ``mini`` (default): the same experiments on this package's model organisms,
on a CPU. ``ci``: a reduced ``mini`` that runs every artefact in minutes, for regression checks.
Every place where a profile departs from the paper says so in ``departures``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

from safetyheads.errors import SafetyheadsError

ROLES = ("aligned", "sibling", "base")
ALL_SETS = ("advbench", "jailbreakbench", "maliciousinstruct")


@dataclass(frozen=True)
class Profile:
    name: str
    models: dict  # role -> model name (load_model's argument)
    labels: dict  # role -> what the model stands for, for captions
    revisions: dict = field(default_factory=dict)  # role -> Hub revision (paper profile)
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
    judge: str = "keyword-fixed"
    heatmap_n: int = 8
    heatmap_max_new_tokens: int = 24
    helpfulness_n: int = 100
    attention_scales: tuple = (5e-1, 1e-3, 1e-10)
    chat_system_prompt: str = "You are a helpful assistant"
    gpu_seconds_per_forward: float = 0.0  # rough cost of one forward pass of one row, for --dry-run (0: not estimated)
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

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes) -> "Profile":
        return type(self)(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


# Which head each experiment ablates, printed under every profile's tables.
HEAD_LEVEL_DEPARTURE = (
    "Head choice: Figure 2 (and so the headline) ablates each query's own top-1 Ships head, scored on that query "
    "in that input format (the paper's protocol); the top-1 Sahara head for every query is shown as an extra "
    "'dataset level' row and never read by a verdict. The paper does not say which head Table 7 and the "
    "chat-template appendix ablate: both levels are run and the verdicts read the query level (Table 7's UA column "
    "matches Figure 2's query-level numbers). Figure 6b's verdict reads each head that lowers safety: the head "
    "most often a harmful query's own top-1 UA Ships head, and Figure 4b's strongest single head when its ablation "
    "beats vanilla there; the Sahara heads are shown beside them."
)

PAPER = Profile(
    name="paper",
    models={"aligned": "meta-llama/Llama-2-7b-chat-hf", "sibling": "lmsys/vicuna-7b-v1.5",
            "base": "meta-llama/Llama-2-7b-hf"},
    labels={"aligned": "Llama-2-7b-chat", "sibling": "Vicuna-7b-v1.5", "base": "Llama-2-7b (base)"},
    # Hub commits, so that a rerun years later loads the same weights. Each is the snapshot that
    # public projects record for that repository (its last commit, as cached by many of them); this
    # project's machines cannot reach the Hub, so they are unchecked here: `hf download ID --revision
    # SHA` fails loudly if one is wrong.
    revisions={"aligned": "f5db02db724555f92da89c216ac04704f23d4590",
               "sibling": "3321f76e3f527bd14065daf69dad9344000a201d",
               "base": "01c7f73d771dfac7d292323805ebc428287df4f9"},
    dtype="float32",  # the authors load fp32
    n_attribution=100,  # the paper attributes over the whole set
    n_eval=None,  # every query of every set
    heldout_eval=False,
    max_new_tokens=128,
    heatmap_n=100,
    heatmap_max_new_tokens=128,
    gpu_seconds_per_forward=0.03,  # 7B fp32, one row of a ~30-token prompt on an A100-80GB: a rough planning figure
    departures=(
        "Attribution and evaluation queries: the paper does not say whether Sahara saw the queries it was "
        "evaluated on. This profile attributes on the first 100 MaliciousInstruct / JailbreakBench queries "
        "and evaluates the same sets in full, so attribution and evaluation overlap, as they appear to in the paper.",
        "Judge: keyword-fixed (the paper's keyword list with its two defects repaired, plus refusal patterns) "
        "with the gibberish filter; the paper's own list is available as keyword-paper.",
        HEAD_LEVEL_DEPARTURE,
    ),
)

COMMON_DEPARTURES = (
    "Models: the project's model organisms (LoRA safety fine-tunes of SmolLM2-135M-Instruct, 30 layers x 9 "
    "heads = 270 heads, GQA with 3 KV heads) stand in for the 7B models; see safetyheads/organisms/BEHAVIOUR.md.",
    "Evaluation queries are held out from attribution: Sahara sees the first queries of a set, ASR is measured "
    "on the ones after them.",
    "Figure 6b: helpfulness = refusals and fluency (the untuned base model's NLL of the answers) on held-out "
    "benign Alpaca prompts, not lm-eval's zero-shot tasks (no network, no bundled task data).",
    "Judge: keyword-fixed (the paper's keyword list with its two defects repaired, plus refusal patterns) "
    "with the gibberish filter.",
    HEAD_LEVEL_DEPARTURE,
)

EARLY_STOP_DEPARTURE = (
    "Early stop: every completion whose only reader is the judge (the harmful-query runs of every artefact: "
    "Tables 1, 3, 5, 7, Figures 2, 4, 6a, the chat template) stops once the judge's verdict is settled, i.e. a "
    "refusal match is followed by 30 more characters (safetyheads.judges.Judge.settled; exact for the verdict, "
    "tested on every committed completion). Their stored responses are therefore cut there (stopped_early, "
    "stop_token). Figure 6b's benign answers run to the token limit: their base-model NLL reads the whole text. "
    "The paper decodes every response to the limit; `--dry-run --profile paper` shows the GPU-hours saved."
)

MINI = Profile(
    name="mini",
    models={"aligned": "organism-a", "sibling": "organism-b", "base": "smollm2-135m-instruct"},
    labels={"aligned": "organism-a (stands in for Llama-2-7b-chat)",
            "sibling": "organism-b (stands in for Vicuna-7b-v1.5)",
            "base": "SmolLM2-135M-Instruct, untuned (stands in for Llama-2-7b)"},
    n_attribution=8,
    n_eval=48,
    n_ships_eval=8,
    sensitivity_n=(8, 16, 32),
    sensitivity_r=(1, 2, 4),
    sensitivity_group_sets=("maliciousinstruct",),
    sensitivity_heldout=48,
    max_new_tokens=40,
    heatmap_n=8,
    heatmap_max_new_tokens=24,
    departures=COMMON_DEPARTURES + (
        "Sizes, so that the whole profile runs in well under two hours on a 2-core CPU (78 min measured; 84 "
        "queries and 48 tokens would take about twice that, generation being most of the cost): Sahara on the "
        "first 8 queries of a set (one Sahara step over 270 heads costs a few CPU-seconds per query), ASR on the "
        "next 48 (AdvBench too, not its 520; one query moves an ASR by 0.02), 40 new tokens instead of 128 (the "
        "judge decides on the opening of a response).",
        "Query level (Tables 3/5's Ships rows, Figure 2, Table 7, the chat template): the first 8 of the 48 "
        "evaluation queries of each set (24 over the three sets of the headline). Each needs its own Ships sweep of "
        "every head per method, organism and input format, about 6 CPU-seconds each, 28 sweeps per query in all; "
        "16 per set would add about 25 minutes and break the time budget. The dataset level uses all 48, and the "
        "vanilla ASR beside a query-level row is that of the same 8.",
        "Figure 4b: 8 queries and 24 new tokens per head instead of the whole set and 128 tokens (270 heads x 2 sets).",
        "Sensitivity (not in the paper): N up to 32 attribution queries, not 48 or the whole set, and held-out ASR on "
        "the 48 queries after them; the step-1 head of every (N, r) cell and its held-out ASR on both sets, but "
        "the greedy groups of 3 (steps 2 and 3: one sweep of every head per distinct group prefix) on MaliciousInstruct "
        "only, to stay within the time budget.",
        EARLY_STOP_DEPARTURE,
    ),
    stop_when_settled=True,
)

CI = MINI.replace(
    name="ci",
    n_attribution=4,
    n_eval=8,
    n_ships_eval=4,
    sets=("maliciousinstruct", "jailbreakbench"),
    table_sets=("maliciousinstruct",),
    sahara_steps=3,
    candidate_layers=tuple(range(0, 30, 3)),
    sensitivity_n=(2, 4, 8),
    sensitivity_r=(1, 2),
    sensitivity_heldout=8,
    max_new_tokens=16,
    heatmap_n=2,
    heatmap_max_new_tokens=8,
    helpfulness_n=16,
    departures=COMMON_DEPARTURES + (
        "ci sizes: 4 attribution and 8 evaluation queries per set (the query level on the first 4), 16 new tokens, Sahara over the heads of every "
        "third layer (90 candidates) for 3 steps, Tables 3/5 and Figure 4 on MaliciousInstruct only, the three-set "
        "artefacts on MaliciousInstruct and JailbreakBench, Figure 4b on 2 queries x 8 tokens, Figure 6b on 16 "
        "benign prompts: a regression check of the whole pipeline in minutes, not evidence about the paper's claims.",
        EARLY_STOP_DEPARTURE,
    ),
)

PROFILES = {p.name: p for p in (PAPER, MINI, CI)}
DEFAULT_PROFILE = "mini"


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise SafetyheadsError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    return PROFILES[name]
