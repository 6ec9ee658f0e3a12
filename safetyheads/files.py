"""Files on disk: the cache folder, the sha256 of a file or of a folder's weights, replacing a file
atomically and durably, and naming why a write failed.

A leaf of the library (nothing here loads a model), so that data sets, the result store, the
model organisms and the model loader can all hash a file without importing one another.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import secrets
from pathlib import Path
from typing import IO, Iterator

# Weights in these formats are pickles: never loaded (only safetensors and GGUF are read).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# What a failed write means, in the words an error message should use (the rest: the OS's own words).
WRITE_FAILURES = {
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this file system or limit",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def cache_dir() -> Path:
    """``$SAFETYHEADS_CACHE``, else ``$XDG_CACHE_HOME/safetyheads``, else ``~/.cache/safetyheads``."""
    if os.environ.get("SAFETYHEADS_CACHE"):
        return Path(os.environ["SAFETYHEADS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "safetyheads"


def write_failure(e: BaseException) -> "OSError | None":
    """The OSError behind ``e`` (itself, or what it was raised from or during) whose errno says why a
    write failed (WRITE_FAILURES); None when there is none. Libraries (datasets, pyarrow) wrap the OS
    error in their own types, which must not be reported as a problem of the data."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in WRITE_FAILURES:
            return e
        e = e.__cause__ or e.__context__
    return None


def failure_reason(e: OSError) -> str:
    """A few words saying why an OS call failed: 'disk full', 'read-only file system', ..."""
    return WRITE_FAILURES.get(e.errno) or (e.strerror or type(e).__name__).lower()


def sha256_file(path: "str | Path", chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _identity(f: Path) -> list:
    """What changes whenever a file's content can have changed: its path, size and modification time,
    and also its device, inode and status-change time. The last two catch a file swapped in with its
    old mtime kept (``cp -p``, ``rsync -a``, ``tar -x`` set the mtime, but the kernel sets the ctime
    to the time of the copy, and a new file has a new inode)."""
    st = f.stat()
    return [str(f.resolve()), st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, st.st_ctime_ns]


def weights_fingerprint(folder: Path) -> str:
    """sha256 over the folder's safetensors files (name and content), remembered in the cache under
    the files' identities (``_identity``); re-hashed whenever any of them differs."""
    files = sorted(folder.glob("*.safetensors"))
    before = [_identity(f) for f in files]
    stat_key = hashlib.sha256(json.dumps(before).encode()).hexdigest()
    memo = cache_dir() / "fingerprints" / stat_key
    try:
        remembered = memo.read_text().strip()
    except OSError:
        remembered = ""
    if len(remembered) == 64 and all(c in "0123456789abcdef" for c in remembered):
        return remembered
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + sha256_file(f).encode())
    digest = h.hexdigest()
    if [_identity(f) for f in files] != before:
        return digest  # a file changed while it was hashed: remembering the digest under its old identity would lie
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_durably(memo, digest)
    except OSError:
        pass  # a read-only or full cache only costs re-hashing
    return digest


def _create_unique(path: Path) -> tuple[int, Path]:
    """A new, empty file beside ``path`` with a name no one else uses, opened for writing: created
    exclusively and never through a link (O_EXCL fails on any existing name, a planted link included)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp  # the umask applies, as for any new file
        except FileExistsError:
            continue
        except OSError as e:  # named by the file it was for: the temporary name means nothing to anyone
            raise type(e)(e.errno, e.strerror, str(path)) from None
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(path))


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform whose folders cannot be opened (Windows): the rename is all it has
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path: "str | Path", text: bool = False) -> Iterator[IO]:
    """``with replacing(path) as f: f.write(...)``: ``path`` is replaced by what was written, or not
    at all. Written to a unique temporary file in the same folder (created exclusively, never
    through a link), synced, then renamed over ``path`` and the folder synced: a crash, a kill, a full
    disk or an exception leaves the old file or the new one, never an empty or short one (a kill -9
    can leave the hidden ``.<name>.<random>.tmp`` beside it). The new file keeps the old one's
    permissions. ``text``: a UTF-8 text file (else binary). An OS error names ``path``, not the
    temporary file."""
    path = Path(path)
    fd, tmp = _create_unique(path)
    raw = os.fdopen(fd, "wb")
    f = io.TextIOWrapper(raw, encoding="utf-8", newline="") if text else raw
    try:
        with contextlib.suppress(OSError):
            os.fchmod(raw.fileno(), os.stat(path).st_mode & 0o7777)
        yield f
        f.flush()
        os.fsync(raw.fileno())
        f.close()
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(Exception):
            f.close()  # flushing again may fail the same way: the file is removed either way
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None and e.filename in (None, str(tmp)):
            raise type(e)(e.errno, e.strerror, str(path)) from None
        raise
    _sync_folder(path.parent)


def write_durably(path: Path, data: "str | bytes") -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8) through ``replacing``: a crash, a kill
    or a full disk leaves the old file or the new one, never an empty or short one."""
    with replacing(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
