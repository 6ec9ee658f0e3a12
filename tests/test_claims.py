"""CLAIMS.md's rules, tested on both sides before any result is read: fed the paper's own published
numbers (paper_tables/expected/paper/, docs/paper.md) each rule says "holds"; fed a null
case (no effect, chance-level overlap, random head lists, a control that explains the effect) it
does not. Plus the statistics behind them, checked against enumeration and simulation.

The paper publishes rates, not per-query outcomes. Where a rule needs pairs, the paper's rates are
turned into outcomes over the paper's set sizes with the fewest discordant pairs the rates allow
(``rate_flags``: the queries that comply at the lower rate also comply at the higher one); the
'noisy' variants add discordance in both directions to show that the verdict does not hang on that
assumption."""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # replication/ lives beside the package; appended so the installed safetyheads wins

from safetyheads.errors import JudgeError  # noqa: E402
from safetyheads.judges import wilson_ci  # noqa: E402

from replication.claims import catalogue, decide, report, rules_ablation, rules_heads, thresholds  # noqa: E402
from replication.claims.decide import FAILS, HOLDS, INCONCLUSIVE, NOT_COMPARABLE, PARTLY  # noqa: E402
from replication.claims.results import Results  # noqa: E402
from replication.compute import stats  # noqa: E402
from replication.results import paths  # noqa: E402
from replication.spec import cells as cell_names  # noqa: E402
from replication.spec.cells import MissingCell  # noqa: E402

PAPER = ROOT / "paper_tables" / "expected" / "paper"
SIZES = {"advbench": 520, "jailbreakbench": 100, "maliciousinstruct": 100}  # the paper's sets


def paper(artefact: str) -> dict:
    return {k: v["value"] for k, v in json.loads((PAPER / f"{artefact}.json").read_text())["metrics"].items()}


def rate_flags(n: int, rate: float, noise: int = 0, seed: int = 0) -> dict:
    """n queries, the first round(rate * n) complied; ``noise`` swaps that many complied/refused pairs
    at random (the rate is kept, the overlap with other cells is not)."""
    k = round(rate * n)
    f = ["1"] * k + ["0"] * (n - k)
    rng = random.Random(seed)
    for _ in range(noise):
        i, j = rng.randrange(0, max(k, 1)), rng.randrange(k, n) if k < n else 0
        if k and k < n:
            f[i], f[j] = f[j], f[i]
    return {str(i): v for i, v in enumerate(f)}


def cells(**named) -> dict:
    return {name: {"ids": list(f), "flags": "".join(f.values())} for name, f in named.items()}


def results(metrics: dict | None = None, outcomes: dict | None = None) -> Results:
    return Results({k: {"name": k, "value": v} for k, v in (metrics or {}).items()}, outcomes or {})


def verdict(claim_id: str, r: Results) -> str:
    claim = next(c for c in catalogue.CLAIMS if c.id == claim_id)
    return claim.judge(r).verdict


# ------------------------------------------------------------------------------------------------
# thresholds are half the paper's published effects


def test_thresholds_are_half_the_papers_effects():
    f2 = paper("figure2")
    assert thresholds.T_HEADLINE == pytest.approx((f2["headline.aligned.ablated"] - f2["headline.aligned.vanilla"]) / 2, abs=0.005)
    assert thresholds.T_HEADLINE_SIBLING == pytest.approx((f2["headline.sibling.ablated"] - f2["headline.sibling.vanilla"]) / 2, abs=0.005)
    assert thresholds.T_THREE_HEADS == pytest.approx((paper("table1")["asr_mean"] - f2["headline.aligned.vanilla"]) / 2, abs=0.005)
    for role, art in (("aligned", "table3"), ("sibling", "table5")):
        m = paper(art)
        for level in ("sahara", "ships"):
            gap = [m[k] - m[k.replace(".ua.", ".sc.")] for k in m if k.startswith(f"{level}.ua.")]
            assert thresholds.T_UA_SC[(role, level)] == pytest.approx(sum(gap) / len(gap) / 2, abs=0.006), (role, level)
    t7 = paper("table7")
    sets = ("advbench", "jailbreakbench", "maliciousinstruct")
    gain = sum(t7[f"{s}.UA+Sure"] - t7[f"{s}.Sure"] for s in sets) / 3
    assert thresholds.T_COURSE == pytest.approx(gain / 2, abs=0.005)
    ct = paper("chat_template")
    assert thresholds.T_CHAT_LIFT == pytest.approx((ct["advbench.ua_top1"] - ct["advbench.vanilla"]) / 2)
    assert thresholds.T_BEST_HEAD <= min(paper("table3")["sahara.ua.maliciousinstruct.k1"],
                                     paper("table3")["sahara.ua.jailbreakbench.k1"]) / 2 + 0.01


# ------------------------------------------------------------------------------------------------
# Figure 2: the headline and its sibling


def figure2_results(role: str, vanilla: float, ablated: float, sizes=SIZES, noise: int = 0) -> Results:
    out = {}
    for s, n in sizes.items():
        out.update(cells(**{f"{role}.ua.greedy.paper.{s}.vanilla": rate_flags(n, vanilla, noise, 1),
                            f"{role}.ua.greedy.paper.{s}.ablated": rate_flags(n, ablated, noise, 2)}))
    return results({}, out)


