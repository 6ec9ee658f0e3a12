"""Ships: how much ablating one head moves the next-token distribution (paper, Sec. 3; ``docs/paper.md``).

``Ships(q, h) = KL(p_clean || p_ablated)`` at the last prompt position. The sweep over every
head is the project's hot loop; three strategies give the same numbers:

* ``naive``   one full forward pass per head (the authors' approach);
* ``batched`` one forward pass per chunk of heads, batch row r ablating head r;
* ``prefix``  ablating a head in layer l cannot change layers < l, so the clean pass keeps each
  layer's input and every row starts at its own layer. Rows are ordered by layer and join the
  running batch when it reaches their layer ("staircase"), so each layer runs once per chunk
  (the engine is ``sweep.py``, shared with Sahara).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from .ablation import AblationSpec, RowEditor, ablate, layer_edit_for, n_units, unit_of
from .arch import final_norm, lm_logits  # noqa: F401 (re-exported: they lived here)
from .batching import run_chunks
from .distributed import is_main, sharded_map
from .errors import DataError, SafetyheadsError
from .heads import HeadRef, all_heads
from .prompts import encode_prompt
from .sweep import (  # noqa: F401 (re-exported: they lived here)
    DEFAULT_BATCH_SIZE, CleanPass, _call_layer, _layer_input, clean_pass, staircase_last_hidden,
)

STRATEGIES = ("prefix", "batched", "naive")


def check_prompt_ids(prompt_ids: Sequence, n_prompts: int) -> None:
    """The prompts' names (in rows and results files) name the prompts one to one; checked where Ships
    runs (``ships_scores``) and where a job is specified (``jobs``)."""
    if len(prompt_ids) != n_prompts or len(set(map(str, prompt_ids))) != len(prompt_ids):
        raise DataError(f"prompt_ids must name the {n_prompts} prompts one to one")


def check_prob_floor(prob_floor, name: str = "prob_floor") -> float:
    """A probability floor is a finite number in [0, 1): a negative one takes the log of negative
    numbers (NaN scores), and one of 1 or more swamps every probability."""
    try:
        value = float(prob_floor)
    except (TypeError, ValueError):
        raise SafetyheadsError(f"{name} must be a number, got {prob_floor!r}") from None
    if not (0.0 <= value < 1.0):
        raise SafetyheadsError(f"{name} must be a finite number >= 0 and < 1 (1e-12 = the authors' code), got {prob_floor!r}")
    return value


def kl_from_logits(clean_logits: torch.Tensor, ablated_logits: torch.Tensor, prob_floor: float = 0.0) -> torch.Tensor:
    """KL(softmax(clean) || softmax(ablated)) in float64, one value per row of ``ablated_logits``.

    ``prob_floor=1e-12`` reproduces the authors' code, which adds 1e-12 to both distributions
    before the log; the default 0 is the exact KL.
    """
    lp = torch.log_softmax(clean_logits.double(), dim=-1)
    lq = torch.log_softmax(ablated_logits.double(), dim=-1)
    if prob_floor:
        p = lp.exp()
        return (p * ((p + prob_floor).log() - (lq.exp() + prob_floor).log())).sum(-1)
    return (lp.exp() * (lp - lq)).sum(-1)


def _staircase_logits(model, clean: CleanPass, rows: Sequence[HeadRef], editor: RowEditor, spec: AblationSpec):
    """Last-position logits with row r ablating ``rows[r]`` (rows sorted by layer), reusing the clean prefix."""
    return lm_logits(model, staircase_last_hidden(model, clean, rows, editor, spec))


@torch.no_grad()
def _batched_logits(model, input_ids: torch.Tensor, rows: Sequence[HeadRef], editor: RowEditor, spec: AblationSpec):
    g = editor.geom
    units = n_units(g, spec.target)
    editor.edits = {
        layer: layer_edit_for(
            [[unit_of(g, r.head, spec.target)] if r.layer == layer else [] for r in rows], units, spec.method, spec.eps
        )
        for layer in {r.layer for r in rows}
    }
    try:
        out = model(input_ids=input_ids.to(model.device).expand(len(rows), -1), use_cache=False, logits_to_keep=1)
    finally:
        editor.edits = {}
    return out.logits[:, -1]


@torch.no_grad()
def ships_for_ids(
    model,
    input_ids: torch.Tensor,
    heads: Iterable | None = None,
    method: str = "ua",
    eps: float = 1e-5,
    target: str | None = None,
    *,
    strategy: str = "prefix",
    batch_size: int = DEFAULT_BATCH_SIZE,
    prob_floor: float = 0.0,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[tuple[HeadRef, ...], torch.Tensor]:
    """Ships of each head (ablated alone) for one tokenised prompt ``[1, T]``.

    Returns the heads in layer-major order and their scores (float64, same order).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    prob_floor = check_prob_floor(prob_floor)
    heads = all_heads(model) if heads is None else heads
    spec = AblationSpec(heads, method, eps, target)
    spec.check(model, stacklevel=3)
    rows = tuple(sorted(spec.heads))
    clean = clean_pass(model, input_ids)
    scores = torch.empty(len(rows), dtype=torch.float64)
    if strategy == "naive":
        for i, h in enumerate(rows):
            with ablate(model, AblationSpec((h,), spec.method, spec.eps, spec.target)):
                logits = model(input_ids=input_ids.to(model.device), use_cache=False, logits_to_keep=1).logits[:, -1]
            scores[i] = kl_from_logits(clean.logits, logits, prob_floor)[0].cpu()
            if on_chunk:
                on_chunk(1)
        return rows, scores
    with RowEditor(model, spec.target).install(sorted({h.layer for h in rows})) as editor:
        def chunk_scores(start: int, stop: int) -> None:
            chunk = rows[start:stop]
            if strategy == "prefix":
                logits = _staircase_logits(model, clean, chunk, editor, spec)
            else:
                logits = _batched_logits(model, input_ids, chunk, editor, spec)
            scores[start:stop] = kl_from_logits(clean.logits, logits, prob_floor).cpu()
            if on_chunk:
                on_chunk(len(chunk))

        run_chunks(len(rows), batch_size, chunk_scores, "Ships batch")  # halves the chunk on out-of-memory
    return rows, scores


