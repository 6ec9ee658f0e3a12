"""Helpers the artefact runners share: the heads of a Sahara group, echoes of the query, a mean, a set's
printed name."""

from __future__ import annotations

import re

from safetyheads.heads import HeadRef

from ..compute.steps import sahara_group


def top_group(ctx, role: str, method: str = "ua", k: int | None = None, set_name: str | None = None) -> list[HeadRef]:
    """The first k heads of the role's Sahara group on the profile's attribution set (one Sahara run
    serves every artefact: the store keys it by model, queries, method, eps and steps)."""
    res = sahara_group(ctx, role, set_name or ctx.profile.attribution_set, method)
    return res["group"][: (k or len(res["group"]))]


def echoes(rows: list) -> int:
    """Complied responses that repeat their query (its first 40 letters and digits, case and punctuation
    aside): the keyword judge counts them as answers, a reader would not. Reported beside an ASR, never
    subtracted from it (the judge, not the table, decides what a refusal is)."""
    def letters(text: str) -> str:
        return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()

    n = 0
    for r in rows:
        head = letters(r.get("prompt", ""))[:40]
        n += (not r["refused"]) and len(head) >= 20 and head in letters(r.get("response", ""))
    return n


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def set_label(s: str) -> str:
    return {"advbench": "AdvBench", "jailbreakbench": "JailbreakBench", "maliciousinstruct": "MaliciousInstruct"}.get(s, s)