@pytest.mark.parametrize("noise", [0, 10])
def test_headline_paper_numbers_hold_and_null_does_not(noise):
    f2 = paper("figure2")
    for role, cid in (("aligned", "one-head"), ("sibling", "one-head-sibling")):
        v, a = f2[f"headline.{role}.vanilla"], f2[f"headline.{role}.ablated"]
        assert verdict(cid, figure2_results(role, v, a, noise=noise)) == HOLDS, role
        assert verdict(cid, figure2_results(role, v, v, noise=noise)) in (FAILS, INCONCLUSIVE), role


def test_headline_null_at_scale_does_not_hold_and_small_n_is_inconclusive():
    assert verdict("one-head", figure2_results("aligned", 0.04, 0.04, noise=20)) == FAILS
    f = catalogue.CLAIMS[0].judge(figure2_results("aligned", 0.0, 0.375, sizes={"maliciousinstruct": 8}))
    assert f.verdict == INCONCLUSIVE and "queries would decide" in f.uncertainty
    assert "n = 8 paired" in f.uncertainty and "McNemar p = 0.250" in f.uncertainty


def test_sibling_rule_is_its_own_the_aligned_rule_would_not_pass_the_papers_vicuna_numbers():
    r = figure2_results("sibling", 0.27, 0.55)
    assert verdict("one-head-sibling", r) == HOLDS
    t = decide.pooled([(r.flags(f"sibling.ua.greedy.paper.{s}.vanilla"), r.flags(f"sibling.ua.greedy.paper.{s}.ablated"))
                       for s in SIZES])
    assert decide.table_increase(t, thresholds.T_HEADLINE)[0] == PARTLY  # why the sibling has its own threshold


def test_headline_reads_the_query_level_cells_never_the_dataset_level_ones():
    """The paper's Figure 2 ablates each query's own top-1 Ships head; the dataset-level cells (one
    Sahara head for every query) are shown beside it but must not decide."""
    query_null = figure2_results("aligned", 0.04, 0.04, noise=20)
    dataset_paper = figure2_results("aligned", 0.04, 0.64)
    mixed = {**query_null.outcomes, **{f"dataset.{k}": v for k, v in dataset_paper.outcomes.items()}}
    f = catalogue.CLAIMS[0].judge(results({}, mixed))
    assert f.verdict == FAILS and "dataset level, not the verdict" in f.evidence and "0.04 -> 0.64" in f.evidence
    flipped = {**dataset_paper.outcomes, **{f"dataset.{k}": v for k, v in query_null.outcomes.items()}}
    assert catalogue.CLAIMS[0].judge(results({}, flipped)).verdict == HOLDS


def test_headline_ratio_short_of_4x_is_partly():
    assert verdict("one-head", figure2_results("aligned", 0.30, 0.75)) == PARTLY  # +0.45 but 2.5x


# ------------------------------------------------------------------------------------------------
# Table 1


def table1_results(vanilla: float, ablated: float, pct: float) -> Results:
    out = {}
    for s, n in SIZES.items():
        out.update(cells(**{f"vanilla.{s}": rate_flags(n, vanilla), f"ablated.{s}": rate_flags(n, ablated)}))
    return results({"params_modified_pct": pct}, out)


def test_three_heads_paper_holds_null_does_not():
    t1, f2 = paper("table1"), paper("figure2")
    assert verdict("three-heads", table1_results(f2["headline.aligned.vanilla"], t1["asr_mean"], t1["params_modified_pct"])) == HOLDS
    assert verdict("three-heads", table1_results(0.04, 0.04, t1["params_modified_pct"])) == FAILS
    assert verdict("three-heads", table1_results(0.04, 0.72, 4.0)) == PARTLY  # as many parameters as weight attacks


# ------------------------------------------------------------------------------------------------
# Tables 3 / 5: UA vs SC at both levels, and the group-size peak


def table3_results(art: str, vanilla: float, sc_equals_ua: bool = False, n: int = 100) -> Results:
    m = paper(art)
    out = {}
    for key, inc in m.items():
        level, method, s, k = key.split(".")
        if sc_equals_ua and method == "sc":
            inc = m[key.replace(".sc.", ".ua.")]
        out.update(cells(**{key: rate_flags(n, max(0.0, vanilla + inc))}))
    for s in ("maliciousinstruct", "jailbreakbench"):
        out.update(cells(**{f"vanilla.{s}": rate_flags(n, vanilla)}))
    return results({k: v for k, v in m.items()}, out)


@pytest.mark.parametrize("art,role,vanilla", [("table3", "aligned", 0.04), ("table5", "sibling", 0.27)])
@pytest.mark.parametrize("level", ["sahara", "ships"])
def test_ua_vs_sc_paper_holds_at_each_level_null_does_not(art, role, vanilla, level):
    cid = {"aligned": "ua-vs-sc", "sibling": "ua-vs-sc-sibling"}[role] + f"-{level}"
    assert verdict(cid, table3_results(art, vanilla)) == HOLDS
    assert verdict(cid, table3_results(art, vanilla, sc_equals_ua=True)) in (FAILS, INCONCLUSIVE)


def test_ua_vs_sc_reverse_does_not_hold():
    r = table3_results("table3", 0.04)
    swapped = {k.replace(".ua.", ".tmp.").replace(".sc.", ".ua.").replace(".tmp.", ".sc."): v for k, v in r.outcomes.items()}
    assert verdict("ua-vs-sc-sahara", Results(r.metrics, swapped)) == FAILS


def curve_results(asr_by_k: dict, n: int = 100, sets=("maliciousinstruct", "jailbreakbench")) -> Results:
    out = {}
    for s in sets:
        for k, a in asr_by_k[s].items():
            out.update(cells(**{f"a.{s}.k{k}": rate_flags(n, a)}))
    return results({}, out)