def ships_scores(
    model,
    tok,
    prompts: Sequence[str],
    heads: Iterable | None = None,
    method: str = "ua",
    eps: float = 1e-5,
    template: str = "direct",
    *,
    target: str | None = None,
    system_prompt: str | None = None,
    strategy: str = "prefix",
    batch_size: int = DEFAULT_BATCH_SIZE,
    prob_floor: float = 0.0,
    prompt_ids: Sequence | None = None,
    progress: bool = False,
    on_prompt: Callable | None = None,
):
    """Ships of every head in ``heads`` (default: all) for every prompt, as a tidy DataFrame.

    Columns: ``prompt_id, layer, head, head_name, ships``. ``on_prompt(prompt_id, rows)`` is called
    as each prompt finishes (the CLI appends those rows to disk, so a crash loses at most one prompt).
    """
    import pandas as pd  # heavy (~0.3 s): `import safetyheads` stays fast
    prompt_ids = list(range(len(prompts))) if prompt_ids is None else list(prompt_ids)
    check_prompt_ids(prompt_ids, len(prompts))
    heads = all_heads(model) if heads is None else heads
    spec = AblationSpec(heads, method, eps, target)
    spec.check(model, stacklevel=3)
    encoded = [encode_prompt(tok, p, template, system_prompt) for p in prompts]  # fail before any compute
    # Under `accelerate launch` each process sweeps its share of the prompts (one prompt = one unit,
    # computed exactly as alone); on_prompt runs on the main process as each round is gathered.
    bar = tqdm(total=len(prompts) * len(spec.heads), unit="head", disable=not (progress and is_main()), desc="Ships sweep")

    def sweep(unit):
        pid, ids = unit
        rows, scores = ships_for_ids(
            model, ids, spec.heads, spec.method, spec.eps, spec.target,
            strategy=strategy, batch_size=batch_size, prob_floor=prob_floor, on_chunk=bar.update,
        )
        return [{"prompt_id": pid, "layer": h.layer, "head": h.head, "head_name": str(h), "ships": float(s)}
                for h, s in zip(rows, scores.tolist())]

    def saved(done):
        for _, prompt_rows in done:
            on_prompt(prompt_rows[0]["prompt_id"], prompt_rows)

    try:
        per_prompt = sharded_map(sweep, list(zip(prompt_ids, encoded)), on_round=saved if on_prompt else None)
    finally:
        bar.close()
    records = [r for rows in per_prompt for r in rows]
    return pd.DataFrame.from_records(records, columns=["prompt_id", "layer", "head", "head_name", "ships"])


def top_heads(table, k: int = 10):
    """Mean Ships per head over prompts, highest first."""
    agg = table.groupby(["layer", "head", "head_name"], as_index=False)["ships"].agg(["mean", "std", "count"])
    agg = agg.rename(columns={"mean": "mean_ships", "std": "std_ships", "count": "n_prompts"})
    return agg.sort_values("mean_ships", ascending=False).head(k).reset_index(drop=True)


def rank_heads(scores: Iterable[tuple[HeadRef, float]]) -> list[tuple[HeadRef, float]]:
    """``(head, Ships)`` pairs best first; equal scores in head order (layer, then head), so a ranking
    never depends on the order the scores came in."""
    return sorted(((HeadRef.parse(h), float(s)) for h, s in scores), key=lambda t: (-t[1], t[0]))


def own_top_heads(table, k: int) -> dict:
    """Each prompt's own top-``k`` heads by its Ships (the paper's query-level use of Ships):
    ``{prompt_id: [(HeadRef, ships), ...]}``, best first, from ``ships_scores``' table (or its rows as
    dicts with ``prompt_id``, ``head_name`` and ``ships``), prompts in the order they first appear."""
    if not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
        raise SafetyheadsError(f"k (heads per prompt) must be an integer >= 1, got {k!r}")
    rows = table.to_dict("records") if hasattr(table, "to_dict") else list(table)
    by_prompt: dict = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_id"], []).append((r["head_name"], r["ships"]))
    short = [pid for pid, scored in by_prompt.items() if len(scored) < k]
    if short:
        raise SafetyheadsError(f"prompt {short[0]!r} has Ships of {len(by_prompt[short[0]])} heads, fewer than the "
                               f"{k} to pick: score more heads or ask for fewer")
    return {pid: rank_heads(scored)[:k] for pid, scored in by_prompt.items()}
