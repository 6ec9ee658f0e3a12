"""Figure 2: vanilla vs the top-1 head ablated, greedy and top-5 sampling, direct and template input,
UA and SC, both fine-tunes, every set: the paper's "16x" headline.

Query level, as the paper: for each query, its own top-1 Ships head, scored on that query in that
input format with that method (the authors' ``ships_test`` ablates ``top_ships[:mask_num]`` per query).
The dataset-level variant (the profile's top-1 Sahara head, one head for every query) is kept as a
labelled extra row; the headline never reads it.

The inputs are the profile's ``input_formats``: the paper's direct and template inputs, plus the model's
own chat template (with the profile's system prompt, or none) where the extension profile adds it. The
fine-tunes are the aligned model and the sibling where the profile names one.
"""

from __future__ import annotations

from collections import Counter

from safetyheads.generation import DecodingSpec

from ..compute.completions import completions, restrict
from ..compute.steps import head_spec, query_level, ships_per_query
from ..spec import cells
from ..spec.artefact import ArtefactSpec, Output, asr_tol
from .common import mean, set_label, top_group

LEVELS = {"query": "query level (each query's own top-1 Ships head)",
          "dataset": "dataset level (the top-1 Sahara head, one for every query)"}


def decodings(p) -> dict:
    return {"greedy": DecodingSpec("greedy", max_new_tokens=p.max_new_tokens),
            "top5": DecodingSpec("topk", k=p.topk, temperature=1.0, max_new_tokens=p.max_new_tokens, seed=p.seed)}


def roles(p) -> tuple:
    """The fine-tunes the profile names: the aligned model, and the sibling where there is one."""
    return tuple(r for r in ("aligned", "sibling") if p.has(r))


def system_prompt(p, template: str):
    """The chat input's system prompt (the profile's; None for a template without a system turn)."""
    return p.chat_system_prompt if template == "chat" else None


def query_top1(ctx, role: str, method: str, template: str) -> dict:
    """{set: (queries, Ships ranking per query)} on the query-level evaluation queries."""
    found = {}
    for s in ctx.profile.sets:
        qs = ctx.ships_queries(s)
        found[s] = (qs, ships_per_query(ctx, role, qs, method, template=template,
                                        system_prompt=system_prompt(ctx.profile, template)))
    return found


def run(ctx) -> Output:
    import pandas as pd

    p = ctx.profile
    out = Output()
    rows, freq = [], []
    for role in roles(p):
        for method in ("ua", "sc"):
            head = top_group(ctx, role, method, 1)
            out.metric(f"{role}.{method}.head", head, kind="heads",
                       description=f"dataset level: the top-1 Sahara {method.upper()} head of {role}")
            for tmpl in p.input_formats:
                found = query_top1(ctx, role, method, tmpl)
                chosen = []
                for s, (qs, ships) in found.items():
                    tops = [ships[pid][0][0] for pid in qs.ids]
                    chosen += tops
                    out.metric(f"{role}.{method}.{tmpl}.{s}.top1", tops, kind="heads",
                               description=f"each query's own top-1 {method.upper()} Ships head ({tmpl} input), in query order")
                counts = Counter(map(str, chosen)).most_common()
                freq.append({"model": role, "ablation": method.upper(), "input": tmpl, "queries": len(chosen),
                             "distinct heads": len(counts),
                             "most often top-1": ", ".join(f"{h} ({c})" for h, c in counts[:4])})
                out.metric(f"{role}.{method}.{tmpl}.top1_distinct", len(counts), kind="info",
                           description="distinct top-1 heads over the query-level queries of every set")
                rows += judged_rows(ctx, out, role, method, tmpl, head, found)
    frame = pd.DataFrame(rows)
    headline(ctx, out, frame)
    table = frame.copy()
    if len(table):
        table["dataset"] = table["dataset"].map(set_label)
        table = table.sort_values(["level", "model", "ablation", "decoding", "input"], ascending=[False, True, False, True, True],
                                  kind="stable")
        cols = ["level", "model", "ablation", "decoding", "input", "dataset", "head", "vanilla", "ablated", "n"]
        out.tables.append(("ASR, vanilla vs top-1 head ablated (query level: the paper's protocol; dataset level: "
                           "an extra row, not the headline)", table[cols].round(3)))
    out.tables.append(("Which heads the query level chose: how often each head is a query's top-1", pd.DataFrame(freq)))
    out.rows = rows
    if not ctx.plan_only and len(frame):
        out.figures.append(("figure2", plot(frame, p)))
    return out


