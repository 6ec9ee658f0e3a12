"""Figure 4b's grid: every candidate head ablated alone, and the head whose ablation alone lowers safety
most (which Figure 6b reads)."""

from __future__ import annotations

from safetyheads.batching import chunks
from safetyheads.generation import DecodingSpec
from safetyheads.heads import HeadRef

from .completions import Judged, completions
from .context import Context, Queries
from .steps import head_spec


HEADS_PER_ENTRY = 32


def single_head_asr(ctx: Context, role: str, set_name: str) -> tuple[Judged, dict]:
    """Figure 4b's grid: every candidate head UA-ablated alone on the profile's heatmap queries
    (greedy, ``heatmap_max_new_tokens``). -> (vanilla, {head name: [(query id, complied, row)]})."""
    p = ctx.profile
    dec = DecodingSpec("greedy", max_new_tokens=p.heatmap_max_new_tokens)
    q = ctx.queries(set_name, "heatmap")
    van = completions(ctx, role, q, decoding=dec, label="heatmap vanilla")
    cands = ctx.candidates(role)
    # every (head, query) pair, in store entries of HEADS_PER_ENTRY heads: rows that ablate different
    # heads share generation batches, and a killed run resumes within an entry
    by_head: dict = {str(h): [] for h in cands}
    for n, heads in enumerate(chunks(cands, HEADS_PER_ENTRY)):
        pairs = [(h, pid, pr) for h in heads for pid, pr in zip(q.ids, q.prompts)]
        grid = Queries(q.set, q.sha256, [f"{h}|{pid}" for h, pid, _ in pairs], [pr for _, _, pr in pairs])
        spec = {f"{h}|{pid}": head_spec([h], "ua", p.eps) for h, pid, _ in pairs}
        res = completions(ctx, role, grid, ablation=spec, decoding=dec, label=f"heatmap, heads {n * HEADS_PER_ENTRY}..")
        for r in res.rows:
            head, pid = r["prompt_id"].split("|")
            by_head[head].append((int(pid), not r["refused"], r))
    return van, by_head


def strongest_single_head(ctx: Context, role: str, set_name: str) -> tuple[HeadRef, float]:
    """The head whose ablation alone gives the highest ASR in Figure 4b's grid (ties: the earliest
    head), with that ASR: the head that demonstrably lowers safety."""
    return strongest_of(single_head_asr(ctx, role, set_name)[1])


def strongest_of(by_head: dict) -> tuple[HeadRef, float]:
    """``strongest_single_head`` of a grid already read (``single_head_asr``'s second value)."""
    asr = {h: (sum(c for _, c, _ in rows) / len(rows) if rows else 0.0) for h, rows in by_head.items()}
    best = max(asr, key=lambda h: (asr[h], -HeadRef.parse(h).layer, -HeadRef.parse(h).head))
    return HeadRef.parse(best), asr[best]
