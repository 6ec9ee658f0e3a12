"""Sahara: greedy search for the group of heads whose joint ablation moves safety most (paper, Alg. 1;
``docs/paper.md``).

G = {}. For s = 1..S: score every candidate head h not in G by the generalized Ships of the model
with G + {h} ablated against the clean model, over a dataset of queries; add the best to G.
The paper uses S <= 5 and finds about 3 best.

Each step reuses the sweep engine of Ships (``sweep.py``): per query, one pass with G ablated keeps
every layer's input, and every candidate row starts at its own layer with G's later heads ablated on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .ablation import AblationSpec, RowEditor, ablate, unit_of
from .arch import final_norm, geometry
from .batching import chunks, run_chunks
from .distributed import is_main, sharded_map, state
from .errors import SafetyheadsError
from .heads import HeadRef, all_heads, parse_heads
from .prompts import encode_prompt
from .subspace import generalized_ships_batch
from .sweep import DEFAULT_BATCH_SIZE, clean_pass, staircase_last_hidden

MAX_STEPS = 5
SCOREBOARD_COLUMNS = ["step", "rank", "layer", "head", "head_name", "score", "group_before"]


@dataclass
class SaharaResult:
    group: tuple[HeadRef, ...]
    scoreboard: "object"  # pandas DataFrame with SCOREBOARD_COLUMNS, every candidate of every step

    def step_table(self, step: int, k: int = 5):
        t = self.scoreboard[self.scoreboard["step"] == step]
        return t.sort_values("rank").head(k)


@torch.no_grad()
def candidate_states(
    model,
    ids: torch.Tensor,
    candidates: Sequence[HeadRef],
    group: Sequence[HeadRef],
    spec: AblationSpec,
    editor: RowEditor,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> torch.Tensor:
    """Post-final-norm last-token state of one query with ``group`` + each candidate ablated: ``[H, d]``."""
    g = geometry(model)
    fixed: dict[int, list[int]] = {}
    for h in group:
        u = unit_of(g, h.head, spec.target)
        if u not in fixed.setdefault(h.layer, []):
            fixed[h.layer].append(u)
    if group:
        with ablate(model, AblationSpec(tuple(group), spec.method, spec.eps, spec.target)):
            base = clean_pass(model, ids)
    else:
        base = clean_pass(model, ids)
    order = sorted(range(len(candidates)), key=lambda i: candidates[i])
    rows = [candidates[i] for i in order]
    out = torch.empty(len(rows), g.hidden_size, dtype=torch.float64)

    def chunk_states(start: int, stop: int) -> None:
        # With a k/v target on GQA a candidate can share its KV unit with the group: layer_edit_for
        # sets entries rather than multiplying them, so that unit is still scaled by eps once.
        last = staircase_last_hidden(model, base, rows[start:stop], editor, spec, fixed)
        out[start:stop] = final_norm(model, last).double().cpu()

    run_chunks(len(rows), batch_size, chunk_states, "Sahara batch")  # halves the chunk on out-of-memory
    result = torch.empty_like(out)
    result[torch.tensor(order)] = out
    return result


def _whole(value) -> bool:
    """An int that is not a bool (``True`` would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_search(steps, n_queries: int, r) -> None:
    """The search's settings, checked where it is run (``sahara``) and where it is specified
    (``jobs.SaharaJob``): 1..MAX_STEPS steps, at least one query, 1 <= r <= the number of queries."""
    if not (_whole(steps) and 1 <= steps <= MAX_STEPS):
        raise SafetyheadsError(f"steps must be between 1 and {MAX_STEPS} (the paper's range), got {steps!r}")
    if not n_queries:
        raise SafetyheadsError("Sahara needs at least one query")
    if not (_whole(r) and 1 <= r <= n_queries):
        raise SafetyheadsError(f"r must be between 1 and the number of queries ({n_queries}), got {r!r}")


def check_candidates(steps: int, n_candidates: int) -> None:
    if n_candidates < steps:
        raise SafetyheadsError(f"{steps} steps need at least {steps} candidate heads, got {n_candidates}")


def sahara(
    model,
    tok,
    prompts: Sequence[str],
    steps: int = 3,
    method: str = "ua",
    eps: float = 1e-5,
    *,
    target: str | None = None,
    r: int = 1,
    template: str = "paper",
    system_prompt: str | None = None,
    candidates=None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    done_steps: Sequence[Sequence[dict]] = (),
    on_step: Callable[[int, list[dict]], None] | None = None,
    progress: bool = False,
) -> SaharaResult:
    """Greedy head-group search; returns the ordered group and every step's full scoreboard.

    ``done_steps`` are scoreboards of steps already finished (rows as ``on_step`` received them),
    e.g. read back from disk after a crash: their best heads seed G and they are not recomputed.
    """
    import pandas as pd  # heavy (~0.3 s): `import safetyheads` stays fast

    check_search(steps, len(prompts), r)
    pool = all_heads(model) if candidates is None else parse_heads(candidates)
    spec = AblationSpec(pool, method, eps, target).check(model, stacklevel=3)
    pool = spec.heads
    check_candidates(steps, len(pool))
    encoded = [encode_prompt(tok, p, template, system_prompt) for p in prompts]

    group, records = _seeded(done_steps)
    if len(group) >= steps:
        return SaharaResult(tuple(group[:steps]), pd.DataFrame.from_records(records, columns=SCOREBOARD_COLUMNS))

    clean = torch.stack([clean_pass(model, ids).last_state.double().cpu() for ids in encoded])
    with RowEditor(model, spec.target).install() as editor:
        for step in range(len(group) + 1, steps + 1):
            cands = [h for h in pool if h not in group]
            states = _step_states(model, encoded, cands, group, spec, editor, batch_size, clean.shape[1],
                                  f"Sahara step {step}/{steps}", progress)
            scores = generalized_ships_batch(clean, states, r=r)
            order = torch.argsort(scores, descending=True, stable=True).tolist()
            rank = {i: n + 1 for n, i in enumerate(order)}
            step_rows = [
                {"step": step, "rank": rank[i], "layer": h.layer, "head": h.head, "head_name": str(h),
                 "score": float(scores[i]), "group_before": ",".join(map(str, group))}
                for i, h in enumerate(cands)
            ]
            records.extend(step_rows)
            if on_step and is_main():
                on_step(step, step_rows)
            group.append(cands[order[0]])
    return SaharaResult(tuple(group), pd.DataFrame.from_records(records, columns=SCOREBOARD_COLUMNS))


def _seeded(done_steps: Sequence[Sequence[dict]]) -> tuple[list[HeadRef], list[dict]]:
    """The group the finished steps chose (each step's rank-1 head) and their scoreboard rows."""
    group: list[HeadRef] = []
    records: list[dict] = []
    for step_rows in done_steps:
        best = min(step_rows, key=lambda row: int(row["rank"]))
        group.append(HeadRef(int(best["layer"]), int(best["head"])))
        records.extend(step_rows)
    return group, records


def _step_states(model, encoded: list, cands: list, group: list, spec: AblationSpec, editor, batch_size: int,
                 hidden: int, desc: str, progress: bool) -> torch.Tensor:
    """[candidates, queries, hidden] last-token states of one step, each candidate ablated on top of ``group``."""
    states = torch.empty(len(cands), len(encoded), hidden, dtype=torch.float64)
    if state() is None:
        bar = tqdm(total=len(encoded), unit="query", disable=not progress, desc=desc)
        for q, ids in enumerate(encoded):
            states[:, q] = candidate_states(model, ids, cands, group, spec, editor, batch_size)
            bar.update(1)
        bar.close()
        return states
    # Under `accelerate launch`: each process takes whole chunks of the layer-sorted candidates, the
    # same chunks one process would run, so every state is bit-identical.
    parts = chunks(sorted(range(len(cands)), key=lambda i: cands[i]), batch_size)
    bar = tqdm(total=len(parts), unit="chunk", disable=not (progress and is_main()), desc=desc)

    def chunk_states(idx):
        out = torch.stack([candidate_states(model, ids, [cands[i] for i in idx], group, spec, editor, batch_size)
                           for ids in encoded], dim=1)
        bar.update(1)
        return out

    for idx, st in zip(parts, sharded_map(chunk_states, parts)):
        states[torch.tensor(idx)] = st
    bar.close()
    return states
