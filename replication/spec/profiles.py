"""The profiles: one code path, three sizes, and one extension beyond the paper.

``paper``: the authors' models and settings (needs the Hub weights and a GPU; expected values are
the published numbers). ``mini`` (default): the same experiments on this package's model organisms,
on a CPU. ``ci``: a reduced ``mini`` that runs every artefact in minutes, for regression checks.
``extension``: the headline experiments (Figures 2, 4, 5 and Table 3) with the paper's protocol on
four GQA chat models of 2024 (``EXTENSION_MODELS``), one model at a time, on a GPU; no expected
values exist for them, so every metric is NEW.
Every place where a profile departs from the paper says so in ``departures``.
"""

from __future__ import annotations

from safetyheads.errors import SafetyheadsError

from .departures import (COMMON_DEPARTURES, EARLY_STOP_DEPARTURE, EXTENSION_DEPARTURES, HEAD_LEVEL_DEPARTURE,
                         JUDGE_DEPARTURE, THREE_WAY_DEPARTURE)
from .extension_models import BF16_SPEEDUP, EXTENSION_ARTEFACTS, EXTENSION_MODELS, PAPER_PARAMS_B, extension_model
from .measured import ships_seconds_text, whole_run_text
from .profile import Profile

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
    # beside keyword-fixed, which decides (the published comparison is keyword-based, as in the paper): the
    # three-way judge and Llama Guard 3 8B, the harm classifier (loaded in the profile's dtype, on its device)
    side_judges=("three-way", "llama-guard-3-8b"),
    gpu_seconds_per_forward=0.03,  # 7B fp32, one row of a ~30-token prompt on an A100-80GB: a rough planning figure
    departures=(
        "Attribution and evaluation queries: the paper does not say whether Sahara saw the queries it was "
        "evaluated on. This profile attributes on the first 100 MaliciousInstruct / JailbreakBench queries "
        "and evaluates the same sets in full, so attribution and evaluation overlap, as they appear to in the paper.",
        JUDGE_DEPARTURE + " The paper's own list is available as keyword-paper. Beside it, every judged cell "
        "reports the three-way judge's ASR and broken rate (side_judges; its reader was fitted on the 135M "
        "organisms' completions at 40 tokens; on the 128-token answers of the judge evaluation set it calls 8 of 27 "
        "benign and 18 of 26 harmful answers broken, so on 7B answers its ASR is a second opinion that likely errs "
        "low) and Llama Guard 3 8B's ASR (unsafe responses; a harm classifier, not run on its real "
        "weights by this project yet: docs/judges.md). Every verdict reads keyword-fixed, as the paper's keyword ASR.",
        HEAD_LEVEL_DEPARTURE,
    ),
)

