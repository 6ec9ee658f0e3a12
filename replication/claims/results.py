"""One artefact's generated results as the claims read them (``Results``): its metrics, its per-query
outcome cells (which claims must name through ``spec.cells``), and the completions behind them; and the
notes printed beside a verdict (broken rates, side judges), never in it."""

from __future__ import annotations

import gzip
import json
from typing import Callable

from safetyheads.errors import SafetyheadsError

from ..results.paths import generated_root, shown
from ..spec.cells import SETS, MissingCell
from ..spec.profiles import get_profile


class Results:
    """One artefact's generated results: metrics.json and outcomes.json (per-query outcomes), and the folder
    they came from (its responses.jsonl.gz: the completions behind each cell)."""

    def __init__(self, metrics: dict, outcomes: dict | None = None, missing: str | None = None, folder=None):
        self.metrics, self.outcomes = metrics, outcomes or {}
        self.missing = missing  # why a claim cannot read per-query outcomes (no outcomes.json), else None
        self.asked = False  # a claim asked for per-query outcomes
        self.read: list[str] = []  # the outcome cells the claim read, in order
        self.folder = folder
        self._responses: dict | None = None

    def complied_responses(self, name: str) -> list[dict] | None:
        """The completions of cell ``name`` that the judge counted as complied, or None without the file."""
        if self.folder is None or not (self.folder / "responses.jsonl.gz").is_file():
            return None
        if self._responses is None:
            self._responses = {}
            with gzip.open(self.folder / "responses.jsonl.gz", "rt", encoding="utf-8") as f:
                for line in f:
                    row = json.loads(line)
                    self._responses.setdefault(row["cell"], []).append(row)
        return [row for row in self._responses.get(name, []) if not row["refused"]]

    def _cell(self, name: str) -> dict | None:
        self.asked = True
        if name in self.outcomes and name not in self.read:
            self.read.append(name)
        return self.outcomes.get(name)

    def broken_note(self) -> str:
        """The broken rate of the judged cells the claim read (a three-way judge's), beside its verdict and
        never in it: each cell's when it read up to four, else the vanilla cells' and the others' pooled."""
        broken = [(n, self.outcomes[n]["broken"]) for n in self.read if "broken" in self.outcomes[n]]
        if not broken:
            return ""
        return ("broken rate (neither an answer nor a refusal; not counted in ASR, not the paper's effect): "
                + ", ".join(_rates_by_cell(broken)))

    def side_note(self) -> str:
        """The ASR each side judge (a harm classifier, the three-way judge) gives the judged cells the claim
        read, beside its verdict and never in it, as ``broken_note`` words the cells."""
        judges = sorted({j for n in self.read for j in self.outcomes[n].get("side", {})})
        parts = []
        for j in judges:
            cells = [(n, self.outcomes[n]["side"][j]["flags"]) for n in self.read if j in self.outcomes[n].get("side", {})]
            parts.append(f"{j}: " + ", ".join(_rates_by_cell(cells)))
        return ("ASR by the judges beside it (never read by the verdict): " + "; ".join(parts)) if parts else ""

    def metric(self, name: str):
        return self.metrics.get(name, {}).get("value")

    def sets(self, *cell_of: Callable[[str], str]) -> list[str]:
        """The paper's sets (in SETS order) on which these results have every cell ``cell_of(set)``. Results
        without per-query outcomes have none (the claim is not run); results with outcomes that hold some of
        the cells but not all, or none of them on any set, lack a cell the claim reads: ``MissingCell``."""
        self.asked = True
        if not self.outcomes:
            return []
        found = [s for s in SETS if any(f(s) in self.outcomes for f in cell_of)]
        # none on any set: name the cells of a set the results have other cells of
        ran = found or [s for s in SETS if any(s in n.split(".") for n in self.outcomes)][:1] or SETS[:1]
        for s in ran:
            for f in cell_of:
                self.need(f(s))
        return found

    def need(self, name: str) -> dict:
        """An outcome cell that must exist (the claim reads it on a set the artefact ran)."""
        cell = self._cell(name)
        if cell is None:
            where = f"{shown(self.folder / 'outcomes.json')}" if self.folder is not None else "these results"
            raise MissingCell(f"{where} has no outcome cell {name!r}, which a claim reads (names come from "
                              "replication/spec/cells.py): regenerate the artefact with the current code")
        return cell

    def flags(self, name: str) -> dict | None:
        """{query id: '0'/'1'} of an outcome cell, or None."""
        cell = self._cell(name)
        if cell is None or "flags" not in cell:
            return None
        return dict(zip(map(str, cell["ids"]), cell["flags"]))

    def need_flags(self, name: str) -> dict:
        """``flags`` of a cell that must exist (``need``)."""
        self.need(name)
        return self.flags(name) or {}

    def ran(self) -> bool:
        """Whether these results hold per-query outcomes (False: a claim reading them is not run)."""
        self.asked = True
        return bool(self.outcomes)

    def values(self, name: str) -> dict | None:
        cell = self._cell(name)
        if cell is None or "values" not in cell:
            return None
        return dict(zip(map(str, cell["ids"]), cell["values"]))