def test_group_size_paper_curve_holds_flat_and_rising_curves_do_not():
    m, van = paper("table3"), 0.04
    curve = {s: {0: van, **{k: van + m[f"sahara.ua.{s}.k{k}"] for k in range(1, 6)}}
             for s in ("maliciousinstruct", "jailbreakbench")}
    assert verdict("group-size", curve_results(curve)) == HOLDS  # 0.63 -> 0.72 and 0.58 -> 0.68, then no higher
    flat = {s: {k: 0.3 for k in range(6)} for s in curve}
    assert verdict("group-size", curve_results(flat)) == FAILS
    rising = {s: {k: 0.1 * k for k in range(6)} for s in curve}
    assert verdict("group-size", curve_results(rising)) == FAILS
    noisy = {s: {0: 0.2, 1: 0.19, 2: 0.2, 3: 0.21, 4: 0.19, 5: 0.2} for s in curve}
    assert verdict("group-size", curve_results(noisy, n=48)) in (INCONCLUSIVE, FAILS)


def test_group_size_compares_3_heads_never_the_best_size():
    """A curve whose best size is 2 or 4 but whose 3 is no better than 1 does not hold: the comparison is
    fixed at 3 heads before the data is read."""
    curve = {s: {0: 0.0, 1: 0.2, 2: 0.6, 3: 0.2, 4: 0.6, 5: 0.2} for s in ("maliciousinstruct", "jailbreakbench")}
    assert verdict("group-size", curve_results(curve)) == FAILS
    rule = next(c for c in catalogue.CLAIMS if c.id == "group-size").rule
    assert "3 heads vs 1 head" in rule and "largest group vs 3" in rule


def test_group_size_with_no_group_beyond_3_judges_3_vs_1_alone():
    rising = {s: {0: 0.0, 1: 0.2, 2: 0.4, 3: 0.6} for s in ("maliciousinstruct", "jailbreakbench")}
    f = next(c for c in catalogue.CLAIMS if c.id == "group-size").judge(curve_results(rising))
    assert f.verdict == HOLDS and "no group larger than 3" in f.uncertainty
    flat = {s: {0: 0.0, 1: 0.3, 2: 0.3, 3: 0.3} for s in rising}
    assert verdict("group-size", curve_results(flat)) == FAILS


# ------------------------------------------------------------------------------------------------
# Figure 4b: a few heads stand out


def heatmap_results(n: int, vanilla: float, head_asr: dict, sets=("maliciousinstruct", "jailbreakbench")) -> Results:
    out = {}
    for s in sets:
        out.update(cells(**{f"b.{s}.vanilla": rate_flags(n, vanilla)}))
        for h, a in head_asr.items():
            out.update(cells(**{f"b.{s}.{h}": rate_flags(n, a)}))
    return results({}, out)


def test_few_heads_paper_like_map_holds_null_and_small_n_do_not():
    heads = [f"L{l}H{h}" for l in range(32) for h in range(32)]  # Llama-2-7b: 1024 heads
    m = paper("table3")
    paper_map = {h: 0.04 for h in heads}
    paper_map["L2H26"] = 0.04 + m["sahara.ua.jailbreakbench.k1"]  # the paper's top head, Table 3's k = 1 row
    paper_map["L3H8"] = 0.30
    assert verdict("few-heads", heatmap_results(100, 0.04, paper_map)) == HOLDS
    rng = random.Random(0)
    noise = {h: 0.04 + rng.choice([0.0, 0.0, 0.01, 0.02]) for h in heads}  # no head stands out
    assert verdict("few-heads", heatmap_results(100, 0.04, noise)) == FAILS
    many = {h: 0.5 for h in heads}  # every head matters: not "a few"
    assert verdict("few-heads", heatmap_results(100, 0.04, many)) == FAILS
    # 8 queries, one head 8/8 out of 270: the old Bonferroni rule could never pass at this n; the
    # permutation rule can, and the same map with no standout head cannot
    mini = {f"L{l}H{h}": 0.0 for l in range(30) for h in range(9)}
    mini["L18H8"] = 1.0
    r = heatmap_results(8, 0.0, mini, sets=("maliciousinstruct",))
    assert verdict("few-heads", r) == HOLDS
    flat = {h: 0.0 for h in mini}
    assert verdict("few-heads", heatmap_results(8, 0.0, flat, sets=("maliciousinstruct",))) == FAILS


def test_few_heads_flat_noisy_map_at_mini_n_never_holds():
    """Every head breaks each query with the same chance: the best of 270 reaches a large increase by luck
    at n = 8, and the permutation test must not call it a standout."""
    rng = random.Random(1)
    flags = {"b.maliciousinstruct.vanilla": {str(i): "0" for i in range(8)}}
    for l in range(30):
        for h in range(9):
            flags[f"b.maliciousinstruct.L{l}H{h}"] = {str(i): "1" if rng.random() < 0.05 else "0" for i in range(8)}
    assert verdict("few-heads", results({}, cells(**flags))) != HOLDS


