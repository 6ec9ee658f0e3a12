"""Sensitivity (not in the paper; reviewers asked): how the chosen safety heads depend on the number of
attribution queries N, on r of generalized Ships and on the eps of the Ships ranking; what each choice
does to ASR on held-out queries; and whether generalized Ships ranks first the heads whose ablation
matters (Spearman against Figure 4b's single-head ASR)."""

from __future__ import annotations

import math

from safetyheads.data import load_prompts
from safetyheads.errors import SafetyheadsError

from ..compute.completions import completions
from ..compute.context import Queries
from ..compute.single_heads import single_head_asr, strongest_of
from ..compute.stats import spearman, spearman_permutation_p
from ..compute.steps import head_spec, query_level, sahara_group, ships_per_query
from ..compute.sweep import candidate_sweep
from ..spec.artefact import SCORE_TOL, ArtefactSpec, Output, asr_tol
from ..spec.cells import sensitivity_heldout, sensitivity_query_level
from .common import mean, set_label

METHOD = "ua"
RHO_TOL = 0.1  # one changed verdict in Figure 4b's grid can move a head across a block of tied ASRs


def grid(p) -> list[tuple[int, int]]:
    """The (N, r) cells: the profile's N and r, plus its own Sahara (n_attribution, r = 1) as the
    reference. r < N only: the top-N singular directions of N queries span the whole query space,
    so every ablation scores 0 there (float noise would pick the head)."""
    ns = sorted({*p.sensitivity_n, p.n_attribution})
    rs = sorted({*p.sensitivity_r, 1})
    return [(n, r) for n in ns for r in rs if r < n]


def group_cells(cells: list) -> list:
    """The cells whose whole greedy group is searched: r = 1 at every N, every r at the largest N."""
    n_max = max(n for n, _ in cells)
    return [(n, r) for n, r in cells if r == 1 or n == n_max]


def shared_prefixes(prefix_of: dict) -> dict:
    """{cell: its group so far} -> {group so far: [cells]}: the cells that one sweep serves."""
    out: dict = {}
    for cell, prefix in prefix_of.items():
        out.setdefault(tuple(prefix), []).append(cell)
    return out


