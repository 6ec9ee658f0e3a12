"""Figure 5: overlap of the top-10 heads by generalized Ships: (a) UA vs SC on the aligned model,
(b) the aligned model vs its sibling fine-tune (UA); each with the overlap expected by chance and a
hypergeometric p-value."""

from __future__ import annotations

from ..common import ArtefactSpec, Output, hypergeom_sf
from ..steps import sahara_group

TOP = 10


def top10(ctx, role, method):
    sah = sahara_group(ctx, role, ctx.profile.attribution_set, method)
    if ctx.plan_only:
        return [str(h) for h in ctx.candidates(role)[:TOP]]
    step1 = sorted((r for r in sah["scoreboard"] if r["step"] == 1), key=lambda r: r["rank"])
    return [r["head_name"] for r in step1[:TOP]]


def run(ctx) -> Output:
    import pandas as pd

    out = Output()
    n_heads = len(ctx.candidates("aligned"))
    lists = {"aligned.ua": top10(ctx, "aligned", "ua"), "aligned.sc": top10(ctx, "aligned", "sc"),
             "sibling.ua": top10(ctx, "sibling", "ua")}
    for k, v in lists.items():
        out.metric(f"top10.{k}", v, kind="heads", description=f"top-10 generalized-Ships heads, {k}")
    rows = []
    for panel, (a, b) in {"a": ("aligned.ua", "aligned.sc"), "b": ("aligned.ua", "sibling.ua")}.items():
        shared = sorted(set(lists[a]) & set(lists[b]))
        k = len(shared)
        chance = TOP * TOP / n_heads
        pval = hypergeom_sf(k, n_heads, TOP, TOP)
        out.metric(f"{panel}.overlap", k, tolerance=1, description=f"top-10 heads shared, {a} vs {b}")
        out.metric(f"{panel}.chance", chance, kind="info", description="overlap expected by chance (10*10/heads)")
        out.metric(f"{panel}.p_value", pval, kind="info", description="P(overlap >= observed) for random top-10 lists")
        rows.append({"panel": panel, "lists": f"{a} vs {b}", "overlap": k, "expected by chance": round(chance, 2),
                     "p (hypergeometric)": f"{pval:.2e}", "shared heads": ", ".join(shared), "candidates": n_heads})
    out.tables.append(("Top-10 overlap", pd.DataFrame(rows)))
    out.tables.append(("Top-10 lists", pd.DataFrame({k: v for k, v in lists.items()})))
    out.rows = rows
    if not ctx.plan_only:
        out.figures.append(("figure5", plot(rows)))
    return out


def plot(rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["overlap"] for r in rows], 0.4, label="observed", color="#c0392b")
    ax.bar([i + 0.2 for i in x], [r["expected by chance"] for r in rows], 0.4, label="chance", color="#999999")
    ax.set_xticks(list(x), ["(a) UA vs SC", "(b) aligned vs sibling"])
    ax.set_ylabel("shared heads in the top 10")
    ax.set_ylim(0, 10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


FIGURE5 = ArtefactSpec(
    "figure5", "Figure 5: overlap of safety heads",
    "Shared heads among the top 10 by generalized Ships (Sahara step 1, the attribution set): (a) UA vs SC "
    "on the aligned model, (b) the aligned model vs the sibling fine-tune of the same base (UA). The paper "
    "gives neither the chance overlap nor a p-value; both are added here.",
    "Figure 5", run)