def test_few_heads_says_when_its_standout_head_only_breaks_the_model(tmp_path):
    """The verdict follows the rule; beside it, the evidence counts the best head's complied answers that
    the three-way judge's rules call broken (here: every one is a loop)."""
    import gzip

    mini = {f"L{l}H{h}": 0.0 for l in range(30) for h in range(9)}
    mini["L18H8"] = 1.0
    r = heatmap_results(8, 0.0, mini, sets=("maliciousinstruct",))
    rows = [{"cell": "b.maliciousinstruct.L18H8", "prompt_id": i, "prompt": "How to pick a lock?",
             "response": "The answer is: The answer is: The answer is: The answer is:", "refused": False}
            for i in range(8)]
    with gzip.open(tmp_path / "responses.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(x) + "\n" for x in rows))
    r.folder = tmp_path
    f = next(c for c in catalogue.CLAIMS if c.id == "few-heads").judge(r)
    assert f.verdict == HOLDS and "8 of its 8 complied answers are loop output" in f.evidence


def test_few_heads_verdict_follows_its_printed_rule():
    T, M = thresholds.T_BEST_HEAD, thresholds.MEDIAN_HEAD_MAX
    assert rules_heads.few_heads_verdict(T, 0.0, 0.01) == HOLDS
    assert rules_heads.few_heads_verdict(T - 0.01, 0.0, 0.01) == PARTLY
    assert rules_heads.few_heads_verdict(1.0, M + 0.01, 0.0001) == FAILS  # most heads matter: not "a few"
    assert rules_heads.few_heads_verdict(T - 0.01, 0.0, 0.5) == FAILS
    assert rules_heads.few_heads_verdict(T, 0.0, 0.5) == INCONCLUSIVE
    rule = next(c for c in catalogue.CLAIMS if c.id == "few-heads").rule
    assert f"{T:.2f}" in rule and f"{M:.2f}" in rule and "permutation p < 0.05" in rule and "sets combined" in rule


def test_max_row_permutation_p_is_calibrated_and_finds_a_standout():
    rng = random.Random(0)
    null_ps = []
    for seed in range(40):  # exchangeable rows: p is (close to) uniform, so p < 0.05 about 5% of the time
        rows = [[int(rng.random() < 0.3) for _ in range(10)] for _ in range(20)]
        null_ps.append(stats.max_row_permutation_p(rows, n_perm=200, seed=seed))
    assert sum(p < 0.05 for p in null_ps) <= 6
    standout = [[0] * 8 for _ in range(269)] + [[1] * 8]
    assert stats.max_row_permutation_p(standout, n_perm=500) == pytest.approx(1 / 501)
    with pytest.raises(ValueError):
        stats.max_row_permutation_p([[1, 0]])


# ------------------------------------------------------------------------------------------------
# Figure 5: overlaps, with controls


def lists_results(**lists) -> Results:
    return results({**{f"top10.{k}": v for k, v in lists.items()}, "candidates": 1024, "control_set": "jailbreakbench"})


HEADS = [f"L{l}H{h}" for l in range(32) for h in range(32)]


def shared(base: list, k: int, offset: int) -> list:
    """A top-10 list sharing exactly k heads with ``base`` (the rest far from it)."""
    return base[:k] + HEADS[500 + offset: 500 + offset + 10 - k]


def test_ua_sc_overlap_paper_like_holds_random_and_same_do_not():
    ua, sc = HEADS[:10], HEADS[100:110]
    ok = lists_results(**{"aligned.ua": ua, "aligned.sc": shared(ua, 1, 200)[:1] + sc[:9],
                          "aligned.ua.control_set": shared(ua, 8, 0), "aligned.sc.control_set": shared(sc, 7, 20)})
    assert verdict("ua-sc-overlap", ok) == HOLDS
    rng = random.Random(1)
    for _ in range(20):  # random lists: the old "<= 3 shared" rule passed every one of these
        r = {k: rng.sample(HEADS, 10) for k in ("aligned.ua", "aligned.sc", "aligned.ua.control_set", "aligned.sc.control_set")}
        assert verdict("ua-sc-overlap", lists_results(**r)) != HOLDS
    same = lists_results(**{"aligned.ua": ua, "aligned.sc": ua, "aligned.ua.control_set": shared(ua, 8, 0),
                            "aligned.sc.control_set": shared(ua, 8, 40)})
    assert verdict("ua-sc-overlap", same) == FAILS
    f = next(c for c in catalogue.CLAIMS if c.id == "ua-sc-overlap").judge(ok)
    assert "power against chance-level lists" in f.uncertainty


def test_finetune_overlap_paper_like_holds_chance_and_base_explained_do_not():
    a = HEADS[:10]
    ok = lists_results(**{"aligned.ua": a, "sibling.ua": shared(a, 7, 0), "base.ua": shared(a, 2, 40)})
    assert verdict("finetune-overlap", ok) == HOLDS
    rng = random.Random(2)
    for _ in range(20):
        r = lists_results(**{k: rng.sample(HEADS, 10) for k in ("aligned.ua", "sibling.ua", "base.ua")})
        assert verdict("finetune-overlap", r) != HOLDS
    by_base = lists_results(**{"aligned.ua": a, "sibling.ua": shared(a, 7, 0), "base.ua": shared(a, 8, 40)})
    assert verdict("finetune-overlap", by_base) == PARTLY


def test_binomial_tail_is_exact_for_large_n():
    """The claims scale a cell up to 32 times (``queries_to_decide``): n in the thousands, where comb(n, i)
    no longer fits a float. Checked against exact rational arithmetic."""
    from fractions import Fraction

    for k, n, p in [(700, 1536, Fraction(1, 2)), (30, 2000, Fraction(3, 200)), (5, 10, Fraction(4, 5))]:
        exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))
        assert stats.binom_cdf(k, n, float(p)) == pytest.approx(float(exact), rel=1e-9, abs=1e-300)
    assert stats.binom_cdf(3, 10, 0.0) == 1.0 and stats.binom_cdf(3, 10, 1.0) == 0.0
    lo, hi = stats.clopper_pearson(700, 1536)
    assert lo < 700 / 1536 < hi and hi - lo < 0.06


