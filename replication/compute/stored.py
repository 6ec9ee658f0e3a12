"""The one way a computation is kept in the store (``stored_step``): its key, its entry, a placeholder on a
dry run, and read-or-compute under the entry's lock.

Every step of the harness (a Sahara group, a Ships sweep, completions, a model judge's verdicts, a
candidate sweep, a small result) goes through ``stored_step``, so that a key is built in one place and a
careless change to it cannot silently discard stored results in one step but not another. A step is
resumable after a crash: its ``compute`` appends to the entry as it goes and finishes it at the end.
A step computes an entry while holding its lock: a second harness run on the same store that asks for
the same entry meanwhile waits for it, then reads it, so two runs at once leave the entries one run would.

Under ``accelerate launch`` (several processes, on GPUs or over gloo on CPUs) every process runs every
artefact, and ``stored_step`` is where they meet: only the main process touches the store (it checks
whether an entry is done, takes its lock, reads it, appends to it and finishes it) and hands what it
found to the others (``distributed.from_main``). A step whose work the library splits across processes
(``SPLIT_KINDS``: Ships sweeps per query, Sahara candidate chunks, generation batches, a sensitivity sweep
per query) is computed by every process, each given the rows the main process's entry held
(``jobs.MainProcessRows``), so that all resume from the same point; any other step (a model judge's
verdicts, a small result) by the main process alone while the others wait. Every process then goes on
with the main process's result, so what follows is the same everywhere and the outputs, written by the
main process alone, are those of one process reading the same store.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

from safetyheads.distributed import from_main, is_main, world_size
from safetyheads.sinks import MainProcessRows

# Bump when a step's output for the same inputs would change.
VERSIONS = {"sahara": 1, "ships": 1, "completions": 1, "small": 1, "sweep": 1, "verdicts": 1}
# The kinds whose computation splits its work across the processes of an ``accelerate launch`` (it calls
# the library's sharded loops, which every process must enter): every process computes them.
SPLIT_KINDS = ("sahara", "ships", "completions", "sweep")


@dataclass(frozen=True)
class Step:
    """One stored computation: its kind and spec (together with the kind's version, its store key), what it
    is in words, and what computing it costs, for a dry run's plan."""

    kind: str
    spec: dict
    what: str
    forward_passes: int = 0
    judge_only: bool = False  # completions read only by the judge: early stop would apply (dry-run estimate)
    new_tokens: int = 0  # tokens generation decodes, at most (every response to the token limit)
    # the pieces its work splits into across processes, per stage that waits for the one before (Sahara's steps),
    # each stage's cost in proportion to its pieces; (1,): not split (the main process computes it alone)
    units: tuple[int, ...] = (1,)


@dataclass(frozen=True)
class PlanItem:
    """A step of a dry run: what it is, its cost, and whether the store holds it already."""

    kind: str
    key: str
    what: str
    forward_passes: int
    cached: bool
    judge_only: bool = False
    new_tokens: int = 0
    units: tuple[int, ...] = (1,)

    def share(self, processes: int) -> float:
        """The share of its one-process time it takes on ``processes`` processes: each stage's pieces are dealt
        round-robin, and a stage takes as many rounds as the busiest process has pieces."""
        return sum(-(-u // processes) for u in self.units) / sum(self.units)


@dataclass
class StepCost:
    """What a step counts (its forward passes) and, once its result is at hand, the seconds it took when it
    was computed: a measured cost per row (the extension's timing)."""

    kind: str
    forward_passes: int
    seconds: float | None = None


def step_entry(ctx, step: Step):
    """The store entry of ``step``, recorded as used (the outputs' provenance) and, on a dry run, planned."""
    entry = ctx.store.entry(step.kind, step.spec, VERSIONS[step.kind], what=step.what)
    ctx.used.entries.append({"kind": step.kind, "key": entry.key, "what": step.what})
    ctx.costs.setdefault(entry.key, StepCost(step.kind, step.forward_passes))
    if ctx.plan_only:
        ctx.plan.items.append(PlanItem(step.kind, entry.key, step.what, step.forward_passes, entry.done,
                                       step.judge_only, step.new_tokens, step.units))
    return entry


def stored_step(ctx, step: Step, compute: Callable, placeholder: Callable | None = None, read: Callable | None = None,
                *, read_in_plan: bool = True):
    """``step``'s result: ``read(entry, result)`` (default: the result) of what the store holds, else of
    ``compute(entry)`` (which returns what it finished the entry with), computed under the entry's lock; a
    run that waited for another one computing it reads that one's result. Each is counted in ``ctx.used``
    (``computed`` or ``read``: the run record says whether an artefact computed anything). A result that says how long it
    took (``seconds``: Sahara, Ships, a sweep) is recorded as the step's cost.

    On a dry run (``ctx.plan_only``) nothing is computed: ``placeholder(entry)``, of the shape ``read``
    gives, stands in where the store does not hold the step yet, so the artefact's code runs through; a
    stored result is read (unless ``read_in_plan`` is False), so that it keys what follows it exactly."""
    entry = step_entry(ctx, step)
    if ctx.plan_only:  # the main process alone plans (``cli.run``): nothing to hand to the others
        if not entry.done or not read_in_plan:
            return placeholder(entry)
        result = _counted_read(ctx, entry)
    elif from_main(lambda: entry.done):
        result = _counted_read(ctx, entry)
    else:
        main = is_main()
        with entry.computing(on_wait=lambda holder: _waiting(ctx, step.what, holder)) if main else nullcontext():
            if from_main(lambda: entry.done):  # another run computed it meanwhile
                result = _counted_read(ctx, entry)
            else:
                result = _computed(ctx, step, entry, compute)
    if "seconds" in result:
        ctx.costs[entry.key].seconds = result["seconds"]
    return read(entry, result) if read else result


def _computed(ctx, step: Step, entry, compute: Callable) -> dict:
    """``compute(entry)`` on the main process; with several processes, on every one for a step whose work is
    split (the others given the main entry's rows to resume from, writing nothing), else on the main one
    alone; every process gets the main process's result."""
    if world_size() == 1:
        result = compute(entry)
    elif step.kind in SPLIT_KINDS:
        rows = from_main(entry.rows)
        own = compute(entry if is_main() else MainProcessRows(rows))  # None on the others
        result = from_main(lambda: own)
    else:
        result = from_main(lambda: compute(entry))
    ctx.used.computed += 1
    ctx.computed_keys.add(entry.key)
    return result


def _counted_read(ctx, entry):
    ctx.used.read += 1
    ctx.used.read_before += entry.key not in ctx.computed_keys
    return entry.result() if ctx.plan_only else from_main(entry.result)


def _waiting(ctx, what: str, holder: str) -> None:
    print(f"[{ctx.profile.name}] {what}: waiting for {holder}, which is computing it", file=sys.stderr, flush=True)


def cached(ctx, what: str, spec: dict, compute: Callable):
    """A small JSON-able result (an NLL, a parameter count, attention maps) kept in the store, so a rerun
    does not load a model to recompute it. ``compute()`` runs only on a miss. A dry run plans none of them
    (they cost no forward pass worth counting) and gets None."""
    if ctx.plan_only:
        return None
    return stored_step(ctx, Step("small", {"what": what, **spec}, what), lambda entry: entry.finish({"value": compute()}),
                       read=lambda entry, result: result["value"])
