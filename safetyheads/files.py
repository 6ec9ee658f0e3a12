"""Files on disk: the cache folder, the sha256 of a file or of a folder's weights, and replacing a
file durably.

A leaf of the library (nothing here loads a model), so that data sets, the result store, the
model organisms and the model loader can all hash a file without importing one another.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

# Weights in these formats are pickles: never loaded (only safetensors and GGUF are read).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def cache_dir() -> Path:
    """``$SAFETYHEADS_CACHE``, else ``$XDG_CACHE_HOME/safetyheads``, else ``~/.cache/safetyheads``."""
    if os.environ.get("SAFETYHEADS_CACHE"):
        return Path(os.environ["SAFETYHEADS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "safetyheads"


def sha256_file(path: "str | Path", chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_fingerprint(folder: Path) -> str:
    """sha256 over the folder's safetensors files (name and content), cached by size and mtime."""
    files = sorted(folder.glob("*.safetensors"))
    stat_key = hashlib.sha256(
        json.dumps([[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]).encode()
    ).hexdigest()
    memo = cache_dir() / "fingerprints" / stat_key
    if memo.is_file():
        return memo.read_text().strip()
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + sha256_file(f).encode())
    digest = h.hexdigest()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(digest)
    except OSError:
        pass  # a read-only cache only costs re-hashing
    return digest


def write_durably(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash or power loss leaves the old file or the new one,
    never an empty or short one: the data is synced before the rename, the rename before returning."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # a platform whose folders cannot be opened (Windows): the rename is all it has
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
