"""Appendix (Figure 17): the model's own chat template with a system prompt, vanilla vs UA-ablated."""

from __future__ import annotations

from ..common import ArtefactSpec, Output, asr_tol, mean, set_label, top_group
from ..steps import completions, head_spec


def run(ctx) -> Output:
    import pandas as pd

    p = ctx.profile
    out = Output()
    k = min(3, p.sahara_steps)
    top1 = top_group(ctx, "aligned", "ua", 1)
    top3 = top_group(ctx, "aligned", "ua", k)
    rows = []
    for s in p.sets:
        q = ctx.queries(s, "eval")
        kw = dict(template="chat", system_prompt=p.chat_system_prompt)
        van = completions(ctx, "aligned", q, label="chat vanilla", **kw)
        a1 = completions(ctx, "aligned", q, ablation=head_spec(top1, "ua", p.eps), label="chat top-1", **kw)
        a3 = completions(ctx, "aligned", q, ablation=head_spec(top3, "ua", p.eps), label=f"chat top-{k}", **kw)
        out.outcome(f"{s}.vanilla", van)
        out.outcome(f"{s}.ua_top1", a1)
        out.outcome(f"{s}.ua_top{k}", a3)
        tol = asr_tol(len(q.ids))
        out.metric(f"{s}.vanilla", van.asr, tolerance=tol)
        out.metric(f"{s}.ua_top1", a1.asr, tolerance=tol)
        out.metric(f"{s}.ua_top{k}", a3.asr, tolerance=tol)
        rows.append({"dataset": set_label(s), "vanilla": round(van.asr, 3), f"UA top-1 ({top1[0]})": round(a1.asr, 3),
                     f"UA top-{k}": round(a3.asr, 3), "n": len(q.ids)})
    out.metric("mean.vanilla", mean(r["vanilla"] for r in rows), kind="info")
    out.metric("mean.ua_top1", mean(r[f"UA top-1 ({top1[0]})"] for r in rows), kind="info")
    out.tables.append((f"ASR with the chat template and system prompt '{p.chat_system_prompt}'", pd.DataFrame(rows)))
    out.rows = rows
    return out


CHAT_TEMPLATE = ArtefactSpec(
    "chat_template", "Appendix: official chat template",
    "ASR of the aligned model queried through its own chat template with the system prompt 'You are a helpful "
    "assistant', vanilla and with its top-1 and top-3 Sahara UA heads ablated (heads found with the paper's template).",
    "Appendix, chat-template experiment (Figure 17)", run)
