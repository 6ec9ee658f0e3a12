"""The sensitivity artefact's arithmetic, checked against independent computations on tiny random
Llamas: a cell scored from the shared sweep is generalized Ships of a direct ablation over its own
first N queries; the profile's own cell is Sahara's step 1; one sweep per distinct group prefix; the
rank correlation; and a plan that loads nothing."""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import pytest
import torch

from safetyheads.ablation import AblationSpec, ablate
from safetyheads.data import load_prompts
from safetyheads.prompts import encode_prompt
from safetyheads.sahara import sahara
from safetyheads.ships import clean_pass
from safetyheads.store import Store
from safetyheads.subspace import generalized_ships
from safetyheads.testing import tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # replication/ lives beside the package; appended so the installed safetyheads wins

from replication.artefacts import sensitivity as S  # noqa: E402
from replication.cli import plan as cli_plan  # noqa: E402
from replication.compute import sweep as compute_sweep  # noqa: E402
from replication.compute.context import Context, Queries  # noqa: E402
from replication.compute.stats import average_ranks, spearman, spearman_permutation_p  # noqa: E402
from replication.compute.sweep import candidate_sweep  # noqa: E402
from replication.spec.profiles import PAPER  # noqa: E402
from tolerances import forward_atol, subspace_atol  # noqa: E402

SET = "maliciousinstruct"
TINY = PAPER.replace(n_attribution=2, n_eval=2, max_new_tokens=4, sahara_steps=3, heatmap_n=1, heatmap_max_new_tokens=2,
                     sets=(SET,), table_sets=(SET,), sensitivity_n=(2, 3), sensitivity_r=(1, 2),
                     sensitivity_eps=(1e-4, 1e-5), side_judges=("three-way",))  # no classifier weights here


def loader(role, name):
    m = tiny_model("llama", attn_implementation="sdpa", seed=0)
    m.safetyheads_source = {"model": name, "kind": "tiny stand-in", "seed": 0}
    return m, tiny_tokenizer()


@pytest.fixture
def ctx(tmp_path):
    return Context(TINY, Store(tmp_path), loader=loader, progress=False)


def first(n: int) -> Queries:
    ps = load_prompts(SET)
    return Queries(SET, ps.sha256, list(range(n)), list(ps.prompts[:n]))


def direct_state(model, tok, prompt: str, heads) -> torch.Tensor:
    """The post-final-norm last-token state with ``heads`` UA-ablated by plain hooks on a whole forward
    pass (no staircase, no shared clean prefix): the second opinion."""
    ids = encode_prompt(tok, prompt, "paper")
    if not heads:
        return clean_pass(model, ids).last_state.double()
    with ablate(model, AblationSpec(tuple(heads), "ua", TINY.eps)):
        return clean_pass(model, ids).last_state.double()


def test_a_cell_scored_from_the_shared_sweep_is_generalized_ships_over_its_own_first_n_queries(ctx, monkeypatch):
    model, tok = ctx.model("aligned")
    q = first(3)
    cells = [(2, 1), (3, 1), (3, 2)]
    group = [ctx.candidates("aligned")[5]]  # a step-2 sweep: the candidates ride on top of a group
    shared = candidate_sweep(ctx, "aligned", q, "ua", group, cells)
    assert shared["candidates"] == [h for h in ctx.candidates("aligned") if h not in group]
    alone = candidate_sweep(ctx, "aligned", first(2), "ua", group, [(2, 1)])  # a sweep of the first 2 only
    clean = torch.stack([direct_state(model, tok, p, []) for p in q.prompts])
    for i, h in enumerate(shared["candidates"]):
        ablated = torch.stack([direct_state(model, tok, p, group + [h]) for p in q.prompts])
        for n, r in cells:
            direct = generalized_ships(clean[:n], ablated[:n], r=r)
            # two code paths to the fp32 states: their noise through the subspaces' gaps (measured <= 3e-12 deg)
            atol = math.degrees(sum(subspace_atol(X[:n], r, forward_atol(model, X[:n], probabilistic=True))
                                    for X in (clean, ablated)))
            assert shared["scores"][(n, r)][i] == pytest.approx(direct, abs=atol), (h, n, r)
            if n == 2:  # the same states and arithmetic: equal up to float64 reassociation
                assert shared["scores"][(n, r)][i] == pytest.approx(alone["scores"][(n, r)][i], abs=1e-9)
    # the states were dropped once scored; the scores are read back, not recomputed
    assert not list(Path(ctx.store.root).glob("sweep/*/*/states-*"))
    monkeypatch.setattr(compute_sweep, "_sweep", lambda *a, **k: pytest.fail("recomputed a stored sweep"))
    again = Context(TINY, ctx.store, loader=loader, progress=False)
    assert candidate_sweep(again, "aligned", q, "ua", group, cells)["scores"] == shared["scores"]


