"""One writer per file: an exclusive lock on ``<file>.lock`` beside the file a process writes.

The lock is ``flock`` on an open descriptor, so the OS releases it when its process ends, however it
ends (a crash, ``kill -9``, a full disk): a lock whose process is gone is taken over by the next
process that asks, with nothing to delete by hand. The holder writes its pid, host and start time
into the lock file, so that a process refused (or made to wait) can say who holds it. The last
holder deletes the lock file as it lets go; a process that was waiting on the deleted file then
finds it gone and locks a fresh one (``_lock_fd``'s inode check), so the lock never splits in two.

Locks are per process and re-entrant: asking for a lock this process holds counts once more, and
the lock goes at the matching ``release`` (a second descriptor of the same file would make the
process wait for itself). Linux and macOS; where ``fcntl`` is missing (Windows) locking does
nothing, and one writer per file is the user's care.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import SafetyheadsError
from .files import failure_reason

try:
    import fcntl
except ImportError:  # Windows: see the module docstring
    fcntl = None

LOCK_SUFFIX = ".lock"


class LockError(SafetyheadsError, OSError):
    """A lock file that cannot be made (a read-only folder, a link planted in its place, ...)."""


class LockBusy(SafetyheadsError):
    """The lock is held by another process (``holder`` says which, in words)."""

    def __init__(self, target: Path, holder: str):
        super().__init__(f"{target} is being written by {holder}")
        self.target, self.holder = target, holder


@dataclass(eq=False)
class _Held:
    fd: int
    count: int
    path: Path


_HELD: dict[str, _Held] = {}  # lock file (its folder resolved) -> the descriptor this process holds it by


def lock_path(target: "str | Path") -> Path:
    """The lock file of ``target``: ``<target>.lock`` beside it."""
    target = Path(target)
    return target.with_name(target.name + LOCK_SUFFIX)


class FileLock:
    """``with FileLock(path):`` holds ``path``'s lock, waiting for another process that holds it;
    ``FileLock(path).acquire(wait=False)`` raises ``LockBusy`` instead of waiting."""

    def __init__(self, target: "str | Path"):
        self.target = Path(target)
        self.path = lock_path(self.target)
        self._key = os.path.join(os.path.realpath(self.path.parent), self.path.name)
        self._held: _Held | None = None  # what this object counts in _HELD while it holds the lock

    def acquire(self, wait: bool = True, on_wait: Callable[[str], None] | None = None) -> "FileLock":
        """Take the lock. Held by another process: ``wait`` for it (calling ``on_wait(holder)`` first),
        or raise ``LockBusy``."""
        if self._held is not None and _HELD.get(self._key) is self._held:
            return self
        held = _HELD.get(self._key)
        if held is not None:
            held.count += 1
        else:
            held = _HELD[self._key] = _Held(self._lock_fd(wait, on_wait), 1, self.path)
        self._held = held
        return self

    @property
    def held(self) -> bool:
        return self._held is not None and _HELD.get(self._key) is self._held

    def release(self) -> None:
        """Let go of the lock (once this process's last holder of it lets go: see the module docstring)."""
        if not self.held:
            self._held = None
            return
        held, self._held = self._held, None
        held.count -= 1
        if not held.count:
            del _HELD[self._key]
            _unlock(held)

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: BLE001 - at interpreter exit the OS lets go of the lock anyway
            pass

    def _lock_fd(self, wait: bool, on_wait: Callable[[str], None] | None) -> int:
        """A descriptor of the lock file, locked by this process."""
        if fcntl is None:
            return -1
        while True:
            fd = self._open()
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    who = holder(fd)
                    if not wait:
                        raise LockBusy(self.target, who) from None
                    if on_wait is not None:
                        on_wait(who)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                if self._still_named(fd):
                    _describe_self(fd)
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # its last holder deleted it while this process waited: lock the file there now

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            return os.open(self.path, flags, 0o644)
        except OSError as e:
            why = "a symbolic link is in its place" if e.errno == errno.ELOOP else failure_reason(e)
            raise LockError(f"cannot lock {self.target}: cannot open its lock file {self.path} ({why})") from None

    def _still_named(self, fd: int) -> bool:
        """Whether the locked file is still the one at the lock path (not deleted or replaced meanwhile)."""
        try:
            there = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)


def _unlock(held: _Held) -> None:
    if held.fd < 0:
        return
    try:
        os.unlink(held.path)  # while still locked: see the module docstring
    except OSError:
        pass  # gone already, or a read-only folder: a lock file left behind locks nothing
    os.close(held.fd)


def release_all() -> None:
    """Let go of every lock this process holds: the end of a command, whatever held them."""
    while _HELD:
        _unlock(_HELD.popitem()[1])


def _describe_self(fd: int) -> None:
    """Write who holds the lock into it (what a refused or waiting process reports)."""
    since = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}).encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, record + b"\n", 0)
    except OSError:
        pass  # a full disk: the lock holds all the same, only its holder goes unnamed


def holder(fd: int) -> str:
    """Who holds the lock whose file ``fd`` is open, in words ("process 123 on host x since ...")."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        pid, host, since = info["pid"], info["host"], info["since"]
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"  # it has only just taken the lock, and not yet written its name
    return f"process {pid} on {host} (since {since})"
