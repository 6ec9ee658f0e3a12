"""Reading generated outputs back: an artefact's judged completions (responses.jsonl.gz), and how
early-stopped generation ended at a profile (what a plan's early-stop estimate reads)."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

from safetyheads.errors import SafetyheadsError

from .paths import generated_root, shown


def read_responses(profile: str, artefact: str, root: Path | None = None) -> list[dict]:
    """Every row of an artefact's responses.jsonl.gz (``profile``: the profile's output folder), checked."""
    path = (root or generated_root()) / profile / artefact / "responses.jsonl.gz"
    rerun = f"`python -m replication run {artefact} --profile {profile}`"
    if not path.exists():
        raise SafetyheadsError(f"no responses for {artefact} at the {profile} profile ({shown(path)}); run {rerun} first")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
    except (OSError, EOFError, ValueError, zlib.error) as e:
        raise SafetyheadsError(f"{shown(path)} is damaged ({type(e).__name__}: {e}): regenerate it with {rerun}") from None
    if not all(isinstance(r, dict) and {"cell", "prompt_id", "response", "refused"} <= r.keys() for r in rows):
        raise SafetyheadsError(f"{shown(path)} holds rows without cell, prompt_id, response and refused: regenerate it "
                               f"with {rerun}")
    return rows


def stop_points(profile: str = "mini", root: Path | None = None) -> dict | None:
    """How early-stopped generation ended at ``profile``, from its committed responses: the rows of
    early-stop runs (they carry ``stopped_early``), how many stopped once settled, and their mean stop
    token. None when no such rows are committed."""
    folder = (root or generated_root()) / profile
    rows = 0
    stops: list[int] = []
    for path in sorted(folder.glob("*/responses.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            for line in f:
                r = json.loads(line)
                if "stopped_early" not in r:
                    continue
                rows += 1
                if r["stopped_early"]:
                    stops.append(int(r["stop_token"]))
    if not rows:
        return None
    return {"profile": profile, "rows": rows, "stopped": len(stops),
            "mean_stop_token": sum(stops) / len(stops) if stops else 0.0}
