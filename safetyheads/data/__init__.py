"""Prompt sets: the paper's bundled harmful-query sets, or any user CSV/JSONL with a text column."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

_HERE = Path(__file__).parent


@dataclass(frozen=True)
class BundledSet:
    name: str
    file: str
    column: str
    rows: int
    sha256: str


BUNDLED = {
    s.name: s
    for s in (
        BundledSet("advbench", "eval/advbench.csv", "input", 520,
                   "5741945fe2b57aa60a2b1e63fc1d400327c6269c608167ad63d3a829f953959d"),
        BundledSet("advbench-targets", "eval/advbench_with_targets.csv", "goal", 520,
                   "6cd1a5c63c07610d7eb67307772ee5606017ee950b5770ab288a2c487489d3e1"),
        BundledSet("jailbreakbench", "eval/jailbreakbench.csv", "Goal", 100,
                   "4a8ec6832056b631eb092dccc60d37a61c3d441268268888b3d006288afeffa1"),
        BundledSet("maliciousinstruct", "eval/maliciousinstruct.csv", "input", 100,
                   "bee8f7a3da07becb685d3d0c8d28a9fbd98813d1c7b9f275175432269f325c0b"),
    )
}
# Column names tried, in order, when a user file does not say which column holds the prompts.
PROMPT_COLUMNS = ("input", "Goal", "goal", "prompt", "instruction", "query", "question", "text")


def bundled_path(name: str) -> Path:
    """Path of a bundled set, after checking its sha256 against SOURCES.md's."""
    s = BUNDLED[name]
    path = _HERE / s.file
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != s.sha256:
        raise DataError(f"bundled file {path} is corrupted (sha256 {digest[:12]}..., expected {s.sha256[:12]}...): reinstall safetyheads")
    return path


@dataclass(frozen=True)
class PromptSet:
    name: str
    prompts: tuple[str, ...]
    sha256: str  # of the source file
    column: str

    def provenance(self) -> dict:
        return {"dataset": self.name, "sha256": self.sha256, "column": self.column, "n": len(self.prompts)}


def load_prompts(source: str, column: str | None = None, limit: int | None = None) -> PromptSet:
    """Prompts from a bundled set name or a ``.csv``/``.jsonl``/``.json`` file.

    ``column`` defaults to the bundled set's, else the first of PROMPT_COLUMNS the file has.
    ``limit`` keeps the first N (in file order).
    """
    import pandas as pd

    if source in BUNDLED:
        path, default_col = bundled_path(source), BUNDLED[source].column
    else:
        path, default_col = Path(source).expanduser(), None
        if not path.is_file():
            raise DataError(
                f"no such prompt file or bundled set: {source!r} (bundled: {', '.join(BUNDLED)})"
            )
    try:
        if path.suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif path.suffix in (".jsonl", ".json"):
            frame = pd.read_json(path, lines=path.suffix == ".jsonl", dtype=False)
        else:
            raise DataError(f"{path}: prompt files must be .csv, .jsonl or .json")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path} is not a well-formed {path.suffix[1:]} file: {str(e).splitlines()[0]}") from None
    col = column or default_col or next((c for c in PROMPT_COLUMNS if c in frame.columns), None)
    if col is None or col not in frame.columns:
        wanted = repr(column) if column else f"any of {', '.join(PROMPT_COLUMNS)}"
        raise DataError(f"{path} has no column {wanted}; its columns are {', '.join(map(str, frame.columns)) or 'none'} (pick one with --column)")
    values = frame[col].tolist()
    blank = [i for i, v in enumerate(values) if not isinstance(v, str) or not v.strip()]
    if blank:
        raise DataError(f"{path}: column {col!r} has {len(blank)} empty or non-text value(s), first at row {blank[0] + 1}")
    if limit is not None:
        if limit < 1:
            raise DataError(f"limit must be >= 1, got {limit}")
        values = values[:limit]
    if not values:
        raise DataError(f"{path} holds no prompts")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return PromptSet(source if source in BUNDLED else str(path), tuple(values), sha, col)
