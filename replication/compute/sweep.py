"""One Sahara step scored for several (N, r) at once (the sensitivity artefact): a candidate sweep,
kept in the store (``stored.stored_step``), its per-query states in side files until every cell is scored."""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from safetyheads.ablation import AblationSpec, RowEditor
from safetyheads.distributed import from_main, is_main, sharded_map
from safetyheads.errors import SafetyheadsError
from safetyheads.files import replacing
from safetyheads.heads import HeadRef
from safetyheads.sinks import whole_units
from safetyheads.prompts import encode_prompt
from safetyheads.sahara import candidate_states
from safetyheads.ships import clean_pass
from safetyheads.subspace import generalized_ships_batch

from .context import Context, Queries
from .stored import Step, stored_step


def candidate_sweep(ctx: Context, role: str, q: Queries, method: str, group: list, cells: list) -> dict:
    """Generalized Ships of every candidate head not in ``group``, ablated on top of ``group``, against
    the clean model, for each cell (n, r) of ``cells``: over the first n queries of ``q``, summing r
    principal angles. One sweep serves every cell: a query's last-token states do not depend on the
    other queries, so the first n rows of the states of ``q`` are those of a sweep over n queries.
    -> {"candidates": [HeadRef...], "scores": {(n, r): [degrees, per candidate]}, "seconds": float}.

    Each query's states go to a side file of the store entry as soon as they are computed (a killed
    run resumes at the next query) and are deleted once every cell is scored: the entry keeps the
    scores only (the states of a sweep of 1024 heads x 100 queries x 4096 dimensions are 1.7 GB)."""
    p = ctx.profile
    cands = [h for h in ctx.candidates(role) if h not in group]
    cells = sorted({(int(n), int(r)) for n, r in cells})
    if max(n for n, _ in cells) > len(q.ids):
        raise SafetyheadsError(f"internal: a cell asks for {max(n for n, _ in cells)} queries of a {len(q.ids)}-query sweep")
    spec = {"model": ctx.model_id(role), "queries": q.spec(), "method": method, "eps": p.eps, "template": p.template,
            "candidates": [str(h) for h in cands], "group": [str(h) for h in group], "cells": [list(c) for c in cells]}
    what = (f"sweep {method.upper()} {role} {q.set} ({len(q.ids)} queries x {len(cands)} heads, "
            f"group {','.join(map(str, group)) or 'none'})")

    def compute(entry) -> dict | None:
        return _sweep(ctx, entry, role, q, method, group, cands, cells, what)

    def placeholder(entry) -> dict:
        # a different best head for every cell, so that the plan counts the most sweeps the next step can need
        return {"candidates": cands, "seconds": 0.0,
                "scores": {c: [float(j == i % len(cands)) for j in range(len(cands))] for i, c in enumerate(cells)}}

    def read(entry, res: dict) -> dict:
        # a run killed after finishing the entry, before removing them (the main process alone touches the store)
        for left in entry.path.glob("states-*") if is_main() else ():
            left.unlink(missing_ok=True)
        return {"candidates": [HeadRef.parse(h) for h in res["candidates"]], "seconds": res["seconds"],
                "scores": {(n, r): scores for (n, r), scores in zip(res["cells"], res["scores"])}}

    return stored_step(ctx, Step("sweep", spec, what, len(q.ids) * (len(cands) + 1), units=(len(q.ids),)), compute, placeholder, read)


def _sweep(ctx: Context, entry, role: str, q: Queries, method: str, group: list, cands: list, cells: list,
           what: str) -> dict | None:
    """Compute the queries ``entry`` does not hold yet, score every cell and finish the entry; -> its result.
    Under ``accelerate launch`` the queries are dealt over the processes (``distributed.sharded_map``; a
    query's states are computed alone, as one process computes them) and the main process writes the side
    files and the entry; on the others ``entry`` is the main entry's rows and the result None."""
    p = ctx.profile
    model, tok = ctx.model(role)
    ablation = AblationSpec(tuple(ctx.candidates(role)), method, p.eps).check(model)
    # lossless: the states are computed in the model's dtype (float64 only for a float64 model)
    kept = np.float64 if model.dtype == torch.float64 else np.float32
    files = {pid: entry.side_file(f"states-{pid}.npz") for pid in q.ids} if is_main() else {}
    # a query is done once its side file is there (its row is appended after the file is written)
    seconds = from_main(lambda: {pid: rows[-1]["seconds"] for pid, rows in whole_units(
        entry, lambda r: r["prompt_id"], lambda pid, rows: files[pid].exists()).items()})
    ctx.log(f"{what}: {len(seconds)} of {len(q.ids)} queries done before")
    todo = [(pid, prompt) for pid, prompt in zip(q.ids, q.prompts) if pid not in seconds]
    bar = tqdm(total=len(q.ids), initial=len(seconds), unit="query", disable=not ctx.progress, desc="sweep")

    def states_of(item) -> tuple:
        pid, prompt = item
        t0 = time.perf_counter()
        ids = encode_prompt(tok, prompt, p.template)
        clean = clean_pass(model, ids).last_state.double().cpu()  # before the editor's hooks, as sahara() does
        with RowEditor(model, ablation.target).install() as editor:
            states = candidate_states(model, ids, cands, group, ablation, editor)
        return clean.numpy().astype(kept), states.numpy().astype(kept), time.perf_counter() - t0

    def save(done: list) -> None:  # the main process, each round, in query order
        for i, (clean, states, took) in done:
            pid = todo[i][0]
            with replacing(files[pid]) as f:
                np.savez(f, clean=clean, states=states)
            seconds[pid] = took
            entry.append([{"prompt_id": pid, "seconds": took}])
            bar.update(1)

    sharded_map(states_of, todo, on_round=save)
    bar.close()
    if not is_main():
        return None
    return _scored(entry, files, q, cands, cells, seconds)


def _scored(entry, files: dict, q: Queries, cands: list, cells: list, seconds: dict) -> dict:
    """Every cell scored from the side files, the entry finished with the scores, the side files deleted."""
    loaded = []
    for pid in q.ids:
        with np.load(files[pid]) as x:  # closed at once: one open file per query otherwise
            loaded.append((x["clean"], x["states"]))
    clean = torch.from_numpy(np.stack([c for c, _ in loaded])).double()  # [N, d]
    states = torch.from_numpy(np.stack([st for _, st in loaded], axis=1)).double()  # [H, N, d]
    scores = [generalized_ships_batch(clean[:n], states[:, :n], r=r).tolist() for n, r in cells]
    entry.finish({"candidates": [str(h) for h in cands], "cells": [list(c) for c in cells], "scores": scores,
                  "seconds": sum(seconds[pid] for pid in q.ids), "n_queries": len(q.ids)})
    for path in files.values():
        path.unlink(missing_ok=True)
    return entry.result()
