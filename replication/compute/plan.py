"""The dry run's plan (``--dry-run``): what each artefact would compute that the store does not hold
yet, its forward passes and new tokens, GPU-hours where the profile has a rate per row, the saving of
early stop, and the model judges' own cost. Nothing is loaded or computed: the artefacts run on
placeholder results (``stored.stored_step``) and their steps are counted here."""

from __future__ import annotations

from typing import Callable

from tabulate import tabulate

from .context import Context
from .stored import PlanItem

MEASURED_KINDS = ("ships", "sahara")  # full forward passes of one row each: what the cost per row is measured on


def new_work(items: list[PlanItem], seen: dict) -> tuple[int, int, int]:
    """(new computations, forward passes, new tokens) of the plan items not in ``seen`` (which they are
    added to): what one artefact adds to those run before it."""
    new = [i for i in items if i.key not in seen]
    for i in new:
        seen.setdefault(i.key, i)
    todo = {i.key: i for i in new if not i.cached}
    return (len({i.key for i in new}), sum(i.forward_passes for i in todo.values()),
            sum(i.new_tokens for i in todo.values()))


def plan_text(ctx: Context, names: list[str], items: list[PlanItem], per_artefact: list,
              committed_stops: Callable[[], dict | None], processes: int = 1) -> str:
    """The plan of ``names`` (``items``: every distinct step; ``per_artefact``: (artefact, new computations,
    forward passes, new tokens) in run order). ``committed_stops``: how early-stopped generation ended at
    a committed profile (``results.read.stop_points``), read only for a profile without early stop.
    ``processes``: the wall time is also estimated for this many processes (``accelerate launch``)."""
    p = ctx.profile
    total = sum(i.forward_passes for i in items if not i.cached)
    lines = [f"profile {p.name}: {len(names)} artefact(s), {len(items)} distinct computations "
             f"({sum(i.cached for i in items)} already in the store {ctx.store.root})", ""]
    lines.append("models: " + "; ".join(f"{r} = {p.models[r]}" + (f"@{p.revisions[r]}" if r in p.revisions else "")
                                        for r in p.models if p.has(r)))
    lines.append("datasets: " + "; ".join(f"{k} sha256 {v[:12]}..." for k, v in ctx.datasets().items()))
    lines.append(f"settings: template {p.template!r}, eps {p.eps:g}, Sahara {p.sahara_steps} steps on "
                 f"{p.n_attribution} queries, evaluation {'all' if p.n_eval is None else p.n_eval} queries per set, "
                 f"{p.max_new_tokens} new tokens, top-{p.topk} sampling seed {p.seed}, judge {p.judge}"
                 + (f" (beside it: {', '.join(p.side_judges)})" if p.side_judges else ""))
    lines += ["", _kinds_table(items), "", _artefacts_table(per_artefact, p.gpu_seconds_per_forward),
              "(an artefact run after another reuses what that one computed)", ""]
    if p.gpu_seconds_per_forward:
        hours = total * p.gpu_seconds_per_forward / 3600
        lines.append(f"estimated cost: {total:,} forward passes x {p.gpu_seconds_per_forward:g} s = {hours:.1f} GPU-hours "
                     f"({p.gpu_rate_note})")
    else:
        lines.append(f"total: {total:,} forward passes still to compute")
    lines += wall_lines(items, p.gpu_seconds_per_forward, processes)
    lines += _early_stop_lines(ctx, items, total, committed_stops)
    lines += _classifier_lines(ctx, total)
    return "\n".join(lines)


def wall_lines(items: list[PlanItem], rate: float | None, processes: int) -> list[str]:
    """The wall time the plan expects on several processes (``accelerate launch``, one GPU each): each step's
    forward passes times its share on that many processes (``PlanItem.share``), summed."""
    todo = [i for i in items if not i.cached and i.forward_passes]
    total = sum(i.forward_passes for i in todo)
    if not total:
        return []
    counts = sorted({1, 2, 4, 8, processes})
    passes = {n: sum(i.forward_passes * i.share(n) for i in todo) for n in counts}
    if rate:
        each = [f"{n}: {passes[n] * rate / 3600:.1f} h" for n in counts]
    else:
        each = [f"{n}: {passes[n] / total:.0%}" for n in counts]
    return [f"wall time by processes ({'hours' if rate else 'share of one process'}; accelerate launch, one GPU each; "
            "the pieces of each step dealt round-robin, so a step of few pieces gains little; model judges and "
            "loading not counted): " + ", ".join(each)]


def _kinds_table(items: list[PlanItem]) -> str:
    by_kind: dict = {}
    for i in items:
        k = by_kind.setdefault(i.kind, [0, 0])
        k[0] += 1
        k[1] += i.forward_passes
    return tabulate([[k, n, f"{fp:,}"] for k, (n, fp) in by_kind.items()],
                    headers=["computation", "count", "forward passes (rows)"], tablefmt="github")


def _artefacts_table(per_artefact: list, rate: float) -> str:
    return tabulate([[a, c, f"{fp:,}", f"{tk:,}", f"{fp * rate / 3600:.1f}" if rate else "-"]
                     for a, c, fp, tk in per_artefact],
                    headers=["artefact (in run order)", "new computations", "forward passes (rows)",
                             "new tokens (at most)", "GPU-hours (rough)"], tablefmt="github")


