"""Appendix (Figure 17): the model's own chat template with a system prompt, vanilla vs UA-ablated.

The paper does not say which head. Both are run: query level (each query's own top-1 / top-3 UA Ships
heads, scored on the chat-formatted input; the verdict reads this, as for Figure 2 and Table 7) and
dataset level (the top-1 / top-3 Sahara heads found with the paper's template; prefixed ``dataset.``).
"""

from __future__ import annotations

from ..compute.completions import completions, restrict
from ..compute.steps import head_spec, query_level, ships_per_query
from ..spec import cells
from ..spec.artefact import ArtefactSpec, Output, asr_tol
from .common import echoes, mean, set_label, top_group


def run(ctx) -> Output:
    import pandas as pd

    p = ctx.profile
    out = Output()
    k = min(3, p.sahara_steps)
    top1 = top_group(ctx, "aligned", "ua", 1)
    topk = top_group(ctx, "aligned", "ua", k)
    rows = []
    kw = dict(template="chat", system_prompt=p.chat_system_prompt)
    for s in p.sets:
        q, qs = ctx.queries(s, "eval"), ctx.ships_queries(s)
        van = completions(ctx, "aligned", q, label="chat vanilla", **kw)
        ships = ships_per_query(ctx, "aligned", qs, "ua", **kw)  # Ships depends on the input: scored on the chat input
        runs = {"vanilla": van,
                 "ua_top1": completions(ctx, "aligned", qs, ablation=query_level(ships, 1, "ua", p.eps), label="chat own top-1", **kw),
                 f"ua_top{k}": completions(ctx, "aligned", qs, ablation=query_level(ships, k, "ua", p.eps), label=f"chat own top-{k}", **kw),
                 "dataset.ua_top1": completions(ctx, "aligned", q, ablation=head_spec(top1, "ua", p.eps), label="chat top-1", **kw),
                 f"dataset.ua_top{k}": completions(ctx, "aligned", q, ablation=head_spec(topk, "ua", p.eps), label=f"chat top-{k}", **kw)}
        for name, res in runs.items():
            cell = cells.chat_template(s, name[8:], "dataset") if name.startswith("dataset.") else cells.chat_template(s, name)
            out.outcome(cell, res)
            out.metric(cell, res.asr, tolerance=asr_tol(res.n))
            out.metric(f"{cell}.echoes", echoes(res.rows), kind="info",
                       description="complied responses that repeat the query (counted as answers by the judge)")
        tops = [str(ships[pid][0][0]) for pid in qs.ids]
        out.metric(f"{s}.top1", tops, kind="heads", description="each query's own top-1 UA Ships head on the chat input")
        rows.append({"dataset": set_label(s), "vanilla": round(van.asr, 3),
                     "vanilla (query-level queries)": round(restrict(van, qs.ids).asr, 3),
                     "own top-1 (query level)": round(runs["ua_top1"].asr, 3),
                     f"own top-{k} (query level)": round(runs[f"ua_top{k}"].asr, 3),
                     f"Sahara top-1 {top1[0]} (dataset level)": round(runs["dataset.ua_top1"].asr, 3),
                     f"Sahara top-{k} (dataset level)": round(runs[f"dataset.ua_top{k}"].asr, 3),
                     "n": len(q.ids), "n (query level)": len(qs.ids)})
    out.metric("mean.vanilla", mean(r["vanilla"] for r in rows), kind="info")
    out.metric("mean.ua_top1", mean(r["own top-1 (query level)"] for r in rows), kind="info")
    out.metric("mean.dataset.ua_top1", mean(r[f"Sahara top-1 {top1[0]} (dataset level)"] for r in rows), kind="info")
    out.tables.append((f"ASR with the chat template and system prompt '{p.chat_system_prompt}' (the verdict reads "
                       "the query level)", pd.DataFrame(rows)))
    out.rows = rows
    return out


CHAT_TEMPLATE = ArtefactSpec(
    "chat_template", "Appendix: official chat template",
    "ASR of the aligned model queried through its own chat template with the system prompt 'You are a helpful "
    "assistant', vanilla and UA-ablated: query level, each query's own top-1 and top-3 Ships heads scored on the "
    "chat input (the verdict reads this); dataset level, the top-1 and top-3 Sahara heads found with the paper's "
    "template.",
    "Appendix, chat-template experiment (Figure 17)", run)
