"""A content-addressed store for intermediate results (per-query Ships, Sahara scoreboards,
completions, verdicts), keyed by everything that determines them.

An entry is a folder ``<root>/<kind>/<key>/`` where ``key`` is the sha256 of the canonical JSON of
``{"kind", "version", "spec"}``. The spec must name everything that decides the result (model
weights hash, dataset hash and the prompts used, ablation, decoding, ...); ``version`` is bumped by
the code that computes a kind when its output would change, so old entries stop matching instead of
being silently reused. Library versions and timestamps stay out of the key (they go in ``meta``),
so a rerun after an unrelated change is instant.

Work in progress is appended to ``rows.jsonl`` one unit at a time (a prompt, a Sahara step), so a
killed run resumes from the rows already there; ``result.json`` is written last, atomically, and
marks the entry complete. A unit too large for a JSON row (an array of hidden states) can go in a
side file of the entry's folder, its row appended once the file is written. An entry is one of the
two sinks of ``safetyheads.jobs`` (``rows``, ``append``, ``rewrite``, ``finish``), which resume it.

The key hashes the inputs; ``result.sha256``, written just before ``result.json``, holds the sha256
of its bytes, checked on every read: an entry edited after it was computed is refused, not read as
if computed. Entries finished before content hashes were recorded have no ``result.sha256`` and are
read as they are.

One process computes an entry at a time: it holds the entry's lock (``Entry.computing``, the file
``<key>.lock`` beside the entry's folder) from reading what is done to finishing it. Another process
asking for the entry meanwhile (a second harness run on the same store) waits, then reads the
finished entry; a lock whose process died is taken over, and its rows resumed.

``<root>/index.jsonl`` gets a line ``{"kind", "key", "what"}`` when an entry given a description
(``what``, e.g. "Sahara UA aligned maliciousinstruct (16 queries, 5 steps)") is created, so a person
finds an entry's folder by what it holds (``grep Sahara index.jsonl``); entries made before the
index existed are not in it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterator

from .errors import SafetyheadsError
from .files import write_durably
from .locks import FileLock

INDEX = "index.jsonl"
# The files of an entry's folder (side files take other names).
ENTRY_FILES = ("spec.json", "rows.jsonl", "result.json", "result.sha256")


class StoreError(SafetyheadsError, ValueError):
    """A store entry that cannot be read or does not match its key."""


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(o):
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON-serialisable in a store spec: {type(o).__name__}")


def store_key(kind: str, spec: dict, version: int = 1) -> str:
    return hashlib.sha256(canonical({"kind": kind, "version": version, "spec": spec}).encode()).hexdigest()


class Entry:
    def __init__(self, root: Path, kind: str, spec: dict, version: int, what: str | None = None):
        self.kind, self.spec, self.version, self.what = kind, json.loads(canonical(spec)), version, what
        self.key = store_key(kind, self.spec, version)
        self._index = root / INDEX
        self.path = root / kind / self.key[:2] / self.key
        self._spec_file = self.path / "spec.json"
        self._rows_file = self.path / "rows.jsonl"
        self._result_file = self.path / "result.json"
        self._hash_file = self.path / "result.sha256"

    @contextlib.contextmanager
    def computing(self, on_wait: Callable[[str], None] | None = None) -> Iterator["Entry"]:
        """Hold this entry's lock while computing it (``with entry.computing(): ...``). Another
        process holding it is waited for, after calling ``on_wait(holder)`` with who it is; the entry
        is then usually done, and the caller reads it instead of computing (check ``done`` inside)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(self.path).acquire(wait=True, on_wait=on_wait):
            yield self

    def _ensure(self) -> None:
        if not self._spec_file.exists():
            self.path.mkdir(parents=True, exist_ok=True)
            write_durably(self._spec_file,
                          json.dumps({"kind": self.kind, "version": self.version, "spec": self.spec}, indent=1))
            if self.what:
                with open(self._index, "a") as f:
                    f.write(json.dumps({"kind": self.kind, "key": self.key, "what": self.what}) + "\n")

    @property
    def done(self) -> bool:
        return self._result_file.exists()

    def rows(self) -> list[dict]:
        """Rows appended so far; a last line cut off by a crash is dropped."""
        if not self._rows_file.exists():
            return []
        out = []
        for line in self._rows_file.read_text().splitlines(keepends=True):
            if not line.endswith("\n"):
                break
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return out

    def append(self, rows: list[dict]) -> None:
        self._ensure()
        with open(self._rows_file, "a") as f:
            f.write("".join(json.dumps(r, default=_jsonable) + "\n" for r in rows))
            f.flush()
            os.fsync(f.fileno())

    def rewrite(self, rows: list[dict]) -> None:
        """Replace the rows (e.g. to drop a unit a crash left half-written before resuming)."""
        if not rows and not self._rows_file.exists():
            return  # nothing to replace: a fresh entry stays unmade until its first append
        self._ensure()
        write_durably(self._rows_file, "".join(json.dumps(r, default=_jsonable) + "\n" for r in rows))

    def side_file(self, name: str) -> Path:
        """A file of this entry besides its rows and result (an array too large for JSON), in its
        folder, which is made; the caller writes it (atomically) and removes it when done."""
        if not name or "/" in name or name.startswith(".") or name in ENTRY_FILES:
            raise StoreError(f"bad side-file name {name!r}")
        self._ensure()
        return self.path / name

    def result(self) -> dict:
        """The finished result, checked against the sha256 recorded when it was written. An entry
        without ``result.sha256`` was written before content hashes were recorded: it is read
        unchecked (recomputing hours of work to get a hash would gain nothing)."""
        try:
            data = self._result_file.read_bytes()
            result = json.loads(data)
        except (OSError, ValueError) as e:
            raise StoreError(f"store entry {self.path} has no readable result ({e}): delete the folder to recompute") from None
        recorded = self._recorded_hash()
        if recorded is not None and hashlib.sha256(data).hexdigest() != recorded:
            raise StoreError(f"store entry {self.path} ({self.what or self.kind}) was changed after it was computed "
                             "(result.json does not match the sha256 in result.sha256): delete that folder to "
                             "recompute it")
        return result

    def _recorded_hash(self) -> "str | None":
        """The sha256 in ``result.sha256`` (None: no such file); a damaged one matches nothing."""
        try:
            return self._hash_file.read_text().strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):
            return "unreadable"

    def finish(self, result: dict) -> dict:
        """Write the result (what marks the entry complete), its sha256 first."""
        self._ensure()
        data = json.dumps(result, default=_jsonable).encode()
        write_durably(self._hash_file, hashlib.sha256(data).hexdigest() + "\n")
        write_durably(self._result_file, data)
        return result


class Store:
    """``Store(root).entry(kind, spec, version)``: the entry for that computation (maybe unfinished)."""

    def __init__(self, root: "str | Path | None" = None):
        if root is None:
            env = os.environ.get("SAFETYHEADS_STORE")
            if env:
                root = env
            else:
                from .files import cache_dir

                root = cache_dir() / "store"
        self.root = Path(root)

    def entry(self, kind: str, spec: dict, version: int = 1, what: str | None = None) -> Entry:
        """``what``: a description for the index (see the module docstring)."""
        if not kind or "/" in kind or kind.startswith("."):
            raise StoreError(f"bad store kind {kind!r}")
        return Entry(self.root, kind, spec, version, what)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"
