"""Training data of an organism: held-out-filtered harmful prompts with refusals, and benign
prompts with the base model's own answers (self-distillation, so helpfulness is kept).

Every harmful training prompt that occurs in an evaluation set, or nearly duplicates one, is
dropped and counted: "near" = one normalised prompt contains the other, or their word sets have
Jaccard similarity >= ``recipe.near_duplicate_jaccard``. Normalised = lower case, runs of
non-alphanumerics to one space. Duplicates within the training sources are dropped too.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..data import load_prompts
from ..errors import DataError
from ..generation import DecodingSpec, eos_token_ids, generate_responses
from ..judges import RepetitionFilter
from .recipe import OrganismRecipe

HELDOUT_BENIGN_SEED = "safetyheads-heldout-benign-v1"


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def near_duplicate(a: str, b: str, jaccard: float) -> bool:
    """``a`` and ``b`` normalised: containment either way, or word-set Jaccard >= ``jaccard``."""
    if a == b or (a and b and (a in b or b in a)):
        return True
    wa, wb = set(a.split()), set(b.split())
    return bool(wa | wb) and len(wa & wb) / len(wa | wb) >= jaccard


@dataclass(frozen=True)
class Example:
    kind: str  # "harmful" | "benign"
    source: str
    prompt: str
    format: str
    target: str | None = None  # refusal text; benign targets come from the base model


def held_out_filter(recipe: OrganismRecipe) -> tuple[list[tuple[str, str]], dict]:
    """-> ([(source, prompt)] kept, report). The report counts, per source, the prompts dropped as
    exact or near duplicates of an evaluation prompt and as repeats within the training sources."""
    eval_norm = [normalise(p) for s in recipe.eval_sets for p in load_prompts(s).prompts]
    eval_exact = set(eval_norm)
    kept, seen, report = [], set(), {}
    for source in recipe.harmful_sources:
        ps = load_prompts(source)
        r = {"rows": len(ps.prompts), "exact_eval_duplicate": 0, "near_eval_duplicate": 0,
             "repeat_in_training": 0, "kept": 0, "sha256": ps.sha256}
        for p in ps.prompts:
            n = normalise(p)
            if n in eval_exact:
                r["exact_eval_duplicate"] += 1
            elif any(near_duplicate(n, e, recipe.near_duplicate_jaccard) for e in eval_norm):
                r["near_eval_duplicate"] += 1
            elif n in seen:
                r["repeat_in_training"] += 1
            else:
                seen.add(n)
                kept.append((source, p))
                r["kept"] += 1
        report[source] = r
    return kept, report


def heldout_benign(n: int = 100, source: str = "alpaca") -> list[str]:
    """The benign evaluation prompts: ``n`` Alpaca prompts drawn with a fixed seed, shared by all
    organisms and never trained on."""
    prompts = load_prompts(source).prompts
    idx = random.Random(HELDOUT_BENIGN_SEED).sample(range(len(prompts)), n)
    return [prompts[i] for i in idx]


def build_examples(recipe: OrganismRecipe) -> tuple[list[Example], dict]:
    """The organism's training examples (in training order) and a data report for the manifest."""
    rng = random.Random(f"safetyheads-organism:{recipe.seed}")
    harmful, filt = held_out_filter(recipe)
    if not harmful:
        raise DataError("no harmful training prompt survives the held-out filter")
    if recipe.n_harmful is not None:
        if recipe.n_harmful > len(harmful):
            raise DataError(f"n_harmful={recipe.n_harmful} but only {len(harmful)} harmful prompts survive the filter")
        harmful = rng.sample(harmful, recipe.n_harmful)
    benign_set = load_prompts(recipe.benign_source)
    held = {normalise(p) for p in heldout_benign(recipe.heldout_benign, recipe.benign_source)}
    pool = [p for p in dict.fromkeys(benign_set.prompts) if normalise(p) not in held]
    if recipe.n_benign > len(pool):
        raise DataError(f"n_benign={recipe.n_benign} but only {len(pool)} benign prompts are available")
    benign = rng.sample(pool, recipe.n_benign)
    examples = [Example("harmful", s, p, rng.choice(recipe.formats), rng.choice(recipe.refusals)) for s, p in harmful]
    examples += [Example("benign", recipe.benign_source, p, rng.choice(recipe.formats)) for p in benign]
    # More formats per harmful prompt come from their own generator, so the benign sample and its
    # formats (and so the cached self-distilled answers) do not depend on this setting.
    extra = random.Random(f"safetyheads-organism-formats:{recipe.seed}")
    for e in [e for e in examples if e.kind == "harmful"]:
        others = [f for f in recipe.formats if f != e.format]
        extra.shuffle(others)
        examples += [Example("harmful", e.source, e.prompt, f, extra.choice(recipe.refusals))
                     for f in others[: recipe.harmful_formats_per_prompt - 1]]
    rng.shuffle(examples)
    report = {
        "held_out_filter": filt,
        "harmful_kept_after_filter": sum(r["kept"] for r in filt.values()),
        "harmful_used": len(harmful),
        "harmful_examples": sum(e.kind == "harmful" for e in examples),
        "benign_used": len(benign),
        "benign_source_sha256": benign_set.sha256,
        "heldout_benign": recipe.heldout_benign,
        "examples_sha256": hashlib.sha256(
            json.dumps([[e.kind, e.prompt, e.format, e.target] for e in examples]).encode()).hexdigest(),
        "by_format": {f: sum(e.format == f for e in examples) for f in recipe.formats},
    }
    return examples, report