def measured_rate(ctx: Context) -> dict | None:
    """Seconds per forward row of the Ships and Sahara computations this context ran or read back
    (their stored time), or None when it has none."""
    seconds = rows = 0.0
    for cost in ctx.costs.values():
        if cost.kind in MEASURED_KINDS and cost.forward_passes and cost.seconds is not None:
            seconds, rows = seconds + cost.seconds, rows + cost.forward_passes
    if not rows or not seconds:
        return None
    return {"seconds_per_forward": seconds / rows, "rows": int(rows), "seconds": round(seconds, 1)}


def early_stop_factor(points: dict, max_new_tokens: int) -> float:
    """The share of a ``max_new_tokens`` generation's decoding left with early stop, from ``stop_points``:
    a stopped row costs its stop token, every other row the whole budget (conservative: rows that end at
    EOS, or would settle after the smaller profile's token limit, are counted in full)."""
    p = points["stopped"] / points["rows"]
    return (p * min(points["mean_stop_token"], max_new_tokens) + (1 - p) * max_new_tokens) / max_new_tokens


def classifier_costs(ctx: Context) -> list[dict]:
    """Per model judge of the plan (a harm classifier with its own weights): the completions it still has to
    classify, its forward passes (each response's prompt, then up to ``max_new_tokens - 1`` decode steps),
    GPU memory and GPU-hours, estimated by ``ClassifierJudge.estimate`` (nothing is measured)."""
    unique = {i.key: i for i in ctx.plan.classifiers}
    out = []
    for judge in (ctx.judge, *ctx.side_judges):
        if not judge.classifier:
            continue
        todo = [i for i in unique.values() if i.judge == judge.name and not i.cached]
        rows = sum(i.rows for i in todo)
        seconds = sum(judge.estimate(i.rows, response_tokens=i.response_tokens)["seconds"] for i in todo)
        per_1000 = judge.estimate(1000, response_tokens=ctx.profile.max_new_tokens)
        out.append({"judge": judge.name, "model": judge.model, "dtype": per_1000["dtype"], "rows": rows,
                    "cached": sum(i.rows for i in unique.values() if i.judge == judge.name and i.cached),
                    "passes": rows * judge.max_new_tokens, "hours": seconds / 3600, "gpu_gb": per_1000["gpu_gb"],
                    "per_1000_s": per_1000["seconds"], "prompt_tokens": per_1000["prompt_tokens"],
                    "batch": judge.batch_size})
    return out


def _classifier_lines(ctx: Context, total: int) -> list[str]:
    """The model judges' cost, counted apart from the profile's models (their own weights and dtype)."""
    costs = classifier_costs(ctx)
    if not costs:
        return []
    p = ctx.profile
    lines = ["", "model judges (harm classifiers beside the profile's judge; their own weights, not in the figures "
                 "above):",
             tabulate([[c["judge"], f"{c['model']} ({c['dtype']})", f"{c['rows']:,}", f"{c['cached']:,}",
                        f"{c['passes']:,}", f"{c['gpu_gb']:.0f}", f"{c['hours']:.1f}"] for c in costs],
                      headers=["judge", "classifier", "completions to classify", "already in the store",
                               "forward passes (at most)", "GPU memory (GB)", "GPU-hours (estimated)"],
                      tablefmt="github")]
    for c in costs:
        lines.append(f"{c['judge']}: about {c['per_1000_s']:.0f} GPU-seconds per 1,000 completions ({c['dtype']}, "
                     f"about {c['prompt_tokens']} prompt tokens each, batches of {c['batch']}): ESTIMATED, not measured "
                     "(no classifier has run on its real weights here; the arithmetic: docs/judges.md)")
    hours = sum(c["hours"] for c in costs)
    if p.gpu_seconds_per_forward:
        models = total * p.gpu_seconds_per_forward / 3600
        lines.append(f"estimated cost with the model judges: {models:.1f} + {hours:.1f} = {models + hours:.1f} GPU-hours")
    return lines


def _early_stop_lines(ctx: Context, items: list, total: int, committed_stops: Callable[[], dict | None]) -> list[str]:
    """The cost with and without early stop, for a profile that decodes every response to the limit."""
    p = ctx.profile
    judged = sum(i.forward_passes for i in items if not i.cached and i.judge_only)
    if p.stop_when_settled:
        return ["", f"early stop is on: {judged:,} of these forward passes are judge-only generation, which stops "
                    "once the verdict is settled (the figures above count every token)"]
    if not judged:
        return []
    points = committed_stops()
    if points is None:
        return ["", "early stop: no early-stopped mini or ci completions are committed yet to estimate its saving from"]
    f = early_stop_factor(points, p.max_new_tokens)
    with_stop = total - judged + judged * f
    rate = p.gpu_seconds_per_forward
    cost = (lambda n: f"{n * rate / 3600:.1f} GPU-hours") if rate else (lambda n: f"{n:,.0f} forward passes")
    return ["", f"early stop (stop_when_settled, off in this profile as in the paper): without {cost(total)}, "
                f"with {cost(with_stop)}. Of {points['rows']:,} judge-only {points['profile']} completions "
                f"{points['stopped']:,} stopped once settled, at token {points['mean_stop_token']:.1f} on average; "
                f"counting each such row at that token and every other row at the full {p.max_new_tokens} leaves "
                f"{f:.0%} of the judge-only decoding ({judged:,} forward passes). Complied answers never settle, so "
                "the saving shrinks where ablation makes the model comply more often than the organisms do."]