def best(scores) -> int:
    """Index of the highest score; on a tie the first candidate (sahara()'s stable sort)."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def first_queries(set_name: str, n: int) -> Queries:
    ps = load_prompts(set_name)
    if n > len(ps.prompts):
        raise SafetyheadsError(f"sensitivity_n asks for {n} attribution queries; {set_name} has {len(ps.prompts)}")
    return Queries(set_name, ps.sha256, list(range(n)), list(ps.prompts[:n]))


def heldout_queries(ctx, set_name: str, n_max: int) -> Queries:
    """The queries after the largest N (at most ``sensitivity_heldout``). A profile that evaluates on
    its attribution queries (``heldout_eval`` off: the paper's) uses its evaluation queries instead."""
    p = ctx.profile
    if not p.heldout_eval:
        return ctx.queries(set_name, "eval")
    ps = load_prompts(set_name)
    hi = len(ps.prompts) if p.sensitivity_heldout is None else min(len(ps.prompts), n_max + p.sensitivity_heldout)
    if hi <= n_max:
        raise SafetyheadsError(f"profile {p.name!r}: no {set_name} queries are left after the first {n_max} to judge")
    return Queries(set_name, ps.sha256, list(range(n_max, hi)), list(ps.prompts[n_max:hi]))


def greedy_groups(ctx, set_name: str, cells: list, size: int) -> tuple[dict, dict, int]:
    """Sahara (UA) of every cell at once. Per step, one sweep per distinct group prefix among the cells
    that need that step, over the most queries any of them uses; each cell scores it on its own first
    N queries with its own r. -> ({cell: group}, {cell: (candidates, step-1 scores)}, sweeps run)."""
    q = first_queries(set_name, max(n for n, _ in cells))
    groups: dict = {c: [] for c in cells}
    step1: dict = {}
    sweeps = 0
    for step in range(1, size + 1):
        need = cells if step == 1 else group_cells(cells)
        for prefix, members in shared_prefixes({c: groups[c] for c in need}).items():
            n = max(n for n, _ in members)
            res = candidate_sweep(ctx, "aligned", Queries(q.set, q.sha256, q.ids[:n], q.prompts[:n]), METHOD,
                                  list(prefix), members)
            sweeps += 1
            for c in members:
                groups[c].append(res["candidates"][best(res["scores"][c])])
                if step == 1:
                    step1[c] = (res["candidates"], res["scores"][c])
    return groups, step1, sweeps


def run(ctx) -> Output:
    import pandas as pd

    p = ctx.profile
    out = Output()
    cells = grid(p)
    size = min(3, p.sahara_steps)
    ref = (p.n_attribution, 1)
    tabs: dict = {"grid": [], "choices": [], "eps": [], "top1": [], "corr": []}
    for s in p.table_sets:
        # a set outside sensitivity_group_sets gets the step-1 grid only (its "groups" are the top-1 heads)
        grouped = p.sensitivity_group_sets is None or s in p.sensitivity_group_sets
        groups, step1, sweeps = greedy_groups(ctx, s, cells, size if grouped else 1)
        out.notes.append(f"{set_label(s)}: {len(cells)} (N, r) cells and "
                         f"{len(group_cells(cells)) if grouped else 'no'} groups of {size} "
                         f"from {sweeps} candidate sweeps")
        report_step1(out, tabs, s, step1)
        compare_with_sahara(ctx, out, s, groups[ref], step1[ref], size if grouped else 1)
        heldout_asr(ctx, out, tabs, s, cells, groups, size if grouped else 1)
        eps_choices(ctx, out, tabs, s, sorted({*p.sensitivity_eps, p.eps}, reverse=True), size)
        correlation(ctx, out, tabs, s, step1[ref])
    out.tables += [(f"Step-1 head (generalized Ships, degrees) by N attribution queries and r, {p.labels['aligned']}",
                    wide(pd.DataFrame(tabs["grid"]), ["dataset", "N"], "r", "head")),
                   (f"Chosen heads (top-1, greedy group of {size}) and their held-out ASR",
                    pd.DataFrame(tabs["choices"]).round(3).fillna("")),
                   (f"Query level: per-query top-1 Ships head ranked with each eps (ablated with eps {p.eps:g})",
                    pd.DataFrame(tabs["eps"]).round(3)),
                   ("Per-query top-1 Ships head by ranking eps",
                    wide(pd.DataFrame(tabs["top1"]), ["dataset", "query"], "eps", "head")),
                   ("Does generalized Ships rank first the heads whose ablation matters? (Spearman vs Figure 4b)",
                    pd.DataFrame(tabs["corr"]).round(4))]
    return out


def report_step1(out: Output, tabs: dict, s: str, step1: dict) -> None:
    """Each cell's step-1 head and score as metrics, its whole scoreboard as result rows."""
    for (n, r), (cands, scores) in step1.items():
        top = best(scores)
        out.metric(f"step1.{s}.n{n}.r{r}", [cands[top]], kind="heads", description=f"step-1 head, first {n} queries, r={r}")
        out.metric(f"step1_score.{s}.n{n}.r{r}", scores[top], tolerance=SCORE_TOL,
                   description="its generalized Ships (degrees)")
        tabs["grid"].append({"dataset": set_label(s), "N": n, "r": f"r={r}", "head": f"{cands[top]} ({scores[top]:.2f})"})
        order = sorted(range(len(cands)), key=lambda i: (-scores[i], i))
        out.rows += [{"part": "step1", "dataset": s, "n": n, "r": r, "rank": k + 1, "head": str(cands[i]),
                      "score": scores[i]} for k, i in enumerate(order)]


def heldout_asr(ctx, out: Output, tabs: dict, s: str, cells: list, groups: dict, size: int) -> None:
    """ASR on the held-out queries with each cell's top-1 head, and its greedy group where it has one
    (one dataset-level head set for every query; a head set two cells share is one store entry)."""
    p = ctx.profile
    held = heldout_queries(ctx, s, max(n for n, _ in cells))
    vanilla = completions(ctx, "aligned", held, label="vanilla")
    out.outcome(sensitivity_heldout(s), vanilla)
    out.metric(sensitivity_heldout(s), vanilla.asr, tolerance=asr_tol(vanilla.n), description="vanilla ASR, held out")
    with_group = set(group_cells(cells)) if size > 1 else set()
    for n, r in cells:
        choice = {"dataset": set_label(s), "N": n, "r": r}
        for tag, heads in [("k1", groups[(n, r)][:1])] + ([(f"k{size}", groups[(n, r)])] if (n, r) in with_group else []):
            res = completions(ctx, "aligned", held, ablation=head_spec(heads, METHOD, p.eps),
                              label=f"sensitivity UA {','.join(map(str, heads))}")
            name = sensitivity_heldout(s, n, r, tag)
            out.outcome(name, res)
            out.metric(name, res.asr, tolerance=asr_tol(res.n), description=f"held-out ASR, {len(heads)} head(s) UA")
            if tag != "k1":
                out.metric(f"group.{s}.n{n}.r{r}", heads, kind="heads",
                           description=f"greedy group, first {n} queries, r={r}")
            choice.update({f"heads {tag}": ",".join(map(str, heads)), f"ASR {tag}": res.asr})
        choice.update({"vanilla": vanilla.asr, "n": vanilla.n})
        tabs["choices"].append(choice)
        out.rows.append({"part": "choice", **choice})


def wide(frame, index: list, columns: str, values: str):
    """A long table turned wide (one column per value of ``columns``), for printing."""
    if frame.empty:
        return frame
    t = frame.pivot(index=index, columns=columns, values=values).reset_index().fillna("")  # "": no such cell (r >= N)
    t.columns = [str(c) for c in t.columns]
    return t


def compare_with_sahara(ctx, out: Output, s: str, group: list, step1: tuple, size: int) -> None:
    """The reference cell (the profile's own N, r = 1) must reproduce the profile's Sahara run."""
    sah = sahara_group(ctx, "aligned", s, METHOD)
    if not sah["scoreboard"]:
        return
    top = next(r for r in sah["scoreboard"] if r["step"] == 1 and r["rank"] == 1)
    cands, scores = step1
    i = best(scores)
    same = top["head_name"] == str(cands[i]) and abs(top["score"] - scores[i]) <= SCORE_TOL and sah["group"][:size] == group
    out.metric(f"reference.{s}.matches_sahara", "yes" if same else "no", kind="info",
               description="the profile's own N, r=1 cell gives the Sahara run's step-1 head, score and group")
    out.notes.append(f"{set_label(s)}: the cell N={ctx.profile.n_attribution}, r=1 gives {cands[i]} ({scores[i]:.4f} degrees) "
                     f"and group {','.join(map(str, group))}; the profile's Sahara run (Tables 3/5, Figure 4) gives "
                     f"{top['head_name']} ({top['score']:.4f}) and {','.join(map(str, sah['group'][:size]))}")


def eps_choices(ctx, out: Output, tabs: dict, s: str, eps_grid: list, size: int) -> None:
    """Query level: each query's own top-1 / top-k Ships heads, ranked with each eps and ablated with
    the profile's eps, judged on the Ships evaluation queries."""
    p = ctx.profile
    qs = ctx.ships_queries(s)
    keep = set(qs.ids)
    # the vanilla run of the evaluation queries (Tables 3/5 make it), read on the Ships queries among them
    evaluated = completions(ctx, "aligned", ctx.queries(s, "eval"), label="vanilla")
    van_rows = [r for r in evaluated.rows if r["prompt_id"] in keep]
    vanilla = mean(not r["refused"] for r in van_rows)
    out.outcome(sensitivity_query_level(s), ids=[r["prompt_id"] for r in van_rows],
                flags=[not r["refused"] for r in van_rows], rows=van_rows)
    out.metric(sensitivity_query_level(s), vanilla, tolerance=asr_tol(len(van_rows)))
    top1 = {}
    for e in eps_grid:
        ships = ships_per_query(ctx, "aligned", qs, METHOD, eps=e)
        top1[e] = [ships[pid][0][0] for pid in qs.ids]
        tabs["top1"] += [{"dataset": set_label(s), "query": pid, "eps": f"{e:.0e}", "head": str(h)}
                         for pid, h in zip(qs.ids, top1[e])]
        row = {"dataset": set_label(s), "ranking eps": f"{e:.0e}", "vanilla": vanilla, "n": len(qs.ids)}
        for k in sorted({1, size}):
            res = completions(ctx, "aligned", qs, ablation=query_level(ships, k, METHOD, p.eps),
                              label=f"sensitivity query-level top-{k}, ranked with eps {e:g}")
            name = sensitivity_query_level(s, e, k)
            out.outcome(name, res)
            out.metric(name, res.asr, tolerance=asr_tol(res.n), description=f"ASR, each query's top-{k} UA heads")
            row[f"ASR k{k}"] = res.asr
        out.metric(f"eps_top1.{s}.eps{e:.0e}", top1[e], kind="heads",
                   description="each Ships query's top-1 head, in query order")
        tabs["eps"].append(row)
    for e in eps_grid:
        agree = mean(a == b for a, b in zip(top1[e], top1[p.eps]))
        out.metric(f"eps_agreement.{s}.eps{e:.0e}", agree, tolerance=asr_tol(len(qs.ids)),
                   description=f"share of queries whose top-1 head is the eps={p.eps:g} one")
        next(r for r in tabs["eps"] if r["dataset"] == set_label(s) and r["ranking eps"] == f"{e:.0e}")[
            f"top-1 agrees with eps {p.eps:g}"] = agree
    out.rows += [{"part": "eps", **r} for r in tabs["top1"] if r["dataset"] == set_label(s)]


def correlation(ctx, out: Output, tabs: dict, s: str, step1: tuple) -> None:
    """Spearman's rho between each candidate's step-1 generalized Ships (the profile's own N, r = 1)
    and its single-head ASR in Figure 4b's grid, and where Figure 4b's strongest head ranks."""
    cands, scores = step1
    _, by_head = single_head_asr(ctx, "aligned", s)
    asr = [mean(c for _, c, _ in by_head[str(h)]) for h in cands]
    rho, p_value = spearman(scores, asr), spearman_permutation_p(scores, asr)
    strongest, strongest_asr = strongest_of(by_head)  # Figure 4b's strongest_single_head, from the grid read above
    rank = 1 + sum(x > scores[cands.index(strongest)] for x in scores)
    if math.isnan(rho):  # reported, not checked: a stored nan would fail every later run
        rho = p_value = "undefined: every head has the same single-head ASR"
    out.metric(f"spearman.{s}.rho", rho, kind="info" if isinstance(rho, str) else "number", tolerance=RHO_TOL,
               description="generalized Ships vs single-head ASR, over heads")
    out.metric(f"spearman.{s}.p", p_value, kind="info", description="two-sided permutation p-value (10,000, seeded)")
    stands_out = strongest_asr > min(asr)  # else the "strongest" head is only the first of a tie
    out.metric(f"strongest_head_rank.{s}", rank, kind="number" if stands_out else "info", tolerance=0,
               description="Figure 4b's strongest head, ranked by generalized Ships (1 = highest)")
    if not stands_out:
        out.notes.append(f"{set_label(s)}: no head stands out in Figure 4b's grid (every single-head ASR is "
                         f"{strongest_asr:g}), so neither the rank correlation nor the strongest head's rank says anything")
    row = {"dataset": set_label(s), "heads": len(cands), "rho": rho, "p (permutation)": p_value,
           "strongest single head": str(strongest), "its ASR": strongest_asr, "its rank by generalized Ships": rank}
    tabs["corr"].append(row)
    out.rows.append({"part": "correlation", **row})


CAPTION = (
    "Not in the paper (reviewers' question). UA on the aligned model, the paper's template. (1) Sahara (greedy, "
    "generalized Ships) rerun with N = the first N queries of each set for attribution and r principal angles: the "
    "step-1 head and score of every (N, r), and the greedy group of 3 (or the profile's Sahara steps, if fewer) for "
    "r = 1 at every N and for every r at the largest N. One candidate sweep per distinct group prefix serves every "
    "cell of a step. (2) Query level: each query's top-1 Ships head ranked with each eps; only the ranking's eps "
    "varies, the ablation keeps the profile's. (3) ASR of every choice, greedy decoding: the (N, r) heads on the "
    "queries after the largest N (the paper profile, which attributes and evaluates on the same queries, uses its "
    "evaluation set), the query-level heads on the Ships evaluation queries. (4) Spearman's rho between each head's "
    "step-1 generalized Ships (the profile's own N, r = 1) and its single-head ASR in Figure 4b's grid.")

SENSITIVITY = ArtefactSpec("sensitivity", "Sensitivity: how the chosen heads depend on N, r and eps", CAPTION,
                           "not in the paper (reviewers' question)", run)
