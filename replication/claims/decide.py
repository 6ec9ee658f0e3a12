"""How a claim's verdict is decided: the verdicts, a claim and its finding, and the decisions the rules
share (paired tables, "raises by at least T", "changes at most M", how many queries would decide).

Shared conventions, so that every row of CLAIMS.md reads the same way:
- Every ASR comparison is paired (the same queries, vanilla and ablated): exact McNemar test,
  Newcombe's hybrid score interval of the difference (95%). Sets are pooled query by query.
- An effect the paper reports as large must reach **half the paper's published effect** (the
  threshold T, written in each rule) for "holds".
- Decisions for "raises ASR by at least T": significant (p < 0.05) and estimate >= T: holds;
  significant but smaller: partly; not significant and the interval's upper end < T (the claimed
  size is ruled out): does not hold; otherwise inconclusive, with the n at which the observed
  rates would decide.
- Decisions for "changes at most M" (stays safe, costs little): interval's upper end <= M: holds;
  lower end > M: does not hold; otherwise inconclusive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ..compute import stats

HOLDS, PARTLY, FAILS, INCONCLUSIVE, NOT_COMPARABLE, NOT_RUN = (
    "holds", "partly", "does not hold", "inconclusive", "not comparable", "not run")
VERDICT_ORDER = (HOLDS, PARTLY, FAILS, INCONCLUSIVE, NOT_COMPARABLE, NOT_RUN)


@dataclass(frozen=True)
class Finding:
    verdict: str
    evidence: str = ""
    uncertainty: str = ""  # n and the interval or p-value the verdict rests on


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    source: str
    artefact: str
    rule: str  # how the verdict is decided, in words a reviewer can check
    judge: Callable  # Results -> Finding


def fmt(x, d=2) -> str:
    """A number with ``d`` decimals, "n/a" for none or NaN."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"


def fmt_p(p: float) -> str:
    """A p-value as the rows print it: "1", three decimals, or in scientific notation below 0.001."""
    return "1" if p >= 0.9995 else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def paired(before: dict, after: dict) -> stats.PairedTable:
    """Pair two outcome cells on their common queries."""
    ids = [i for i in before if i in after]
    return stats.pair("".join(before[i] for i in ids), "".join(after[i] for i in ids))


def pooled(pairs: list[tuple[dict, dict]]) -> stats.PairedTable:
    a = b = c = d = 0
    for before, after in pairs:
        t = paired(before, after)
        a, b, c, d = a + t.a, b + t.broke, c + t.fixed, d + t.d
    return stats.PairedTable(a, b, c, d)


def decide_increase(est: float, lo: float, hi: float, p: float, T: float) -> str:
    """'Raises by at least T': see the module docstring."""
    if p < stats.ALPHA and est > 0:
        return HOLDS if est >= T - 1e-12 else PARTLY
    if hi < T:
        return FAILS
    return INCONCLUSIVE


def decide_at_most(lo: float, hi: float, M: float) -> str:
    """'Rises by at most M' (a non-inferiority margin)."""
    if hi <= M + 1e-12:
        return HOLDS
    if lo > M:
        return FAILS
    return INCONCLUSIVE


def table_increase(t: stats.PairedTable, T: float, alpha: float = stats.ALPHA) -> tuple[str, tuple]:
    """Decide 'raises by at least T' on a paired table; alpha < 0.05 for a corrected test."""
    z = stats.normal_quantile(1 - alpha / 2)
    lo, hi = stats.newcombe_paired(t, z)
    p = t.p_value()
    v = decide_increase(t.diff, lo, hi, p * stats.ALPHA / alpha, T)
    return v, (lo, hi, p)


# Multiples of the queries judged at which "how many queries would decide" is looked for
SCALES = (1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


def queries_to_decide(verdict_at: Callable[[float], tuple[int, str]], scales: tuple = SCALES,
                      rates: str = "these rates") -> str | None:
    """How many queries would decide (a verdict other than inconclusive) if the observed counts were
    scaled up with their rates kept: ``verdict_at(m)`` -> (queries, verdict) at m times the counts. The
    first scale that decides, in words (``decided_at``), or None when none of ``scales`` does."""
    for m in scales:
        n, verdict = verdict_at(m)
        if verdict != INCONCLUSIVE:
            return decided_at(n, rates)
    return None


def decided_at(n: int, rates: str = "these rates") -> str:
    return f"about {n} queries would decide at {rates}"


def n_to_decide(t: stats.PairedTable, decide: Callable[[stats.PairedTable], str]) -> str:
    """The number of queries at which a paired table's rates would no longer be inconclusive."""
    def verdict_at(m: float) -> tuple[int, str]:
        scaled = stats.PairedTable(*(round(x * m) for x in (t.a, t.broke, t.fixed, t.d)))
        return scaled.n, decide(scaled)

    return (queries_to_decide(verdict_at)
            or f"more than {round(t.n * SCALES[-1])} queries would be needed at these rates")


def increase_finding(t: stats.PairedTable, T: float, what: str, extra_ok: bool = True, extra_why: str = "",
                     alpha: float = stats.ALPHA) -> tuple[str, str]:
    """-> (verdict, uncertainty text) for a paired increase, with 'partly' when extra_ok fails."""
    v, (lo, hi, p) = table_increase(t, T, alpha)
    if v == HOLDS and not extra_ok:
        v = PARTLY
    level = "95%" if alpha == stats.ALPHA else f"{100 * (1 - alpha):.4g}%"
    uncertainty = (f"n = {t.n} paired queries; {what} {t.diff:+.2f}, {level} CI [{lo:+.2f}, {hi:+.2f}]; "
           f"McNemar p = {fmt_p(p)} ({t.broke} broke, {t.fixed} fixed)")
    if alpha != stats.ALPHA:
        uncertainty += f"; Bonferroni-corrected: p x {round(stats.ALPHA / alpha)} = {fmt_p(min(1.0, p * stats.ALPHA / alpha))}"
    if extra_why and v == PARTLY and not extra_ok:
        uncertainty += f"; {extra_why}"
    if v == INCONCLUSIVE:
        uncertainty += "; " + n_to_decide(t, lambda s: table_increase(s, T, alpha)[0])
    return v, uncertainty


def combine(res: list[str]) -> str:
    """Several sets, one verdict: holds on every set -> holds; does not hold on every set -> does not
    hold; any inconclusive set with none failing -> inconclusive; else partly."""
    if all(r == HOLDS for r in res):
        return HOLDS
    if all(r == FAILS for r in res):
        return FAILS
    if INCONCLUSIVE in res and FAILS not in res and PARTLY not in res:
        return INCONCLUSIVE
    return PARTLY


def increase_rule(T: float, extra: str = "") -> str:
    return (f"holds: a significant paired increase (McNemar p < 0.05, estimate > 0) of at least {T:.2f} (half the "
            f"paper's){extra}; partly: a significant increase short of that; does not hold: no significant increase and "
            f"the 95% CI's upper end < {T:.2f}; else inconclusive")