MINI = Profile(
    name="mini",
    models={"aligned": "organism-a", "sibling": "organism-b", "base": "smollm2-135m-instruct"},
    labels={"aligned": "organism-a (stands in for Llama-2-7b-chat)",
            "sibling": "organism-b (stands in for Vicuna-7b-v1.5)",
            "base": "SmolLM2-135M-Instruct, untuned (stands in for Llama-2-7b)"},
    n_attribution=8,
    n_eval=48,
    n_ships_eval=16,
    sensitivity_n=(8, 16, 32),
    sensitivity_r=(1, 2, 4),
    sensitivity_group_sets=("maliciousinstruct",),
    sensitivity_heldout=48,
    max_new_tokens=40,
    heatmap_n=8,
    heatmap_max_new_tokens=24,
    judge="three-way",
    # keyword-fixed's settled refusals stop generation, as before the three-way judge: the completions (and
    # their store keys) stay those of keyword-fixed, and the three-way judge reads them exactly
    stop_judge="keyword-fixed",
    departures=COMMON_DEPARTURES + (
        THREE_WAY_DEPARTURE,
        "Sizes, so that the whole profile runs in under two hours on a 2-core CPU (" + whole_run_text("mini") + "; "
        "per artefact in docs/harness.md and docs/reviewers.md; 84 queries and 48 tokens would take about twice that): "
        "Sahara on the first 8 queries of a set (one Sahara step over 270 heads costs a few CPU-seconds per query), ASR on the "
        "next 48 (AdvBench too, not its 520; one query moves an ASR by 0.02), 40 new tokens instead of 128 (the "
        "judge decides on the opening of a response).",
        "Query level (Tables 3/5's Ships rows, Figure 2, Table 7, the chat template): the first 16 of the 48 "
        "evaluation queries of each set (48 over the three sets of the headline). Each needs its own Ships sweep of "
        "every head per method, organism and input format (" + ships_seconds_text("mini") + "); 8 per set would save about 20 "
        "minutes but leave the headline inconclusive (measured: 0.04 -> 0.21, n = 24). The dataset level uses all 48, "
        "and the vanilla ASR beside a query-level row is that of the same 16.",
        "Sahara size, chosen from the sensitivity artefact: N = 8 queries and r = 1 (the authors' code's r). At r = 1 "
        "the step-1 head is L7H2 for N = 8, 16 and 32 on both sets, and the group of 3 (MaliciousInstruct) gains only a different third "
        "head at N = 32, while Sahara's cost grows with N; so more queries would change nothing the tables read. "
        "r = 4 at N = 32 picks L18H8 instead (held-out ASR 0.52 on both sets, against 0.08 and 0.10 for L7H2): the dataset-level group's "
        "weak effect on ASR comes from r = 1, the paper's setting, not from N.",
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
        THREE_WAY_DEPARTURE,
        "ci sizes: 4 attribution and 8 evaluation queries per set (the query level on the first 4), 16 new tokens, Sahara over the heads of every "
        "third layer (90 candidates) for 3 steps, Tables 3/5 and Figure 4 on MaliciousInstruct only, the three-set "
        "artefacts on MaliciousInstruct and JailbreakBench, Figure 4b on 2 queries x 8 tokens, Figure 6b on 16 "
        "benign prompts: a regression check of the whole pipeline in minutes, not evidence about the paper's claims.",
        EARLY_STOP_DEPARTURE,
    ),
)

EXTENSION = PAPER.replace(
    name="extension",
    models={r: (m.id if m else None) for r, m in EXTENSION_MODELS[0].roles().items()},
    labels={r: m.label for r, m in EXTENSION_MODELS[0].roles().items() if m},
    revisions={r: m.revision for r, m in EXTENSION_MODELS[0].roles().items() if m},
    dtype="bfloat16",
    input_formats=("direct", "paper", "chat"),
    gpu_seconds_per_forward=0.0,  # per model: see extension_profile
    extension_models=EXTENSION_MODELS,
    artefacts=EXTENSION_ARTEFACTS,
    max_loaded_models=1,  # one 8-9B model in bf16 (16-19 GB) on the GPU at a time; the store keeps what each computed
    expected_values=False,
    departures=EXTENSION_DEPARTURES,
)


def extension_profile(slug: str, base: Profile | None = None) -> Profile:
    """The profile of one model of the extension (``base``: the extension profile, or a cut-down copy of
    it in tests): its models, revisions, loading and chat settings, planning geometry and assumed cost."""
    m = extension_model(slug)
    base = base or EXTENSION
    roles = m.roles()
    return base.replace(
        models={r: (h.id if h else None) for r, h in roles.items()},
        labels={r: h.label for r, h in roles.items() if h},
        revisions={r: h.revision for r, h in roles.items() if h},
        attn_implementation={r: m.attn_implementation for r, h in roles.items() if h},
        chat_system_prompt=m.chat_system_prompt,
        plan_geometry={r: (m.n_layers, m.n_heads) for r, h in roles.items() if h},
        gpu_seconds_per_forward=round(PAPER.gpu_seconds_per_forward * m.params_b / PAPER_PARAMS_B / BF16_SPEEDUP, 5),
        gpu_rate_note=(f"ASSUMED, not measured: the paper profile's {PAPER.gpu_seconds_per_forward:g} s per row "
                       f"(6.7B, fp32, A100-80GB) x {m.params_b:g}B / {PAPER_PARAMS_B:g}B parameters / "
                       f"{BF16_SPEEDUP:g} for bf16"),
        extension_models=(), variant=m.slug)


PROFILES = {p.name: p for p in (PAPER, MINI, CI, EXTENSION)}
DEFAULT_PROFILE = "mini"


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise SafetyheadsError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    return PROFILES[name]