def drop_gibberish_answers(tok, examples: list[Example], answers: dict) -> tuple[list[Example], dict]:
    """Drop the benign examples whose distilled answer the judges' repetition filter (the one the
    evaluation applies) flags: the base's loops. Not the non-word rule: it also flags short
    code, arithmetic and list answers, which are fine targets.
    -> (kept examples in their order, {format: dropped count} for the manifest)."""
    flt = RepetitionFilter()
    bad = {k for k, ids in answers.items() if flt.reason(tok.decode(ids, skip_special_tokens=True)) is not None}
    kept, dropped = [], {}
    for e in examples:
        if e.kind == "benign" and (e.format, e.prompt) in bad:
            dropped[e.format] = dropped.get(e.format, 0) + 1
        else:
            kept.append(e)
    return kept, dropped


def distill_answers(model, tok, examples: list[Example], max_new_tokens: int, cache: Path | None = None,
                    batch_size: int = 48, progress: bool = True) -> tuple[dict[tuple[str, str], list[int]], int]:
    """The base model's greedy answer (token ids, EOS included when it stopped) to every benign
    example, keyed by (format, prompt). ``cache`` (JSONL) keeps finished answers, so an interrupted
    build resumes without regenerating them. Returns (answers, how many this call generated)."""
    eos = eos_token_ids(model, tok)
    done: dict[tuple[str, str], list[int]] = {}
    if cache is not None and cache.is_file():
        for line in cache.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut off by a crash
                continue
            done[(row["format"], row["prompt"])] = row["ids"]
    todo = [e for e in examples if e.kind == "benign" and (e.format, e.prompt) not in done]
    if todo and progress:
        print(f"safetyheads: distilling {len(todo)} benign answers from the base model "
              f"({len(done)} cached)", file=sys.stderr)
    out = open(cache, "a") if cache is not None else None
    try:
        for fmt in dict.fromkeys(e.format for e in todo):
            batch = [e for e in todo if e.format == fmt]
            def save(rows, fmt=fmt):
                for r in rows:
                    ids = tok(r["response"], add_special_tokens=False).input_ids
                    ids = ids + [eos[0]] if r["stopped_at_eos"] else ids
                    done[(fmt, r["prompt"])] = ids
                    if out is not None:
                        out.write(json.dumps({"format": fmt, "prompt": r["prompt"], "ids": ids}) + "\n")
                        out.flush()
            generate_responses(model, tok, [e.prompt for e in batch], template=fmt,
                               decoding=DecodingSpec(max_new_tokens=max_new_tokens), batch_size=batch_size,
                               progress=progress, on_batch=save)
    finally:
        if out is not None:
            out.close()
    # Only this recipe's answers: the cache holds every recipe's, and the manifest's digest of the answers must not depend on it.
    return {k: done[k] for k in dict.fromkeys((e.format, e.prompt) for e in examples if e.kind == "benign")}, len(todo)
