"""Figure 2: vanilla vs the top-1 head ablated, greedy and top-5 sampling, direct and template input,
UA and SC, both fine-tunes, every set: the paper's "16x" headline."""

from __future__ import annotations

from safetyheads.generation import DecodingSpec

from ..common import ArtefactSpec, Output, asr_tol, mean, set_label, top_group
from ..steps import completions, head_spec

TEMPLATES = ("direct", "paper")


def decodings(p) -> dict:
    return {"greedy": DecodingSpec("greedy", max_new_tokens=p.max_new_tokens),
            "top5": DecodingSpec("topk", k=p.topk, temperature=1.0, max_new_tokens=p.max_new_tokens, seed=p.seed)}


def run(ctx) -> Output:
    import pandas as pd

    p = ctx.profile
    out = Output()
    rows = []
    for role in ("aligned", "sibling"):
        for method in ("ua", "sc"):
            head = top_group(ctx, role, method, 1)
            out.metric(f"{role}.{method}.head", head, kind="heads", description=f"top-1 Sahara {method.upper()} head of {role}")
            for dname, dec in decodings(p).items():
                for tmpl in TEMPLATES:
                    for s in p.sets:
                        q = ctx.queries(s, "eval")
                        van = completions(ctx, role, q, decoding=dec, template=tmpl, label="vanilla")
                        abl = completions(ctx, role, q, ablation=head_spec(head, method, p.eps), decoding=dec,
                                          template=tmpl, label=f"{method} top-1")
                        rows.append({"model": role, "ablation": method.upper(), "decoding": dname, "input": tmpl,
                                     "dataset": s, "vanilla": van.asr, "ablated": abl.asr, "n": len(q.ids),
                                     "head": str(head[0]), "removed_by_filters": abl.report.get("removed")})
                        cell = f"{role}.{method}.{dname}.{tmpl}.{s}"
                        out.outcome(f"{cell}.vanilla", van)
                        out.outcome(f"{cell}.ablated", abl)
                        tol = asr_tol(len(q.ids))
                        out.metric(f"{role}.{method}.{dname}.{tmpl}.{s}.vanilla", van.asr, tolerance=tol)
                        out.metric(f"{role}.{method}.{dname}.{tmpl}.{s}.ablated", abl.asr, tolerance=tol)
    frame = pd.DataFrame(rows)
    # the headline: UA, greedy, the paper's template, mean over the sets
    out.metric("headline.level", "dataset (the top-1 Sahara head, one for every query)", kind="info",
               description="which head the headline ablates (the paper: each query's own top-1 Ships head)")
    for role in ("aligned", "sibling"):
        sel = frame[(frame.model == role) & (frame.ablation == "UA") & (frame.decoding == "greedy") & (frame.input == "paper")]
        v, a = mean(sel.vanilla), mean(sel.ablated)
        n = int(sel.n.min()) if len(sel) else 1
        out.metric(f"headline.{role}.vanilla", v, tolerance=asr_tol(n), description="mean vanilla ASR (UA, greedy, template)")
        out.metric(f"headline.{role}.ablated", a, tolerance=asr_tol(n), description="mean ASR, top-1 UA head ablated")
        out.metric(f"headline.{role}.ratio", (a / v) if v > 0 else None, kind="info",
                   description="ablated / vanilla (undefined when vanilla is 0)")
        out.notes.append(f"{ctx.profile.labels[role]}: vanilla {v:.3f} -> top-1 UA head ablated {a:.3f}"
                         + (f" ({a / v:.1f}x)" if v > 0 else " (vanilla 0: ratio undefined)"))
    table = frame.copy()
    table["dataset"] = table["dataset"].map(set_label)
    out.tables.append(("ASR, vanilla vs top-1 head ablated",
                       table[["model", "ablation", "decoding", "input", "dataset", "head", "vanilla", "ablated", "n"]].round(3)))
    out.rows = rows
    if not ctx.plan_only and len(frame):
        out.figures.append(("figure2", plot(frame, p)))
    return out


def plot(frame, p):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    combos = [(r, m) for r in ("aligned", "sibling") for m in ("UA", "SC")]
    fig, axes = plt.subplots(1, len(combos), figsize=(4.2 * len(combos), 3.6), sharey=True)
    for ax, (role, m) in zip(axes, combos):
        sel = frame[(frame.model == role) & (frame.ablation == m)]
        labels, van, abl = [], [], []
        for _, r in sel.iterrows():
            labels.append(f"{set_label(r.dataset)[:5]}\n{r.decoding}/{r.input[:3]}")
            van.append(r.vanilla)
            abl.append(r.ablated)
        x = range(len(labels))
        ax.bar([i - 0.2 for i in x], van, 0.4, label="vanilla", color="#999999")
        ax.bar([i + 0.2 for i in x], abl, 0.4, label=f"top-1 {m} head ablated", color="#c0392b")
        ax.set_xticks(list(x), labels, fontsize=6, rotation=90)
        ax.set_title(f"{p.labels[role].split(' (')[0]}, {m}", fontsize=9)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("ASR")
    fig.tight_layout()
    return fig


FIGURE2 = ArtefactSpec(
    "figure2", "Figure 2: one head",
    "ASR of each fine-tune, vanilla vs its top-1 Sahara head ablated (UA or SC), with greedy decoding and "
    "top-5 sampling, direct and template input, on every set. The headline prints the mean vanilla and "
    "ablated ASR over the sets (UA, greedy, template) and their ratio: the paper's 0.04 -> 0.64 ('16x').",
    "Figure 2; abstract and section 4 headline", run, needs=("matplotlib",))
