"""CLAIMS.md's extension section: the same rules, thresholds included, on each model of the extension
profile (never the README's verdict block)."""

from __future__ import annotations

from dataclasses import replace

from tabulate import tabulate

from ..spec import cells
from ..spec.cells import SETS
from ..spec.extension_models import EXTENSION_MODELS
from .catalogue import CLAIMS
from .decide import NOT_RUN, VERDICT_ORDER, Claim, Finding
from .results import Results, judge_note, read_results


EXTENSION_CLAIM_IDS = ("one-head", "one-head-sibling", "ua-vs-sc-sahara", "ua-vs-sc-ships", "group-size", "few-heads",
                       "ua-sc-overlap", "finetune-overlap")
CHAT_CLAIM_IDS = ("chat-refuses", "chat-lift")
SIBLING_CLAIM_IDS = ("one-head-sibling", "finetune-overlap")


def chat_view(r: Results) -> Results:
    """Figure 2's chat-input cells (the extension runs its models' own chat template there) under the
    names the chat-template rules read: vanilla on the whole set (greedy), ablated with each query's own
    top-1 UA Ships head scored on the chat input (query level), and the dataset level beside it."""
    view = {}
    for s in SETS:
        for src, dst in ((cells.figure2("aligned", "ua", "greedy", "chat", s, "vanilla", "dataset"),
                          cells.chat_template(s, "vanilla")),
                         (cells.figure2("aligned", "ua", "greedy", "chat", s, "ablated"), cells.chat_template(s, "ua_top1")),
                         (cells.figure2("aligned", "ua", "greedy", "chat", s, "ablated", "dataset"),
                          cells.chat_template(s, "ua_top1", "dataset"))):
            if src in r.outcomes:
                view[dst] = r.outcomes[src]
    return Results({}, view, r.missing, r.folder)


def extension_claims() -> list[Claim]:
    """The claims the extension's four artefacts can decide, each with its own rule; the chat-template
    claims read Figure 2's chat input instead of the chat_template artefact."""
    by = {c.id: c for c in CLAIMS}
    out = [by[i] for i in EXTENSION_CLAIM_IDS]
    for i in CHAT_CLAIM_IDS:
        c = by[i]

        def judge(r: Results, rule=c.judge) -> Finding:
            view = chat_view(r)
            found = rule(view)
            r.asked |= view.asked
            return found
        out.append(replace(c, artefact="figure2", source=f"{c.source}; here Figure 2's chat input", judge=judge))
    return out


def evaluate_extension(root=None, models=None) -> list[tuple[object, Claim | None, Finding]]:
    """(model, claim, finding) for each model of the extension profile and each claim it can decide; a
    model without any results gives one row (claim None, not run)."""
    out = []
    for m in models or EXTENSION_MODELS:
        rows = []
        ran = False
        for c in extension_claims():
            if c.id in SIBLING_CLAIM_IDS and m.sibling is None:
                rows.append((m, c, Finding(NOT_RUN, "no sibling fine-tune of the same base is named for this model")))
                continue
            r = read_results(f"extension/{m.slug}", c.artefact, root)
            if r is None:
                rows.append((m, c, Finding(NOT_RUN)))
                continue
            ran = True
            f = c.judge(r)
            if f.verdict == NOT_RUN and r.asked and r.missing:
                f = Finding(NOT_RUN, evidence=f"no per-query outcomes: {r.missing}")
            elif f.verdict != NOT_RUN:
                note = judge_note("extension", r)
                f = replace(f, evidence=f"{f.evidence}; {note}") if note else f
            rows.append((m, c, f))
        out += rows if ran else [(m, None, Finding(NOT_RUN, "no results yet"))]
    return out


def extension_section(root=None, models=None) -> list[str]:
    """CLAIMS.md's extension section: a verdict per model and claim, by the rules of the table above."""
    found = evaluate_extension(root, models)
    order = list(dict.fromkeys(m.slug for m, _, _ in found))
    counts = []
    for slug in order:
        mine = [f for m, c, f in found if m.slug == slug]
        counts.append(f"{slug}: " + ", ".join(f"{v} {n}" for v in VERDICT_ORDER if (n := sum(f.verdict == v for f in mine))))
    rows = []
    for m, c, f in found:
        columns = [f"{m.slug} ({m.aligned.id}" + (f"; sibling {m.sibling.id}" if m.sibling else "") + ")",
                 f"{c.id}: {c.text}" if c else "every claim", c.source if c else "", f.evidence, f.uncertainty, f.verdict]
        rows.append([x.replace("|", "\\|") for x in columns])
    return [
        "## Extension: the claims on GQA chat models of 2024",
        "",
        "Read from paper_tables/generated/extension/<model>/ (`python -m replication run all --profile extension`, on a "
        "GPU; see the README's \"Running the extension on a GPU\"). Each row applies the rule of the same claim in the "
        "table above, thresholds included (half the effect the paper published for Llama-2-7b-chat), to that model's "
        "own results: the paper's sets in full, its template, eps and judge. These models have no expected values, so "
        "their metrics are all NEW; these verdicts are the comparison with the paper. The sibling claims read the "
        "sibling fine-tune named for the model (if any) in place of Vicuna-7b-v1.5. The two chat-template claims read "
        "Figure 2's chat input (each model's own template; the system prompt 'You are a helpful assistant' except for "
        "Gemma-2, whose template has none). Each verdict reads the keyword-fixed judge (a keyword ASR, as the paper's "
        "published comparison); the ASR of the judges beside it (the three-way judge and Llama Guard 3 8B, a harm "
        "classifier) is given in the evidence and decides nothing. **not run**: no results for that model (or no "
        "sibling) yet.",
        "",
        "Verdicts per model: " + "; ".join(counts) + ".",
        "",
        tabulate(rows, headers=["model", "claim", "paper", "evidence", "n and uncertainty", "verdict"], tablefmt="github"),
        "",
    ]
