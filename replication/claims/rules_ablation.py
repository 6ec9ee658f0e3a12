"""The rules of the claims about what ablating heads does to ASR (Figure 2, Table 1, Tables 3 and 5,
Table 7, the chat template, Figure 6a): each reads an artefact's ``Results`` and returns its ``Finding``."""

from __future__ import annotations

import math
from typing import Callable

from ..compute import stats
from ..spec import cells
from ..spec.cells import SETS
from .decide import (INCONCLUSIVE, NOT_RUN, Finding, decide_at_most, decide_increase, decided_at, fmt_p,
                     increase_finding, n_to_decide, pooled, queries_to_decide)
from .results import Results
from .thresholds import CHAT_REFUSE_MAX, PARAMS_PCT_MAX, SWAP_SHARE_MAX, T_CHAT_LIFT, T_COURSE, T_THREE_HEADS, T_UA_SC


# The rules, one per claim


def headline(role: str, T: float, ratio: float | None):
    """Reads the query-level cells (each query's own top-1 Ships head, as the paper's Figure 2); the
    dataset-level cells (one Sahara head for every query) are shown beside it, never decide."""
    def judge(r: Results) -> Finding:
        def cell(state: str, level: str = "query"):
            return lambda s: cells.figure2(role, "ua", "greedy", "paper", s, state, level)
        sets = r.sets(cell("vanilla"), cell("ablated"))
        if not sets:
            return Finding(NOT_RUN)
        t = pooled([(r.flags(cell("vanilla")(s)), r.flags(cell("ablated")(s))) for s in sets])
        ok = ratio is None or t.before == 0 or t.after / t.before >= ratio
        x = "" if t.before == 0 else f" ({t.after / t.before:.1f}x)"
        tops = [h for s in sets for h in (r.metric(f"{role}.ua.paper.{s}.top1") or [])]
        common = max(set(tops), key=lambda h: (tops.count(h), h)) if tops else None
        evidence = (f"mean ASR {t.before:.2f} -> {t.after:.2f}{x} with each query's own top-1 UA Ships head ablated, "
              f"{len(sets)} sets" + (f" (most often {common}: {tops.count(common)} of {len(tops)} queries)" if common else ""))
        # the dataset level is printed beside the verdict where the run has it (results before it had none)
        dsets = [s for s in SETS if r.flags(cell("vanilla", "dataset")(s)) and r.flags(cell("ablated", "dataset")(s))]
        if dsets:
            d = pooled([(r.flags(cell("vanilla", "dataset")(s)), r.flags(cell("ablated", "dataset")(s))) for s in dsets])
            head = r.metric(f"{role}.ua.head")
            evidence += (f"; dataset level, not the verdict: one Sahara head{' (' + ', '.join(head) + ')' if head else ''} "
                   f"for every query, {d.before:.2f} -> {d.after:.2f}, n = {d.n}")
        v, uncertainty = increase_finding(t, T, "increase", ok, f"ratio below {ratio:g}x" if ratio else "")
        return Finding(v, evidence, uncertainty)
    return judge


def table1(r: Results) -> Finding:
    sets = r.sets(lambda s: cells.table1("vanilla", s), lambda s: cells.table1("ablated", s))
    pct = r.metric("params_modified_pct")
    if not sets or pct is None:
        return Finding(NOT_RUN)
    t = pooled([(r.flags(cells.table1("vanilla", s)), r.flags(cells.table1("ablated", s))) for s in sets])
    evidence = f"3 heads UA-ablated: mean ASR {t.before:.2f} -> {t.after:.2f}, {pct:.4f}% of parameters modified"
    v, uncertainty = increase_finding(t, T_THREE_HEADS, "increase", pct < PARAMS_PCT_MAX, f"{pct:.3f}% of parameters")
    return Finding(v, evidence, uncertainty)


def per_query_gap(r: Results, level: str, sets: list[str], ks: list[int]) -> list[float]:
    """Per query: the mean over k of (complied with k UA heads) - (complied with k SC heads)."""
    gaps = []
    for s in sets:
        ua = [r.flags(cells.table3(level, "ua", s, k)) for k in ks]
        sc = [r.flags(cells.table3(level, "sc", s, k)) for k in ks]
        for q in ua[0]:
            if all(q in c for c in ua + sc):
                gaps.append(sum(int(u[q]) - int(c[q]) for u, c in zip(ua, sc)) / len(ks))
    return gaps


