"""paper_tables/CLAIMS.md: each claim of the paper, the evidence the generated results give at
small scale, its uncertainty (n, interval or p-value), and a verdict by a rule stated beside it.

The rules are fixed before results are read (``thresholds``, ``catalogue``), and each is tested on both
sides (tests/test_claims.py): fed the paper's own published numbers it must say "holds", fed a null case
(no effect, chance-level overlap, random head lists) it must not. ``decide``: the verdicts and the
decisions the rules share; ``results``: an artefact's results as a claim reads them; ``rules_ablation``
and ``rules_heads``: one rule per claim; ``extension``: the same rules per extension model; ``report``:
CLAIMS.md and the README's verdict paragraph.
"""
