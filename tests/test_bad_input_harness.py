"""Bad input to the replication harness (`python -m replication`): every case ends with exit status
2 and one line `replication: error: ...` on stderr, no traceback, and no file created, changed or
deleted, in the harness's folders or in the checkout's paper_tables/. Plus the environment the
harness runs in: nox's reproduce sessions install the hashed lock, and the image's code is read-only
to the user that runs it."""

from __future__ import annotations

import ast
import gzip
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # replication/ lives beside the package; appended so the installed safetyheads wins

from replication.__main__ import main  # noqa: E402
from replication.artefacts import ARTEFACTS  # noqa: E402
from replication.cli import run as cli_run  # noqa: E402
from replication.diff import expected as diff_expected  # noqa: E402
from replication.diff import verdicts as diff_verdicts  # noqa: E402

COMMITTED_GENERATED = ROOT / "paper_tables" / "generated" / "ci"
COMMITTED_EXPECTED = ROOT / "paper_tables" / "expected"
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root writes through any permission bits


def snapshot(*roots: Path) -> dict:
    """path -> sha256 of every file (or "dir") under the roots: what a case must leave as it was."""
    out = {}
    for root in roots:
        if root.is_file():
            out[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
        elif root.is_dir():
            out[str(root)] = "dir"
            for p in sorted(root.rglob("*")):
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


class Harness:
    """The harness pointed at a scratch copy of the ci results and expected values, with a store
    that must stay empty; running an artefact is forbidden (a bad input must be refused first)."""

    def __init__(self, tmp: Path, monkeypatch):
        self.tmp, self.mp = tmp, monkeypatch
        self.generated, self.expected, self.store = tmp / "generated", tmp / "expected", tmp / "store"
        shutil.copytree(COMMITTED_GENERATED, self.generated / "ci")
        shutil.copytree(COMMITTED_EXPECTED, self.expected)
        monkeypatch.setenv("SAFETYHEADS_GENERATED", str(self.generated))
        monkeypatch.setattr(diff_expected, "EXPECTED", self.expected)
        monkeypatch.setenv("SAFETYHEADS_STORE", str(self.store))
        monkeypatch.delenv("SAFETYHEADS_DEBUG", raising=False)
        self.computed = []

        def forbidden(ctx, name, *a, **k):
            self.computed.append(name)
            raise AssertionError(f"computing {name} started before the bad input was refused")

        monkeypatch.setattr(cli_run, "run_artefact", forbidden)

    def metric_file(self, profile: str, artefact: str) -> Path:
        return self.expected / profile / f"{artefact}.json"

    def edit_json(self, path: Path, change) -> None:
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data, indent=1))


@pytest.fixture
def harness(tmp_path, monkeypatch):
    return Harness(tmp_path, monkeypatch)


def first_metric(data: dict, kind: str) -> dict:
    return next(m for m in data["metrics"].values() if m["kind"] == kind)


# ------------------------------------------------------------------------------------------------
# Each case: (id, setup(harness) -> argv, what the one line must say). Setup runs before the snapshot.


def _store_is_file(h):
    (h.tmp / "store-file").write_text("not a folder")
    return ["run", "table1", "--profile", "ci", "--store", str(h.tmp / "store-file")]


def _store_under_file(h):
    (h.tmp / "store-file").write_text("not a folder")
    return ["run", "table1", "--profile", "ci", "--store", str(h.tmp / "store-file" / "store")]


def _store_dotdot_to_a_file(h):
    (h.tmp / "store-file").write_text("not a folder")
    return ["run", "table1", "--profile", "ci", "--store", str(h.tmp / "not-yet" / ".." / "store-file")]


def _store_is_file_dry_run(h):
    (h.tmp / "store-file").write_text("not a folder")
    return ["run", "all", "--profile", "ci", "--dry-run", "--store", str(h.tmp / "store-file")]


def _store_env_is_file(h):
    (h.tmp / "store-file").write_text("not a folder")
    h.mp.setenv("SAFETYHEADS_STORE", str(h.tmp / "store-file"))
    return ["run", "table1", "--profile", "ci"]