def ua_beats_sc(role: str, level: str):
    T = T_UA_SC[(role, level)]

    def judge(r: Results) -> Finding:
        ks = cells.table3_ks(r.outcomes, level) or [1]  # no cell at all: Results.sets says which is missing
        sets = r.sets(*[lambda s, m=m, k=k: cells.table3(level, m, s, k) for m in cells.METHODS for k in ks])
        if not sets:
            return Finding(NOT_RUN)
        gaps = per_query_gap(r, level, sets, ks)
        est = sum(gaps) / len(gaps)
        lo, hi = stats.bootstrap_mean_ci(gaps)
        p = stats.sign_test(gaps)
        inc = {m: [r.metric(cells.table3(level, m, s, k)) for s in sets for k in ks] for m in cells.METHODS}
        mu = {m: sum(x for x in v if x is not None) / max(1, len(v)) for m, v in inc.items()}
        evidence = (f"{level.capitalize()}-level mean ASR increase over k = {ks[0]}..{ks[-1]} and {', '.join(sets)}: "
              f"UA {mu['ua']:+.2f}, SC {mu['sc']:+.2f}")
        v = decide_increase(est, lo, hi, p, T)
        uncertainty = (f"n = {len(gaps)} queries; per-query UA - SC (mean over k) {est:+.2f}, 95% bootstrap CI "
               f"[{lo:+.2f}, {hi:+.2f}]; sign test p = {fmt_p(p)}")
        if v == INCONCLUSIVE:
            uncertainty += "; " + _n_for_mean(gaps, T)
        return Finding(v, evidence, uncertainty)
    return judge


def _n_for_mean(values: list[float], T: float) -> str:
    """The n at which a per-query mean with this spread would decide (normal approximation)."""
    n = len(values)
    mu = sum(values) / n
    sd = math.sqrt(sum((x - mu) ** 2 for x in values) / max(1, n - 1))
    gap = abs(mu) if mu > 0 else abs(T - mu)  # to show an increase, or to rule T out
    if gap == 0 or sd == 0:
        return "no n would decide at these rates (no effect and no spread)"
    need = math.ceil((stats.Z * sd / gap) ** 2)  # a mean's normal approximation, not a scaled count
    return decided_at(max(need, n + 1))


def swap_safe(r: Results) -> Finding:
    sets = r.sets(*[lambda s, m=m: cells.figure6a(s, m) for m in cells.FIGURE6A_MODELS])
    if not sets:
        return Finding(NOT_RUN)
    swap = pooled([(r.flags(cells.figure6a(s, "aligned")), r.flags(cells.figure6a(s, "swapped"))) for s in sets])
    base = pooled([(r.flags(cells.figure6a(s, "aligned")), r.flags(cells.figure6a(s, "base"))) for s in sets])
    evidence = f"mean ASR: aligned {swap.before:.2f}, aligned with base attention {swap.after:.2f}, base {base.after:.2f}"
    lo, hi = swap.ci()
    margin = SWAP_SHARE_MAX * base.diff
    uncertainty = (f"n = {swap.n} paired queries; swapped - aligned {swap.diff:+.2f}, 95% CI [{lo:+.2f}, {hi:+.2f}] vs margin "
           f"{margin:.2f} (a quarter of base - aligned {base.diff:+.2f}, McNemar p = {fmt_p(base.p_value())})")
    if not (base.p_value() < stats.ALPHA and base.diff > 0):
        return Finding(INCONCLUSIVE, evidence, uncertainty + "; the base model is not shown less safe, so the swap cannot tell")
    v = decide_at_most(lo, hi, margin)
    if v == INCONCLUSIVE:
        uncertainty += "; " + n_to_decide(swap, lambda t: decide_at_most(*t.ci(), margin))
    return Finding(v, evidence, uncertainty)


def _dataset_level(r: Results, before: Callable[[str], str], after: Callable[[str], str], head: str | None = None) -> str:
    """The dataset-level variant of a query-level comparison, for the evidence column only (results made
    before it existed have none: then nothing is printed)."""
    sets = [s for s in SETS if r.flags(before(s)) and r.flags(after(s))]
    if not sets:
        return ""
    t = pooled([(r.flags(before(s)), r.flags(after(s))) for s in sets])
    heads = r.metric(head) if head else None
    return (f"; dataset level, not the verdict (one Sahara head{' ' + ', '.join(heads) if heads else ''} for every "
            f"query): {t.before:.2f} -> {t.after:.2f}, n = {t.n}")


