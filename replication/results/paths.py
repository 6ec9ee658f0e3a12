"""Where the harness reads and writes: the checkout, paper_tables/, and the generated outputs' folder,
which ``$SAFETYHEADS_GENERATED`` moves out of the source tree (the container sets it to its bind-mounted
output folder, since the image's source tree is read-only to its user). The variable is read each time
the folder is asked for, never at import, so that whoever sets it before a run is heard."""

from __future__ import annotations

import os
from pathlib import Path

from safetyheads.errors import SafetyheadsError

ROOT = Path(__file__).resolve().parents[2]
TABLES = ROOT / "paper_tables"
GENERATED_ENV = "SAFETYHEADS_GENERATED"


def generated_root() -> Path:
    """The folder of the generated outputs: ``$SAFETYHEADS_GENERATED``, else paper_tables/generated."""
    where = os.environ.get(GENERATED_ENV)
    return Path(where).resolve() if where else TABLES / "generated"


def in_source_tree() -> bool:
    """Whether the generated outputs are paper_tables/generated (then CLAIMS.md and the README are rewritten
    in place; else CLAIMS.md goes beside the outputs)."""
    return generated_root() == TABLES / "generated"


def shown(path: Path) -> str:
    """A path as a user would type it: relative to the checkout when inside it."""
    path = Path(path)
    return str(path.relative_to(ROOT)) if path.is_absolute() and path.is_relative_to(ROOT) else str(path)


def check_folder(path: Path, what: str, write: bool = True) -> None:
    """``path`` is a folder, or can be made one, and (``write``) this user may write there. Creates nothing."""
    # "..": after a part that does not exist yet, the OS cannot resolve it, mkdir would make that part
    path = Path(os.path.abspath(path))
    if path.exists():
        if not path.is_dir():
            raise SafetyheadsError(f"{what} {path} is a file, not a folder: point it at a folder (or a path that "
                                   "does not exist yet)")
        if write and not os.access(path, os.W_OK | os.X_OK):
            raise SafetyheadsError(f"{what} {path} is not writable by this user: point it at a folder you can write")
        return
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SafetyheadsError(f"{what} {path} cannot be created: {parent} is a file")
    if write and not os.access(parent, os.W_OK | os.X_OK):
        raise SafetyheadsError(f"{what} {path} cannot be created: {parent} is not writable by this user")
