"""The stored expected values: paper_tables/expected/<profile>/<artefact>.json, the paper's published
numbers for the paper profile and baselines of earlier runs for mini and ci, each checked when read: a
file that does not parse, or a value of the wrong type, is refused before a run rather than after it."""

from __future__ import annotations

import json
from pathlib import Path

from safetyheads.errors import SafetyheadsError

from ..results.paths import TABLES, shown
from ..spec.artefact import KINDS

EXPECTED = TABLES / "expected"
NO_EXPECTED_NOTE = ("no expected values exist for this profile (the paper has no numbers for these models): every "
                    "metric is NEW, and CLAIMS.md's extension section reads them")


def expected_path(profile: str, artefact: str) -> Path:
    return EXPECTED / profile / f"{artefact}.json"


def load_expected(profile: str, artefact: str) -> dict:
    """The stored expected values of one artefact ({} when none are stored), checked: a file that
    does not parse, or a value of the wrong type, is refused here rather than after a run."""
    path = expected_path(profile, artefact)
    if not path.exists():
        return {}
    where = shown(path)
    if not path.is_file():
        raise SafetyheadsError(f"{where} is not a file: remove it, or restore it with `git checkout {where}`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SafetyheadsError(f"cannot read {where}: {e.strerror or e}") from None
    except ValueError as e:
        raise SafetyheadsError(f"{where} is not valid JSON ({e}): restore it with `git checkout {where}`, or rewrite "
                               "it with `python -m replication update-baselines --write`") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise SafetyheadsError(f"{where} is not a valid expected-values file: it needs a 'metrics' object of "
                               "{name: {value, kind, tolerance}}")
    for name, e in data["metrics"].items():
        problem = expected_problem(e)
        if problem:
            raise SafetyheadsError(f"{where}: metric {name!r} {problem}")
    return data


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def expected_problem(e) -> str | None:
    """What is wrong with one stored expected value, in words that say what to fix; None if nothing."""
    if not isinstance(e, dict):
        return "must be an object {value, kind, tolerance}"
    kind, value = e.get("kind"), e.get("value")
    if kind not in KINDS:
        return f"has kind {kind!r}: use one of {', '.join(KINDS)}"
    if kind == "number":
        if value is not None and not _is_number(value):
            return f"has value {value!r} ({type(value).__name__}): a number kind needs a number (or null)"
        tol = e.get("tolerance")
        if tol is not None and (not _is_number(tol) or not tol >= 0):
            return f"has tolerance {tol!r}: use a number >= 0, or null for exact"
    elif kind == "heads":
        if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
            return f"has value {value!r}: a heads kind needs a list of head names such as [\"L7H2\", \"L18H8\"]"
    elif kind == "bound":
        if e.get("op") not in (">=", "<="):
            return f"has op {e.get('op')!r}: a bound needs op \">=\" or \"<=\""
        if not _is_number(value):
            return f"has value {value!r} ({type(value).__name__}): a bound needs a number"
    return None