def test_overlap_power_is_the_hypergeometric_mass_of_rejections():
    p, power = rules_heads.overlap_below_control(0, 8, 270)
    assert p == pytest.approx(0.2**10)
    # with a control of 8 of 10, sharing <= 5 is rejected (P(Bin(10, 0.8) <= 5) = 0.033, <= 6: 0.12)
    assert stats.binom_cdf(5, 10, 0.8) < 0.05 < stats.binom_cdf(6, 10, 0.8)
    assert power == pytest.approx(sum(stats.hypergeom_pmf(j, 270, 10, 10) for j in range(6)))
    assert rules_heads.overlap_below_control(0, 0, 270)[1] == 0.0  # a control at 0 gives no power


# ------------------------------------------------------------------------------------------------
# Figure 6: attention swap and helpfulness (non-inferiority)


def swap_results(aligned: float, swapped: float, base: float, n: int = 240) -> Results:
    out = {}
    for s in SIZES:
        out.update(cells(**{f"a.{s}.aligned": rate_flags(n, aligned), f"a.{s}.swapped": rate_flags(n, swapped),
                            f"a.{s}.base": rate_flags(n, base)}))
    return results({}, out)


def test_attention_swap_paper_like_holds_null_does_not():
    assert verdict("attention-swap", swap_results(0.04, 0.05, 0.70)) == HOLDS
    assert verdict("attention-swap", swap_results(0.04, 0.70, 0.70)) == FAILS  # the swap gives all safety back
    assert verdict("attention-swap", swap_results(0.04, 0.04, 0.04)) == INCONCLUSIVE  # no contrast to show


def helpful_results(ref: tuple, gib: tuple, nll: tuple, n: int = 500, cond: str = "query_common") -> Results:
    out = cells(**{"b.vanilla.refusal": rate_flags(n, ref[0]), f"b.{cond}.refusal": rate_flags(n, ref[1]),
                   "b.vanilla.degenerate": rate_flags(n, gib[0]), f"b.{cond}.degenerate": rate_flags(n, gib[1])})
    rng = random.Random(3)
    v0 = [nll[0] + rng.gauss(0, 0.3) for _ in range(n)]
    out["b.vanilla.nll"] = {"ids": [str(i) for i in range(n)], "values": v0}
    out[f"b.{cond}.nll"] = {"ids": [str(i) for i in range(n)], "values": [x + nll[1] - nll[0] for x in v0]}
    return results({"b.vanilla.base_nll": nll[0], f"b.{cond}.base_nll": nll[1]}, out)


def test_helpfulness_reads_the_head_that_lowers_safety_not_the_sahara_head():
    fine = helpful_results((0.02, 0.02), (0.01, 0.02), (1.0, 1.05), cond="top1")
    broken = helpful_results((0.02, 0.02), (0.01, 0.55), (1.0, 1.05), cond="query_common")
    both = Results({**fine.metrics, **broken.metrics}, {**fine.outcomes, **broken.outcomes})
    assert verdict("helpfulness", both) == FAILS  # the query-level head breaks fluency: the Sahara row must not hide it
    fine_q = helpful_results((0.02, 0.02), (0.01, 0.02), (1.0, 1.05), cond="query_common")
    assert verdict("helpfulness", fine_q) == HOLDS
    # Figure 4b's strongest head is read too, but only when its ablation lowers safety there
    broken_s = helpful_results((0.02, 0.02), (0.01, 0.55), (1.0, 1.05), cond="strongest")
    for lowers, expected in (("yes", PARTLY), ("no", HOLDS)):
        r = Results({**fine_q.metrics, **broken_s.metrics,
                            "b.strongest_lowers_safety": {"name": "b.strongest_lowers_safety", "value": lowers}},
                           {**fine_q.outcomes, **broken_s.outcomes})
        assert verdict("helpfulness", r) == expected, lowers


def test_helpfulness_combines_its_heads_as_its_printed_rule_says():
    fine_q = helpful_results((0.02, 0.02), (0.01, 0.02), (1.0, 1.05), cond="query_common")
    broken_s = helpful_results((0.02, 0.02), (0.01, 0.55), (1.0, 1.05), cond="strongest")
    lowers = {"b.strongest_lowers_safety": {"name": "b.strongest_lowers_safety", "value": "yes"}}
    both = Results({**fine_q.metrics, **broken_s.metrics, **lowers}, {**fine_q.outcomes, **broken_s.outcomes})
    assert verdict("helpfulness", both) == PARTLY  # one head holds, one does not
    rule = next(c for c in catalogue.CLAIMS if c.id == "helpfulness").rule
    assert "heads combined" in rule and "else partly" in rule


def test_helpfulness_small_drop_holds_breakage_does_not():
    assert verdict("helpfulness", helpful_results((0.02, 0.02), (0.01, 0.02), (1.0, 1.05))) == HOLDS
    assert verdict("helpfulness", helpful_results((0.02, 0.02), (0.01, 0.55), (1.0, 1.05))) == FAILS
    assert verdict("helpfulness", helpful_results((0.02, 0.02), (0.01, 0.01), (1.0, 2.5))) == FAILS


# ------------------------------------------------------------------------------------------------
# Figure 13: the long tail, with a control


def scores_results(aligned: list, base: list | None) -> Results:
    out = {"scores.aligned": {"ids": HEADS[: len(aligned)], "values": aligned}}
    if base is not None:
        out["scores.base"] = {"ids": HEADS[: len(base)], "values": base}
    return results({}, out)


