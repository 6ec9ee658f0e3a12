"""Each CLAIMS.md verdict follows from its printed rule: this file reads the committed CLAIMS.md as a
reviewer would, takes the numbers each row prints (estimates, intervals, p-values, counts) and the
thresholds its rule column prints, applies the rule as written, and compares with the printed verdict.

Nothing here calls replication/claims/'s decisions: the rules are re-implemented from their printed
text. Printed numbers are rounded (2 decimals, 2-3 significant digits for p), so a row whose verdict
could change within that rounding is not asserted (``robust``); the test requires most rows decided."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from replication.claims import catalogue  # noqa: E402  (claim texts only: which row is which claim)

HOLDS, PARTLY, FAILS, INC = "holds", "partly", "does not hold", "inconclusive"
NUM = r"([+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?)"


class Ambiguous(Exception):
    """The printed numbers sit within rounding of a threshold: the rule cannot be applied to them."""


def table_rows(text: str) -> list[dict]:
    """The main table of CLAIMS.md (the extension's section left out), one dict per row."""
    main = text.split("## Extension", 1)[0]
    rows = []
    for line in main.splitlines():
        if not line.startswith("| ") or line.startswith("| claim ") or set(line) <= set("|-: "):
            continue
        cols = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows.append(dict(zip(("claim", "paper", "evidence", "unc", "verdict", "rule"), cols)))
    return rows


def num(pattern: str, text: str, group: int = 1) -> float:
    m = re.search(pattern, text)
    if m is None:
        raise AssertionError(f"{pattern!r} not in {text!r}")
    return float(m.group(group))


def robust(decide, values: dict, steps: dict):
    """decide(**values), checked unchanged when each value moves by its rounding step (relative for p-values,
    given as ('rel', f)); Ambiguous otherwise."""
    v = decide(**values)
    for k, step in steps.items():
        for sign in (-1, 1):
            moved = dict(values)
            moved[k] = values[k] * (1 + sign * step[1]) if isinstance(step, tuple) else values[k] + sign * step
            if decide(**moved) != v:
                raise Ambiguous(k)
    return v


P_STEP = ("rel", 0.06)  # p printed with 2-3 significant digits


def increase(est, lo, hi, p, T, extra_ok=True):
    """The printed increase rule: a significant increase (p < 0.05, estimate > 0) of at least T -> holds;
    significant but short -> partly; no significant increase and CI upper end < T -> does not hold."""
    if p < 0.05 and est > 0:
        return HOLDS if est >= T and extra_ok else PARTLY
    return FAILS if hi < T else INC


def at_most(lo, hi, M):
    return HOLDS if hi <= M else (FAILS if lo > M else INC)


def combine(vs: list[str]) -> str:
    """The printed combination: all hold -> holds, all do not -> does not hold, inconclusive with none failing
    or partly -> inconclusive, else partly."""
    if all(v == HOLDS for v in vs):
        return HOLDS
    if all(v == FAILS for v in vs):
        return FAILS
    if INC in vs and FAILS not in vs and PARTLY not in vs:
        return INC
    return PARTLY


def paired_increase(row, what: str, T: float, extra_ok=True) -> str:
    u = row["unc"]
    vals = {"est": num(rf"{re.escape(what)} {NUM}, 95% CI", u), "lo": num(rf"CI \[{NUM}, {NUM}\]", u),
            "hi": num(rf"CI \[{NUM}, {NUM}\]", u, 2), "p": num(rf"McNemar p = {NUM}", u)}
    return robust(lambda **v: increase(**v, T=T, extra_ok=extra_ok), vals,
                  {"est": 0.005, "hi": 0.005, "p": P_STEP})


def rule_T(row) -> float:
    return num(r"(?:of at least|threshold) (\d\.\d+)", row["rule"])


def one_head(row) -> str:
    T = rule_T(row)
    ok = True
    if "x vanilla" in row["rule"]:
        ratio_needed = num(r"ablated >= (\d+(?:\.\d+)?)x vanilla", row["rule"])
        m = re.search(r"-> \d\.\d+ \((\d+\.\d)x\)", row["evidence"])
        if m:  # no ratio printed: vanilla ASR 0, any rise meets it
            ratio = float(m.group(1))
            if abs(ratio - ratio_needed) <= 0.05:
                raise Ambiguous("ratio")
            ok = ratio >= ratio_needed
    return paired_increase(row, "increase", T, ok)


def three_heads(row) -> str:
    pct, limit = num(r"(\d+\.\d+)% of parameters modified", row["evidence"]), num(r"< (\d+(?:\.\d+)?)% of parameters", row["rule"])
    return paired_increase(row, "increase", rule_T(row), pct < limit)


def ua_vs_sc(row) -> str:
    u = row["unc"]
    vals = {"est": num(rf"\(mean over k\) {NUM}", u), "lo": num(rf"CI \[{NUM}, {NUM}\]", u),
            "hi": num(rf"CI \[{NUM}, {NUM}\]", u, 2), "p": num(rf"sign test p = {NUM}", u)}
    T = rule_T(row) if "threshold" in row["rule"] else num(r"of at least (\d\.\d+)", row["rule"])
    return robust(lambda **v: increase(**v, T=T), vals, {"est": 0.005, "hi": 0.005, "p": P_STEP})


def group_size(row) -> str:
    u = row["unc"]
    up, up_p = num(rf"3 heads vs 1 head {NUM} \(McNemar p = {NUM}\)", u), num(rf"3 heads vs 1 head {NUM} \(McNemar p = {NUM}\)", u, 2)
    m = re.search(rf"\d+ heads vs 3 {NUM} \(p = {NUM}\)", u)
    beyond, beyond_p = (float(m.group(1)), float(m.group(2))) if m else (0.0, 1.0)

    def decide(up, up_p, beyond, beyond_p):
        if up <= 0 or (beyond_p < 0.05 and beyond > 0):
            return FAILS
        return HOLDS if up_p < 0.05 else INC
    return robust(decide, {"up": up, "up_p": up_p, "beyond": beyond, "beyond_p": beyond_p},
                  {"up_p": P_STEP, "beyond_p": P_STEP})


def few_heads(row) -> str:
    T, median_max = num(r"its increase >= (\d\.\d+)", row["rule"]), num(r"median head's <= (\d\.\d+)", row["rule"])

    def decide(best, p, median):
        if median > median_max:
            return FAILS
        if p < 0.05:
            return HOLDS if best >= T else PARTLY
        return FAILS if best < T else INC
    verdicts = []
    for part in row["unc"].split(" | "):
        vals = {"best": num(rf"best head {NUM} over vanilla", part), "p": num(rf"permutation p = {NUM}", part),
                "median": num(rf"median head {NUM}", part)}
        verdicts.append(robust(decide, vals, {"p": P_STEP}))
    return combine(verdicts)


def ua_sc_overlap(row) -> str:
    k = int(num(r"(\d+) of 10 shared", row["evidence"]))
    small, large = int(num(r"holds: <= (\d+) of 10", row["rule"])), int(num(r"or > (\d+)", row["rule"]))
    m = re.search(r"shares >= (\d+) of 10 with its own top 10", row["evidence"])
    if not m:
        return INC
    ctrl, p = int(m.group(1)), num(rf"\) = {NUM}; power", row["unc"])
    if abs(p - 0.05) < 0.003:
        raise Ambiguous("p")
    if p < 0.05 and k <= small:
        return HOLDS
    return FAILS if (k >= ctrl or k > large) else INC


def finetune_overlap(row) -> str:
    k = int(num(r"(\d+) of 10 shared", row["evidence"]))
    p = num(rf"hypergeometric p = {NUM}", row["unc"])
    large = int(num(r"holds: >= (\d+) of 10", row["rule"]))
    if p >= 0.05:
        return FAILS
    m = re.search(rf"the base\) = {NUM}", row["unc"])
    if not m:
        return INC
    return HOLDS if (k >= large and p < 0.01 and float(m.group(1)) < 0.05) else PARTLY


def swap(row) -> str:
    u = row["unc"]
    lo, hi, margin = num(rf"CI \[{NUM}, {NUM}\]", u), num(rf"CI \[{NUM}, {NUM}\]", u, 2), num(rf"vs margin {NUM}", u)
    base, base_p = num(rf"base - aligned {NUM}, McNemar p = {NUM}\)", u), num(rf"base - aligned {NUM}, McNemar p = {NUM}\)", u, 2)
    if not (base_p < 0.05 and base > 0):
        return INC
    return robust(lambda lo, hi: at_most(lo, hi, margin), {"lo": lo, "hi": hi}, {"lo": 0.005, "hi": 0.005})


def helpfulness(row) -> str:
    margin = num(r"end at or below (\d\.\d+)", row["rule"])
    nll_margin = num(r"NLL at or below (\d+(?:\.\d+)?) nats", row["rule"])
    heads = [h for h in re.split(r"(?=(?:the most frequent query-level top-1 head|Figure 4b's strongest head|the top-1 UA head): n =)",
                                 row["unc"]) if h.strip()]
    verdicts = []
    for h in heads:
        parts = []
        for name, m in (("refusals", margin), ("degenerate answers", margin), ("base-model NLL", nll_margin)):
            found = re.search(rf"{name} {NUM}(?: nats)? \[{NUM}, {NUM}\]", h)
            if found is None:
                assert name == "base-model NLL", (name, h)
                continue
            lo, hi = float(found.group(2)), float(found.group(3))
            parts.append(robust(lambda lo, hi, m=m: at_most(lo, hi, m), {"lo": lo, "hi": hi}, {"lo": 0.005, "hi": 0.005}))
        verdicts.append(FAILS if FAILS in parts else (HOLDS if all(p == HOLDS for p in parts) else INC))
    return combine(verdicts)


def long_tail(row) -> str:
    sk, ratio = num(rf"skewness {NUM}, max / median", row["evidence"]), num(rf"max / median {NUM}", row["evidence"])
    p = num(rf"skewness test p = {NUM}", row["unc"])
    if min(abs(p - 0.01), abs(p - 0.05)) < 0.003 or abs(sk - 1) <= 0.005 or abs(ratio - 3) <= 0.05:
        raise Ambiguous("tail")
    if not (p < 0.01 and sk > 1 and ratio >= 3):
        return FAILS if (p >= 0.05 or sk <= 0) else PARTLY
    m = re.search(rf"over heads \[{NUM}, {NUM}\]", row["unc"])
    if not m:
        return INC
    lo = float(m.group(1))
    if abs(lo) <= 0.005:
        raise Ambiguous("lo")
    return HOLDS if lo > 0 else PARTLY


def chat_refuses(row) -> str:
    M = num(r"ends at or below (\d\.\d+)", row["rule"])
    lo, hi = num(rf"exact CI \[{NUM}, {NUM}\]", row["unc"]), num(rf"exact CI \[{NUM}, {NUM}\]", row["unc"], 2)
    return robust(lambda lo, hi: at_most(lo, hi, M), {"lo": lo, "hi": hi}, {"lo": 0.005, "hi": 0.005})


def uniform(row) -> str:
    q, v = num(rf"q x 1e-10: {NUM}", row["evidence"]), num(rf"v scaled: {NUM}", row["evidence"])
    return HOLDS if q < 1e-3 and v < 1e-5 else FAILS


RULES = {
    "one-head": one_head, "one-head-sibling": one_head, "three-heads": three_heads,
    "ua-vs-sc-sahara": ua_vs_sc, "ua-vs-sc-ships": ua_vs_sc, "ua-vs-sc-sibling-sahara": ua_vs_sc,
    "ua-vs-sc-sibling-ships": ua_vs_sc, "group-size": group_size, "few-heads": few_heads,
    "ua-sc-overlap": ua_sc_overlap, "finetune-overlap": finetune_overlap, "attention-swap": swap,
    "helpfulness": helpfulness, "long-tail": long_tail,
    "course-correction": lambda row: paired_increase(row, "UA+Sure - Sure", rule_T(row)),
    "chat-refuses": chat_refuses, "chat-lift": lambda row: paired_increase(row, "increase", rule_T(row)),
    "ua-uniform": uniform, "cost": lambda row: "not comparable",
}


def recompute(rows: list[dict]) -> tuple[list[tuple[str, str, str]], list[str]]:
    """([(claim id, printed verdict, recomputed verdict)], [claim ids left undecided by rounding])."""
    by_text = {c.text: c.id for c in catalogue.CLAIMS}
    checked, ambiguous = [], []
    for row in rows:
        cid = by_text[row["claim"]]
        if row["verdict"] == "not run":
            continue
        try:
            checked.append((cid, row["verdict"], RULES[cid](row)))
        except Ambiguous:
            ambiguous.append(cid)
    return checked, ambiguous


def test_every_rule_has_a_recomputation():
    assert set(RULES) == {c.id for c in catalogue.CLAIMS}


def test_each_committed_verdict_follows_from_the_numbers_and_rule_it_prints():
    checked, ambiguous = recompute(table_rows((ROOT / "paper_tables" / "CLAIMS.md").read_text(encoding="utf-8")))
    wrong = [(cid, printed, mine) for cid, printed, mine in checked if printed != mine]
    assert not wrong, f"verdicts that do not follow from their printed rule: {wrong}"
    assert len(checked) >= 15 and len(ambiguous) <= 2, (len(checked), ambiguous)


def test_the_recomputation_can_disagree():
    """A CLAIMS.md whose printed verdicts were swapped is caught (the check is not vacuous)."""
    flipped = {HOLDS: FAILS, FAILS: HOLDS, INC: HOLDS, PARTLY: FAILS}
    rows = table_rows((ROOT / "paper_tables" / "CLAIMS.md").read_text(encoding="utf-8"))
    checked, _ = recompute([{**r, "verdict": flipped.get(r["verdict"], r["verdict"])} for r in rows])
    wrong = [cid for cid, printed, mine in checked if printed != mine]
    assert len(wrong) >= 15


@pytest.mark.parametrize("est,lo,hi,p,T,expected", [
    (0.60, 0.45, 0.72, 1e-9, 0.30, HOLDS), (0.10, 0.02, 0.20, 0.01, 0.30, PARTLY), (-0.20, -0.35, -0.05, 1e-4, 0.30, FAILS),
    (0.05, -0.05, 0.15, 0.40, 0.30, FAILS), (0.15, -0.05, 0.40, 0.20, 0.30, INC)])
def test_the_printed_increase_rule_as_written(est, lo, hi, p, T, expected):
    assert increase(est, lo, hi, p, T) == expected
