"""Where a job's rows go (``Sink``) and how a job resumes from what a sink holds (``whole_units``).

A sink is a results file (``results.ResultsWriter``, what the command line writes) or a store entry
(``store.Entry``, what the harness keeps); under ``accelerate launch`` a process other than the main one
gets a ``MainProcessRows``: the main sink's rows, to resume from the same point, and nothing written.
"""

from __future__ import annotations

from typing import Callable, Hashable, Iterable, Protocol


class Sink(Protocol):
    """Where a job's rows go. ``append`` takes the rows of whole units and returns once they are on
    disk; ``finish`` marks the sink complete and returns the result (a store entry keeps it)."""

    def rows(self) -> list[dict]: ...

    def append(self, rows: list[dict]) -> None: ...

    def rewrite(self, rows: list[dict]) -> None: ...

    def finish(self, result: dict) -> dict: ...


class MainProcessRows:
    """The sink of a process other than the main one under ``accelerate launch`` when the main process
    writes the real sink (the harness's store entries): it holds the rows the main process's sink held
    when the job began, so that ``finished`` deals every process the same work, and it writes nothing. A
    job run into it computes its share only and returns None, as with no sink."""

    def __init__(self, rows: list[dict]):
        self._rows = list(rows)

    def rows(self) -> list[dict]:
        return list(self._rows)

    def append(self, rows: list[dict]) -> None:
        pass

    def rewrite(self, rows: list[dict]) -> None:
        pass

    def finish(self, result: dict) -> dict:
        return result


def resumed(job, sink: Sink | None, finished, nothing):
    """(what is ``finished``, the sink the job writes to) at the start of a job's ``run``: ``finished`` as
    given, else what ``sink`` holds whole (``job.finished``), else ``nothing`` (no sink); the sink is None for
    a ``MainProcessRows`` (``writing``)."""
    if finished is None:
        finished = job.finished(sink) if sink is not None else nothing
    return finished, writing(sink)


def writing(sink: Sink | None) -> Sink | None:
    """The sink a job writes to: None for a ``MainProcessRows`` (the main process writes the real one)."""
    return None if isinstance(sink, MainProcessRows) else sink


def whole_units(sink: Sink, unit_of: Callable[[dict], Hashable], is_whole: Callable[[Hashable, list], bool],
                order: Iterable | None = None) -> dict:
    """The units ``sink`` holds whole, ``{unit: rows}`` in the order written, and the sink rewritten
    to hold those rows only. ``order``: units that count only in this order (Sahara's steps, each
    built on the ones before): the first one that is not whole ends what is kept."""
    rows = sink.rows()
    units: dict = {}
    for r in rows:
        units.setdefault(unit_of(r), []).append(r)
    if order is None:
        kept = {u: rs for u, rs in units.items() if is_whole(u, rs)}
    else:
        kept = {}
        for u in order:
            if u not in units or not is_whole(u, units[u]):
                break
            kept[u] = units[u]
    # always rewritten, even to nothing: a store entry's cut-off line (its first one too) must not be
    # followed by the next append, which would glue the two into one unreadable line
    sink.rewrite([r for rs in kept.values() for r in rs])
    return kept