def _store_unwritable(h):
    (h.tmp / "locked").mkdir()
    (h.tmp / "locked").chmod(0o500)
    return ["run", "table1", "--profile", "ci", "--store", str(h.tmp / "locked" / "store")]


def _expected_value_is_text(h):
    h.edit_json(h.metric_file("ci", "table1"), lambda d: first_metric(d, "number").update(value="0.5"))
    return ["run", "table1", "--profile", "ci"]


def _expected_tolerance_is_text(h):
    h.edit_json(h.metric_file("ci", "table3"), lambda d: first_metric(d, "number").update(tolerance="a little"))
    return ["run", "table3", "--profile", "ci"]


def _expected_heads_not_a_list(h):
    h.edit_json(h.metric_file("ci", "figure5"), lambda d: first_metric(d, "heads").update(value="L7H2"))
    return ["run", "figure5", "--profile", "ci"]


def _expected_bound_bad_op(h):
    h.edit_json(h.metric_file("ci", "table2"),
                lambda d: d["metrics"].update(bogus={"kind": "bound", "op": "~", "value": 1.0}))
    return ["run", "table2", "--profile", "ci"]


def _expected_unknown_kind(h):
    h.edit_json(h.metric_file("ci", "table7"), lambda d: first_metric(d, "number").update(kind="percent"))
    return ["run", "table7", "--profile", "ci", "--dry-run"]


def _expected_not_json(h):
    h.metric_file("ci", "table1").write_text('{"metrics": {"asr_mean": ')
    return ["run", "all", "--profile", "ci"]


def _expected_is_a_list(h):
    h.metric_file("ci", "table1").write_text("[]")
    return ["run", "table1", "--profile", "ci"]


def _expected_is_a_folder(h):
    h.metric_file("ci", "table1").unlink()
    h.metric_file("ci", "table1").mkdir()
    return ["run", "table1", "--profile", "ci"]


def _output_root_is_file(h):
    (h.tmp / "generated-file").write_text("not a folder")
    h.mp.setenv("SAFETYHEADS_GENERATED", str(h.tmp / "generated-file"))
    return ["run", "table1", "--profile", "ci"]


def _output_folder_is_file(h):
    shutil.rmtree(h.generated / "ci" / "table2")
    (h.generated / "ci" / "table2").write_text("not a folder")
    return ["run", "table2", "--profile", "ci"]


def _output_file_is_folder(h):
    (h.generated / "ci" / "table2" / "diff.md").unlink()
    (h.generated / "ci" / "table2" / "diff.md").mkdir()
    return ["run", "table2", "--profile", "ci"]


def _device_unknown(h):
    return ["run", "table1", "--profile", "ci", "--device", "tpu"]


def _no_generated_results(h):
    shutil.rmtree(h.generated / "ci")
    return ["update-baselines", "--profile", "ci"]


def _artefact_not_generated(h):
    shutil.rmtree(h.generated / "ci" / "figure4")
    return ["update-baselines", "--profile", "ci", "--artefact", "figure4", "--write"]


def _generated_metrics_damaged(h):
    (h.generated / "ci" / "table7" / "metrics.json").write_text('{"artefact": "table7", "metr')
    return ["update-baselines", "--profile", "ci", "--write"]


def _generated_value_wrong_type(h):
    # table7 sorts after chat_template, figure*, table1..5: without checking first, those were already written
    def change(d):
        next(m for m in d["metrics"] if m["kind"] == "number")["value"] = "high"
    for name in ("chat_template", "table1"):  # so that they would be rewritten
        h.edit_json(h.metric_file("ci", name), lambda d: first_metric(d, "number").update(value=123.0))
    h.edit_json(h.generated / "ci" / "table7" / "metrics.json", change)
    return ["update-baselines", "--profile", "ci", "--write"]


def _stored_baseline_wrong_type(h):
    h.edit_json(h.metric_file("ci", "table7"), lambda d: first_metric(d, "number").update(value=[1, 2]))
    return ["update-baselines", "--profile", "ci", "--write"]


