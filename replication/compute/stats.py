"""The statistics behind CLAIMS.md's verdicts: each test or interval in one short function, pure
Python (plus numpy for the bootstrap; the Wilson interval is the library's), checked in tests/test_claims.py against independent
computations (enumeration, simulation).

Every comparison the claims make is *paired*: the vanilla and the ablated model answer the same
queries, so a query that breaks under ablation ("broke": refused -> complied) and one that is fixed
("fixed": complied -> refused) are the only informative pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from safetyheads.judges.stats import wilson_ci

ALPHA = 0.05  # two-sided significance level of every test; intervals are 1 - ALPHA
Z = 1.959963984540054  # the standard normal's 0.975 quantile


def normal_quantile(p: float) -> float:
    """The standard normal's p-quantile (Acklam's rational approximation, |error| < 1.2e-9): for
    intervals at a Bonferroni-corrected level."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    if not 0 < p < 1:
        raise ValueError("p must be in (0, 1)")
    lo = 0.02425
    if p < lo:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
               ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    if p > 1 - lo:
        return -normal_quantile(1 - p)
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
           (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    # in logs: comb(n, i) overflows a float from n of about 1030 (the claims' "how many queries would
    # decide it" scales a cell up to 32 times)
    log_p, log_q, log_n = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    terms = (math.exp(log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q)
             for i in range(k + 1))
    return min(1.0, math.fsum(terms))


def mcnemar_exact(broke: int, fixed: int) -> float:
    """Exact (conditional) McNemar test, two-sided: under 'no effect' each of the broke + fixed
    discordant pairs is equally likely to go either way, so min(broke, fixed) ~ Binomial(m, 1/2).
    p = min(1, 2 P(X <= min)); 1 when there is no discordant pair."""
    m = broke + fixed
    if m == 0:
        return 1.0
    return min(1.0, 2 * binom_cdf(min(broke, fixed), m, 0.5))


def clopper_pearson(k: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a proportion, by bisection on the binomial tails."""
    def solve(f, lo=0.0, hi=1.0):  # f decreasing in p; find f(p) = 0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
        return (lo + hi) / 2

    lower = 0.0 if k == 0 else solve(lambda p: alpha / 2 - (1 - binom_cdf(k - 1, n, p)))
    upper = 1.0 if k == n else solve(lambda p: binom_cdf(k, n, p) - alpha / 2)
    return lower, upper


@dataclass(frozen=True)
class PairedTable:
    """Outcomes of the same n queries under two conditions (x = before, y = after): a = both
    complied, broke = refused -> complied, fixed = complied -> refused, d = both refused."""
    a: int
    broke: int
    fixed: int
    d: int

    @property
    def n(self) -> int:
        return self.a + self.broke + self.fixed + self.d

    @property
    def before(self) -> float:
        return (self.a + self.fixed) / self.n if self.n else 0.0

    @property
    def after(self) -> float:
        return (self.a + self.broke) / self.n if self.n else 0.0

    @property
    def diff(self) -> float:
        return self.after - self.before

    def p_value(self) -> float:
        return mcnemar_exact(self.broke, self.fixed)

    def ci(self, z: float = Z) -> tuple[float, float]:
        return newcombe_paired(self, z)


def pair(before: str, after: str) -> PairedTable:
    """The paired table of two outcome strings over the same queries ('1' = complied)."""
    if len(before) != len(after):
        raise ValueError("paired outcomes need the same queries")
    a = sum(x == "1" and y == "1" for x, y in zip(before, after))
    broke = sum(x == "0" and y == "1" for x, y in zip(before, after))
    fixed = sum(x == "1" and y == "0" for x, y in zip(before, after))
    return PairedTable(a, broke, fixed, len(before) - a - broke - fixed)


def newcombe_paired(t: PairedTable, z: float = Z) -> tuple[float, float]:
    """Newcombe's hybrid score interval (Statistics in Medicine 1998, method 10) for
    after - before on paired binary outcomes: Wilson intervals of each margin (``wilson_ci``, exact at the
    ends), combined with the margins' correlation phi. Stays inside [-1, 1] and is not degenerate when
    nothing changes."""
    n = t.n
    if n == 0:
        return -1.0, 1.0
    p1, p2 = t.after, t.before  # the interval is for p1 - p2
    l1, u1 = wilson_ci(t.a + t.broke, n, z=z, exact_ends=True)
    l2, u2 = wilson_ci(t.a + t.fixed, n, z=z, exact_ends=True)
    # phi between "complied after" and "complied before"; 0 when a margin is constant
    A, B = t.a + t.broke, t.fixed + t.d  # after: complied, refused
    C, D = t.a + t.fixed, t.broke + t.d  # before: complied, refused
    num = t.a * t.d - t.broke * t.fixed
    den = math.sqrt(A * B * C * D)
    phi = num / den if den > 0 else 0.0
    dl = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    du = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    d = p1 - p2
    return max(-1.0, d - dl), min(1.0, d + du)


def mean_flags(flags: dict) -> float:
    """The share of '1' among a cell's per-query flags (an ASR when '1' = complied)."""
    return sum(v == "1" for v in flags.values()) / len(flags) if flags else float("nan")


def sign_test(diffs) -> float:
    """Two-sided exact sign test of per-query differences (zeros dropped): the McNemar test when
    each difference is -1, 0 or +1."""
    pos = sum(x > 0 for x in diffs)
    neg = sum(x < 0 for x in diffs)
    return mcnemar_exact(pos, neg)


def bootstrap_mean_ci(values, n_boot: int = 10000, seed: int = 0, alpha: float = ALPHA) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean (queries resampled with replacement; seeded, so a
    claim's interval is the same on every machine)."""
    import numpy as np

    x = np.asarray(list(values), dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def hypergeom_sf(k: int, N: int, K: int, n: int) -> float:
    """P(X >= k) for X ~ Hypergeometric(N population, K successes, n draws): the chance that two
    random top-n lists of N heads share at least k heads."""
    total = math.comb(N, n)
    return sum(math.comb(K, i) * math.comb(N - K, n - i) for i in range(max(k, 0), min(K, n) + 1)) / total


def hypergeom_pmf(k: int, N: int, K: int, n: int) -> float:
    return math.comb(K, k) * math.comb(N - K, n - k) / math.comb(N, n) if 0 <= k <= min(K, n) else 0.0


def skewness(values) -> float:
    """Sample skewness g1 = m3 / m2^1.5 (biased moments, as D'Agostino's test uses)."""
    x = list(values)
    n = len(x)
    mu = sum(x) / n
    m2 = sum((v - mu) ** 2 for v in x) / n
    m3 = sum((v - mu) ** 3 for v in x) / n
    return m3 / m2**1.5 if m2 > 0 else 0.0


def skewness_test(values) -> float:
    """D'Agostino's (1970) test that the population skewness is 0 (normal-like, no tail), two-sided
    p-value; needs n >= 8. The statistic's transformation follows D'Agostino, Belanger & D'Agostino
    (1990)."""
    x = list(values)
    n = len(x)
    if n < 8:
        return float("nan")
    b2 = skewness(x)
    y = b2 * math.sqrt((n + 1) * (n + 3) / (6.0 * (n - 2)))
    beta2 = 3.0 * (n * n + 27 * n - 70) * (n + 1) * (n + 3) / ((n - 2.0) * (n + 5) * (n + 7) * (n + 9))
    w2 = -1 + math.sqrt(2 * (beta2 - 1))
    delta = 1 / math.sqrt(0.5 * math.log(w2))
    alpha = math.sqrt(2.0 / (w2 - 1))
    y = y if y != 0 else 1e-300
    zval = delta * math.log(y / alpha + math.sqrt((y / alpha) ** 2 + 1))
    return math.erfc(abs(zval) / math.sqrt(2))


def average_ranks(values) -> list[float]:
    """Ranks 1..n of ``values``, tied values sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        stop = start
        while stop + 1 < len(order) and values[order[stop + 1]] == values[order[start]]:
            stop += 1
        for i in order[start : stop + 1]:
            ranks[i] = (start + stop) / 2 + 1
        start = stop + 1
    return ranks


def spearman(x, y) -> float:
    """Spearman's rank correlation: Pearson's correlation of the average ranks (so ties are handled);
    nan when either side is constant."""
    import numpy as np

    rx, ry = (np.asarray(average_ranks(list(v))) for v in (x, y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / norm if norm > 0 else float("nan")


def spearman_permutation_p(x, y, n_perm: int = 10000, seed: int = 0) -> float:
    """Two-sided permutation p-value of Spearman's rho (y's ranks shuffled against x's; seeded):
    (1 + permutations with |rho| at least the observed) / (1 + n_perm). Exact in distribution
    under no association, ties included, with no large-sample approximation."""
    import numpy as np

    rho = spearman(x, y)
    if math.isnan(rho):
        return float("nan")
    rx, ry = (np.asarray(average_ranks(list(v))) for v in (x, y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    shuffled = np.random.default_rng(seed).permuted(np.tile(ry, (n_perm, 1)), axis=1)
    perm_rho = shuffled @ rx / math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float((1 + np.sum(np.abs(perm_rho) >= abs(rho) - 1e-12)) / (1 + n_perm))


def max_row_permutation_p(rows: list[list[int]], n_perm: int = 2000, seed: int = 0) -> float:
    """p-value of the largest row sum of a 0/1 matrix (one row per head, one column per query) under the
    null that on each query the rows' outcomes are exchangeable, i.e. no head differs from another:
    each column is shuffled across the rows (``numpy`` permutations from ``default_rng(seed)``: integer
    counts, the same on every CPU), and p = (1 + #{shuffles whose largest row sum >= the observed}) /
    (1 + n_perm). The maximum is the statistic, so picking the best of the rows is accounted for: one
    head that breaks all 8 queries while the other 269 break none gets p = 1 / 2001."""
    import numpy as np

    A = np.asarray(rows, dtype=np.int8)  # (heads, queries)
    if A.ndim != 2 or A.shape[0] < 2 or A.shape[1] < 1:
        raise ValueError("need at least two rows (heads) and one column (query)")
    observed = int(A.sum(1).max())
    rng = np.random.default_rng(seed)
    hits = sum(int(rng.permuted(A, axis=0).sum(1).max()) >= observed for _ in range(n_perm))
    return (1 + hits) / (1 + n_perm)
