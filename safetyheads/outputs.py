"""Output paths checked before any model loads or any work is done.

Every command that writes calls ``check_output`` on each of its outputs first, so that a path in a
read-only folder, under a file, naming a folder, naming one of the command's inputs or another of
its outputs, or naming an existing file the command would replace, fails with a one-line error
instead of a traceback after the model has loaded (or after all the work is done).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping

from .errors import SafetyheadsError

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