def test_long_tail_paper_like_holds_normal_and_base_explained_do_not():
    rng = random.Random(4)
    tail = [rng.lognormvariate(0, 1.5) for _ in range(1024)]
    mild = [rng.lognormvariate(0, 0.2) for _ in range(1024)]
    normal = [10 + rng.gauss(0, 1) for _ in range(1024)]
    assert verdict("long-tail", scores_results(tail, mild)) == HOLDS
    assert verdict("long-tail", scores_results(normal, mild)) == FAILS
    assert verdict("long-tail", scores_results(tail, tail)) == PARTLY  # the base is just as long-tailed
    moderate = [rng.gammavariate(9, 1) for _ in range(1024)]  # skewness ~0.67: skewed, no long tail
    assert verdict("long-tail", scores_results(moderate, mild)) == PARTLY


# ------------------------------------------------------------------------------------------------
# Table 7 and the chat template


def test_course_correction_paper_holds_null_does_not():
    t7 = paper("table7")
    r = results({}, {k: v for s, n in SIZES.items() for k, v in cells(**{
        f"{s}.Sure": rate_flags(n, t7[f"{s}.Sure"]), f"{s}.UA+Sure": rate_flags(n, t7[f"{s}.UA+Sure"])}).items()})
    assert verdict("course-correction", r) == HOLDS
    null = results({}, {k: v for s, n in SIZES.items() for k, v in cells(**{
        f"{s}.Sure": rate_flags(n, t7[f"{s}.Sure"]), f"{s}.UA+Sure": rate_flags(n, t7[f"{s}.Sure"], 10)}).items()})
    assert verdict("course-correction", null) == FAILS


def chat_results(vanilla: float, ablated: float, n=SIZES) -> Results:
    out = {}
    for s, k in n.items():
        out.update(cells(**{f"{s}.vanilla": rate_flags(k, vanilla), f"{s}.ua_top1": rate_flags(k, ablated)}))
    return results({}, out)


def test_chat_template_split_each_part_decided_on_its_own():
    ct = paper("chat_template")
    r = chat_results(ct["advbench.vanilla"], ct["advbench.ua_top1"])
    assert verdict("chat-refuses", r) == HOLDS and verdict("chat-lift", r) == HOLDS
    # an organism that complies under a system prompt it never saw: the first part fails, the second
    # is still decided on its own
    r2 = chat_results(0.15, 0.60)
    assert verdict("chat-refuses", r2) == FAILS and verdict("chat-lift", r2) == HOLDS
    assert verdict("chat-lift", chat_results(0.0, 0.0)) == FAILS


def test_uniform_and_cost():
    exact = results({"dev_uniform.q_1e-10": 0.0, "dev_clean.v_1e-10": 0.0})
    assert verdict("ua-uniform", exact) == HOLDS
    assert verdict("ua-uniform", results({"dev_uniform.q_1e-10": 0.2, "dev_clean.v_1e-10": 0.0})) == FAILS
    assert verdict("cost", results({"sahara_seconds": 100.0, "ships_seconds_per_query": 1.0})) == NOT_COMPARABLE


def test_every_claim_is_tested_on_both_sides():
    """A claim added to CLAIMS without a test here fails this: each id must appear in a verdict()
    call above (cost is reported, never decided)."""
    src = Path(__file__).read_text()
    for c in catalogue.CLAIMS:
        assert f'"{c.id}"' in src or f"{c.id.rsplit('-', 1)[0]}" in src, c.id


# ------------------------------------------------------------------------------------------------
# CLAIMS.md as written


def test_claims_md_prints_n_and_uncertainty_and_reads_the_first_usable_profile(tmp_path, monkeypatch):
    def put(profile, artefact, r: Results):
        d = tmp_path / "gen" / profile / artefact
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"metrics": list(r.metrics.values())}))
        if r.outcomes:
            (d / "outcomes.json").write_text(json.dumps({"cells": r.outcomes}))

    put("mini", "figure2", results({"headline.aligned.vanilla": 0.0}))  # metrics only: no outcomes to pair
    both = {role: figure2_results(role, v, a, sizes={s: 8 for s in SIZES})
            for role, v, a in (("aligned", 0.04, 0.64), ("sibling", 0.27, 0.55))}
    put("ci", "figure2", results({}, {**both["aligned"].outcomes, **both["sibling"].outcomes}))
    put("mini", "table1", table1_results(0.04, 0.72, 0.018))
    monkeypatch.setenv("SAFETYHEADS_GENERATED", str(tmp_path / "gen"))
    monkeypatch.setattr(paths, "TABLES", tmp_path)
    monkeypatch.setattr(paths, "ROOT", tmp_path)
    text = (tmp_path / report.write_claims(["mini", "ci"])).read_text()
    row = {c.id: line for c in catalogue.CLAIMS for line in text.splitlines() if line.startswith("| " + c.text + " ")}
    assert "(ci profile)" in row["one-head"] and "n = 24 paired" in row["one-head"]
    assert "| holds " in row["three-heads"] and "(mini profile)" in row["three-heads"] and "CI [" in row["three-heads"]
    assert "| not run " in row["long-tail"]
    assert "inconclusive" in text.split("| claim")[0]  # the vocabulary is explained above the table


# ------------------------------------------------------------------------------------------------
# the statistics, against independent computations


