"""`nox -s lint`: ruff and the import contracts (pyproject.toml) pass on the tree, and the contracts
fail on a planted upward import or cycle, in a copy of the code. Skipped where ruff or
import-linter is not installed (the lint session installs both, from requirements/lint.lock)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str | None:
    """The console script beside this Python (a venv's bin/), else on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.is_file() else shutil.which(name)


RUFF, LINT_IMPORTS = _tool("ruff"), _tool("lint-imports")
pytestmark = pytest.mark.skipif(RUFF is None or LINT_IMPORTS is None or importlib.util.find_spec("importlinter") is None,
                                reason="ruff and import-linter are not installed (nox -s lint installs them)")


def _run(*cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the code under cwd, not another checkout
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return _run(LINT_IMPORTS, "--no-cache", cwd=cwd)


@pytest.fixture()
def copy(tmp_path) -> Path:
    """The code and the lint configuration, without data files."""
    for folder in ("safetyheads", "replication", "tools"):
        shutil.copytree(ROOT / folder, tmp_path / folder,
                        ignore=lambda d, names: [n for n in names if not n.endswith(".py") and not (Path(d) / n).is_dir()
                                                 or n == "__pycache__"])
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def _plant(path: Path, code: str) -> None:
    path.write_text(path.read_text() + "\n\n" + code)


def test_the_tree_passes_ruff():
    out = _run(RUFF, "check", "--no-cache", ".", cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_tree_keeps_the_import_contracts():
    out = _lint_imports(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "One-way layers KEPT" in out.stdout and "No import cycle" in out.stdout
    assert "The harness in stages KEPT" in out.stdout


def test_the_copy_keeps_the_contracts_too(copy):
    out = _lint_imports(copy)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_planted_upward_import_breaks_the_layers(copy):
    # inside a function, where a lazy import used to hide a dependency
    _plant(copy / "safetyheads" / "arch.py", "def _planted():\n    from .ships import kl_from_logits\n\n    return kl_from_logits\n")
    out = _lint_imports(copy)
    assert out.returncode != 0
    assert "One-way layers BROKEN" in out.stdout
    assert "safetyheads.arch -> safetyheads.ships" in out.stdout


def test_an_import_of_the_package_root_from_below_breaks_the_layers(copy):
    _plant(copy / "safetyheads" / "provenance.py", "def _planted():\n    import safetyheads\n\n    return safetyheads\n")
    out = _lint_imports(copy)
    assert out.returncode != 0
    assert "One-way layers BROKEN" in out.stdout and "safetyheads.provenance -> safetyheads " in out.stdout


def test_a_planted_upward_import_inside_the_harness_breaks_its_stages(copy):
    # compute (below) reading results (above): the stages of replication/, not the library's layers
    _plant(copy / "replication" / "compute" / "steps.py",
           "def _planted():\n    from ..results.paths import generated_root\n\n    return generated_root\n")
    out = _lint_imports(copy)
    assert out.returncode != 0
    assert "One-way layers KEPT" in out.stdout and "The harness in stages BROKEN" in out.stdout
    assert "replication.compute.steps -> replication.results.paths" in out.stdout


def test_a_planted_cycle_between_siblings_of_one_layer_breaks_no_cycles(copy):
    # the modules of commands/ share one layer: the layers contract allows any import among them, the
    # cycle contract must still catch a loop (parser imports every subcommand module)
    _plant(copy / "safetyheads" / "commands" / "generate.py", "def _planted():\n    from . import parser\n\n    return parser\n")
    out = _lint_imports(copy)
    assert out.returncode != 0
    assert "One-way layers KEPT" in out.stdout
    assert "No import cycle (package __init__ modules included) BROKEN" in out.stdout
    assert "safetyheads.commands.generate -> safetyheads.commands.parser" in out.stdout


def test_a_planted_unused_import_fails_ruff(copy):
    _plant(copy / "safetyheads" / "arch.py", "import json\n")
    out = _run(RUFF, "check", "--no-cache", "safetyheads/arch.py", cwd=copy)
    assert out.returncode != 0 and "F401" in out.stdout
