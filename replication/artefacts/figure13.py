"""Figure 13: the distribution of generalized-Ships scores over heads (Sahara step 1), beside the
same distribution for the untuned base model (a control the paper does not have: is the long tail
specific to the safety-tuned model?)."""

from __future__ import annotations

from ..compute.steps import sahara_group
from ..spec import cells
from ..spec.artefact import SCORE_TOL, ArtefactSpec, Output


def run(ctx) -> Output:
    import pandas as pd

    p = ctx.profile
    out = Output()
    sah = sahara_group(ctx, "aligned", p.attribution_set, "ua")
    base = sahara_group(ctx, "base", p.attribution_set, "ua", steps=1)  # shared with Figure 5's control
    if ctx.plan_only:
        return out
    for role, res in (("aligned", sah), ("base", base)):
        step1 = sorted((r for r in res["scoreboard"] if r["step"] == 1), key=lambda r: r["head_name"])
        out.outcome(cells.figure13(role), ids=[r["head_name"] for r in step1], values=[r["score"] for r in step1])
    base_scores = sorted((r["score"] for r in base["scoreboard"] if r["step"] == 1), reverse=True)
    base_med = base_scores[len(base_scores) // 2]
    out.metric("control.skewness", float(pd.Series(base_scores).skew()), kind="info",
               description="skewness of the untuned base model's generalized Ships (the control)")
    out.metric("control.max_over_median", base_scores[0] / base_med if base_med > 0 else None, kind="info")
    scores = sorted((r["score"] for r in sah["scoreboard"] if r["step"] == 1), reverse=True)
    n = len(scores)
    s = pd.Series(scores)
    med = float(s.median())
    out.metric("max", scores[0], tolerance=SCORE_TOL, description="highest generalized Ships (degrees)")
    out.metric("median", med, tolerance=SCORE_TOL, description="median generalized Ships (degrees)")
    out.metric("max_over_median", scores[0] / med if med > 0 else None, kind="info")
    out.metric("skewness", float(s.skew()), kind="info", description="sample skewness (> 0: a long right tail)")
    top_share = sum(scores[: max(1, n // 20)]) / sum(scores)
    out.metric("top5pct_share", top_share, kind="info", description="share of the total score held by the top 5% of heads")
    out.tables.append(("Generalized Ships over heads (step 1)", pd.DataFrame([{
        "heads": n, "max": round(scores[0], 3), "p95": round(float(s.quantile(0.95)), 3), "median": round(med, 3),
        "min": round(scores[-1], 3), "skewness": round(float(s.skew()), 2), "top-5% share": round(top_share, 3)}])))
    out.rows = [{"rank": i + 1, "score": v} for i, v in enumerate(scores)]
    out.figures.append(("figure13", plot(scores, base_scores)))
    return out


def plot(scores, base_scores):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    bins = 40
    ax.hist(scores, bins=bins, color="#2c3e50", label="aligned")
    ax.hist(base_scores, bins=bins, histtype="step", color="#c0392b", label="untuned base (control)")
    ax.legend(fontsize=7)
    ax.set_xlabel("generalized Ships (degrees)")
    ax.set_ylabel("heads")
    ax.set_yscale("log")
    fig.tight_layout()
    return fig


FIGURE13 = ArtefactSpec(
    "figure13", "Figure 13: distribution of generalized Ships",
    "Histogram of every candidate head's generalized Ships (principal angle between the clean and the "
    "head-ablated last-token activations of the attribution queries, r=1, UA) on the aligned model, with the "
    "untuned base model's distribution as a control (is the long tail specific to the safety-tuned model?).",
    "Figure 13 (appendix)", run, needs=("matplotlib",))
