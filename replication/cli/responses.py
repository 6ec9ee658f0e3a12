"""``responses``: a reviewer's look at the completions behind any table cell, a seeded sample filtered by
verdict or by the rule that decided it."""

from __future__ import annotations

import random

from safetyheads.errors import SafetyheadsError

from ..artefacts import get_artefact
from ..results.read import read_responses
from ..spec.profiles import get_profile
from .extension import fixed_models, select


def responses_command(args) -> int:
    profile = get_profile(args.profile)
    folder = profile.name
    if profile.extension_models:
        if not args.model:
            raise SafetyheadsError(f"the {profile.name} profile has one set of results per model: add --model SLUG "
                                   f"({', '.join(m.slug for m in profile.extension_models)})")
        folder = select(profile, [args.model])[0].folder
    else:
        fixed_models(profile, args.model)
    return print_responses(args.artefact, folder, args.cell, args.list, args.n, args.verdict, args.rule, args.seed)


def print_responses(artefact: str, profile: str, cell: str | None, list_cells: bool, n: int, verdict: str | None,
                    rule: str | None, seed: int) -> int:
    """``python -m replication responses``: a reviewer's look at the completions behind a table cell."""
    get_artefact(artefact)
    rows = read_responses(profile, artefact)
    cells: dict = {}
    for r in rows:
        cells.setdefault(r["cell"], []).append(r)
    if list_cells:
        for name, rs in cells.items():
            complied = sum(not r["refused"] for r in rs)
            broken = sum(r.get("label") == "broken" for r in rs)
            print(f"{name:60s} n={len(rs):4d}  complied {complied:4d} (ASR {complied / len(rs):.2f})"
                  + (f"  broken {broken:4d}" if any("label" in r for r in rs) else ""))
        return 0
    if cell is not None and cell not in cells:
        close = [c for c in cells if cell in c][:5]
        raise SafetyheadsError(f"no cell {cell!r} in {artefact} ({profile})" + (f"; did you mean {', '.join(close)}?" if close
                               else "; list them with --list"))
    pick = cells[cell] if cell else rows
    if verdict == "broken":
        pick = [r for r in pick if r.get("label") == "broken"]
    elif verdict:
        pick = [r for r in pick if r["refused"] == (verdict == "refused") and r.get("label") != "broken"]
    if rule:
        pick = [r for r in pick if (r.get("rule") or "none") == rule]
    sample = pick if n == 0 or n >= len(pick) else random.Random(seed).sample(pick, n)
    print(f"{artefact} ({profile}){' ' + cell if cell else ''}: {len(sample)} of {len(pick)} matching responses\n")
    for r in sample:
        label = r.get("label") or ("refused" if r["refused"] else "complied")
        print(f"--- {r['cell']} | query {r['prompt_id']} | {label.upper()} by "
              f"{r.get('rule') or 'no rule'}{': ' + r['reason'] if r.get('reason') else ''}")
        print(f"Q: {r.get('prompt', '')}")
        print(f"A: {r['response']}\n")
    return 0
