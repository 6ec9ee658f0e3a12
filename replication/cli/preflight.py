"""Checks before a run: whatever can refuse it is looked at before anything is loaded, computed or
written (unknown artefacts, expected values that do not parse, a store or output folder that is a file
or not writable, a missing optional module, an unknown device). Under ``accelerate launch`` the folders are
checked by the main process only, the one that uses them."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from safetyheads.distributed import is_main
from safetyheads.errors import SafetyheadsError
from safetyheads.models import resolve_device

from ..artefacts import get_artefact
from ..diff.expected import load_expected
from ..results.paths import check_folder, generated_root
from ..results.write import OUTPUT_FILES


def check_optional(names: list[str]) -> None:
    """The optional modules the artefacts import (matplotlib for the figures), imported now rather
    than after an hour of computing."""
    needs: dict[str, list[str]] = {}
    for n in names:
        for module in get_artefact(n).needs:
            needs.setdefault(module, []).append(n)
    for module, users in needs.items():
        try:
            if module == "matplotlib":  # as the figures use it: no display, the Agg backend
                importlib.import_module("matplotlib").use("Agg")
                importlib.import_module("matplotlib.pyplot")
            else:
                importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - a broken install fails in many ways; each means the same here
            raise SafetyheadsError(f"{', '.join(users)} need(s) {module}, which does not import here ({type(e).__name__}: "
                                   f"{e}): install the harness's extra, `pip install '.[replication]'`, or run "
                                   "through nox") from None


def preflight(profile: str, names: list[str], store_root: Path, *, dry_run: bool = False, device: str = "auto",
              out_root: Path | None = None) -> None:
    """Refuse a run now for anything that would stop it later: unknown artefacts, expected-value
    files that do not parse or hold values of the wrong type, a store or output folder that is a
    file or not writable, a missing optional dependency, an unknown device. Writes nothing."""
    for n in names:
        get_artefact(n)
    for n in names:
        load_expected(profile, n)
    # under `accelerate launch` the main process alone reads and writes the store and the outputs: the folders
    # need only be there for it (on the first machine of several)
    if is_main():
        check_folder(store_root, "the store (--store or $SAFETYHEADS_STORE)", write=not dry_run)
    if dry_run:  # a plan reads the store and writes nothing
        return
    check_optional(names)
    resolve_device(device)  # raises ModelLoadError (a SafetyheadsError) naming what to use instead
    if not is_main():
        return
    out_root = Path(out_root or generated_root())
    check_folder(out_root, "the output folder (paper_tables/generated or $SAFETYHEADS_GENERATED)")
    for n in names:
        folder = out_root / profile / n
        check_folder(folder, f"the output folder of {n}")
        for f in OUTPUT_FILES:
            if (folder / f).is_dir():
                raise SafetyheadsError(f"{folder / f} is a folder where {n} writes a file: move it away")
            if (folder / f).exists() and not os.access(folder / f, os.W_OK):
                raise SafetyheadsError(f"{folder / f} is not writable by this user: {n} replaces it")
