"""Tables 3 and 5: ASR increase over vanilla when 1..S heads are ablated, Sahara level (one group per
dataset) and Ships level (each query's own top-k Ships heads), UA and SC."""

from __future__ import annotations

from ..compute.completions import completions
from ..compute.context import Queries
from ..compute.steps import head_spec, sahara_group, ships_per_query
from ..spec import cells
from ..spec.artefact import SCORE_TOL, ArtefactSpec, Output, asr_tol, diff_tol
from .common import mean, set_label


def run_for(ctx, role: str) -> Output:
    import pandas as pd

    p = ctx.profile
    out = Output()
    rows = []
    for set_name in p.table_sets:
        q = ctx.queries(set_name, "eval")
        vanilla = completions(ctx, role, q, label="vanilla")
        out.outcome(cells.table3_vanilla(set_name), vanilla)
        out.metric(cells.table3_vanilla(set_name), vanilla.asr, tolerance=asr_tol(len(q.ids)),
                   description=f"vanilla ASR on {set_label(set_name)}")
        for method in ("ua", "sc"):
            sah = sahara_group(ctx, role, set_name, method)
            out.metric(f"sahara_group.{method}.{set_name}", sah["group"], kind="heads",
                       description=f"Sahara {method.upper()} group on {set_label(set_name)}, in order")
            if sah["scoreboard"]:
                best = [r for r in sah["scoreboard"] if r["step"] == 1 and r["rank"] == 1][0]
                out.metric(f"sahara_top_score.{method}.{set_name}", best["score"], tolerance=SCORE_TOL,
                           description="generalized Ships of the step-1 head (degrees)")
            qs = q if p.n_ships_eval is None else Queries(q.set, q.sha256, q.ids[: p.n_ships_eval], q.prompts[: p.n_ships_eval])
            vanilla_qs = mean(not r["refused"] for r in vanilla.rows if r["prompt_id"] in set(qs.ids))
            ships = ships_per_query(ctx, role, qs, method)
            for k in range(1, p.sahara_steps + 1):
                sah_k = completions(ctx, role, q, ablation=head_spec(sah["group"][:k], method, p.eps),
                                    label=f"Sahara {method} top-{k}")
                per_query = {pid: head_spec([h for h, _ in ships[pid][:k]], method, p.eps) for pid in qs.ids}
                ships_k = completions(ctx, role, qs, ablation=per_query, label=f"Ships {method} top-{k}")
                for level, res, base in (("sahara", sah_k, vanilla.asr), ("ships", ships_k, vanilla_qs)):
                    out.outcome(cells.table3(level, method, set_name, k), res)
                    inc = res.asr - base
                    out.metric(cells.table3(level, method, set_name, k), inc, tolerance=diff_tol(res.n),
                               description=f"{level.capitalize()}-level {method.upper()} ASR increase, {k} head(s)")
                    rows.append({"level": level, "ablation": method.upper(), "dataset": set_name, "k": k,
                                 "asr": res.asr, "vanilla": base, "increase": inc, "n": res.n,
                                 "heads": [str(h) for h in sah["group"][:k]] if level == "sahara" else "per query",
                                 "store_key": res.key, "removed_by_filters": res.report.get("removed")})
    frame = pd.DataFrame(rows)
    if not frame.empty:
        wide = frame.pivot_table(index=["level", "ablation", "dataset"], columns="k", values="increase", sort=False)
        wide = wide.reset_index()
        wide["dataset"] = wide["dataset"].map(set_label)
        wide["level"] = wide["level"].str.capitalize()
        wide.columns = [str(c) for c in wide.columns]
        out.tables.append((f"ASR increase over vanilla, {p.labels[role]}", wide.round(3)))
        van = frame.groupby(["dataset", "level"], as_index=False)[["vanilla", "n"]].first()
        van["dataset"] = van["dataset"].map(set_label)
        out.tables.append(("Vanilla ASR (no ablation) on the queries of each level", van.round(3)))
    out.rows = rows
    return out


def run_table3(ctx) -> Output:
    return run_for(ctx, "aligned")


def run_table5(ctx) -> Output:
    return run_for(ctx, "sibling")


CAPTION = ("ASR increase over the vanilla model when the first 1..S heads are ablated. Sahara level: "
           "the dataset's Sahara group (greedy, generalized Ships, r=1) is ablated for every query. "
           "Ships level: each query's own top-k heads by Ships are ablated. UA scales the head's query "
           "by eps; SC scales its output by eps. Greedy decoding, the paper's template.")

TABLE3 = ArtefactSpec("table3", "Table 3: ablating 1-5 heads of the aligned model", CAPTION,
                      "Table 3 (Llama-2-7b-chat)", run_table3)
TABLE5 = ArtefactSpec("table5", "Table 5: ablating 1-5 heads of the sibling fine-tune", CAPTION,
                      "Table 5 (Vicuna-7b-v1.5)", run_table5)