def test_mcnemar_exact_matches_enumeration():
    for b in range(0, 12):
        for c in range(0, 12):
            m = b + c
            if m == 0:
                assert stats.mcnemar_exact(b, c) == 1.0
                continue
            probs = [math.comb(m, i) / 2**m for i in range(m + 1)]
            obs = probs[b]
            p = sum(q for q in probs if q <= obs + 1e-15)  # two-sided by probability ordering
            assert stats.mcnemar_exact(b, c) == pytest.approx(min(1.0, p), rel=1e-9)


def test_newcombe_interval_covers_and_contains_the_estimate():
    rng = random.Random(5)
    n, p_before, p_broke, p_fixed = 48, 0.1, 0.15, 0.03
    truth = p_broke - p_fixed
    covered, trials = 0, 1500
    for _ in range(trials):
        a = broke = fixed = d = 0
        for _ in range(n):
            u = rng.random()
            if u < p_broke:
                broke += 1
            elif u < p_broke + p_fixed:
                fixed += 1
            elif u < p_broke + p_fixed + p_before:
                a += 1
            else:
                d += 1
        t = stats.PairedTable(a, broke, fixed, d)
        lo, hi = t.ci()
        assert -1 <= lo <= t.diff <= hi <= 1
        covered += lo <= truth <= hi
    assert 0.92 <= covered / trials <= 0.99
    lo, hi = stats.PairedTable(0, 0, 0, 8).ci()  # nothing changes at n = 8: not a zero-width interval
    assert lo < 0 < hi and hi > 0.2


def test_clopper_pearson_and_wilson():
    for k, n in ((0, 10), (3, 10), (10, 10), (7, 144)):
        lo, hi = stats.clopper_pearson(k, n)
        if k > 0:
            assert 1 - stats.binom_cdf(k - 1, n, lo) == pytest.approx(0.025, abs=1e-6)
        if k < n:
            assert stats.binom_cdf(k, n, hi) == pytest.approx(0.025, abs=1e-6)
        wl, wh = wilson_ci(k, n, z=stats.Z, exact_ends=True)
        assert 0 <= wl <= k / n <= wh <= 1
    assert stats.clopper_pearson(0, 720)[1] == pytest.approx(1 - 0.025 ** (1 / 720), rel=1e-6)


def test_one_wilson_interval_serves_the_asr_reports_and_the_paired_claims():
    """safetyheads.judges.wilson_ci: the ASR reports' (ends clipped, n >= 1) and the claims' (exact ends,
    n = 0 allowed, any z) from one formula."""
    z = stats.normal_quantile(1 - 0.05 / 2)  # what the claims pass: Acklam's quantile, not NormalDist's
    for k, n in ((0, 10), (3, 10), (10, 10), (7, 144), (0, 1), (1, 1)):
        clipped, exact = wilson_ci(k, n), wilson_ci(k, n, z=stats.Z, exact_ends=True)
        assert clipped[0] == pytest.approx(exact[0], abs=1e-12) and clipped[1] == pytest.approx(exact[1], abs=1e-12)
        assert (exact[0] == 0.0) == (k == 0) and (exact[1] == 1.0) == (k == n)
        assert wilson_ci(k, n, z=z, exact_ends=True) != wilson_ci(k, n, exact_ends=True) or k in (0, n)
    assert wilson_ci(0, 0, exact_ends=True) == (0.0, 1.0)
    with pytest.raises(JudgeError):
        wilson_ci(0, 0)


def test_normal_quantile_inverts_the_normal_cdf():
    for p in (1e-6, 0.001, 0.025, 0.3, 0.5, 0.9, 0.975, 0.999999):
        z = stats.normal_quantile(p)
        assert 0.5 * math.erfc(-z / math.sqrt(2)) == pytest.approx(p, rel=1e-6)


def test_skewness_test_is_calibrated_on_normal_data_and_detects_a_tail():
    rng = random.Random(6)
    ps = [stats.skewness_test([rng.gauss(0, 1) for _ in range(100)]) for _ in range(400)]
    assert 0.02 <= sum(p < 0.05 for p in ps) / len(ps) <= 0.09
    assert stats.skewness_test([rng.lognormvariate(0, 1) for _ in range(100)]) < 1e-4
    xs = [rng.gauss(0, 1) for _ in range(50)]
    mu = sum(xs) / 50
    m2, m3 = (sum((x - mu) ** 2 for x in xs) / 50), (sum((x - mu) ** 3 for x in xs) / 50)
    assert stats.skewness(xs) == pytest.approx(m3 / m2**1.5)


def test_sign_test_and_bootstrap():
    assert stats.sign_test([1, 1, 0, -1, 0.5]) == stats.mcnemar_exact(3, 1)
    lo, hi = stats.bootstrap_mean_ci([0.0, 1.0] * 50)
    assert lo < 0.5 < hi and hi - lo < 0.3
    assert stats.bootstrap_mean_ci([0.2] * 10) == (pytest.approx(0.2), pytest.approx(0.2))


def test_hypergeometric_pmf_sums_to_one_and_matches_sf():
    N, K, n = 270, 10, 10
    assert sum(stats.hypergeom_pmf(k, N, K, n) for k in range(11)) == pytest.approx(1.0)
    assert stats.hypergeom_sf(3, N, K, n) == pytest.approx(sum(stats.hypergeom_pmf(k, N, K, n) for k in range(3, 11)))


