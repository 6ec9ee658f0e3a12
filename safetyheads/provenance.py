"""Provenance records: what produced a result file, so it can be traced and re-run."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from functools import lru_cache
from importlib.metadata import distribution, version
from pathlib import Path

import torch

from ._version import __version__


def library_version() -> str:
    try:
        return version("safetyheads")
    except Exception:
        return __version__


def _git(folder: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@lru_cache(maxsize=1)
def git_info() -> dict:
    """Commit of the source tree this package runs from (or was pip-installed from), and whether it was dirty."""
    if os.environ.get("SAFETYHEADS_GIT_COMMIT"):
        return {"git_commit": os.environ["SAFETYHEADS_GIT_COMMIT"], "git_dirty": None}
    stamp = Path(__file__).resolve().parent / "BUILD_COMMIT"  # written by the Docker build: the image has no .git
    if stamp.is_file() and stamp.read_text().strip():
        commit = stamp.read_text().strip()  # "<sha>" or "<sha>-dirty" (built from a tree with uncommitted changes)
        return {"git_commit": commit.removesuffix("-dirty"), "git_dirty": commit.endswith("-dirty")}
    candidates = [Path(__file__).resolve().parent]
    try:  # a `pip install .` copy remembers where it came from
        direct = distribution("safetyheads").read_text("direct_url.json")
        if direct:
            info = json.loads(direct)
            if info.get("vcs_info", {}).get("commit_id"):
                return {"git_commit": info["vcs_info"]["commit_id"], "git_dirty": None}
            if info.get("url", "").startswith("file://"):
                candidates.append(Path(info["url"][len("file://"):]))
    except Exception:
        pass
    for folder in candidates:
        commit = _git(folder, "rev-parse", "HEAD")
        if commit:
            dirty = _git(folder, "status", "--porcelain", "--untracked-files=no")
            return {"git_commit": commit, "git_dirty": bool(dirty)}
    return {"git_commit": None, "git_dirty": None}


def model_source(model) -> dict:
    src = getattr(model, "safetyheads_source", None)
    if src:
        return dict(src)
    cfg = model.config
    return {"model": getattr(cfg, "_name_or_path", None) or type(model).__name__, "kind": "in-memory",
            "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """The CPU's name and the widest SIMD level torch dispatches to on it. Float results of the same
    code can differ in the last bits between levels (AVX2 vs AVX512 kernels sum in another order), so
    a rebuilt organism is bit-identical only on the same level; speed differs too."""
    name = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = None
    return {"cpu_model": name or platform.processor() or platform.machine(), "cpu_capability": capability}


def provenance(model=None, **extra) -> dict:
    import transformers  # heavy (~0.8 s): `import safetyheads` stays fast

    rec = {
        "library": "safetyheads",
        "version": library_version(),
        **git_info(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "host": platform.machine(),
        "cpu_capability": cpu_info()["cpu_capability"],
    }
    if model is not None:
        rec["model"] = model_source(model)
    rec.update(extra)
    return rec