def judged_rows(ctx, out: Output, role: str, method: str, tmpl: str, head: list, found: dict) -> list[dict]:
    """Each decoding and set of one model, ablation and input format: vanilla and ablated ASR at the query
    level (each query's own top-1 Ships head) and the dataset level (the top-1 Sahara head); -> the rows."""
    p = ctx.profile
    sp = system_prompt(p, tmpl)
    rows = []
    for dname, dec in decodings(p).items():
        for s, (qs, ships) in found.items():
            q = ctx.queries(s, "eval")
            van = completions(ctx, role, q, decoding=dec, template=tmpl, system_prompt=sp, label="vanilla")
            by_level = {
                "query": (restrict(van, qs.ids), completions(
                    ctx, role, qs, ablation=query_level(ships, 1, method, p.eps), decoding=dec,
                    template=tmpl, system_prompt=sp, label=f"{method} query-level top-1")),
                "dataset": (van, completions(ctx, role, q, ablation=head_spec(head, method, p.eps),
                                             decoding=dec, template=tmpl, system_prompt=sp,
                                             label=f"{method} top-1")),
            }
            for level, (v, a) in by_level.items():
                for state, res in (("vanilla", v), ("ablated", a)):
                    cell = cells.figure2(role, method, dname, tmpl, s, state, level)
                    out.outcome(cell, res)
                    out.metric(cell, res.asr, tolerance=asr_tol(a.n))
                rows.append({"model": role, "ablation": method.upper(), "decoding": dname, "input": tmpl,
                             "dataset": s, "level": level, "vanilla": v.asr, "ablated": a.asr, "n": a.n,
                             "head": "per query" if level == "query" else str(head[0]),
                             "removed_by_filters": a.report.get("removed"), "store_key": a.key})
    return rows


def headline(ctx, out: Output, frame) -> None:
    """UA, greedy, the paper's template, mean over the sets: query level (the headline) and dataset level."""
    out.metric("headline.level", LEVELS["query"], kind="info", description="which head the headline ablates")
    for role in roles(ctx.profile):
        for level in ("query", "dataset"):
            sel = frame[(frame.model == role) & (frame.ablation == "UA") & (frame.decoding == "greedy")
                        & (frame.input == "paper") & (frame.level == level)] if len(frame) else frame
            v, a = mean(sel.vanilla), mean(sel.ablated)
            n = int(sel.n.min()) if len(sel) else 1
            name = "headline" if level == "query" else "headline_dataset_level"
            out.metric(f"{name}.{role}.vanilla", v, tolerance=asr_tol(n), description=f"mean vanilla ASR (UA, greedy, template), {level} queries")
            out.metric(f"{name}.{role}.ablated", a, tolerance=asr_tol(n), description=f"mean ASR, {LEVELS[level]} UA-ablated")
            out.metric(f"{name}.{role}.ratio", (a / v) if v > 0 else None, kind="info",
                       description="ablated / vanilla (undefined when vanilla is 0)")
            out.notes.append(f"{ctx.profile.labels[role]}, {LEVELS[level]}: vanilla {v:.3f} -> ablated {a:.3f}"
                             + (f" ({a / v:.1f}x)" if v > 0 else " (vanilla 0: ratio undefined)")
                             + ("" if level == "query" else " [not the headline]"))


def plot(frame, p):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    combos = [(r, m) for r in roles(p) for m in ("UA", "SC")]
    fig, axes = plt.subplots(1, len(combos), figsize=(4.2 * len(combos), 3.6), sharey=True)
    for ax, (role, m) in zip(axes, combos):
        sel = frame[(frame.model == role) & (frame.ablation == m)]
        query, data = sel[sel.level == "query"], sel[sel.level == "dataset"]
        labels = [f"{set_label(r.dataset)[:5]}\n{r.decoding}/{r.input[:3]}" for _, r in query.iterrows()]
        x = range(len(labels))
        ax.bar([i - 0.27 for i in x], list(query.vanilla), 0.27, label="vanilla", color="#999999")
        ax.bar(list(x), list(query.ablated), 0.27, label=f"own top-1 {m} head (query level)", color="#c0392b")
        ax.bar([i + 0.27 for i in x], list(data.ablated), 0.27, label=f"top-1 Sahara {m} head (dataset level)",
               color="#e8a598")
        ax.set_xticks(list(x), labels, fontsize=6, rotation=90)
        ax.set_title(f"{p.labels[role].split(' (')[0]}, {m}", fontsize=9)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=6)
    axes[0].set_ylabel("ASR")
    fig.tight_layout()
    return fig


FIGURE2 = ArtefactSpec(
    "figure2", "Figure 2: one head",
    "ASR of each fine-tune, vanilla vs one head ablated (UA or SC), with greedy decoding and top-5 sampling, direct "
    "and template input, on every set. Query level (the paper's protocol and the headline): each query's own top-1 "
    "Ships head, scored on that query in that input format. Dataset level (an extra row): the top-1 Sahara head for "
    "every query. The headline prints the mean vanilla and ablated ASR over the sets (UA, greedy, template) and "
    "their ratio: the paper's 0.04 -> 0.64 ('16x').",
    "Figure 2; abstract and section 4 headline", run, needs=("matplotlib",))
