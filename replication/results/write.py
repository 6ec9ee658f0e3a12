"""What a run writes into an artefact's folder, paper_tables/generated/<profile>/<artefact>/: one writer
per file (``WRITERS``), so the list of files (``OUTPUT_FILES``, which the preflight checks) is the list
of writers, plus the figures, named by the artefact. Each file is replaced whole or not at all
(``safetyheads.files``: a temporary file beside it, renamed)."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tabulate import tabulate

from safetyheads.files import replacing, write_durably
from safetyheads.judges import JUDGES
from safetyheads.judges.stats import wilson_ci
from safetyheads.provenance import provenance

from ..compute.context import Context
from ..spec.artefact import ArtefactSpec, Output
from .paths import generated_root

RESPONSE_FIELDS = ("prompt_id", "prompt", "response", "refused", "label", "rule", "reason", "side", "n_new_tokens",
                   "stopped_early", "stop_token", "settled_for")


@dataclass(frozen=True)
class ArtefactRun:
    """One artefact's run, as its files are written from it: what it produced, how long it took, its
    provenance (``header``, results.jsonl's first line) and its diff against the expected values."""

    ctx: Context
    spec: ArtefactSpec
    output: Output
    seconds: float
    diff_md: str
    header: dict = field(default_factory=dict)

    @property
    def which(self) -> dict:
        """The profile (and the extension's model) the files were written for."""
        p = self.ctx.profile
        return {"profile": p.name, **({"model": p.variant} if p.variant else {})}


WRITERS: dict[str, Callable[[Path, ArtefactRun], None]] = {}


def _writes(name: str):
    """Register the writer of the file ``name`` of an artefact's folder."""
    def register(write: Callable[[Path, ArtefactRun], None]):
        WRITERS[name] = write
        return write
    return register


def write_outputs(ctx: Context, spec: ArtefactSpec, output: Output, seconds: float, diff_md: str,
                  out_root: Path | None = None) -> Path:
    """Write every file of the artefact's folder (and its figures); -> the folder."""
    folder = Path(out_root or generated_root()) / ctx.profile.folder / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    run = ArtefactRun(ctx, spec, output, seconds, diff_md, header(ctx, spec, seconds))
    _write_figures(folder, output)
    for name, write in WRITERS.items():
        write(folder / name, run)
    return folder


def header(ctx: Context, spec: ArtefactSpec, seconds: float) -> dict:
    """results.jsonl's first line: the artefact, the profile, the models, data, judge and store entries it
    used, and the provenance of the code."""
    p = ctx.profile
    models = {role: {"name": p.models[role], "stands_for": p.labels[role], "identity": ident}
              for role, ident in ctx.used_models().items()}
    return {
        "artefact": spec.name, "title": spec.title, "caption": spec.caption, "paper_source": spec.paper_source,
        "profile": p.to_dict(), "models": models,
        "datasets": ctx.datasets(), "judge": ctx.judge.settings(),
        "decoding": {"greedy": {"max_new_tokens": p.max_new_tokens}, "top-k": {"k": p.topk, "temperature": 1.0, "seed": p.seed}},
        "store": {"root": str(ctx.store.root), "entries": _unique(ctx.used.entries)},
        "seconds": round(seconds, 1),
        "provenance": provenance(),
    }


def _unique(items: list[dict]) -> list[dict]:
    seen, out = set(), []
    for it in items:
        if it["key"] not in seen:
            seen.add(it["key"])
            out.append(it)
    return out


@_writes("results.jsonl")
def _results(path: Path, run: ArtefactRun) -> None:
    with replacing(path, text=True) as f:
        f.write(json.dumps({"header": run.header}) + "\n")
        for r in run.output.rows:
            f.write(json.dumps(r, default=str) + "\n")


@_writes("outcomes.json")
def _outcomes(path: Path, run: ArtefactRun) -> None:
    """Per-query outcomes: what the claims' paired tests read (none: no file)."""
    if not run.output.outcomes:
        path.unlink(missing_ok=True)
        return
    write_durably(path, json.dumps({"artefact": run.spec.name, **run.which, "cells": run.output.outcomes},
                                   separators=(",", ":")) + "\n")


@_writes("responses.jsonl.gz")
def _responses(path: Path, run: ArtefactRun) -> None:
    write_responses(path, run.output.responses)


@_writes("metrics.json")
def _metrics(path: Path, run: ArtefactRun) -> None:
    metrics = [m.to_dict() for m in run.output.metrics]
    write_durably(path, json.dumps({"artefact": run.spec.name, **run.which, "metrics": metrics}, indent=1) + "\n")


@_writes("table.md")
def _table_md(path: Path, run: ArtefactRun) -> None:
    write_durably(path, "\n".join(table_markdown(run)))


@_writes("table.tex")
def _table_tex(path: Path, run: ArtefactRun) -> None:
    tex = []
    for title, frame in run.output.tables:
        tex += [f"% {title}", tabulate(frame, headers="keys", tablefmt="latex_booktabs", showindex=False), ""]
    write_durably(path, "\n".join(tex))


@_writes("diff.md")
def _diff_md(path: Path, run: ArtefactRun) -> None:
    write_durably(path, run.diff_md)


OUTPUT_FILES = tuple(WRITERS)  # every file an artefact's folder holds, its figures aside


def _write_figures(folder: Path, output: Output) -> None:
    """Each figure as PNG and PDF (table.md links the PNG)."""
    for stem, fig in output.figures:
        with replacing(folder / f"{stem}.png") as f:
            fig.savefig(f, format="png", dpi=150)
        with replacing(folder / f"{stem}.pdf") as f:
            fig.savefig(f, format="pdf")
        import matplotlib.pyplot as plt  # only an artefact that draws needs matplotlib (ArtefactSpec.needs)

        plt.close(fig)


def table_markdown(run: ArtefactRun) -> list[str]:
    """table.md's lines: the title, caption and paper source, the tables, the figures, the judged cells'
    ASR and broken rate, the notes, the profile's departures and the command that made it."""
    ctx, spec, output = run.ctx, run.spec, run.output
    p = ctx.profile
    model = f", {p.labels['aligned']}" if p.variant else ""
    md = [f"# {spec.title} ({p.name} profile{model})", "", spec.caption, "",
          f"Paper: {spec.paper_source}. Models: " + "; ".join(f"{r}: {p.labels[r]}" for r in p.labels), ""]
    for title, frame in output.tables:
        md += [f"## {title}", "", tabulate(frame, headers="keys", tablefmt="github", showindex=False), ""]
    md += [line for stem, _ in output.figures for line in (f"![{stem}]({stem}.png)", "")]
    cells = judged_cells(output.outcomes, ctx.judge.name)
    if cells is not None:
        md += [f"## ASR and broken rate of every judged cell ({ctx.judge.name} judge)", "",
               "ASR counts complied answers only; broken: neither an answer nor a refusal (loops, echoes of the query, "
               "word salad, off-topic text), its own finding, never counted as the paper's effect. 95% Wilson intervals.",
               "", tabulate(cells, headers="keys", tablefmt="github", showindex=False, disable_numparse=True), ""]
    if output.notes:
        md += ["## Notes", ""] + [f"- {n}" for n in output.notes] + [""]
    if p.departures:
        md += ["## Where this profile departs from the paper", ""] + [f"- {d}" for d in p.departures] + [""]
    provenance = run.header["provenance"]
    md += [f"Generated by `python -m replication run {spec.name} --profile {p.name}"
           + (f" --model {p.variant}" if p.variant else "") + "` "
           f"(safetyheads {provenance['version']}, commit {str(provenance.get('git_commit'))[:10]}); "
           "raw results with provenance: results.jsonl.", ""]
    return md


def judged_cells(outcomes: dict, judge: str):
    """The table of every outcome cell a three-way judge read, or judges read beside the profile's: n, ASR
    and broken rate with 95% Wilson intervals, per judge. None if there is no such cell."""
    import pandas as pd  # deferred like every pandas import of the harness: a plan needs none

    def rate(bits: str) -> str:
        k, n = bits.count("1"), len(bits)
        if not n:
            return "n/a"
        lo, hi = wilson_ci(k, n, 0.05)
        return f"{k / n:.2f} [{lo:.2f}, {hi:.2f}]"

    rows = []
    for name, cell in outcomes.items():
        if "broken" not in cell and "side" not in cell:
            continue
        row = {"cell": name, "n": len(cell["flags"]), f"ASR ({judge})": rate(cell["flags"])}
        if "broken" in cell:
            row[f"broken ({judge})"] = rate(cell["broken"])
        for side, got in cell.get("side", {}).items():
            row[f"ASR ({side}, beside)"] = rate(got["flags"])
            if side not in JUDGES or JUDGES[side].three_way:  # a two-way judge (a harm classifier) calls nothing broken
                row[f"broken ({side}, beside)"] = rate(got["broken"])
        rows.append(row)
    return pd.DataFrame(rows) if rows else None


def write_responses(path: Path, responses: dict) -> None:
    """Every completion behind the artefact's cells, with its judge verdict and the rule (keyword,
    pattern, or the filter: short, repetition, nonword, nll) that decided it: one JSON line per
    (cell, query), gzip with a fixed timestamp so that a rerun writes the same bytes."""
    if not responses:
        path.unlink(missing_ok=True)
        return
    with replacing(path) as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        for cell, rows in responses.items():
            for r in rows:
                line = {"cell": cell, **{k: r.get(k) for k in RESPONSE_FIELDS if k in r}}
                gz.write((json.dumps(line, ensure_ascii=False) + "\n").encode())
