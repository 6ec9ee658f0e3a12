"""Result files (JSONL or CSV) that carry their provenance and can be resumed after a crash.

JSONL: line 1 is ``{"header": {...}}``, then one JSON object per row.
CSV:   line 1 is ``# safetyheads {...header json...}``, then a normal CSV table
       (``pandas.read_csv(path, skiprows=1)`` reads it).

The header's ``run`` part names everything that must be equal to append to an existing file
(model hash, method, eps, template, ...). Rows are appended one prompt at a time and flushed,
so an interrupted run resumes with the prompts it has not finished.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Callable

from .errors import ResultsError

FORMATS = (".jsonl", ".csv")


def _fmt(path: Path) -> str:
    if path.suffix not in FORMATS:
        raise ResultsError(f"{path}: results are written as .jsonl or .csv, not {path.suffix or 'no extension'}")
    return path.suffix


def read_results(path: "str | Path"):
    """-> (DataFrame of rows, header dict)."""
    import pandas as pd

    path = Path(path)
    header, rows = _read(path)
    return pd.DataFrame.from_records(rows), header


def _read(path: Path) -> tuple[dict, list[dict]]:
    fmt = _fmt(path)
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):  # a write cut off by a crash
        lines = lines[:-1]
    if not lines:
        raise ResultsError(f"{path} is empty: delete it or pass --overwrite")
    try:
        if fmt == ".jsonl":
            header = json.loads(lines[0])["header"]
            rows = [json.loads(line) for line in lines[1:] if line.strip()]
        else:
            if not lines[0].startswith("# safetyheads "):
                raise ValueError("first line is not a '# safetyheads {...}' header")
            header = json.loads(lines[0][len("# safetyheads "):])
            import pandas as pd

            body = "".join(lines[1:])
            rows = pd.read_csv(io.StringIO(body), keep_default_na=False).to_dict("records") if body.strip() else []
    except (ValueError, KeyError, TypeError) as e:
        raise ResultsError(f"{path} is not a safetyheads results file ({e}); pass --overwrite or another --out") from None
    return header, rows


class ResultsWriter:
    """Append rows grouped by a key (e.g. prompt id) to a results file, resuming a matching run."""

    def __init__(self, path: "str | Path", header: dict, columns: list[str], key: str,
                 group_size: "int | Callable[[str], int]", overwrite: bool = False):
        """``group_size`` is how many rows make one key complete (a number, or a function of the key)."""
        self.path = Path(path)
        self.fmt = _fmt(self.path)
        self.columns, self.key, self.group_size = columns, key, group_size
        self.header = header
        self.done: set = set()
        self.resumed_rows: list[dict] = []
        if self.path.exists() and not overwrite:
            self._resume()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._rewrite([])

    def _resume(self) -> None:
        old_header, rows = _read(self.path)
        old_run, new_run = old_header.get("run", {}), self.header.get("run", {})
        differ = sorted(k for k in set(old_run) | set(new_run) if old_run.get(k) != new_run.get(k))
        if differ:
            raise ResultsError(
                f"{self.path} holds a different run (differs in: {', '.join(differ)}); "
                "pass --overwrite to replace it or choose another --out"
            )
        counts: dict = {}
        for r in rows:
            counts[str(r[self.key])] = counts.get(str(r[self.key]), 0) + 1
        size = self.group_size if callable(self.group_size) else (lambda key: self.group_size)
        complete = {k for k, n in counts.items() if n == size(k)}
        self.resumed_rows = [r for r in rows if str(r[self.key]) in complete]
        self.done = complete
        self.header = {**old_header, "resumed_utc": self.header.get("provenance", {}).get("created_utc")}
        self._rewrite(self.resumed_rows)  # drops rows of a group a crash left half-written

    def _serialise(self, rows: list[dict]) -> str:
        if self.fmt == ".jsonl":
            return "".join(json.dumps({c: r[c] for c in self.columns}) + "\n" for r in rows)
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n").writerows(rows)
        return buf.getvalue()

    def _rewrite(self, rows: list[dict]) -> None:
        if self.fmt == ".jsonl":
            head = json.dumps({"header": self.header}) + "\n"
        else:
            head = "# safetyheads " + json.dumps(self.header) + "\n" + ",".join(self.columns) + "\n"
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(head + self._serialise(rows))
        os.replace(tmp, self.path)

    def is_done(self, key) -> bool:
        return str(key) in self.done

    def append(self, key, rows: list[dict]) -> None:
        with open(self.path, "a") as f:
            f.write(self._serialise(rows))
            f.flush()
            os.fsync(f.fileno())
        self.done.add(str(key))