def course_correction(r: Results) -> Finding:
    """Reads the query level (each query's own top-1 UA Ships head): see replication/artefacts/table7.py."""
    sure, ua_sure = (lambda s: cells.table7(s, "Sure")), (lambda s: cells.table7(s, "UA+Sure"))
    found = own_head_pooled(r, sure, ua_sure, "{s}: Sure {before:.2f}, UA+Sure {after:.2f}")
    if found is None:
        return Finding(NOT_RUN)
    t, evidence = found
    evidence += _dataset_level(r, sure, lambda s: cells.table7(s, "UA+Sure", "dataset"), "ua_head")
    v, uncertainty = increase_finding(t, T_COURSE, "UA+Sure - Sure")
    return Finding(v, evidence, uncertainty)


def own_head_pooled(r: Results, before, after, each: str):
    """A query-level comparison (each query's own top-1 UA head, ``after``, against ``before`` on the same
    queries), pooled over the sets that ran both: ``(pooled test, evidence)``, or None when none ran.
    ``each`` formats one set's ASRs: ``{s}``, ``{before}`` (on the queries ``after`` has), ``{after}``."""
    sets = r.sets(before, after)
    if not sets:
        return None
    t = pooled([(r.flags(before(s)), r.flags(after(s))) for s in sets])
    evidence = "each query's own top-1 UA head: " + "; ".join(
        each.format(s=s, before=stats.mean_flags(paired_only(r.flags(before(s)), r.flags(after(s)))),
                    after=stats.mean_flags(r.flags(after(s)))) for s in sets)
    return t, evidence


def paired_only(before: dict, after: dict) -> dict:
    """``before``'s outcomes on the queries ``after`` has (a query-level cell covers the first queries)."""
    return {i: f for i, f in before.items() if i in after}


def chat_refuses(r: Results) -> Finding:
    vanilla = lambda s: cells.chat_template(s, "vanilla")  # noqa: E731
    sets = r.sets(vanilla)
    if not sets:
        return Finding(NOT_RUN)
    flags = "".join("".join(r.flags(vanilla(s)).values()) for s in sets)
    k, n = flags.count("1"), len(flags)
    lo, hi = stats.clopper_pearson(k, n)
    v = decide_at_most(lo, hi, CHAT_REFUSE_MAX)
    evidence = "; ".join(f"{s}: ASR {stats.mean_flags(r.flags(vanilla(s))):.2f}" for s in sets)
    uncertainty = f"n = {n} queries; ASR {k / n:.2f}, 95% exact CI [{lo:.2f}, {hi:.2f}]"
    if v == INCONCLUSIVE:
        def verdict_at(m: float) -> tuple[int, str]:
            return round(n * m), decide_at_most(*stats.clopper_pearson(round(k * m), round(n * m)), CHAT_REFUSE_MAX)

        found = queries_to_decide(verdict_at, scales=(2, 3, 4, 6, 8, 12, 16, 32), rates="this rate")
        uncertainty += f"; {found}" if found else ""
    return Finding(v, evidence, uncertainty)


def chat_lift(r: Results) -> Finding:
    """Reads the query level (each query's own top-1 UA Ships head on the chat input)."""
    vanilla, top1 = (lambda s: cells.chat_template(s, "vanilla")), (lambda s: cells.chat_template(s, "ua_top1"))
    found = own_head_pooled(r, vanilla, top1, "{s}: {before:.2f} -> {after:.2f}")
    if found is None:
        return Finding(NOT_RUN)
    t, evidence = found
    sets = r.sets(vanilla, top1)
    echo = [r.metric(f"{top1(s)}.echoes") for s in sets]
    complied = sum("".join(r.flags(top1(s)).values()).count("1") for s in sets)
    if complied and all(isinstance(e, (int, float)) for e in echo):
        evidence += (f"; {int(sum(echo))} of the {complied} complied answers repeat the query (the judge counts them as "
               "answers)")
    evidence += _dataset_level(r, vanilla, lambda s: cells.chat_template(s, "ua_top1", "dataset"))
    v, uncertainty = increase_finding(t, T_CHAT_LIFT, "increase")
    return Finding(v, evidence, uncertainty)