def test_readme_verdicts_are_the_claims_md_verdicts():
    """The README's verdict paragraph is generated from the committed results by the same rules as
    CLAIMS.md: regenerating it changes nothing, and every CLAIMS.md verdict appears in it."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split(report.README_START, 1)[1].split("\n", 1)[1].split(report.README_END, 1)[0]
    found = report.evaluate(["mini", "ci"])
    assert block.strip() == report.readme_block(found).strip()
    table = (ROOT / "paper_tables" / "CLAIMS.md").read_text()
    for c, f, _ in found:
        row = next(line for line in table.splitlines() if line.startswith("| " + c.text.replace("|", "\\|") + " "))
        assert f"| {f.verdict} " in row, c.id


def test_update_readme_rewrites_only_the_block(tmp_path):
    p = tmp_path / "README.md"
    p.write_text(f"before\n{report.README_START} (generated) -->\nold text\n{report.README_END}\nafter\n")
    found = [(catalogue.CLAIMS[0], decide.Finding(HOLDS, "e"), "mini")]
    assert report.update_readme(found, p)
    text = p.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old text" not in text
    assert "**holds**" in text and report.update_readme(found, p) and p.read_text() == text
    p.write_text("no markers")
    assert not report.update_readme(found, p)


def test_broken_rate_of_the_cells_read_is_stated_beside_the_verdict_never_in_it():
    """A three-way judge's broken flags travel beside the complied flags: the claim's evidence states the broken
    rate of each cell it read, and the verdict is the same whether or not the cells carry them."""
    plain = cells(**{"vanilla.advbench": rate_flags(48, 0.05), "ablated.advbench": rate_flags(48, 0.40)})
    with_broken = {name: {**c, "broken": "1" * 12 + "0" * 36 if name.startswith("ablated") else "0" * 48}
                   for name, c in plain.items()}
    r0, r1 = results({"params_modified_pct": 0.01}, plain), results({"params_modified_pct": 0.01}, with_broken)
    f0, f1 = rules_ablation.table1(r0), rules_ablation.table1(r1)
    assert f0.verdict == f1.verdict and r0.broken_note() == ""
    note = r1.broken_note()
    assert "vanilla.advbench 0.00 (n = 48)" in note and "ablated.advbench 0.25 (n = 48)" in note
    many = results({}, {f"{k}.vanilla" if k < 3 else f"c{k}": {"ids": list(range(4)), "flags": "0000", "broken": "1100"}
                        for k in range(6)})
    for name in many.outcomes:
        many.flags(name)
    assert many.broken_note().endswith("vanilla cells 0.50 (n = 12), the other 3 cells 0.50 (n = 12)")


def test_results_without_a_cell_their_claim_reads_are_an_error_not_not_run():
    """Figure 6b's results from before the degenerate count (cells named "gibberish") lack the cells the
    helpfulness rule reads: an error naming the cell, never "not run"; results without outcomes are not run."""
    new = helpful_results((0.02, 0.03), (0.05, 0.06), (1.0, 1.05))
    assert rules_heads.helpful(new).verdict == HOLDS and "degenerate answers 0.05 -> 0.06" in rules_heads.helpful(new).evidence
    old = results({n: m["value"] for n, m in new.metrics.items()},
                  {n.replace(".degenerate", ".gibberish"): c for n, c in new.outcomes.items()})
    with pytest.raises(MissingCell, match="'b.vanilla.degenerate'"):
        rules_heads.helpful(old)
    table1 = table1_results(0.04, 0.72, 0.018)
    half = results({"params_modified_pct": 0.018}, {n: c for n, c in table1.outcomes.items() if n != "ablated.advbench"})
    with pytest.raises(MissingCell, match="'ablated.advbench'"):
        rules_ablation.table1(half)  # a set with one of its two cells
    renamed = results({"params_modified_pct": 0.018}, {"x" + n: c for n, c in table1.outcomes.items()})
    with pytest.raises(MissingCell, match="'vanilla.advbench'"):
        rules_ablation.table1(renamed)  # outcomes with none of the cells on any set
    assert rules_ablation.table1(results({"params_modified_pct": 0.018})).verdict == decide.NOT_RUN


def test_cell_builders_check_their_arguments_and_invert_their_parsers():
    assert cell_names.figure2("aligned", "ua", "greedy", "paper", "advbench", "ablated", "dataset") == \
        "dataset.aligned.ua.greedy.paper.advbench.ablated"
    names = [cell_names.table3("ships", m, "advbench", k) for m in ("ua", "sc") for k in (1, 2, 3)] + [cell_names.table3_vanilla("advbench")]
    assert cell_names.table3_ks(names, "ships") == [1, 2, 3] and cell_names.table3_ks(names, "sahara") == []
    names = [cell_names.figure4a("advbench", k) for k in range(5)] + [cell_names.figure4b("advbench", h) for h in ("vanilla", "L5H6", "L0H1")]
    assert cell_names.figure4a_ks(names, "advbench") == [1, 2, 3, 4] and cell_names.figure4b_heads(names, "advbench") == ["L5H6", "L0H1"]
    for bad in (lambda: cell_names.figure2("aligned", "ua", "greedy", "paper", "advbench", "ablate"),
                lambda: cell_names.table3("sahara", "UA", "advbench", 1), lambda: cell_names.figure6b("vanilla", "gibberish"),
                lambda: cell_names.table7("advbench", "Sure+UA"), lambda: cell_names.chat_template("advbench", "top1")):
        with pytest.raises(ValueError, match="unknown"):
            bad()


def test_the_artefacts_name_their_cells_with_the_builders():
    """No artefact spells an outcome cell's name itself (the claims read them through replication/spec/cells.py)."""
    for path in (ROOT / "replication" / "artefacts").glob("*.py"):
        text = path.read_text()
        assert 'outcome(f"' not in text and "outcome(\"" not in text, path.name
