"""What an artefact is (spec + runner), what it produces (metrics, tables, figures, raw rows, per-query
outcomes), and the tolerances its metrics are stored with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

KINDS = ("number", "heads", "bound", "info")


@dataclass(frozen=True)
class ArtefactSpec:
    name: str  # table1, figure2, ...
    title: str
    caption: str  # what the artefact shows, as the paper's caption would say it
    paper_source: str  # where in the paper
    run: Callable  # run(ctx) -> Output
    minutes: dict = field(default_factory=dict)  # measured minutes per profile on this project's CI machine
    # optional modules the runner imports (matplotlib for a figure): a run checks them before computing
    needs: tuple = ()


@dataclass
class Metric:
    name: str
    value: object  # float, list of head names, or text
    kind: str = "number"
    tolerance: float | None = None  # numbers: |got - expected| <= tolerance passes, <= 2x drifts
    description: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "kind": self.kind, "tolerance": self.tolerance,
                "description": self.description}


@dataclass
class Output:
    metrics: list = field(default_factory=list)
    tables: list = field(default_factory=list)  # (title, pandas DataFrame)
    figures: list = field(default_factory=list)  # (file stem, matplotlib Figure)
    rows: list = field(default_factory=list)  # raw results (one dict per cell), for results.jsonl
    notes: list = field(default_factory=list)
    # per-query outcomes, for the claims' paired tests: {cell: {"ids": [...], "flags": "0110"}} ('1' = the
    # query was complied with, or the named property holds) or {cell: {"ids": [...], "values": [...]}}; a
    # cell judged by a three-way judge also has "broken" ('1' = neither an answer nor a refusal), and one
    # judged beside by side judges "side": {judge: {"flags": ..., "broken": ...}}
    outcomes: dict = field(default_factory=dict)
    responses: dict = field(default_factory=dict)  # cell -> its judged rows, for responses.jsonl.gz

    def outcome(self, name: str, judged=None, *, ids=None, flags=None, values=None, rows=None) -> None:
        """Record one cell: a Judged result (complied = not refused; its broken flags where a three-way judge
        read it, and its side judges' flags), or ids with flags or values; ``rows`` (or the Judged's rows) are
        the completions behind it, kept for reading by eye."""
        judged_flags = {}
        if judged is not None:
            ids = [r["prompt_id"] for r in judged.rows]
            flags = [not r["refused"] for r in judged.rows]
            rows = judged.rows
            if judged.three_way:
                judged_flags["broken"] = _bits(r["label"] == "broken" for r in rows)
            for side in sorted({j for r in rows for j in r.get("side", {})}):
                labels = [r["side"][side] for r in rows]
                judged_flags.setdefault("side", {})[side] = {"flags": _bits(x == "complied" for x in labels),
                                                             "broken": _bits(x == "broken" for x in labels)}
        if rows is not None:
            self.responses[name] = rows
        cell = {"ids": list(ids)}
        if flags is not None:
            cell["flags"] = _bits(flags)
        else:
            cell["values"] = [None if v is None else round(float(v), 6) for v in values]
        self.outcomes[name] = {**cell, **judged_flags}

    def metric(self, name: str, value, kind: str = "number", tolerance: float | None = None, description: str = ""):
        if kind not in KINDS:
            raise ValueError(kind)
        if kind == "number" and value is not None:
            value = round(float(value), 6)
        if kind == "heads":
            value = [str(h) for h in value]
        self.metrics.append(Metric(name, value, kind, tolerance, description))
        return value


def _bits(flags) -> str:
    return "".join("1" if f else "0" for f in flags)


def asr_tol(n: int) -> float:
    """A stored ASR may move by one response out of n before it is called drift."""
    return round(1.0 / max(n, 1), 6)


def diff_tol(n: int) -> float:
    """An ASR difference (two rates of n responses) may move by two responses."""
    return round(2.0 / max(n, 1), 6)


SCORE_TOL = 1e-3  # attribution scores: float noise across machines, not a change of result