def _claims_missing_outcomes(h):
    for f in (h.generated / "ci").glob("*/outcomes.json"):
        f.unlink()
    return ["claims", "--profile", "ci"]


def _claims_damaged_outcomes(h):
    (h.generated / "ci" / "table3" / "outcomes.json").write_text('{"cells": {"a": ')
    return ["claims", "--profile", "ci"]


def _responses_damaged(h):
    (h.generated / "ci" / "figure2" / "responses.jsonl.gz").write_bytes(b"\x1f\x8b\x08 not gzip at all")
    return ["responses", "figure2", "--profile", "ci"]


def _responses_wrong_rows(h):
    with gzip.open(h.generated / "ci" / "figure2" / "responses.jsonl.gz", "wt") as f:
        f.write('{"prompt_id": 1}\n')
    return ["responses", "figure2", "--profile", "ci"]


def _responses_not_generated(h):
    return ["responses", "figure2", "--profile", "mini"]


def _argv(*argv):
    return lambda h: list(argv)


def case(name: str, setup, says: str, marks=()):
    return pytest.param(setup, says, id=name, marks=marks)


CASES = [
    case("no-command", _argv(), "required: command"),
    case("unknown-command", _argv("rerun"), "invalid choice"),
    case("run-no-artefact", _argv("run"), "required: artefacts"),
    case("run-unknown-artefact", _argv("run", "table99", "--profile", "ci"), "unknown artefact 'table99'"),
    case("run-unknown-profile", _argv("run", "table1", "--profile", "huge"), "invalid choice: 'huge'"),
    case("run-unknown-option", _argv("run", "table1", "--frobnicate"), "unrecognized arguments: --frobnicate"),
    case("run-store-is-file", _store_is_file, "is a file, not a folder"),
    case("run-store-under-file", _store_under_file, "cannot be created"),
    case("run-store-dotdot-to-a-file", _store_dotdot_to_a_file, "is a file, not a folder"),
    case("run-store-is-file-dry-run", _store_is_file_dry_run, "is a file, not a folder"),
    case("run-store-env-is-file", _store_env_is_file, "is a file, not a folder"),
    case("run-store-unwritable", _store_unwritable, "not writable",
         marks=pytest.mark.skipif(AS_ROOT, reason="root writes into a read-only folder")),
    case("run-expected-value-is-text", _expected_value_is_text, "has value '0.5' (str): a number kind needs a number"),
    case("run-expected-tolerance-is-text", _expected_tolerance_is_text, "has tolerance 'a little'"),
    case("run-expected-heads-not-a-list", _expected_heads_not_a_list, "a heads kind needs a list of head names"),
    case("run-expected-bound-bad-op", _expected_bound_bad_op, "a bound needs op"),
    case("run-expected-unknown-kind-dry-run", _expected_unknown_kind, "has kind 'percent'"),
    case("run-expected-not-json", _expected_not_json, "table1.json is not valid JSON"),
    case("run-expected-is-a-list", _expected_is_a_list, "needs a 'metrics' object"),
    case("run-expected-is-a-folder", _expected_is_a_folder, "table1.json is not a file"),
    case("run-output-root-is-file", _output_root_is_file, "is a file, not a folder"),
    case("run-output-folder-is-file", _output_folder_is_file, "is a file, not a folder"),
    case("run-output-file-is-folder", _output_file_is_folder, "diff.md is a folder where table2 writes a file"),
    case("run-device-unknown", _device_unknown, "unknown device 'tpu'"),
    case("run-processes-zero", _argv("run", "table1", "--profile", "paper", "--dry-run", "--processes", "0"),
         "give 1 or more"),
    case("run-processes-not-a-number", _argv("run", "table1", "--dry-run", "--processes", "many"),
         "'many' is not a whole number"),
    case("responses-n-not-a-number", _argv("responses", "figure2", "-n", "five"), "'five' is not a whole number"),
    case("baselines-no-results", _no_generated_results, "no generated results in"),
    case("baselines-unknown-artefact", _argv("update-baselines", "--profile", "ci", "--artefact", "table99"),
     "invalid choice: 'table99'"),
    case("baselines-paper-profile", _argv("update-baselines", "--profile", "paper", "--write"), "invalid choice: 'paper'"),
    case("baselines-artefact-not-generated", _artefact_not_generated, "no generated results for figure4"),
    case("baselines-generated-damaged", _generated_metrics_damaged, "table7 holds damaged results"),
    case("baselines-generated-wrong-type", _generated_value_wrong_type, "has value 'high' (str)"),
    case("baselines-stored-wrong-type", _stored_baseline_wrong_type, "has value [1, 2] (list)"),
    case("claims-missing-outcomes", _claims_missing_outcomes, "but no outcomes.json"),
    case("claims-damaged-outcomes", _claims_damaged_outcomes, "table3 holds damaged results"),
    case("claims-unknown-profile", _argv("claims", "--profile", "huge"), "invalid choice: 'huge'"),
    case("responses-unknown-artefact", _argv("responses", "table99", "--profile", "ci"), "invalid choice: 'table99'"),
    case("responses-negative-n", _argv("responses", "figure2", "--profile", "ci", "-n", "-1"), "-1 is negative"),
    case("responses-unknown-rule", _argv("responses", "figure2", "--profile", "ci", "--rule", "vibes"),
     "invalid choice: 'vibes'"),
    case("responses-seed-not-int", _argv("responses", "figure2", "--profile", "ci", "--seed", "x"), "invalid int value"),
    case("responses-unknown-cell", _argv("responses", "figure2", "--profile", "ci", "--cell", "nope"), "no cell 'nope'"),
    case("responses-not-generated", _responses_not_generated, "no responses for figure2 at the mini profile"),
    case("responses-damaged", _responses_damaged, "responses.jsonl.gz is damaged"),
    case("responses-rows-without-fields", _responses_wrong_rows, "holds rows without cell, prompt_id, response and refused"),
]


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert "Traceback" not in captured.err + captured.out
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("replication: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("setup,says", CASES)
def test_bad_input_is_one_line_and_touches_nothing(harness, capsys, setup, says):
    argv = setup(harness)
    before = snapshot(harness.tmp, ROOT / "paper_tables", ROOT / "README.md")
    capsys.readouterr()
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert says in line
    assert harness.computed == []
    assert snapshot(harness.tmp, ROOT / "paper_tables", ROOT / "README.md") == before


def test_missing_matplotlib_is_refused_before_anything_is_computed(harness, capsys, monkeypatch):
    # figure7 is the cheapest figure; the check must come before its Sahara search, not after
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    before = snapshot(harness.tmp)
    assert main(["run", "table1", "figure7", "--profile", "ci"]) == 2
    line = one_error_line(capsys)
    assert "figure7 need(s) matplotlib" in line and "pip install '.[replication]'" in line
    assert harness.computed == [] and not harness.store.exists()
    assert snapshot(harness.tmp) == before


def test_a_table_alone_does_not_need_matplotlib(harness, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    main(["run", "table1", "--profile", "ci"])
    assert harness.computed == ["table1"]  # past every check: the forbidden computing began


def test_every_artefact_that_draws_declares_matplotlib():
    for name, spec in ARTEFACTS.items():
        source = Path(sys.modules[spec.run.__module__].__file__).read_text()
        assert ("matplotlib" in source) == ("matplotlib" in spec.needs), name


def test_an_unexpected_exception_is_one_line_and_its_traceback_only_on_request(harness, capsys, monkeypatch):
    def broken(ctx, name, *a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli_run, "run_artefact", broken)
    assert main(["run", "table2", "--profile", "ci"]) == 2
    line = one_error_line(capsys)
    # the library's words (safetyheads.commands.parser.error_message): the first line of the message, and --debug
    assert "unexpected RuntimeError: boom (rerun with --debug for the traceback)" in line
    for argv, env in ((["--debug", "run", "table2", "--profile", "ci"], None),
                      (["run", "table2", "--profile", "ci", "--debug"], None),
                      (["run", "table2", "--profile", "ci"], "1")):
        if env:
            monkeypatch.setenv("SAFETYHEADS_DEBUG", env)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and "RuntimeError: boom" in err
        assert err.splitlines()[-1].startswith("replication: error: unexpected RuntimeError")


def test_an_os_error_names_the_path(harness, capsys, monkeypatch):
    def denied(ctx, name, *a, **k):
        raise PermissionError(13, "Permission denied", str(harness.tmp / "out" / "results.jsonl"))

    monkeypatch.setattr(cli_run, "run_artefact", denied)
    assert main(["run", "table2", "--profile", "ci"]) == 2
    line = one_error_line(capsys)
    assert "results.jsonl: Permission denied" in line


def test_the_module_entry_point_reports_one_line(tmp_path):
    """`python -m replication` itself, as a user runs it: argparse and the harness's own errors."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "SAFETYHEADS_STORE": str(tmp_path / "store")}
    env.pop("SAFETYHEADS_DEBUG", None)
    (tmp_path / "file").write_text("x")
    for argv, says in ((["run", "table1", "--profile", "nope"], "invalid choice: 'nope'"),
                       (["run", "table1", "--profile", "ci", "--store", str(tmp_path / "file")], "is a file")):
        p = subprocess.run([sys.executable, "-m", "replication", *argv], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)
        assert p.returncode == 2, p.stderr
        assert p.stderr.count("\n") == 1 and p.stderr.startswith("replication: error: ") and says in p.stderr
        assert "Traceback" not in p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["file"]


def test_an_expected_value_of_null_is_a_fail_not_a_crash():
    assert diff_verdicts.verdict({"name": "x", "value": 0.5, "kind": "number"}, {"value": None, "kind": "number"})[0] == "FAIL"


def test_every_committed_expected_value_passes_the_checks():
    for path in sorted(COMMITTED_EXPECTED.glob("*/*.json")):
        diff_expected.load_expected(path.parent.name, path.stem)


# ------------------------------------------------------------------------------------------------
# Item 8: nox's reproduce sessions install the hashed lock by default


def _noxfile_function(name: str) -> ast.FunctionDef:
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    return next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)


def test_reproduce_sessions_install_the_hashed_lock_by_default():
    source = (ROOT / "noxfile.py").read_text()
    reproduce = ast.unparse(_noxfile_function("_reproduce"))
    for name in ("update_baselines", "claims", "tests"):  # tests: the versions users run
        assert "install_locked(session" in ast.unparse(_noxfile_function(name)), name
    assert "install_locked(session" in reproduce and "install(session" not in reproduce.replace("install_locked(", "")
    locked = ast.unparse(_noxfile_function("install_locked"))
    assert "--require-hashes" in locked and "CPU_LOCK" in locked and "EMBEDDED_MODEL_LOCK" in locked
    assert 'CPU_LOCK = "requirements/cpu.lock"' in source
    assert "unpinned(session)" in locked and "--unpinned" in source and "SAFETYHEADS_UNPINNED" in source
    # the README says how to switch it off
    readme = (ROOT / "README.md").read_text()
    assert "--unpinned" in readme and "SAFETYHEADS_UNPINNED" in readme


def test_install_locked_runs_pip_with_the_lock_and_strips_the_switch(monkeypatch):
    """The session's install step, with nox's Session replaced by a recorder (and nox itself by a
    stub, so that the test needs no nox: the noxfile only decorates with it at import)."""
    def session(*args, **kwargs):  # @nox.session, @nox.session(...), nox.session(name=...)(f)
        return args[0] if args and callable(args[0]) else (lambda f: f)

    monkeypatch.setitem(sys.modules, "nox", types.SimpleNamespace(options=types.SimpleNamespace(), session=session,
                                                                  Session=object))
    spec = importlib.util.spec_from_file_location("noxfile_under_test", ROOT / "noxfile.py")
    noxfile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(noxfile)

    class Recorder:
        venv_backend = "virtualenv"

        def __init__(self, posargs):
            self.posargs, self.calls = posargs, []

        def error(self, message):
            raise AssertionError(message)

        def install(self, *args, **kwargs):
            self.calls.append(("install", args))

        def run(self, *args, **kwargs):
            self.calls.append(("run", args))

        def log(self, *a, **k):
            pass

    monkeypatch.delenv("SAFETYHEADS_UNPINNED", raising=False)
    s = Recorder(["--profile", "ci"])
    noxfile.install_locked(s, "[replication]")
    flat = [" ".join(a) for _, a in s.calls]
    assert any("--require-hashes" in c and "requirements/cpu.lock" in c for c in flat), flat
    assert any("--require-hashes" in c and "requirements/embedded-model.lock" in c for c in flat), flat
    assert not any(re.search(r"\btorch==", c) for c in flat)  # torch comes from the lock, not a bare pin
    assert s.posargs == ["--profile", "ci"]

    s = Recorder(["--unpinned", "--profile", "ci"])
    noxfile.install_locked(s, "[replication]")
    assert s.posargs == ["--profile", "ci"]  # the switch is the session's, not the harness's
    assert not any("--require-hashes" in " ".join(a) for _, a in s.calls)
    monkeypatch.setenv("SAFETYHEADS_UNPINNED", "1")
    s = Recorder(["--profile", "ci"])
    noxfile.install_locked(s, "[replication]")
    assert not any("--require-hashes" in " ".join(a) for _, a in s.calls)


# ------------------------------------------------------------------------------------------------
# Item 9: in the image, code and environment are read-only to the user that runs


def _dockerfile_final_stage() -> list[str]:
    """The final stage's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(ln for ln in (ROOT / "Dockerfile").read_text().splitlines()
                                        if not ln.strip().startswith("#")))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    last_from = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
    return lines[last_from:]


