"""Figure 4: (a) ASR vs Sahara group size 1..S; (b) layer x head map of ASR with each single head
UA-ablated."""

from __future__ import annotations

from ..compute.completions import Judged, completions
from ..compute.single_heads import single_head_asr
from ..compute.steps import head_spec, sahara_group
from ..spec import cells
from ..spec.artefact import ArtefactSpec, Output, asr_tol
from .common import mean, set_label


def run(ctx) -> Output:
    import pandas as pd

    p = ctx.profile
    out = Output()
    curve = []
    for s in p.table_sets:
        q = ctx.queries(s, "eval")
        group = sahara_group(ctx, "aligned", s, "ua")["group"]
        van = completions(ctx, "aligned", q, label="vanilla")
        curve.append({"dataset": s, "k": 0, "asr": van.asr})
        out.outcome(cells.figure4a(s, 0), van)
        for k in range(1, p.sahara_steps + 1):
            res = completions(ctx, "aligned", q, ablation=head_spec(group[:k], "ua", p.eps), label=f"Sahara ua top-{k}")
            curve.append({"dataset": s, "k": k, "asr": res.asr})
            out.outcome(cells.figure4a(s, k), res)
            out.metric(cells.figure4a(s, k), res.asr, tolerance=asr_tol(len(q.ids)), description=f"ASR, {k} Sahara UA heads")
        best = max((r for r in curve if r["dataset"] == s and r["k"] > 0), key=lambda r: (r["asr"], -r["k"]))
        out.metric(f"a.{s}.best_k", best["k"], kind="info", description="group size with the highest ASR")
    heat = []
    cands = ctx.candidates("aligned")
    for s in p.table_sets:
        q = ctx.queries(s, "heatmap")
        ctx.log(f"Figure 4b on {set_label(s)}: {len(cands)} heads x {len(q.ids)} queries")
        van, by_head = single_head_asr(ctx, "aligned", s)
        out.outcome(cells.figure4b(s), van)
        for h in cands:
            out.outcome(cells.figure4b(s, str(h)), Judged([{**r, "prompt_id": pid} for pid, _, r in by_head[str(h)]],
                                             three_way=van.three_way))
            mine = [c for _, c, _ in by_head[str(h)]]
            heat.append({"dataset": s, "layer": h.layer, "head": h.head, "head_name": str(h),
                         "asr": mean(mine), "vanilla": van.asr, "n": len(mine)})
        sel = [r for r in heat if r["dataset"] == s]
        top = max(sel, key=lambda r: (r["asr"], -r["layer"], -r["head"]))
        asrs = sorted(r["asr"] for r in sel)
        tol = asr_tol(len(q.ids))
        out.metric(f"b.{s}.vanilla", van.asr, tolerance=tol)
        out.metric(f"b.{s}.max", top["asr"], tolerance=tol, description="highest single-head ASR")
        out.metric(f"b.{s}.top_head", [top["head_name"]], kind="heads", description="the head with the highest ASR")
        out.metric(f"b.{s}.median", asrs[len(asrs) // 2], tolerance=tol, description="median single-head ASR")
        out.metric(f"b.{s}.heads_over_vanilla_plus_0.25", sum(a >= van.asr + 0.25 for a in asrs), kind="info",
                   description="heads whose ablation adds >= 0.25 ASR")
    out.rows = curve + heat
    cf = pd.DataFrame(curve)
    if len(cf):
        t = cf.pivot_table(index="dataset", columns="k", values="asr", sort=False).reset_index()
        t["dataset"] = t["dataset"].map(set_label)
        t.columns = [str(c) for c in t.columns]
        out.tables.append(("(a) ASR vs number of Sahara UA heads ablated (0 = vanilla)", t.round(3)))
    hf = pd.DataFrame(heat)
    if len(hf):
        top = hf.sort_values(["dataset", "asr"], ascending=[True, False]).groupby("dataset").head(5)
        out.tables.append(("(b) the five single heads with the highest ASR", top[["dataset", "head_name", "asr", "vanilla", "n"]]))
    if not ctx.plan_only and len(hf):
        out.figures.append(("figure4", plot(cf, hf, ctx)))
    return out


def plot(cf, hf, ctx):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sets = list(dict.fromkeys(hf.dataset))
    fig, axes = plt.subplots(1, 1 + len(sets), figsize=(4 + 4 * len(sets), 3.8))
    for s in dict.fromkeys(cf.dataset):
        sel = cf[cf.dataset == s]
        axes[0].plot(sel.k, sel.asr, marker="o", label=set_label(s))
    axes[0].set_xlabel("Sahara heads ablated (UA)")
    axes[0].set_ylabel("ASR")
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=7)
    axes[0].set_title("(a)")
    g = ctx.geometry("aligned")
    for ax, s in zip(axes[1:], sets):
        grid = np.full((g.n_layers, g.n_heads), np.nan)
        for _, r in hf[hf.dataset == s].iterrows():
            grid[int(r["layer"]), int(r["head"])] = r["asr"]
        im = ax.imshow(grid, aspect="auto", vmin=0, vmax=1, cmap="Reds", origin="lower")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(f"(b) {set_label(s)}: ASR, one head UA-ablated", fontsize=8)
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


FIGURE4 = ArtefactSpec(
    "figure4", "Figure 4: group size and the per-head map",
    "(a) ASR of the aligned model vs the number of Sahara UA heads ablated (1..S). (b) ASR with each "
    "single head UA-ablated, as a layer x head map (greedy; fewer queries and tokens than the other "
    "artefacts, see the profile).",
    "Figure 4", run, needs=("matplotlib",))
