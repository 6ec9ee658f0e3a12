"""``run --dry-run``: the artefacts' code run on placeholder results, and the plan of what they would
compute (``compute.plan``)."""

from __future__ import annotations

from safetyheads.ablation import AblationSpec
from safetyheads.generation import DecodingSpec

from ..artefacts import check_artefacts, get_artefact
from ..compute.context import Context
from ..compute.plan import new_work, plan_text
from ..results.read import stop_points


def plan(ctx: Context, names: list[str], processes: int = 1) -> tuple[str, list]:
    """-> (the plan, in words; per artefact in run order: (artefact, new computations, forward passes,
    new tokens), which the extension tabulates per model). ``processes``: the wall time is also estimated
    for that many processes."""
    p = ctx.profile
    check_artefacts(p, names)
    AblationSpec(("L0H0",), "ua", p.eps)  # settings that must construct
    AblationSpec(("L0H0",), "sc", p.eps)
    DecodingSpec("topk", k=p.topk, max_new_tokens=p.max_new_tokens, seed=p.seed)
    seen: dict = {}
    per_artefact = []
    for n in names:
        before = len(ctx.plan.items)
        get_artefact(n).run(ctx)
        per_artefact.append((n, *new_work(ctx.plan.items[before:], seen)))
    # ci's shorter answers stand in until mini's are committed
    text = plan_text(ctx, names, list(seen.values()), per_artefact, lambda: stop_points("mini") or stop_points("ci"),
                     processes)
    return text, per_artefact
