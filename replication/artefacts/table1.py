"""Table 1: ASR with the top-3 Sahara heads UA-ablated, and the share of parameters that changes;
the prior methods' rows are cited from the paper, not rerun."""

from __future__ import annotations

from ..compute.completions import completions
from ..compute.steps import head_spec
from ..compute.stored import cached
from ..spec import cells
from ..spec.artefact import ArtefactSpec, Output, asr_tol
from .common import mean, set_label, top_group

CITED = [  # method, parameters modified, ASR, source
    ("ActSVD", "~5%", "0.73 +- 0.03", "cited: paper Table 1"),
    ("GTAC&DAP", "~5%", "0.64 +- 0.03", "cited: paper Table 1"),
    ("LSP", "~3%", "0.58 +- 0.04", "cited: paper Table 1"),
    ("Ours (paper, Llama-2-7b-chat, 3 heads)", "~0.018%", "0.72 +- 0.05", "cited: paper Table 1"),
]


def params_modified(ctx, heads) -> tuple[int, int]:
    """Scalars changed by writing the UA ablation into W_q (and its bias), and all parameters."""
    if ctx.plan_only:
        g = ctx.geometry("aligned")
        d = 4096 if g.n_heads == 32 else 576
        return len(heads) * (d // g.n_heads) * d, 6_738_415_616 if g.n_heads == 32 else 134_515_008
    def compute():
        from safetyheads.surgery import changed_parameter_count

        model, _ = ctx.model("aligned")
        spec = head_spec(heads, "ua", 1e-10)  # the authors' surgery epsilon
        return [changed_parameter_count(model, spec), sum(p.numel() for p in model.parameters())]

    changed, total = cached(ctx, "parameters modified", {"model": ctx.model_id("aligned"),
                                                         "heads": [str(h) for h in heads]}, compute)
    return changed, total


def run(ctx) -> Output:
    import pandas as pd

    p = ctx.profile
    out = Output()
    k = min(3, p.sahara_steps)
    heads = top_group(ctx, "aligned", "ua", k)
    out.metric("heads", heads, kind="heads", description=f"top-{k} Sahara UA heads ({set_label(p.attribution_set)})")
    per_set, rows = {}, []
    for s in p.sets:
        q = ctx.queries(s, "eval")
        van = completions(ctx, "aligned", q, label="vanilla")
        abl = completions(ctx, "aligned", q, ablation=head_spec(heads, "ua", p.eps), label=f"Sahara ua top-{k}")
        per_set[s] = (van.asr, abl.asr, len(q.ids))
        out.outcome(cells.table1("vanilla", s), van)
        out.outcome(cells.table1("ablated", s), abl)
        out.metric(f"asr.{s}", abl.asr, tolerance=asr_tol(len(q.ids)), description=f"ablated ASR, {set_label(s)}")
        rows.append({"dataset": s, "vanilla": van.asr, "ablated": abl.asr, "n": len(q.ids), "heads": [str(h) for h in heads],
                     "ci": abl.report.get("ci"), "removed_by_filters": abl.report.get("removed")})
    n_min = min(v[2] for v in per_set.values())
    asr_mean = out.metric("asr_mean", mean(v[1] for v in per_set.values()), tolerance=asr_tol(n_min),
                          description="ablated ASR, mean over the sets")
    out.metric("vanilla_mean", mean(v[0] for v in per_set.values()), tolerance=asr_tol(n_min),
               description="vanilla ASR, mean over the sets")
    changed, total = params_modified(ctx, heads)
    pct = out.metric("params_modified_pct", 100.0 * changed / total, tolerance=1e-4,
                     description="parameters modified (%) by writing the ablation into W_q")
    table = [[m, prm, a, src] for m, prm, a, src in CITED]
    table.append([f"Ours (this run, {p.labels['aligned']}, {k} heads)", f"{pct:.4f}%", f"{asr_mean:.2f}",
                  f"measured: {len(p.sets)} sets, {n_min}+ queries each"])
    out.tables.append(("ASR after ablation and parameters modified",
                       pd.DataFrame(table, columns=["method", "parameters modified", "ASR", "source"])))
    out.tables.append(("Per set", pd.DataFrame(rows)[["dataset", "vanilla", "ablated", "n"]].round(3)))
    out.rows = rows + [{"params_modified": changed, "params_total": total}]
    return out


TABLE1 = ArtefactSpec(
    "table1", "Table 1: three heads vs weight-level attacks",
    "ASR of the aligned model with its top-3 Sahara heads UA-ablated (greedy, the paper's template), and the "
    "share of parameters the ablation changes when written into the weights. Prior methods (ActSVD, "
    "GTAC&DAP, LSP) are cited from the paper, not rerun.",
    "Table 1", run)