def test_a_sweep_killed_mid_way_resumes_at_the_next_query(ctx, monkeypatch):
    q = first(3)
    calls = []
    real = compute_sweep.candidate_states  # safetyheads.sahara's, as the sweep imported it

    def dies_on_the_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(compute_sweep, "candidate_states", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        candidate_sweep(ctx, "aligned", q, "ua", [], [(3, 1)])
    calls.clear()
    monkeypatch.setattr(compute_sweep, "candidate_states", lambda *a, **k: calls.append(1) or real(*a, **k))
    resumed = candidate_sweep(Context(TINY, ctx.store, loader=loader, progress=False), "aligned", q, "ua", [], [(3, 1)])
    assert len(calls) == 1  # the two finished queries were read back from their side files
    fresh = candidate_sweep(Context(TINY, Store(Path(ctx.store.root) / "fresh"), loader=loader, progress=False),
                            "aligned", q, "ua", [], [(3, 1)])
    assert resumed["scores"] == fresh["scores"]


def test_the_profiles_own_cell_is_sahara_step_one_and_its_group(ctx):
    model, tok = ctx.model("aligned")
    ref = sahara(model, tok, first(TINY.n_attribution).prompts, steps=3, method="ua", eps=TINY.eps, template="paper",
                 candidates=ctx.candidates("aligned"))
    groups, step1, _ = S.greedy_groups(ctx, SET, S.grid(TINY), 3)
    cands, scores = step1[(TINY.n_attribution, 1)]
    top = ref.step_table(1, 1).iloc[0]
    assert str(cands[S.best(scores)]) == top["head_name"]
    assert scores[S.best(scores)] == pytest.approx(top["score"], abs=1e-9)  # the same states (measured equal)
    assert groups[(TINY.n_attribution, 1)] == list(ref.group)
    board = ref.scoreboard[ref.scoreboard.step == 1].set_index("head_name")["score"]
    assert [board[str(h)] for h in cands] == pytest.approx(scores, abs=1e-9)  # likewise


def test_one_sweep_per_distinct_group_prefix_over_the_most_queries_it_serves(ctx, monkeypatch):
    cands = ctx.candidates("aligned")
    h0, h1, h2 = cands[:3]
    calls = []

    def scripted(ctx, role, q, method, group, cells):
        # step 1: N = 2 picks h0, N = 3 and 4 pick h1 (whatever r); later steps pick the first free head
        calls.append((len(q.ids), tuple(group), sorted(cells)))
        free = [h for h in cands if h not in group]
        pick = {(): {2: h0, 3: h1, 4: h1}}.get(tuple(group))
        return {"candidates": free, "scores": {c: [float(h == (pick[c[0]] if pick else free[0])) for h in free]
                                               for c in cells}}

    monkeypatch.setattr(S, "candidate_sweep", scripted)
    cells = S.grid(TINY.replace(sensitivity_n=(2, 3, 4)))
    assert cells == [(2, 1), (3, 1), (3, 2), (4, 1), (4, 2)]  # r < N: r = N spans the whole query space
    assert S.group_cells(cells) == [(2, 1), (3, 1), (4, 1), (4, 2)]
    groups, _, sweeps = S.greedy_groups(ctx, SET, cells, 3)
    assert calls[0] == (4, (), cells)  # step 1: one sweep of the largest N serves every cell
    # step 2: one sweep per prefix, over the most queries among the cells it serves
    assert calls[1:3] == [(2, (h0,), [(2, 1)]), (4, (h1,), [(3, 1), (4, 1), (4, 2)])]
    assert len(calls) == sweeps == 5
    assert groups[(3, 1)] == groups[(4, 1)] == groups[(4, 2)] == [h1, h0, h2] and groups[(2, 1)] == [h0, h1, h2]
    assert groups[(3, 2)] == [h1]  # not a group cell: its step-1 head only
    assert S.shared_prefixes({(2, 1): [h0], (3, 1): [h1], (3, 2): [h1]}) == {(h0,): [(2, 1)], (h1,): [(3, 1), (3, 2)]}


def test_spearman_is_pearsons_correlation_of_average_ranks():
    assert average_ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]
    x = [0.3, 1.2, -0.5, 2.2, 0.9, 1.7, -1.0]
    y = [1, 3, 2, 7, 4, 5, 0]
    n = len(x)
    rank = lambda v: [sorted(v).index(a) + 1 for a in v]  # noqa: E731 - no ties here
    d2 = sum((a - b) ** 2 for a, b in zip(rank(x), rank(y)))
    assert spearman(x, y) == pytest.approx(1 - 6 * d2 / (n * (n * n - 1)))  # the textbook formula without ties
    # with ties: rank by counting (less + (equal + 1) / 2), then Pearson by hand
    x, y = [0.1, 0.4, 0.4, 0.9, 0.2, 0.4], [0.0, 0.5, 0.5, 1.0, 0.0, 0.0]

    def counted(v):
        return [sum(b < a for b in v) + (sum(b == a for b in v) + 1) / 2 for a in v]

    rx, ry = counted(x), counted(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    assert spearman(x, y) == pytest.approx(cov / var)
    assert spearman([1, 2, 3], [4, 4, 4]) != spearman([1, 2, 3], [4, 4, 4])  # nan: a constant side has no ranks


def test_permutation_p_value_matches_exact_enumeration():
    x, y = [0.2, 1.5, 0.7, 2.0, 1.1, 0.1], [0, 1, 1, 1, 0, 0]
    rho = spearman(x, y)
    exact = sum(abs(spearman(x, list(p))) >= abs(rho) - 1e-12 for p in itertools.permutations(y)) / 720
    # Monte Carlo, not rounding: the sd of a p-value from 20000 permutations is <= 0.0035, 0.015 > 4 sd
    assert spearman_permutation_p(x, y, n_perm=20000) == pytest.approx(exact, abs=0.015)
    assert spearman_permutation_p(x, y) == spearman_permutation_p(x, y)  # seeded


def test_dry_run_plans_sensitivity_without_loading_a_model(tmp_path):
    def no_load(role, name):
        raise AssertionError("a dry run loaded a model")

    # the paper profile, with Figure 4b's grid (planned here for the correlation) on one query to keep the test short
    ctx = Context(PAPER.replace(heatmap_n=1), Store(tmp_path), loader=no_load, plan_only=True, progress=False)
    text, _ = cli_plan.plan(ctx, ["sensitivity"])
    assert "GPU-hours" in text and "sweep" in text
    assert not list(tmp_path.iterdir())  # planning writes nothing
    sweeps = [i for i in ctx.plan.items if i.kind == "sweep"]
    step1 = [i for i in sweeps if "group none" in i.what]
    assert len(step1) == len(PAPER.table_sets) and all(i.forward_passes == 100 * (1024 + 1) for i in step1)
    # later steps: at most one sweep per group cell (the plan assumes every cell picks its own head)
    cells = S.group_cells(S.grid(PAPER))
    assert len(sweeps) == len(PAPER.table_sets) * (1 + 2 * len(cells))


def test_a_set_outside_the_group_sets_gets_the_step1_grid_only(tmp_path):
    """``sensitivity_group_sets`` limits the greedy groups (steps 2..) to the named sets; the other
    sets still get every cell's step-1 head and its held-out ASR, and no group metric."""
    def no_load(role, name):
        raise AssertionError("a dry run loaded a model")

    two = ("maliciousinstruct", "jailbreakbench")
    prof = PAPER.replace(heatmap_n=1, table_sets=two, sensitivity_group_sets=("maliciousinstruct",))
    ctx = Context(prof, Store(tmp_path), loader=no_load, plan_only=True, progress=False)
    out = S.run(ctx)
    names = {m.name for m in out.metrics}
    for s in two:
        assert all(f"step1.{s}.n{n}.r{r}" in names for n, r in S.grid(prof))
    assert any(n.startswith("group.maliciousinstruct.") for n in names)
    assert not any(n.startswith("group.jailbreakbench.") for n in names)
    sweeps = [i for i in ctx.plan.items if i.kind == "sweep"]
    assert sum("jailbreakbench" in i.what for i in sweeps) == 1  # its step-1 sweep, nothing after it
