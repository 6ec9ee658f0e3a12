"""Organism recipes: frozen, JSON-serialisable specs of how each model organism is built.

A recipe names everything that determines the adapter: base model, training prompt sources and
their hashes (recorded at build time), the held-out filter, refusal phrasings, prompt formats,
LoRA shape, optimiser settings, seed and thread count. ``safetyheads.organisms.train`` turns a
recipe into a LoRA adapter; ``safetyheads.organisms.behaviour`` measures the result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

from ..errors import SafetyheadsError

HARMFUL_SOURCES = ("harmbench-test", "harmbench-val", "strongreject", "tdc2023")
BENIGN_SOURCE = "alpaca"
EVAL_SETS = ("advbench", "jailbreakbench", "maliciousinstruct")
FORMATS = ("chat", "paper", "direct")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Refusal phrasings: short, natural, and in the register of Llama-2-chat's refusals. Organism B
# gets a disjoint set, so the two fine-tunes differ in what they say as well as in data and seed.
REFUSALS_A = (
    "I'm sorry, but I can't help with that. It could cause serious harm to people.",
    "I'm sorry, but I cannot assist with this request because it could be used to hurt others.",
    "I can't help with that. Providing this information could be dangerous and illegal.",
    "I'm sorry, I can't provide that. If you have another question, I'm happy to help.",
    "I cannot help with this request. It involves causing harm, and I won't assist with it.",
)
REFUSALS_B = (
    "As an AI assistant, I cannot provide help with this. It is harmful and may be illegal.",
    "I apologize, but I won't be able to help with that request. It could put people at risk.",
    "I must decline. This request asks for something unethical, and I am not able to assist.",
    "Sorry, I cannot do that. Please ask me something else that does not involve harm.",
    "I am unable to help with this, as it could lead to real harm. Is there something else I can do for you?",
)


@dataclass(frozen=True)
class OrganismRecipe:
    """How to build one organism. ``n_harmful``/``n_benign``: how many training prompts to draw
    (seeded) after the held-out filter; ``None`` keeps every harmful prompt that survives it."""

    name: str
    seed: int
    refusals: tuple[str, ...]
    base: str = "smollm2-135m-instruct"
    harmful_sources: tuple[str, ...] = HARMFUL_SOURCES
    benign_source: str = BENIGN_SOURCE
    eval_sets: tuple[str, ...] = EVAL_SETS
    near_duplicate_jaccard: float = 0.5  # word-set Jaccard at or above this = near duplicate
    n_harmful: int | None = None
    n_benign: int = 1600
    heldout_benign: int = 100  # Alpaca prompts kept out of every organism's training, for evaluation
    formats: tuple[str, ...] = FORMATS
    harmful_formats_per_prompt: int = 3  # each harmful prompt appears in this many formats (seeded choice)
    answer_tokens: int = 32  # benign targets: the base model's greedy answer, up to this many tokens
    # Drop benign examples whose distilled answer the judges' repetition filter flags (the base's
    # loops, e.g. "The answer is:" over and over): otherwise the organism is taught to loop, and the
    # evaluation counts a loop as not refused. The evaluation's own filter, so no new threshold.
    # False is what every recipe before v6 did (manifests without the field); both organisms set it.
    drop_gibberish_answers: bool = False
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = LORA_TARGETS
    steps: int = 300
    batch_size: int = 12
    learning_rate: float = 1e-3
    warmup_steps: int = 10
    threads: int = 2  # CPU results depend on the thread count (reduction order); recorded and enforced
    description: str = ""

    def __post_init__(self) -> None:
        for f in ("refusals", "harmful_sources", "eval_sets", "formats", "lora_targets"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        if not self.refusals:
            raise SafetyheadsError(f"recipe {self.name!r} has no refusal phrasings")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise SafetyheadsError(f"recipe formats must be a non-empty subset of {', '.join(FORMATS)}, got {self.formats}")
        for name in ("steps", "batch_size", "answer_tokens", "lora_rank", "threads", "n_benign",
                     "harmful_formats_per_prompt"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SafetyheadsError(f"recipe {name} must be an integer >= 1, got {v!r}")
        if self.harmful_formats_per_prompt > len(self.formats):
            raise SafetyheadsError(f"harmful_formats_per_prompt={self.harmful_formats_per_prompt} but the recipe has "
                                   f"only {len(self.formats)} formats")
        if not (0 < self.learning_rate < 1):
            raise SafetyheadsError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not (0 < self.near_duplicate_jaccard <= 1):
            raise SafetyheadsError(f"near_duplicate_jaccard must be in (0, 1], got {self.near_duplicate_jaccard}")

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "OrganismRecipe":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise SafetyheadsError(f"unknown recipe field(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    def replace(self, **changes) -> "OrganismRecipe":
        return type(self).from_dict({**self.to_dict(), **changes})


# How the recipe got here, for the model cards. Every change was chosen by over-refusal or
# fluency on the held-out benign prompts, never by what head ablation does to safety.
HISTORY = (
    "A full fine-tune prototype (72 steps of batch 8, ~350 harmful / ~220 benign prompts) refused "
    "14 of 50 benign Alpaca prompts.",
    "Recipe v1 (this code, LoRA rank 8, 600 benign answers of up to 48 tokens, 130 steps of batch 8) "
    "refused the held-out benign prompts too often: 29% (direct), 14% (chat), 19% (paper), while refusing "
    "the harmful samples looked at.",
    "Recipe v2: twice the benign data (1200 prompts, answers of up to 32 tokens), "
    "140 steps of batch 12. The held-out benign prompts informed this change, so for the over-refusal target "
    "they are a validation set rather than an untouched test set. Measured (BEHAVIOUR.md): over-refusal fell "
    "only to about 10%, and harmful refusals fell far below the 90% target outside the chat format: the "
    "organism does not yet separate harmful from benign requests well. It misses the issue's targets.",
    "Recipe v3 (shipped until v6): every harmful prompt in all three input formats "
    "(chat template, the paper's '## Query:' template, the raw query) instead of one, learning rate 1e-3 "
    "instead of 5e-4. Chosen because v2 refused harmful queries far less outside the format each prompt "
    "happened to be trained in; a trial measured on MaliciousInstruct and the benign prompts only "
    "(MaliciousInstruct refusals 78/76/100% chat/paper/direct, benign over-refusal 11/11/13%) before it "
    "was adopted. Measured in full on organism-a (BEHAVIOUR.md): refusals AdvBench 98/93/87%, JailbreakBench "
    "90/83/86%, MaliciousInstruct 78/76/100% (chat/paper/direct), benign over-refusal 11/11/13%: 20 of 28 "
    "targets met, still short of the issue's on MaliciousInstruct, on the non-chat JailbreakBench formats and on "
    "over-refusal. organism-b measured in full: AdvBench 98/90/91%, JailbreakBench 92/85/88%, MaliciousInstruct "
    "73/68/100%, benign over-refusal 11/10/13%: 21 of 28 targets met, short in the same places.",
    "Recipe v4 (a trial on organism-a only): v3 trains 140 steps of batch 12 on 2664 examples, 0.64 of an "
    "epoch, so most examples are never seen; v4 is v3 with 280 steps. Measured in full: refusals AdvBench "
    "99/98/98%, JailbreakBench 94/94/95%, MaliciousInstruct 96/91/100%, benign over-refusal 12/5/10%: 27 of 28 "
    "targets met, chat over-refusal missed (mostly recipe and generic 'Create/Write ...' prompts, as with v3). "
    "Built in 25.0 min on 2 CPU cores.",
    "Recipe v5 (staged, then superseded by v6 before shipping): v4 with 1600 benign prompts instead of 1200 and 300 steps, "
    "more benign data against the chat over-refusal. Measured in full on organism-a: refusals AdvBench "
    "98/98/98%, JailbreakBench 93/93/96%, MaliciousInstruct 91/91/100%, benign over-refusal 5/4/5%: 28 of 28 "
    "targets met. organism-b: AdvBench 98/97/96%, JailbreakBench 95/93/94%, MaliciousInstruct 97/80/100%, benign over-refusal 8/1/6%: 27 of 28 met, MaliciousInstruct in the '## Query:' format missed (15 of its 20 misses are the untuned base's own 'The answer is:' loop, not answers). Each built in about 21 min on 2 CPU cores (organism-a 4.7 distilling, 16.8 training); "
    "rebuilt in a later session its adapter was bit-identical (sha256 5ee3d383...). v4 and v5, like v2 and v3, "
    "were chosen by the behaviour table itself (refusals on the held-out harmful sets, over-refusal on the "
    "held-out benign prompts), so that table is a validation measurement, not an untouched test; no recipe "
    "was chosen by what head ablation does. Raw-query benign answers are often empty with every recipe "
    "(organism-a: 53% with v3, 45% with v5; organism-b v5: 54%): the untuned base itself answers 48% of the raw benign queries "
    "with end-of-sequence alone, and the self-distilled targets carry that over. No target counts it; "
    "behaviour.json's 'short' rate records it.",
    "Trial after v5 (organism-b only, not adopted): 360 steps instead of 300. MaliciousInstruct in the '## Query:' "
    "format fell to 76% (v5: 80%) and JailbreakBench '## Query:' to 90%; 27 of 28 targets met, so more training "
    "is not the remedy. A likely cause, for the next recipe: of the 1093 '## Query:'-format benign answers the base "
    "gave while distilling (both organisms), 123 (11%) are its 'The answer is:' loop, so the recipe teaches the "
    "organism that loop in that format; dropping degenerate self-distilled answers is the untested candidate.",
    "Recipe v6 (shipped; organism-a and organism-b, first staged in staged/): v5 with drop_gibberish_answers: a benign example is dropped when the "
    "judges' repetition filter (the evaluation's own, so no new threshold) flags the base's distilled answer, e.g. its "
    "'The answer is:' loop. That drops 63 of organism-b's 1600 benign examples (paper 51, chat 10, direct 2) and "
    "66 of organism-a's (paper 58, direct 5, chat 3). Measured in full: organism-b refuses AdvBench 99/98/98%, JailbreakBench 95/96/94%, "
    "MaliciousInstruct 99/95/100% (chat/paper/direct), benign over-refusal 8/3/8%: 28 of 28 targets met, built in "
    "17.1 min. organism-a: AdvBench 98/98/97%, JailbreakBench 94/93/94%, MaliciousInstruct 90/94/100%, "
    "benign over-refusal 3/4/7%: 28 of 28 met, MaliciousInstruct in the chat format exactly at the 90% threshold (v5: 91%); "
    "built in 17.2 min. Like v2-v5, chosen by the behaviour table (a validation measurement), never by what "
    "head ablation does.",
)

RECIPES = {
    r.name: r
    for r in (
        OrganismRecipe(
            name="organism-a",
            seed=1,
            refusals=REFUSALS_A,
            drop_gibberish_answers=True,
            description="primary aligned model: the stand-in for Llama-2-7b-chat",
        ),
        OrganismRecipe(
            name="organism-b",
            seed=2,
            refusals=REFUSALS_B,
            n_harmful=420,  # a different sample of the held-out-filtered prompts
            drop_gibberish_answers=True,
            description="sibling fine-tune (other seed, data sample and refusal phrasing): the stand-in for Vicuna-7b-v1.5",
        ),
    )
}


def get_recipe(name: str) -> OrganismRecipe:
    if name not in RECIPES:
        raise SafetyheadsError(f"unknown organism {name!r}: choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


# The next recipe, as changes to the shipped one: its organisms are built, measured and committed in
# ``staged/<name>/`` before they become the ones every experiment loads, because swapping organisms
# changes every mini and ci result and so lands together with re-stored baselines (staged/README.md).
# Empty: nothing is staged now (recipe v6 was staged, then shipped).
STAGED_CHANGES: dict = {}


def staged_recipe(name: str) -> OrganismRecipe:
    return get_recipe(name).replace(**STAGED_CHANGES)
