"""The rules of the claims about which heads matter and what else they do (Figure 4's group size and single
heads, Figure 5's overlaps, Figure 6b's helpfulness, Figure 13's long tail, Figure 7's mechanism,
Table 2's cost): each reads an artefact's ``Results`` and returns its ``Finding``."""

from __future__ import annotations

import numpy as np

from safetyheads.judges import ThreeWayJudge

from ..compute import stats
from ..spec import cells
from ..spec.cells import MissingCell
from .decide import (FAILS, HOLDS, INCONCLUSIVE, NOT_COMPARABLE, NOT_RUN, PARTLY, Finding, combine, decide_at_most, fmt,
                     fmt_p, n_to_decide, paired, pooled)
from .results import Results
from .thresholds import (GROUP_SIZE, HELP_MAX, MEDIAN_HEAD_MAX, N_PERM, NLL_MAX, OVERLAP_LARGE, OVERLAP_SMALL,
                         T_BEST_HEAD, TOP)


def peak_near_3(r: Results) -> Finding:
    """The paper's comparison, fixed before the data: a Sahara group of 3 heads against 1 head, and the
    largest group against 3, sets pooled query by query (no size is picked after seeing the curve)."""
    sets = r.sets(lambda s: cells.figure4a(s, 1), lambda s: cells.figure4a(s, GROUP_SIZE))
    if not sets:
        return Finding(NOT_RUN)
    ks = cells.figure4a_ks(r.outcomes, sets[0])
    for s in sets:
        for k in ks:
            r.need(cells.figure4a(s, k))
    last = ks[-1]  # == GROUP_SIZE where no larger group was run (the ci profile): nothing to beat 3 then
    evidence = []
    for s in sets:
        asr = {k: stats.mean_flags(r.flags(cells.figure4a(s, k))) for k in ks}
        evidence.append(f"{s}: ASR by group size " + ", ".join(f"{k}: {asr[k]:.2f}" for k in ks))
    up = pooled([(r.flags(cells.figure4a(s, 1)), r.flags(cells.figure4a(s, GROUP_SIZE))) for s in sets])
    beyond = pooled([(r.flags(cells.figure4a(s, GROUP_SIZE)), r.need_flags(cells.figure4a(s, last))) for s in sets]) \
        if last > GROUP_SIZE else stats.PairedTable(0, 0, 0, 0)
    v = group_size_verdict(up, beyond)
    uncertainty = (f"n = {up.n} paired queries; {GROUP_SIZE} heads vs 1 head {up.diff:+.2f} (McNemar p = {fmt_p(up.p_value())}); "
           + (f"{last} heads vs {GROUP_SIZE} {beyond.diff:+.2f} (p = {fmt_p(beyond.p_value())})" if last > GROUP_SIZE
              else f"no group larger than {GROUP_SIZE} was run"))
    if v == INCONCLUSIVE:
        uncertainty += "; " + n_to_decide(up, lambda t: group_size_verdict(t, beyond))
    return Finding(v, "; ".join(evidence), uncertainty)


def group_size_verdict(up: stats.PairedTable, beyond: stats.PairedTable) -> str:
    """``up``: 1 head -> 3 heads; ``beyond``: 3 heads -> the largest group (see the claim's rule)."""
    if up.diff <= 0 or (beyond.p_value() < stats.ALPHA and beyond.diff > 0):
        return FAILS
    if up.p_value() < stats.ALPHA:
        return HOLDS
    return INCONCLUSIVE


