"""Figure 5: overlap of the top-10 heads by generalized Ships: (a) UA vs SC on the aligned model,
(b) the aligned model vs its sibling fine-tune (UA); each with the overlap expected by chance and a
hypergeometric p-value, and a control the paper does not have: (a) each method's own top 10 on a
second set (how much a method agrees with itself), (b) each fine-tune vs the untuned base model (how
much any model of that base shares)."""

from __future__ import annotations

from ..compute.stats import hypergeom_sf
from ..compute.steps import sahara_group
from ..spec.artefact import ArtefactSpec, Output

TOP = 10


def control_set(p) -> str:
    """The second set of panel (a)'s control: the other set of Tables 3/5 (its Sahara runs are shared)."""
    return next(s for s in (*p.table_sets, "jailbreakbench", "maliciousinstruct") if s != p.attribution_set)


def step1(ctx, role, method, set_name=None, steps=None) -> list[dict]:
    """Sahara's step-1 scoreboard (every candidate's generalized Ships), best first. The base model
    needs only this step (steps=1); the fine-tunes' full runs are shared with the other artefacts."""
    sah = sahara_group(ctx, role, set_name or ctx.profile.attribution_set, method, steps=steps)
    return sorted((r for r in sah["scoreboard"] if r["step"] == 1), key=lambda r: r["rank"])


def top10(ctx, role, method, set_name=None, steps=None):
    rows = step1(ctx, role, method, set_name, steps)
    if ctx.plan_only:
        return [str(h) for h in ctx.candidates(role)[:TOP]]
    return [r["head_name"] for r in rows[:TOP]]


def run(ctx) -> Output:
    import pandas as pd

    out = Output()
    p = ctx.profile
    n_heads = len(ctx.candidates("aligned"))
    second = control_set(p)
    lists = {"aligned.ua": top10(ctx, "aligned", "ua"), "aligned.sc": top10(ctx, "aligned", "sc"),
             "sibling.ua": top10(ctx, "sibling", "ua") if p.has("sibling") else None,
             "aligned.ua.control_set": top10(ctx, "aligned", "ua", second),
             "aligned.sc.control_set": top10(ctx, "aligned", "sc", second),
             "base.ua": top10(ctx, "base", "ua", steps=1)}
    # panel (b) needs a sibling fine-tune of the same base: without one (some extension models) it is left out
    lists = {k: v for k, v in lists.items() if v is not None}
    for k, v in lists.items():
        where = second if k.endswith(".control_set") else p.attribution_set
        out.metric(f"top10.{k}", v, kind="heads", description=f"top-10 generalized-Ships heads, {k.split('.control')[0]} on {where}")
    out.metric("candidates", n_heads, kind="info", description="candidate heads each list is drawn from")
    out.metric("control_set", second, kind="info", description="the second set of panel (a)'s control")
    rows = []
    pairs = {"a": ("aligned.ua", "aligned.sc"), "b": ("aligned.ua", "sibling.ua"),
             "a control (UA)": ("aligned.ua", "aligned.ua.control_set"),
             "a control (SC)": ("aligned.sc", "aligned.sc.control_set"),
             "b control (aligned)": ("aligned.ua", "base.ua"), "b control (sibling)": ("sibling.ua", "base.ua")}
    pairs = {panel: ab for panel, ab in pairs.items() if all(x in lists for x in ab)}
    for panel, (a, b) in pairs.items():
        shared = sorted(set(lists[a]) & set(lists[b]))
        k = len(shared)
        chance = TOP * TOP / n_heads
        pval = hypergeom_sf(k, n_heads, TOP, TOP)
        name = panel.replace(" control (", ".control_").rstrip(")").replace(" ", "_")
        out.metric(f"{name}.overlap", k, tolerance=1, description=f"top-10 heads shared, {a} vs {b}")
        if panel in ("a", "b"):
            out.metric(f"{name}.chance", chance, kind="info", description="overlap expected by chance (10*10/heads)")
            out.metric(f"{name}.p_value", pval, kind="info", description="P(overlap >= observed) for random top-10 lists")
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

    fig, ax = plt.subplots(figsize=(7, 3.4))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["overlap"] for r in rows], 0.4, label="observed", color="#c0392b")
    ax.bar([i + 0.2 for i in x], [r["expected by chance"] for r in rows], 0.4, label="chance", color="#999999")
    ax.set_xticks(list(x), [f"({r['panel']})\n{r['lists']}".replace(" vs ", "\nvs ") for r in rows], fontsize=6)
    ax.set_ylabel("shared heads in the top 10")
    ax.set_ylim(0, 10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


FIGURE5 = ArtefactSpec(
    "figure5", "Figure 5: overlap of safety heads",
    "Shared heads among the top 10 by generalized Ships (Sahara step 1, the attribution set): (a) UA vs SC "
    "on the aligned model, (b) the aligned model vs the sibling fine-tune of the same base (UA). The paper "
    "gives neither the chance overlap nor a p-value; both are added here, and two controls: (a) each method's "
    "own top 10 on a second set (how much a method agrees with itself), (b) each fine-tune vs the untuned base "
    "model (how much any model of that base shares).",
    "Figure 5", run, needs=("matplotlib",))