def _rates_by_cell(cells: list[tuple[str, str]]) -> list[str]:
    """The share of 1s of each cell's bits when there are up to four cells, else of the vanilla cells and of the
    others, pooled: "name 0.25 (n = 48)"."""
    def pooled_rate(bits: list[str]) -> str:
        k, n = sum(b.count("1") for b in bits), sum(len(b) for b in bits)
        return f"{k / n:.2f} (n = {n})" if n else "n/a"

    if len(cells) <= 4:
        return [f"{n} {pooled_rate([b])}" for n, b in cells]
    van = [b for n, b in cells if "vanilla" in n.split(".")]
    other = [b for n, b in cells if "vanilla" not in n.split(".")]
    return ([f"vanilla cells {pooled_rate(van)}"] if van else []) + [f"the other {len(other)} cells {pooled_rate(other)}"]


# Profiles at the paper's scale (its protocol on 7-9B models): their rows say which judge each verdict reads, and
# give the judges beside it (CLAIMS.md's main table when it reads the paper profile, and the extension section)
PAPER_SCALE = ("paper", "extension")


def judge_note(profile: str, r: "Results") -> str:
    """For a paper-scale profile: the judge the verdict reads, and the side judges' ASR of the cells read."""
    if profile not in PAPER_SCALE:
        return ""
    judge = get_profile(profile).judge
    return "; ".join(x for x in (f"the verdict reads the {judge} judge (keyword ASR, as the paper)"
                                 if judge.startswith("keyword") else f"the verdict reads the {judge} judge",
                                 r.side_note()) if x)


def read_results(profile: str, artefact: str, root=None) -> Results | None:
    folder = (root or generated_root()) / profile / artefact
    if not (folder / "metrics.json").exists():
        return None
    rerun = f"regenerate them with `python -m replication run {artefact} --profile {profile}`"
    try:
        metrics = {m["name"]: m for m in json.loads((folder / "metrics.json").read_text(encoding="utf-8"))["metrics"]}
        outcomes = (json.loads((folder / "outcomes.json").read_text(encoding="utf-8"))
                    if (folder / "outcomes.json").exists() else None)
        cells = None if outcomes is None else outcomes.get("cells", outcomes)
        if cells is not None and not all(isinstance(c, dict) and "ids" in c for c in cells.values()):
            raise ValueError("outcome cells without ids")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise SafetyheadsError(f"{shown(folder)} holds damaged results ({type(e).__name__}: {e}): {rerun}") from None
    missing = None if cells is not None else (f"{shown(folder)} has metrics.json but no outcomes.json (the per-query "
                                              f"outcomes the claims' paired tests read): {rerun}")
    return Results(metrics, cells, missing, folder)