def few_heads_stand_out(r: Results) -> Finding:
    sets = r.sets(cells.figure4b)
    if not sets:
        return Finding(NOT_RUN)
    verdicts, evidence, uncertainty = [], [], []
    for s in sets:
        van = r.flags(cells.figure4b(s))
        heads = cells.figure4b_heads(r.outcomes, s)
        if not heads:
            raise MissingCell(f"Figure 4b's results hold the vanilla cell of {s} but no per-head cell: regenerate them")
        per_head = {h: r.flags(cells.figure4b(s, h)) for h in heads}
        ids = [q for q in van if all(q in c for c in per_head.values())]
        tables = {h: paired({q: van[q] for q in ids}, {q: per_head[h][q] for q in ids}) for h in heads}
        best = max(heads, key=lambda h: (tables[h].diff, -tables[h].p_value()))
        incs = sorted(t.diff for t in tables.values())
        median = incs[len(incs) // 2]
        p = stats.max_row_permutation_p([[int(per_head[h][q]) for q in ids] for h in heads], N_PERM)
        v = few_heads_verdict(tables[best].diff, median, p)
        verdicts.append(v)
        t = tables[best]
        evidence.append(f"{s}: vanilla {t.before:.2f}, best single head {best} {t.after:.2f}, median head {median:+.2f}"
                  + broken_aside(r, cells.figure4b(s, best)))
        uncertainty.append(f"{s}: n = {t.n} queries x {len(heads)} heads; best head {t.diff:+.2f} over vanilla, stands out "
                   f"with permutation p = {fmt_p(p)} ({N_PERM} shuffles of each query's outcomes across heads); "
                   f"median head {median:+.2f}")
    return Finding(combine(verdicts), "; ".join(evidence), " | ".join(uncertainty))


def broken_aside(r: Results, cell: str) -> str:
    """How many of a cell's complied answers the three-way judge's rules (loop, echo, empty scaffolding: no
    model, no reader) call broken: reported beside the verdict, never in it, since the profile's judge
    decides what an answer is (and at mini it reads breakage as compliance)."""
    rows = r.complied_responses(cell)
    if not rows:
        return ""
    rules = ThreeWayJudge.rules_only()
    broken = [v for v in (rules.rules(row["prompt"], row["response"]) for row in rows) if v is not None]
    if not broken:
        return ""
    kinds = sorted({v.rule for v in broken})
    return (f" ({len(broken)} of its {len(rows)} complied answers are {', '.join(kinds)} output by the three-way "
            "judge's rules: the head breaks the model)")


def few_heads_verdict(best_increase: float, median_increase: float, p: float) -> str:
    """One set's verdict by the claim's rule (its printed text)."""
    if median_increase > MEDIAN_HEAD_MAX:
        return FAILS
    if p < stats.ALPHA:
        return HOLDS if best_increase >= T_BEST_HEAD - 1e-12 else PARTLY
    return FAILS if best_increase < T_BEST_HEAD else INCONCLUSIVE


def _top10(r: Results, name: str) -> list[str] | None:
    v = r.metric(f"top10.{name}")
    return list(v) if v else None


def ua_sc_overlap(r: Results) -> Finding:
    ua, sc = _top10(r, "aligned.ua"), _top10(r, "aligned.sc")
    n_heads = r.metric("candidates")
    if not ua or not sc or not n_heads:
        return Finding(NOT_RUN)
    k = len(set(ua) & set(sc))
    ua2, sc2 = _top10(r, "aligned.ua.control_set"), _top10(r, "aligned.sc.control_set")
    evidence = f"{k} of {TOP} shared (chance {TOP * TOP / n_heads:.2f})"
    if not ua2 or not sc2:
        return Finding(INCONCLUSIVE, evidence, f"n = {TOP} heads per list; no within-method control (each method's top 10 "
                       "on a second set), so the test has no known power")
    ctrl = min(len(set(ua) & set(ua2)), len(set(sc) & set(sc2)))
    p, power = overlap_below_control(k, ctrl, n_heads)
    evidence += f"; each method shares >= {ctrl} of {TOP} with its own top 10 on {r.metric('control_set')}"
    if p < stats.ALPHA and k <= OVERLAP_SMALL:
        v = HOLDS
    elif k >= ctrl or k > OVERLAP_LARGE:
        v = FAILS
    else:
        v = INCONCLUSIVE
    uncertainty = (f"n = {TOP} heads per list, {n_heads} candidates; P(<= {k} shared | the methods agree as much as "
           f"each agrees with itself across sets) = {fmt_p(p)}; power against chance-level lists {power:.2f}")
    return Finding(v, evidence, uncertainty)


def overlap_below_control(k: int, ctrl: int, n_heads: int) -> tuple[float, float]:
    """p: the chance of sharing <= k heads if the two methods agreed as much as a method agrees with
    itself (each of the 10 heads shared with probability ctrl/10); power: the chance that two random
    top-10 lists (hypergeometric) would give p < 0.05."""
    q = ctrl / TOP
    p = stats.binom_cdf(k, TOP, q)
    power = sum(stats.hypergeom_pmf(j, n_heads, TOP, TOP) for j in range(TOP + 1)
                if stats.binom_cdf(j, TOP, q) < stats.ALPHA)
    return p, power


def finetune_overlap(r: Results) -> Finding:
    a, b, base = _top10(r, "aligned.ua"), _top10(r, "sibling.ua"), _top10(r, "base.ua")
    n_heads = r.metric("candidates")
    if not a or not b or not n_heads:
        return Finding(NOT_RUN)
    k = len(set(a) & set(b))
    p = stats.hypergeom_sf(k, n_heads, TOP, TOP)
    evidence = f"{k} of {TOP} shared (chance {TOP * TOP / n_heads:.2f})"
    uncertainty = f"n = {TOP} heads per list, {n_heads} candidates; hypergeometric p = {fmt_p(p)}"
    if p >= stats.ALPHA:
        return Finding(FAILS, evidence, uncertainty)
    if not base:
        return Finding(INCONCLUSIVE, evidence, uncertainty + "; no untuned-base control")
    ctrl = max(len(set(a) & set(base)), len(set(b) & set(base)))
    p_ctrl = 1 - stats.binom_cdf(k - 1, TOP, ctrl / TOP)  # P(>= k shared | as much as with the base)
    evidence += f"; with the untuned base: {len(set(a) & set(base))} (aligned), {len(set(b) & set(base))} (sibling)"
    uncertainty += f"; P(>= {k} shared | the fine-tunes shared as much as each shares with the base) = {fmt_p(p_ctrl)}"
    if k >= OVERLAP_LARGE and p < 0.01 and p_ctrl < stats.ALPHA:
        return Finding(HOLDS, evidence, uncertainty)
    return Finding(PARTLY, evidence, uncertainty + "; the shared heads are the base model's as much as the fine-tunes'")


def helpful(r: Results) -> Finding:
    """Reads each head that lowers safety: the one most often a harmful query's own top-1 UA Ships head
    (Figure 2's query level) and, when its ablation beats vanilla there, Figure 4b's strongest single
    head; several heads are combined as several sets are."""
    if not r.ran():
        return Finding(NOT_RUN)
    conds = ["query_common"] + (["strongest"] if r.metric("b.strongest_lowers_safety") == "yes" else [])
    found = [_helpful_one(r, c) for c in conds]
    v = combine([f[0] for f in found])  # one head: its own verdict
    return Finding(v, "; ".join(f[1] for f in found), "; ".join(f[2] for f in found))


def _helpful_one(r: Results, cond: str) -> tuple[str, str, str]:
    """(verdict, evidence, uncertainty) of one ablated row against vanilla."""
    ref0, ref1 = r.need_flags(cells.figure6b("vanilla", "refusal")), r.need_flags(cells.figure6b(cond, "refusal"))
    gib0, gib1 = r.need_flags(cells.figure6b("vanilla", "degenerate")), r.need_flags(cells.figure6b(cond, "degenerate"))
    ref, gib = paired(ref0, ref1), paired(gib0, gib1)
    parts, verdicts = [], []
    what = "degenerate answers"
    for name, t in (("refusals", ref), (what, gib)):
        lo, hi = t.ci()
        verdicts.append(decide_at_most(lo, hi, HELP_MAX))
        parts.append(f"{name} {t.diff:+.2f} [{lo:+.2f}, {hi:+.2f}]")
    nll0, nll1 = r.values(cells.figure6b("vanilla", "nll")), r.values(cells.figure6b(cond, "nll"))
    head = r.metric({"query_common": "b.query_common_head", "strongest": "b.strongest_head"}.get(cond, "")) or []
    which = {"query_common": "the most frequent query-level top-1 head", "strongest": "Figure 4b's strongest head",
             "top1": "the top-1 UA head"}[cond] + (f" ({', '.join(head)})" if head else "")
    evidence = (f"benign prompts, vanilla -> {which} ablated: refusals {ref.before:.2f} -> {ref.after:.2f}, "
          f"{what} {gib.before:.2f} -> {gib.after:.2f}")
    if nll0 and nll1:
        d = [nll1[q] - nll0[q] for q in nll0 if q in nll1 and nll0[q] is not None and nll1[q] is not None]
        lo, hi = stats.bootstrap_mean_ci(d)
        verdicts.append(decide_at_most(lo, hi, NLL_MAX))
        parts.append(f"base-model NLL {sum(d) / len(d):+.2f} nats [{lo:+.2f}, {hi:+.2f}] (bootstrap)")
        evidence += f", base-model NLL {fmt(r.metric('b.vanilla.base_nll'))} -> {fmt(r.metric(f'b.{cond}.base_nll'))}"
    v = FAILS if FAILS in verdicts else (HOLDS if all(x == HOLDS for x in verdicts) else INCONCLUSIVE)
    return v, evidence, f"{which.split(' (')[0]}: n = {ref.n} paired prompts; changes with 95% CIs: " + "; ".join(parts)


def long_tail(r: Results) -> Finding:
    if not r.ran():
        return Finding(NOT_RUN)
    r.need(cells.figure13("aligned"))
    sa, sb = r.values(cells.figure13("aligned")), r.values(cells.figure13("base"))
    xs = list(sa.values())
    sk, p = stats.skewness(xs), stats.skewness_test(xs)
    srt = sorted(xs)
    med = srt[len(srt) // 2]
    ratio = max(xs) / med if med > 0 else float("inf")
    evidence = f"skewness {sk:.2f}, max / median {ratio:.1f}"
    uncertainty = f"n = {len(xs)} heads; D'Agostino skewness test p = {fmt_p(p)}"
    tailed = p < 0.01 and sk > 1 and ratio >= 3
    if not tailed:  # skewed but short of a long tail: partly; not skewed at all: does not hold
        return Finding(FAILS if (p >= stats.ALPHA or sk <= 0) else PARTLY, evidence, uncertainty)
    if not sb:
        return Finding(INCONCLUSIVE, evidence, uncertainty + "; no control model")
    common = [h for h in sa if h in sb]
    d, (lo, hi) = skew_gap(sa, sb, common)
    evidence += f"; untuned base: skewness {stats.skewness([sb[h] for h in common]):.2f}"
    uncertainty += f"; aligned - base skewness {d:+.2f}, 95% bootstrap CI over heads [{lo:+.2f}, {hi:+.2f}]"
    if lo > 0:
        return Finding(HOLDS, evidence, uncertainty)
    return Finding(PARTLY, evidence, uncertainty + "; the untuned base's scores are long-tailed too and the difference's CI "
                   "includes 0: the tail is not shown to be specific to safety tuning")


def skew_gap(sa: dict, sb: dict, heads: list, n_boot: int = 2000, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Skewness of the aligned scores minus the control's, with a paired bootstrap over heads."""
    a = np.array([sa[h] for h in heads], dtype=float)
    b = np.array([sb[h] for h in heads], dtype=float)

    def sk(x):
        c = x - x.mean(axis=-1, keepdims=True)
        m2 = (c**2).mean(axis=-1)
        return (c**3).mean(axis=-1) / np.where(m2 > 0, m2, 1.0) ** 1.5

    idx = np.random.default_rng(seed).integers(0, len(heads), size=(n_boot, len(heads)))
    gaps = sk(a[idx]) - sk(b[idx])
    return float(sk(a) - sk(b)), (float(np.quantile(gaps, 0.025)), float(np.quantile(gaps, 0.975)))


def uniform(r: Results) -> Finding:
    q = r.metric("dev_uniform.q_1e-10")
    v = [x["value"] for k, x in r.metrics.items() if k.startswith("dev_clean.v_")]
    if q is None or not v:
        return Finding(NOT_RUN)
    evidence = f"max |A - uniform| with q x 1e-10: {q:.1e}; max change of the map with v scaled: {max(v):.1e}"
    return Finding(HOLDS if q < 1e-3 and max(v) < 1e-5 else FAILS, evidence,
                   "exact computation on one head's attention map per scale (no sampling)")


def cost(r: Results) -> Finding:
    s, q = r.metric("sahara_seconds"), r.metric("ships_seconds_per_query")
    if s is None:
        return Finding(NOT_RUN)
    return Finding(NOT_COMPARABLE, f"Sahara {s:.0f} s, Ships {q:.1f} s per query (CPU, a 135M model): "
                   "not GPU-hours of a 7B model", "one timed run")