def world_writable_modes(text: str) -> list[str]:
    """The modes of the chmod commands in ``text`` that give others write permission."""
    bad = []
    for mode in re.findall(r"chmod\s+(?:-\w+\s+)*(\S+)", text):
        if re.fullmatch(r"[0-7]{3,4}", mode):
            bad += [mode] if int(mode[-1]) & 2 else []
            continue
        for clause in mode.split(","):
            m = re.fullmatch(r"([ugoa]*)([-+=])([rwxXst]*)", clause)
            if m and m.group(2) != "-" and "w" in m.group(3) and (not m.group(1) or set(m.group(1)) & {"o", "a"}):
                bad.append(mode)
    return bad


def test_world_writable_modes_reads_chmod():
    assert world_writable_modes("chmod 1777 /out; chmod -R a+rwX /c; chmod o+w x; chmod +w y") == \
        ["1777", "a+rwX", "o+w", "+w"]
    assert world_writable_modes("chmod 0755 /out && chmod -R a+rX,go-w /c; chmod u+w,g+w z") == []


def test_dockerfile_code_and_environment_are_roots_and_outputs_the_users():
    stage = _dockerfile_final_stage()
    text = "\n".join(stage)
    users = [(i, ln.split()[1]) for i, ln in enumerate(stage) if ln.upper().startswith("USER ")]
    assert len(users) == 1 and users[0][1] not in ("root", "0", "0:0"), users  # it runs as a plain user...
    user_at, runtime_user = users[0][0], users[0][1].split(":")[0]
    # ... switched to after everything is copied in and installed, so that all of it is root's
    writes = [i for i, ln in enumerate(stage) if ln.upper().startswith(("COPY ", "ADD ", "RUN "))]
    assert max(writes) < user_at, "a COPY or RUN after USER would make its files the runtime user's"
    for ln in stage:
        if ln.upper().startswith(("COPY ", "ADD ")):
            assert "--chown" not in ln and "--chmod" not in ln, f"code or environment handed over: {ln}"
    chowns = re.findall(r"chown\s+(?:-\w+\s+)?(\S+)\s+([^&;\n]+)", text)
    owned = {path for who, paths in chowns if who.split(":")[0] == runtime_user for path in paths.split()}
    assert {"/out", "/data/hf"} <= owned, owned
    assert not owned & {"/src", "/opt/venv", "/opt/safetyheads", "/opt/safetyheads/cache"}, owned
    assert not world_writable_modes(text)  # no a+w, o+w, 777 or 1777
    assert re.search(r"chmod\s+-R\s+go-w\s+[^\n;]*/src", text)  # code from a umask-002 checkout too
    assert re.search(r"chmod\s+-R\s+a\+rX,go-w\s+/opt/safetyheads\b", text)  # readable by the user, not writable


