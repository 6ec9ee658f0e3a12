"""Result files (JSONL or CSV) that carry their provenance and can be resumed after a crash.

JSONL: line 1 is ``{"header": {...}}``, then one JSON object per row.
CSV:   line 1 is ``# safetyheads {...header json...}``, then a normal CSV table
       (``pandas.read_csv(path, skiprows=1)`` reads it).

The header's ``run`` part names everything that must be equal to append to an existing file
(model hash, method, eps, template, ...). Rows are appended one prompt at a time and flushed,
so an interrupted run resumes with the prompts it has not finished.

One process writes a file at a time: a ``ResultsWriter`` holds its lock (``<file>.lock``, see
``safetyheads.locks``) until it finishes, and a second writer is refused with one line naming the
first. A finished file's header holds ``rows_sha256``, the sha256 of every byte after the header
line, checked whenever the file is read: rows edited after the run are refused, not resumed or
reported. Lines are read one at a time, none longer than ``MAX_LINE_BYTES``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Callable

from .errors import ResultsError
from .files import replacing, write_durably
from .locks import FileLock, LockBusy

FORMATS = (".jsonl", ".csv")
# Provenance fields that must match to append to a file: rows of two versions never share one.
CODE_KEYS = ("version", "git_commit")
# The header key of a finished file's rows hash (see the module docstring).
ROWS_HASH = "rows_sha256"
# No row this package writes comes near this (a generated response with its prompt is kilobytes): a
# longer line is damage, and reading stops there instead of holding a line of any size in memory.
MAX_LINE_BYTES = 64 << 20


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
    """-> (header, rows); a damaged tail is left out with a warning (see ``_load``)."""
    header, rows, damage = _load(path)
    if damage:
        warnings.warn(damage, ResultsWarning, stacklevel=3)
    return header, rows


class ResultsWarning(UserWarning):
    """A results file whose tail was damaged: the rows before the damage are used."""


def looks_like_results(path: Path) -> bool:
    """Whether ``path`` starts with a results header line (read before any model loads)."""
    if not path.is_file():  # a named pipe would block the read for ever
        return False
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 20)
    except OSError:
        return False
    return first.startswith(b'{"header"') if path.suffix == ".jsonl" else first.startswith(b"# safetyheads ")


def check_results_file(path: Path, overwrite: bool = False) -> None:
    """Before any model loads: an existing file that a run would resume must at least be a results
    file (the header comparison follows once the run is known)."""
    if path.exists() and not overwrite and not looks_like_results(path):
        raise ResultsError(f"{path} exists and is not a safetyheads results file: pass --overwrite to replace it "
                           "or choose another --out")


def _read_header(path: Path, fmt: str, first_line: bytes) -> dict:
    """The header of a results file (its first line), or a one-line ResultsError."""
    try:
        first = first_line.decode("utf-8")
        if fmt == ".jsonl":
            header = json.loads(first)["header"]
        else:
            if not first.startswith("# safetyheads "):
                raise ValueError("first line is not a '# safetyheads {...}' header")
            header = json.loads(first[len("# safetyheads "):])
        if not isinstance(header, dict):
            raise ValueError("its header is not a JSON object")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        reason = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else str(e).splitlines()[0]
        raise ResultsError(f"{path} is not a safetyheads results file ({reason}); pass --overwrite or another --out") from None
    return header


def _jsonl_rows(path: Path, body: list[str], n_lines: int) -> tuple[list[dict], "str | None"]:
    """The rows of a JSONL body (line 2 on) up to the first line that is not a JSON object, and what
    was dropped from there on (None: nothing)."""
    rows = []
    for n, line in enumerate(body, 2):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"a JSON {type(row).__name__}, not an object")
        except ValueError as e:
            return rows, _damage(path, n, str(e).splitlines()[0], n_lines - n + 1)
        rows.append(row)
    return rows, None


def _read_lines(path: Path) -> tuple[list[bytes], "str | None", str]:
    """-> (the file's complete lines, without their newline; why reading stopped early, or None; the
    sha256 of every byte after the first line that was read). A last piece without its newline is a
    write a crash cut off: it is hashed, not returned. A line longer than MAX_LINE_BYTES stops the
    reading there: it is never held whole."""
    lines, too_long = [], None
    body = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while raw := f.readline(MAX_LINE_BYTES + 1):
                if lines:
                    body.update(raw)
                if not raw.endswith(b"\n"):
                    if len(raw) > MAX_LINE_BYTES:
                        too_long = f"longer than {MAX_LINE_BYTES >> 20} MiB"
                    break
                lines.append(raw[:-1])
    except OSError as e:
        raise ResultsError(f"cannot read {path}: {e.strerror or e}") from None
    return lines, too_long, body.hexdigest()


def check_rows_hash(path: Path, header: dict, digest: str) -> None:
    """A finished file's rows must be those its header's ``rows_sha256`` was computed from."""
    recorded = header.get(ROWS_HASH)
    if recorded is not None and recorded != digest:
        raise ResultsError(f"{path} was changed after its run finished (its rows do not match the {ROWS_HASH} in "
                           "its header): rerun the command with --overwrite (or another --out) to recompute it")


def _load(path: Path) -> tuple[dict, list[dict], "str | None"]:
    """-> (header, rows, damage). A last line without its newline is a write a crash cut off and is
    dropped silently; a complete line that cannot be read (not UTF-8, not a row, too long) ends the
    usable rows: they are kept, and ``damage`` says what was dropped from that line on."""
    fmt = _fmt(path)
    lines, too_long, digest = _read_lines(path)
    if not lines:
        if too_long:
            raise ResultsError(f"{path} is not a safetyheads results file (its first line is {too_long}); "
                               "pass --overwrite or another --out")
        raise ResultsError(f"{path} is empty: delete it or pass --overwrite")
    header = _read_header(path, fmt, lines[0])
    check_rows_hash(path, header, digest)
    body: list[str] = []
    damage = None
    if too_long:
        damage = (f"{path} is damaged at line {len(lines) + 1} ({too_long}): the rows before it are kept, that line "
                  "and everything after it are dropped")
    for n, raw in enumerate(lines[1:], 2):
        try:
            body.append(raw.decode("utf-8") + "\n")
        except UnicodeDecodeError as e:
            damage = _damage(path, n, f"not UTF-8 at byte {e.start}", len(lines) - n + 1)
            break
    if fmt == ".jsonl":
        rows, bad = _jsonl_rows(path, body, len(lines))
        return header, rows, bad or damage
    good, bad_line, reason = _good_csv_records(body)
    if bad_line is not None:  # body[0] is line 2 of the file
        damage = _damage(path, bad_line + 2, reason, len(lines) - bad_line - 1)
    try:
        import pandas as pd

        text = "".join(body[:good])
        rows = pd.read_csv(io.StringIO(text), keep_default_na=False).to_dict("records") if text.strip() else []
    except (ValueError, KeyError, TypeError) as e:
        raise ResultsError(f"{path} is not a safetyheads results file ({str(e).splitlines()[0]}); "
                           "pass --overwrite or another --out") from None
    return header, rows, damage


def _good_csv_records(body: list[str]) -> tuple[int, "int | None", str]:
    """-> (lines holding whole, well-formed records, index of the first bad line or None, why).
    A record may span lines (a quoted prompt with newlines), so lines are counted by the reader."""
    reader = csv.reader(body, strict=True)
    good, width = 0, None
    try:
        for record in reader:
            if record:
                if width is None:
                    width = len(record)
                elif len(record) != width:
                    return good, good, f"{len(record)} fields where the table has {width}"
            good = reader.line_num
    except csv.Error as e:
        return good, good, str(e)
    return good, None, ""


def _damage(path: Path, line: int, reason: str, n_dropped: int) -> str:
    return (f"{path} is damaged at line {line} ({reason}): the rows before it are kept, "
            f"that line and the {n_dropped - 1} after it are dropped")


class ResultsWriter:
    """Append rows grouped by a key (e.g. prompt id) to a results file, resuming a matching run.

    One of the two sinks of ``safetyheads.jobs`` (a store entry is the other): ``rows()``,
    ``append(rows)``, ``rewrite(rows)`` and ``finish(result)``. It holds the file's lock from when it
    is made until ``finish`` (or ``close``): another writer of the same file is refused meanwhile."""

    def __init__(self, path: "str | Path", header: dict, columns: list[str], key: str,
                 group_size: "int | Callable[[str], int]", overwrite: bool = False):
        """``group_size`` is how many rows make one key complete (a number, or a function of the key)."""
        self.path = Path(path)
        self.fmt = _fmt(self.path)
        self.columns, self.key, self.group_size = columns, key, group_size
        self.header = header
        self.done: set = set()
        self.resumed_rows: list[dict] = []
        self._rows: list[dict] = []  # what the file holds: the rows kept when it was resumed, then those appended
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = claim(self.path)
        try:
            if self.path.exists() and not overwrite:
                self._resume()
            else:
                self._rewrite([])
        except BaseException:
            self._lock.release()
            raise

    def close(self) -> None:
        """Let go of the file's lock (``finish`` does): another process may write it from now on."""
        self._lock.release()

    def _resume(self) -> None:
        old_header, rows, damage = _load(self.path)
        old_header.pop(ROWS_HASH, None)  # rows are appended or dropped from here on: the file is no longer finished
        old_run, new_run = old_header.get("run", {}), self.header.get("run", {})
        old_run, new_run = (r if isinstance(r, dict) else {} for r in (old_run, new_run))
        differ = sorted(k for k in set(old_run) | set(new_run) if old_run.get(k) != new_run.get(k))
        if differ:
            raise ResultsError(
                f"{self.path} holds a different run (differs in: {', '.join(differ)}); "
                "pass --overwrite to replace it or choose another --out"
            )
        self._check_same_code(old_header)
        n_read = len(rows)
        rows = [r for r in rows if self.key in r]
        if len(rows) < n_read and damage is None:
            damage = f"{self.path} has {n_read - len(rows)} rows without {self.key!r}: they are dropped"
        counts: dict = {}
        for r in rows:
            counts[str(r[self.key])] = counts.get(str(r[self.key]), 0) + 1
        size = self.group_size if callable(self.group_size) else (lambda key: self.group_size)
        complete = {k for k, n in counts.items() if n == size(k)}
        self.resumed_rows = [r for r in rows if str(r[self.key]) in complete]
        self._rows = list(self.resumed_rows)
        self.done = complete
        self.header = {**old_header, "resumed_utc": self.header.get("provenance", {}).get("created_utc")}
        if damage:
            print(f"safetyheads: warning: {damage}", file=sys.stderr)
        self._rewrite(self.resumed_rows)  # drops rows of a group a crash left half-written, and a damaged tail

    def _check_same_code(self, old_header: dict) -> None:
        """One file holds rows of one library version and commit: its provenance must name the
        version and commit that would append to it."""
        old, new = (h.get("provenance") if isinstance(h.get("provenance"), dict) else {}
                    for h in (old_header, self.header))
        if all(old.get(k) == new.get(k) for k in CODE_KEYS):
            return

        def code(p: dict) -> str:
            commit = p.get("git_commit")
            return f"safetyheads {p.get('version') or '(unknown version)'}, commit {commit[:12] if commit else 'unknown'}"

        raise ResultsError(
            f"{self.path} was written by {code(old)}, not by this {code(new)}: one file must not mix rows of "
            "two versions; choose a new --out (or pass --overwrite to replace it)"
        )

    def _serialise(self, rows: list[dict]) -> str:
        for r in rows:
            bad = [c for c in self.columns if isinstance(r.get(c), float) and not math.isfinite(r[c])]
            if bad:
                raise ResultsError(f"refusing to write {r[bad[0]]} in column {bad[0]!r} of {self.path} "
                                   f"({self.key} {r.get(self.key)}): results hold finite numbers only")
        if self.fmt == ".jsonl":
            return "".join(json.dumps({c: r[c] for c in self.columns}, allow_nan=False) + "\n" for r in rows)
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n").writerows(rows)
        return buf.getvalue()

    def _head(self) -> str:
        """The header line (a CSV's column line follows it)."""
        try:
            header = json.dumps(self.header, allow_nan=False)
        except ValueError:
            raise ResultsError(f"the header of {self.path} holds NaN or infinity: results hold finite numbers only") from None
        if self.fmt == ".jsonl":
            return '{"header": ' + header + "}\n"
        return "# safetyheads " + header + "\n"

    def _rewrite(self, rows: list[dict]) -> None:
        columns = "" if self.fmt == ".jsonl" else ",".join(self.columns) + "\n"
        write_durably(self.path, self._head() + columns + self._serialise(rows))

    def is_done(self, key) -> bool:
        return str(key) in self.done

    def rows(self) -> list[dict]:
        """The rows the file holds: those kept when it was resumed, then those appended since."""
        return list(self._rows)

    def append(self, key_or_rows, rows: "list[dict] | None" = None) -> None:
        """Append the rows of whole groups, flushed to disk before this returns: ``append(rows)``
        (each row names its group in the key column) or ``append(key, rows)`` (one group)."""
        if rows is None:
            rows, keys = key_or_rows, {str(r[self.key]) for r in key_or_rows}
        else:
            keys = {str(key_or_rows)}
        with open(self.path, "a") as f:
            f.write(self._serialise(rows))
            f.flush()
            os.fsync(f.fileno())
        self.done.update(keys)
        self._rows.extend(rows)

    def rewrite(self, rows: list[dict]) -> None:
        """Replace the rows (whole groups only) under the same header."""
        self._rewrite(rows)
        self._rows = list(rows)
        self.done = {str(r[self.key]) for r in rows}

    def finish(self, result: dict) -> dict:
        """Every row is on disk as soon as it is appended; the header gets ``rows_sha256`` (the hash
        of the rows as written, checked whenever the file is read), and the lock is let go."""
        try:
            self._seal()
        finally:
            self.close()
        return result

    def _seal(self) -> None:
        """Rewrite the file with ``rows_sha256`` in its header: its rows copied as they are on disk."""
        body = hashlib.sha256()
        with open(self.path, "rb") as src:
            src.readline()
            while block := src.read(1 << 20):
                body.update(block)
        self.header = {**self.header, ROWS_HASH: body.hexdigest()}
        with open(self.path, "rb") as src, replacing(self.path) as out:
            src.readline()
            out.write(self._head().encode("utf-8"))
            shutil.copyfileobj(src, out)


def claim(path: Path) -> FileLock:
    """The lock of results file ``path``, held by this process from now on (``release`` it), or a
    one-line ResultsError naming the process that writes the file."""
    try:
        return FileLock(path).acquire(wait=False)
    except LockBusy as e:
        raise ResultsError(f"{path} is being written by {e.holder}: wait for that run to end (rerunning it then "
                           "resumes it), or choose another --out") from None
