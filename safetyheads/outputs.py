"""Output paths checked before any model loads or any work is done.

Every command that writes calls ``check_output`` on each of its outputs first, so that a path in a
read-only folder, under a file, naming a folder, naming one of the command's inputs or another of
its outputs, or naming an existing file the command would replace, fails with a one-line error
instead of a traceback after the model has loaded (or after all the work is done). Only a regular
file or a new path is an output: a named pipe, a socket or a device is refused (reading a pipe to
check it would wait for ever). ``claim_output`` then takes the lock of an output the command writes
row by row, so that a second command aimed at it is refused before its model loads.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable, Mapping

from .errors import SafetyheadsError
from .locks import FileLock, LockBusy, release_all

# Where results go without --out (relative to the working folder).
DEFAULT_OUT_DIR = Path("safetyheads-out")


class OutputPathError(SafetyheadsError, OSError):
    """An output path that cannot or must not be written."""


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest ancestor that exists (the folder a later mkdir starts from)."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_writable_folder(folder: "str | Path", flag: str, shown: "str | Path | None" = None) -> None:
    """``folder`` (created later if missing) can be made and written in: the closest existing part
    of it is a folder this process may write in."""
    shown = shown if shown is not None else folder
    base = _nearest_existing(Path(folder))
    if not base.is_dir():
        raise OutputPathError(f"{flag} {shown}: {base} is a file, not a folder; choose another {flag}")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {shown}: cannot write in {base} (permission denied); choose another {flag}")


def same_path(a: "str | Path", b: "str | Path") -> bool:
    """Whether two paths name one file or folder (also through links and other spellings)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return Path(os.path.abspath(a)).resolve() == Path(os.path.abspath(b)).resolve()


def check_output(
    path: "str | Path",
    flag: str = "--out",
    *,
    inputs: Mapping[str, "str | Path | None"] = {},
    others: Mapping[str, "str | Path | None"] = {},
    overwrite: bool = False,
    resumable: bool = False,
    folder: bool = False,
    replaceable: Callable[[Path], bool] | None = None,
) -> Path:
    """Refuse an output path that cannot or must not be written; returns it as a Path.

    ``inputs`` and ``others`` map a flag to a path (None: not given): the output must be none of
    the inputs and none of the command's other outputs. An existing file is replaced only with
    ``overwrite``, or when ``resumable`` (a results file the command resumes; it checks the header
    itself), or when ``replaceable(path)`` says the command wrote it before. ``folder``: the output
    is a folder (an existing one must be empty unless ``overwrite``).
    """
    out = Path(path)
    if str(path).strip() == "":
        raise OutputPathError(f"{flag} is empty: give a path")
    if folder:
        if out.exists() and not out.is_dir():
            raise OutputPathError(f"{flag} {out} is a file, not a folder; choose another {flag}")
    elif out.is_dir():
        raise OutputPathError(f"{flag} {out} is a folder; give a file name inside it or choose another {flag}")
    else:
        check_not_special(out, flag)
    check_writable_folder(out if folder else out.parent, flag, shown=out)
    if out.exists() and not os.access(out, os.W_OK | (os.X_OK if folder else 0)):
        raise OutputPathError(f"{flag} {out} is read-only; choose another {flag}")
    for name, other in inputs.items():
        if other is not None and str(other) != "" and same_path(out, other):
            raise OutputPathError(f"{flag} {out} must differ from {name} (which is kept as it is): choose another {flag}")
    for name, other in others.items():
        if other is not None and str(other) != "" and same_path(out, other):
            raise OutputPathError(f"{flag} and {name} both name {out}; give them different paths")
    if folder:
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            raise OutputPathError(f"{flag} {out} exists and is not empty: pass --overwrite or choose another {flag}")
    elif out.exists() and not (overwrite or resumable or (replaceable is not None and replaceable(out))):
        raise OutputPathError(f"{flag} {out} exists: pass --overwrite to replace it or choose another {flag}")
    return out


SPECIAL_FILES = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                 (stat.S_ISBLK, "a block device"))


def check_not_special(path: Path, flag: str) -> None:
    """``path`` (through links) is a regular file, or nothing yet: anything else is refused with one
    line, without opening it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # nothing there yet (or a dangling link, which the write replaces)
    for test, what in SPECIAL_FILES:
        if test(mode):
            raise OutputPathError(f"{flag} {path} is {what}, not a regular file; choose another {flag}")


def claim_output(path: "str | Path", flag: str = "--out") -> None:
    """Hold the lock of output ``path`` until ``release_outputs`` (the command line calls it when a
    command ends): another process writing it refuses this one now, with one line naming it, before
    any model loads. A path whose folder does not exist yet is left to the writer to lock (making the
    folder now would leave it behind if the command fails)."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    try:
        _claimed.append(FileLock(path).acquire(wait=False))
    except LockBusy as e:
        raise OutputPathError(f"{flag} {path} is being written by {e.holder}: wait for that run to end (rerunning "
                              f"it then resumes it), or choose another {flag}") from None


_claimed: list[FileLock] = []


def release_outputs() -> None:
    """Let go of every output lock this process holds (the end of a command)."""
    _claimed.clear()
    release_all()