def test_dockerfile_outputs_and_the_runtime_cache_go_under_out():
    text = "\n".join(_dockerfile_final_stage())
    env_lines = " ".join(ln for ln in text.splitlines() if ln.upper().startswith("ENV "))
    env = dict(re.findall(r"\b(SAFETYHEADS_\w+|HF_HOME)=(\S+)", env_lines))
    for name in ("SAFETYHEADS_STORE", "SAFETYHEADS_GENERATED", "SAFETYHEADS_CACHE"):
        assert env[name].startswith("/out/"), (name, env[name])
    prepared = env["SAFETYHEADS_PREPARED_CACHE"]
    assert f"SAFETYHEADS_CACHE={prepared} safetyheads models --prepare" in text  # prepared as root, at build


def test_entrypoint_links_the_prepared_cache_into_the_runtime_one(tmp_path):
    prepared, out = tmp_path / "prepared", tmp_path / "out"
    (prepared / "gguf" / "abc123").mkdir(parents=True)
    (prepared / "gguf" / "abc123" / "COMPLETE").write_text("{}")
    out.mkdir()
    env = {"PATH": os.environ["PATH"], "SAFETYHEADS_PREPARED_CACHE": str(prepared),
           "SAFETYHEADS_CACHE": str(out / "cache")}
    for _ in range(2):  # a second run finds the link made
        p = subprocess.run(["sh", str(ROOT / "docker" / "entrypoint.sh"), "true"], env=env, capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0 and p.stderr == "", p.stderr
    link = out / "cache" / "gguf" / "abc123"
    assert link.is_symlink() and (link / "COMPLETE").is_file()
    (tmp_path / "file").write_text("x")  # a cache that cannot be made: one line, and the command still runs
    p = subprocess.run(["sh", str(ROOT / "docker" / "entrypoint.sh"), "echo", "ran"], capture_output=True, text=True,
                       env={**env, "SAFETYHEADS_CACHE": str(tmp_path / "file" / "cache")}, timeout=60)
    assert p.returncode == 0 and p.stdout == "ran\n"
    assert len(p.stderr.splitlines()) == 1 and "cannot write the cache" in p.stderr


def test_claims_with_some_outcomes_missing_still_write_and_say_which(harness, capsys):
    # one artefact's outcomes gone: the other claims are judged; the ones that needed them say why not
    (harness.generated / "ci" / "chat_template" / "outcomes.json").unlink()
    assert main(["claims", "--profile", "ci"]) == 0
    text = (harness.generated / "CLAIMS.md").read_text()
    assert "no per-query outcomes: " in text and "chat_template has metrics.json but no outcomes.json" in text
    assert "| holds " in text  # the rest judged as usual


def test_the_noxfile_has_a_reproduce_session_per_artefact_in_the_registrys_order(monkeypatch):
    """nox cannot import the registry (no torch in its Python), so the noxfile reads the names from the
    artefacts' source; they must be the registry's, in its order, or a session would be missing."""
    from replication.artefacts import ARTEFACTS

    created = []

    def session(*args, **kwargs):
        if args and callable(args[0]):
            return args[0]
        created.append(kwargs.get("name"))
        return lambda f: f

    monkeypatch.setitem(sys.modules, "nox", types.SimpleNamespace(options=types.SimpleNamespace(), session=session,
                                                                  Session=object))
    spec = importlib.util.spec_from_file_location("noxfile_under_test", ROOT / "noxfile.py")
    noxfile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(noxfile)
    assert noxfile.ARTEFACTS == tuple(ARTEFACTS)
    assert [n for n in created if n and n.startswith("reproduce_")] == [f"reproduce_{a}" for a in ARTEFACTS]
