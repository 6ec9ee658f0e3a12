"""Faults and concurrency (issue 44): two processes on one file, a kill, a full disk, a planted link, a
named pipe or a swapped model file never corrupt work or lie.

Each test sets up the fault for real where it can: a second process (this one, against a child
process paused half-way through its run), a write that fails or kills its process at the file-size
limit (``RLIMIT_FSIZE``: over it, a write fails with EFBIG, or SIGXFSZ ends the process), a symbolic
link or a FIFO in the file system, a model file swapped in with its old mtime kept. Each asserts that
nothing computed is lost or duplicated and that the error is the one line that names the cause.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

import safetyheads
import safetyheads.data as data
import safetyheads.results as results
from safetyheads.cli import main
from safetyheads.errors import DataError, SafetyheadsError
from safetyheads.files import sha256_file, write_durably
from safetyheads.results import ResultsWriter, read_results
from safetyheads.store import Entry, Store, StoreError
from safetyheads.testing import tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # replication/ lives beside the package; appended so the installed safetyheads wins

from replication.__main__ import main as replication_main  # noqa: E402
from replication.claims import report as claims_report  # noqa: E402
from replication.cli import main as cli_main  # noqa: E402
from replication.compute import completions as compute_completions  # noqa: E402
from replication.compute import context as compute_context  # noqa: E402
from replication.compute import steps as compute_steps  # noqa: E402
from replication.diff import baselines as diff_baselines  # noqa: E402
from replication.diff import expected as diff_expected  # noqa: E402
from replication.results import paths as results_paths  # noqa: E402
from replication.spec.profiles import PAPER  # noqa: E402

N_PROMPTS = 6
PAUSE_SECONDS = 120  # a paused child gives up waiting after this (the test failed long before)


def child_env(tmp_path: Path) -> dict:
    """A child process imports the safetyheads this test imported, reads an empty cache and no Hub."""
    source = Path(safetyheads.__file__).resolve().parent.parent
    return {**{k: v for k, v in os.environ.items() if k != "SAFETYHEADS_DEBUG"},
            "PYTHONPATH": os.pathsep.join([str(source), str(ROOT), str(TESTS)]),
            "SAFETYHEADS_CACHE": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
            "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}


def run_child(tmp_path: Path, function: str, *args, pause_in: Path | None = None) -> subprocess.Popen:
    """``function`` of this module, run in a child process with ``args``. ``pause_in``: a child that
    pauses (``_pause_after_first``) touches ``<pause_in>/paused`` and waits for ``<pause_in>/go``."""
    code = f"import sys, test_faults; sys.exit(test_faults.{function}(*sys.argv[1:]))"
    env = child_env(tmp_path)
    if pause_in is not None:
        env.update(PAUSED=str(pause_in / "paused"), GO=str(pause_in / "go"))
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 90) -> None:
    """Until ``path`` exists; fails with the child's output if it ends first."""
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the child ended (status {proc.returncode}) before {path.name} appeared:\n{out}\n{err}")
        time.sleep(0.05)


def one_error_line(capsys, prefix: str = "safetyheads: error: ") -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix) and "Traceback" not in err, err
    return lines[0]


def _pause_after_first(write):
    """``write`` (a method), then, the first time only, touch $PAUSED and wait for $GO: the child
    keeps what it holds (its lock) half-way through its run while the test acts."""
    paused, go = Path(os.environ["PAUSED"]), Path(os.environ["GO"])

    def wrapped(self, *a, **k):
        write(self, *a, **k)
        if not paused.exists():
            paused.touch()
            deadline = time.time() + PAUSE_SECONDS
            while not go.exists() and time.time() < deadline:
                time.sleep(0.05)

    return wrapped


# ------------------------------------------------------------------------------------------------
# 1. Two harness runs on one store


def harness_profile(**more):
    """The paper profile cut to two queries of one set, judged by keyword-fixed alone."""
    return PAPER.replace(n_attribution=2, sahara_steps=2, sets=("maliciousinstruct",), table_sets=("maliciousinstruct",),
                         judge="keyword-fixed", side_judges=(), **more)


def tiny_loader(role, name):
    model = tiny_model("llama", attn_implementation="sdpa", seed=0)
    model.safetyheads_source = {"model": name, "kind": "tiny stand-in", "seed": 0}
    return model, tiny_tokenizer()


def sahara_of_one_run(store: Path) -> list[str]:
    ctx = compute_context.Context(harness_profile(), Store(store), loader=tiny_loader, progress=False)
    return [str(h) for h in compute_steps.sahara_group(ctx, "aligned", "maliciousinstruct", "ua")["group"]]


def child_harness_run(store: str) -> int:
    """A harness run computing a Sahara group, paused once its first step is in the store entry."""
    import torch

    torch.set_num_threads(1)
    Entry.append = _pause_after_first(Entry.append)
    print(json.dumps(sahara_of_one_run(Path(store))))
    return 0


def _stored_sahara(store: Path) -> tuple[list, dict]:
    (entry,) = [p.parent for p in store.glob("sahara/*/*/spec.json")]
    rows = [json.loads(line) for line in (entry / "rows.jsonl").read_text().splitlines()]
    return rows, json.loads((entry / "result.json").read_text())


def _scores(rows: list) -> list:
    return [(r["step"], r["rank"], r["head_name"], pytest.approx(r["score"], abs=1e-9)) for r in rows]


def test_two_harness_runs_on_one_store_leave_the_entries_of_one_run(tmp_path, monkeypatch, capsys):
    """Issue 44, item 1: the second run waits for the entry the first one computes, then reads it; the
    entry holds every Sahara step once (it held both runs' steps before)."""
    store, paused, go = tmp_path / "store", tmp_path / "paused", tmp_path / "go"
    child = run_child(tmp_path, "child_harness_run", store, pause_in=tmp_path)
    wait_for(paused, child)
    waited = []
    computing = getattr(Entry, "computing", None)
    if computing is not None:  # the child is let go once this run waits for it (without locks: when it is done)
        def spy(self, on_wait=None):
            def waiting(holder):
                waited.append(holder)
                on_wait(holder)
                go.touch()
            return computing(self, on_wait=waiting)
        monkeypatch.setattr(Entry, "computing", spy)
    try:
        group = sahara_of_one_run(store)
    finally:
        go.touch()
        out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    rows, result = _stored_sahara(store)
    n = 4 * 3  # candidate heads of the tiny model
    assert [r["step"] for r in rows] == [1] * n + [2] * (n - 1)  # each step once
    assert result["scoreboard"] == rows
    assert json.loads(out) == group
    assert len(waited) == 1 and waited[0].startswith(f"process {child.pid} on ")
    assert f"waiting for process {child.pid} on " in capsys.readouterr().err
    index = [json.loads(line) for line in (store / "index.jsonl").read_text().splitlines()]
    assert sorted(i["kind"] for i in index) == ["sahara", "small"]  # each entry made once
    assert sahara_of_one_run(tmp_path / "alone") == group
    assert _scores(_stored_sahara(tmp_path / "alone")[0]) == _scores(rows)
    assert not list(store.rglob("*.lock"))


# ------------------------------------------------------------------------------------------------
# 2. Two command-line runs into one --out; a killed run's lock; SIGTERM and SIGHUP


def child_cli_run(*argv: str) -> int:
    """``safetyheads <argv>``, paused once its first rows are in the results file."""
    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # a test run under nohup would pass its ignored SIGHUP on
    results.ResultsWriter.append = _pause_after_first(results.ResultsWriter.append)
    return main(list(argv))


@pytest.fixture
def model_folder(folder):
    """conftest's saved tiny GQA Llama (a user's local model folder)."""
    return folder


def cli_argv(command: str, model: Path, prompts: Path, out: Path) -> list[str]:
    common = ["--model", str(model), "--attn", "eager", "--quiet", "--data", str(prompts), "--out", str(out)]
    if command == "ships":
        return ["ships", *common, "--heads", "L0H0,L1H2"]
    return ["generate", *common, "--max-new-tokens", "2", "--batch-size", "1"]


@pytest.fixture
def cli_run(tmp_path, model_folder, monkeypatch):
    """(argv of a run, a function starting it paused in a child) in a scratch folder."""
    monkeypatch.setenv("SAFETYHEADS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt\n" + "".join(f"Question number {i}?\n" for i in range(N_PROMPTS)))

    def start(argv):
        proc = run_child(tmp_path, "child_cli_run", *argv, pause_in=tmp_path)
        wait_for(tmp_path / "paused", proc)
        return proc

    return lambda command: cli_argv(command, model_folder, prompts, tmp_path / f"{command}.jsonl"), start


def each_prompt_once(out: Path, rows_per_prompt: int) -> None:
    table, header = read_results(out)
    counts = table["prompt_id"].value_counts()
    assert sorted(counts.index) == list(range(N_PROMPTS)) and set(counts) == {rows_per_prompt}, counts
    assert header.get("rows_sha256")  # finished


@pytest.mark.parametrize("command,rows_per_prompt", [("generate", 1), ("ships", 2)])
def test_a_second_run_into_one_out_is_refused_with_the_holder(cli_run, capsys, command, rows_per_prompt):
    """Issue 44, item 2: the second run is refused with one line naming the first (before, both wrote
    every row), and the first finishes with every prompt once."""
    argv_of, start = cli_run
    argv = argv_of(command)
    out = Path(argv[argv.index("--out") + 1])
    first = start(argv)
    try:
        status = main(argv)
    finally:
        (out.parent / "go").touch()
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    each_prompt_once(out, rows_per_prompt)
    assert status == 2
    line = one_error_line(capsys)
    assert f"--out {out} is being written by process {first.pid} on " in line
    assert "choose another --out" in line
    assert not out.with_name(out.name + ".lock").exists()


def test_a_killed_runs_lock_is_taken_over_and_its_rows_resumed(cli_run, capsys):
    argv_of, start = cli_run
    argv = argv_of("generate")
    out = Path(argv[argv.index("--out") + 1])
    first = start(argv)
    first.kill()
    first.communicate(timeout=60)
    kept = read_results(out)[0]
    assert len(kept) >= 1  # what the killed run finished
    assert main(argv) == 0
    assert f"resuming {out}: {len(kept)} of {N_PROMPTS} prompts already done" in capsys.readouterr().err
    each_prompt_once(out, 1)
    assert not out.with_name(out.name + ".lock").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_end_a_command_like_ctrl_c(cli_run, capsys, signum):
    """Issue 44, also seen: both ended a run without a word; now the Ctrl-C line, status 128 + n, and
    a rerun resumes."""
    argv_of, start = cli_run
    argv = argv_of("generate")
    out = Path(argv[argv.index("--out") + 1])
    first = start(argv)
    first.send_signal(signum)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 128 + signum, err
    assert err.splitlines()[-1] == "safetyheads: interrupted; finished prompts are saved, rerun the same command to resume"
    assert "Traceback" not in err
    assert main(argv) == 0
    each_prompt_once(out, 1)


def child_harness_signal(signame: str, command: str) -> int:
    """The harness's main, sent ``signame`` while its command runs."""
    def dispatch(args):
        os.kill(os.getpid(), getattr(signal, signame))
        time.sleep(30)

    cli_main.dispatch = dispatch
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # a test run under nohup would pass its ignored SIGHUP on
    return cli_main.main([command])


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_end_the_harness_like_ctrl_c(tmp_path, signame):
    proc = run_child(tmp_path, "child_harness_signal", signame, "claims")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + getattr(signal, signame), err
    assert err.splitlines() == ["replication: interrupted; CLAIMS.md and README.md are each the old one or the new "
                                "one, neither half-written; rerun the same command to write both"]


def test_an_interrupted_claims_does_not_promise_a_resume(monkeypatch, capsys):
    """Issue 44, item 3: Ctrl-C in `claims` said a rerun resumes it; nothing there resumes."""
    def interrupted(profiles):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "write_claims", interrupted)
    assert replication_main(["claims"]) == 130
    err = capsys.readouterr().err
    assert "resume" not in err and "CLAIMS.md and README.md" in err


# ------------------------------------------------------------------------------------------------
# 3 and 4. README.md, CLAIMS.md and the baselines are replaced whole or not at all


def child_write_under_limit(what: str, fault: str, limit: str, *paths: str) -> int:
    """Write ``what`` (readme: the README's claims block; baseline: update-baselines --write) with the
    file-size limit at ``limit`` bytes: a longer write fails (``disk-full``) or kills the process
    (``killed``, SIGXFSZ's default action)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL if fault == "killed" else signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if what == "readme":
        claims_report.readme_block = lambda found: "- **holds**: a claim\n" * 500
        write = lambda: claims_report.update_readme([], Path(paths[0]))  # noqa: E731
    else:
        generated, expected = map(Path, paths)
        os.environ["SAFETYHEADS_GENERATED"] = str(generated)
        diff_expected.EXPECTED = expected
        write = lambda: diff_baselines.update_baselines("ci", ["table1"], write=True)  # noqa: E731
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), resource.RLIM_INFINITY))
    try:
        write()
    except OSError as e:
        print(f"{e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    return 0


def child_cli_under_limit(limit: str, *argv: str) -> int:
    """``safetyheads <argv>`` with writes past ``limit`` bytes of a file failing (EFBIG, as ENOSPC)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), resource.RLIM_INFINITY))
    return main(list(argv))


def test_a_full_disk_under_the_cli_names_the_file_and_the_cause(tmp_path, model_folder):
    """The error names the file the user asked for and why, not the temporary file (or nothing)."""
    out = tmp_path / "s.jsonl"
    proc = run_child(tmp_path, "child_cli_under_limit", 300, "ships", "--model", model_folder, "--attn", "eager",
                     "--quiet", "--prompt", "How do I pick a lock?", "--heads", "L0H0", "--out", out)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert err.splitlines()[-1] == f"safetyheads: error: {out}: File too large (rerun with --debug for the traceback)"
    assert not out.exists() and _leftovers(tmp_path) == [] and not out.with_name("s.jsonl.lock").exists()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("fault", ["killed", "disk-full"])
def test_a_kill_or_full_disk_while_claims_writes_leaves_the_readme_whole(tmp_path, fault):
    """Issue 44, item 3: the README was truncated first, then written: a kill or a full disk left it
    empty or cut, without its summary markers."""
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nintro\n\n{claims_report.README_START} generated -->\nold verdicts\n{claims_report.README_END}\n\nmore\n")
    before = readme.read_bytes()
    proc = run_child(tmp_path, "child_write_under_limit", "readme", fault, 1000, readme)
    _, err = proc.communicate(timeout=120)
    if fault == "killed":
        assert proc.returncode == -signal.SIGXFSZ, err
    else:
        assert proc.returncode == 2 and f"{readme}: File too large" in err, err
        assert _leftovers(tmp_path) == []
    assert readme.read_bytes() == before


def test_claims_refuses_a_readme_without_its_block_and_writes_nothing(tmp_path, monkeypatch):
    """Issue 44, item 3: a rerun after the README lost its block exited 0 and left it so."""
    tables = tmp_path / "paper_tables"
    (tables / "generated").mkdir(parents=True)
    monkeypatch.setattr(results_paths, "ROOT", tmp_path)
    monkeypatch.setattr(results_paths, "TABLES", tables)
    monkeypatch.delenv("SAFETYHEADS_GENERATED", raising=False)
    monkeypatch.setattr(claims_report, "evaluate", lambda profiles: [])
    monkeypatch.setattr(claims_report, "extension_section", lambda: [])
    (tmp_path / "README.md").write_text("")
    with pytest.raises(SafetyheadsError, match="has no claims-summary block .* restore it with `git checkout") as e:
        claims_report.write_claims(["ci"])
    assert "\n" not in str(e.value)
    assert (tmp_path / "README.md").read_text() == "" and not (tables / "CLAIMS.md").exists()


@pytest.fixture
def baselines_copy(tmp_path, monkeypatch):
    """A scratch copy of the committed ci results and baselines, table1's first number moved so that
    `update-baselines --write` rewrites its baseline; -> (generated, expected, table1's baseline)."""
    generated, expected = tmp_path / "generated", tmp_path / "expected"
    shutil.copytree(ROOT / "paper_tables" / "generated" / "ci" / "table1", generated / "ci" / "table1")
    shutil.copytree(ROOT / "paper_tables" / "expected" / "ci", expected / "ci")
    metrics = generated / "ci" / "table1" / "metrics.json"
    data_ = json.loads(metrics.read_text())
    number = next(m for m in data_["metrics"] if m["kind"] == "number")
    number["value"] = number["value"] + 1000.0
    metrics.write_text(json.dumps(data_, indent=1))
    monkeypatch.setenv("SAFETYHEADS_GENERATED", str(generated))
    monkeypatch.setattr(diff_expected, "EXPECTED", expected)
    return generated, expected, expected / "ci" / "table1.json"


@pytest.mark.parametrize("fault", ["killed", "disk-full"])
def test_a_kill_or_full_disk_during_update_baselines_leaves_the_stored_baseline(tmp_path, baselines_copy, fault):
    """Issue 44, item 4: the baseline was truncated first, then written."""
    generated, expected, baseline = baselines_copy
    before = baseline.read_bytes()
    proc = run_child(tmp_path, "child_write_under_limit", "baseline", fault, 512, generated, expected)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (-signal.SIGXFSZ if fault == "killed" else 2), err
    assert baseline.read_bytes() == before
    if fault == "disk-full":
        assert f"{baseline}: File too large" in err and _leftovers(baseline.parent) == []


def test_update_baselines_write_replaces_a_baseline_left_empty(baselines_copy, capsys):
    """Issue 44, item 4: a baseline an interrupted write left empty could not be rewritten by the
    command that broke it; a look without --write still refuses it, with how to restore it."""
    generated, _, baseline = baselines_copy
    baseline.write_text("")
    with pytest.raises(SafetyheadsError, match="is not valid JSON"):
        diff_baselines.update_baselines("ci", ["table1"], write=False)
    assert baseline.read_text() == ""
    assert diff_baselines.update_baselines("ci", ["table1"], write=True) == 0
    assert "--write replaces it" in capsys.readouterr().out
    assert json.loads(baseline.read_text()) == diff_baselines.baseline_from(generated / "ci" / "table1" / "metrics.json")


# A failure at the rename itself (the last step of a replace) leaves the old file, removes the
# temporary one and names the file and the cause.
WRITERS = {
    "readme": lambda path: claims_report.update_readme([], path),
    "results": lambda path: ResultsWriter(path, {"run": {"n": 2}}, ["prompt_id"], key="prompt_id", group_size=1,
                                          overwrite=True),
    "store-result": lambda path: Store(path.parent / "store").entry("small", {"x": 1}).finish({"value": 2}),
    "baseline": lambda path: write_durably(path, "{}\n"),
}


@pytest.mark.parametrize("what", list(WRITERS))
def test_a_failed_rename_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch, what):
    path = tmp_path / {"readme": "README.md", "results": "r.jsonl", "store-result": "x", "baseline": "t.json"}[what]
    if what == "readme":
        path.write_text(f"{claims_report.README_START} -->\nold\n{claims_report.README_END}\n")
    elif what == "results":
        ResultsWriter(path, {"run": {"n": 1}}, ["prompt_id"], key="prompt_id", group_size=1).append([{"prompt_id": 0}])
    elif what == "baseline":
        path.write_text('{"metrics": {}}\n')
    before = path.read_bytes() if path.exists() else None

    def disk_full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(src), None, str(dst))

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError) as e:
        WRITERS[what](path)
    assert e.value.errno == errno.ENOSPC
    if before is not None:
        assert path.read_bytes() == before and str(path) in (e.value.filename, e.value.filename2)
    assert not [p for p in tmp_path.rglob("*.tmp")]
    if what == "store-result":
        assert not Store(tmp_path / "store").entry("small", {"x": 1}).done


# ------------------------------------------------------------------------------------------------
# 5. A model file swapped in with its old mtime kept


def test_a_same_size_model_swapped_in_with_its_mtime_kept_is_not_taken_for_the_old_one(tmp_path, monkeypatch, capsys):
    """Issue 44, item 5: the weights hash was remembered by path, size and mtime, so the swapped model
    resumed the old results file and a fresh run's header named the old weights."""
    monkeypatch.setenv("SAFETYHEADS_CACHE", str(tmp_path / "cache"))
    model, other = tmp_path / "model", tmp_path / "other"
    for folder, seed in ((model, 0), (other, 1)):
        tiny_model("llama-gqa", seed=seed).save_pretrained(folder)
        tiny_tokenizer().save_pretrained(folder)
    weights, swapped = model / "model.safetensors", other / "model.safetensors"
    assert weights.stat().st_size == swapped.stat().st_size and sha256_file(weights) != sha256_file(swapped)
    argv = ["ships", "--model", str(model), "--attn", "eager", "--quiet", "--prompt", "How do I pick a lock?",
            "--heads", "L0H0"]
    assert main([*argv, "--out", str(tmp_path / "a.jsonl")]) == 0
    kept = os.stat(weights)
    shutil.copyfile(swapped, weights)  # as `cp -p` does: the same file rewritten, its old times set back
    os.utime(weights, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    assert (os.stat(weights).st_size, os.stat(weights).st_mtime_ns) == (kept.st_size, kept.st_mtime_ns)
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "a.jsonl")]) == 2
    assert "holds a different run (differs in: model_sha256)" in one_error_line(capsys)
    assert main([*argv, "--out", str(tmp_path / "b.jsonl")]) == 0
    expected = hashlib.sha256(b"model.safetensors\0" + sha256_file(swapped).encode()).hexdigest()
    assert read_results(tmp_path / "b.jsonl")[1]["run"]["model_sha256"] == expected
    assert read_results(tmp_path / "a.jsonl")[1]["run"]["model_sha256"] != expected


# ------------------------------------------------------------------------------------------------
# 6. A link planted at the temporary name


def test_a_link_planted_at_the_old_temporary_names_is_never_written_through(tmp_path, model_folder, monkeypatch):
    """Issue 44, item 6: the temporary file of a replace had a fixed name (<file>.tmp, the store's
    result.tmp) and was opened following links: a link planted there wrote wherever it pointed."""
    monkeypatch.setenv("SAFETYHEADS_CACHE", str(tmp_path / "cache"))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "g.jsonl"
    entry = Store(tmp_path / "store").entry("small", {"x": 1})
    entry.path.mkdir(parents=True)
    for planted in (out.with_name("g.jsonl.tmp"), entry.path / "result.tmp", entry.path / "spec.tmp"):
        planted.symlink_to(victim)
    assert main(["generate", "--model", str(model_folder), "--attn", "eager", "--quiet", "--prompt", "Hi",
                 "--max-new-tokens", "2", "--out", str(out)]) == 0
    entry.finish({"value": 2})
    assert victim.read_text() == "precious\n"
    assert len(read_results(out)[0]) == 1 and entry.result() == {"value": 2}


# ------------------------------------------------------------------------------------------------
# 7. Special files as outputs


class Blocked(Exception):
    """Not an OSError: the code under test must not take it for a failed open."""


@pytest.fixture
def alarm():
    """Fail a test that blocks (a FIFO opened for reading waits for a writer) instead of hanging."""
    def ring(signum, frame):
        raise Blocked("blocked for 20 s")

    before = signal.signal(signal.SIGALRM, ring)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, before)


@pytest.mark.parametrize("command", ["ships", "generate", "judge"])
def test_a_named_pipe_as_out_is_refused_at_once(tmp_path, model_folder, alarm, capsys, command):
    """Issue 44, item 7: the check of an existing --out read the pipe and waited for ever."""
    fifo = tmp_path / "out.jsonl"
    os.mkfifo(fifo)
    (tmp_path / "gens.jsonl").write_text('{"prompt": "Hi", "response": "I cannot help with that."}\n')
    model = ["--model", str(model_folder), "--attn", "eager", "--quiet", "--prompt", "Hi"]
    argv = {"ships": ["ships", *model, "--heads", "L0H0"], "generate": ["generate", *model, "--max-new-tokens", "2"],
            "judge": ["judge", "--input", str(tmp_path / "gens.jsonl")]}[command]
    assert main([*argv, "--out", str(fifo), *(["--overwrite"] if command == "judge" else [])]) == 2
    assert one_error_line(capsys) == f"safetyheads: error: --out {fifo} is a named pipe, not a regular file; choose another --out"


# ------------------------------------------------------------------------------------------------
# 8. A cache that cannot be written


class DatasetGenerationError(Exception):
    """What datasets wraps an OS error of its cache in."""


@pytest.mark.parametrize("code,says", [(errno.EROFS, "read-only file system"), (errno.ENOSPC, "disk full"),
                                       (errno.EACCES, "permission denied")])
def test_a_cache_that_cannot_be_written_is_named_not_the_bundled_file(tmp_path, monkeypatch, code, says):
    """Issue 44, item 8: the bundled, checksum-checked maliciousinstruct.csv 'is not a well-formed csv
    file: [Errno 30] Read-only file system'."""
    import datasets

    def cache_fails(*a, **k):
        try:
            raise OSError(code, os.strerror(code), str(tmp_path / "cache" / "datasets" / "csv"))
        except OSError as e:
            raise DatasetGenerationError("An error occurred while generating the dataset") from e

    monkeypatch.setenv("SAFETYHEADS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "load_dataset", cache_fails)
    with pytest.raises(DataError) as e:
        data.load_prompts("maliciousinstruct")
    assert str(e.value) == (f"cannot write the datasets cache {tmp_path / 'cache' / 'datasets'} ({says}): set "
                            "SAFETYHEADS_CACHE to a folder you can write, with free space")


# ------------------------------------------------------------------------------------------------
# Also seen: an edited store entry or results file; hostile sizes


def test_an_entry_edited_after_it_was_computed_is_refused(tmp_path):
    """Issue 44, also seen: one response edited inside a finished entry moved an ASR and the diff
    still said PASS. Now: one line naming the entry and how to recompute it."""
    ctx = compute_context.Context(harness_profile(n_eval=2, max_new_tokens=3), Store(tmp_path), loader=tiny_loader, progress=False)
    q = ctx.queries("maliciousinstruct", "eval")
    first = compute_completions.completions(ctx, "aligned", q)
    (entry,) = [p.parent for p in tmp_path.glob("completions/*/*/result.json")]
    assert compute_completions.completions(ctx, "aligned", q).rows == first.rows  # read back, checked
    result = json.loads((entry / "result.json").read_text())
    result["rows"][0]["response"] = "Sure, here is how."
    (entry / "result.json").write_text(json.dumps(result))
    with pytest.raises(StoreError) as e:
        compute_completions.completions(ctx, "aligned", q)
    assert str(e.value) == (f"store entry {entry} (completions aligned maliciousinstruct) was changed after it was "
                            "computed (result.json does not match the sha256 in result.sha256): delete that folder to "
                            "recompute it")


def test_an_entry_written_before_content_hashes_is_read_as_it_is(tmp_path):
    entry = Store(tmp_path).entry("small", {"x": 1})
    entry.finish({"value": 2})
    (entry.path / "result.sha256").unlink()
    assert entry.result() == {"value": 2}


def test_a_finished_results_file_edited_afterwards_is_refused(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    w = ResultsWriter(path, {"run": {"n": 1}}, ["prompt_id", "response"], key="prompt_id", group_size=1)
    w.append([{"prompt_id": 0, "response": "No."}, {"prompt_id": 1, "response": "No."}])
    w.finish({})
    assert len(read_results(path)[0]) == 2
    path.write_text(path.read_text().replace('"No."}', '"Yes."}', 1))
    before = path.read_bytes()
    for read in (lambda: read_results(path),
                 lambda: ResultsWriter(path, {"run": {"n": 1}}, ["prompt_id", "response"], key="prompt_id", group_size=1)):
        with pytest.raises(results.ResultsError, match="was changed after its run finished"):
            read()
    assert path.read_bytes() == before


def test_a_huge_line_in_a_results_file_is_never_held_whole(tmp_path, monkeypatch, capsys):
    """Issue 44, also seen: resuming into a file with a 1 GiB line took 4.4 GB. Here a 32 MiB line
    under a 1 MiB limit: the rows before it are kept, and memory stays near the limit."""
    monkeypatch.setattr(results, "MAX_LINE_BYTES", 1 << 20, raising=False)
    path = tmp_path / "r.jsonl"
    ResultsWriter(path, {"run": {"n": 1}}, ["prompt_id"], key="prompt_id", group_size=1).append([{"prompt_id": 0}])
    with open(path, "a") as f:
        f.write('{"prompt_id": 1, "junk": "' + "x" * (32 << 20) + '"}\n{"prompt_id": 2}\n')
    tracemalloc.start()
    try:
        w = ResultsWriter(path, {"run": {"n": 1}}, ["prompt_id"], key="prompt_id", group_size=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert w.done == {"0"} and peak < 8 << 20, peak
    assert "is damaged at line 3 (longer than 1 MiB)" in capsys.readouterr().err
    assert list(read_results(path)[0]["prompt_id"]) == [0]


def test_a_huge_prompt_is_refused_before_it_is_tokenized(model_folder, tmp_path, monkeypatch, capsys):
    """Issue 44, also seen: a 10 MB prompt took 2.2 GB to tokenize before the context-length error."""
    from transformers import PreTrainedTokenizerFast

    monkeypatch.setenv("SAFETYHEADS_CACHE", str(tmp_path / "cache"))
    longest = []
    real = PreTrainedTokenizerFast.__call__
    monkeypatch.setattr(PreTrainedTokenizerFast, "__call__",
                        lambda self, text, *a, **k: longest.append(len(text)) or real(self, text, *a, **k))
    huge = "Tell me about locks. " * 20000  # 420,000 characters; the tiny model's context is 256 tokens
    for command in (["ships", "--heads", "L0H0"], ["generate", "--max-new-tokens", "2"]):
        argv = [*command, "--model", str(model_folder), "--attn", "eager", "--quiet", "--prompt", huge,
                "--out", str(tmp_path / f"{command[0]}.jsonl")]
        assert main(argv) == 2
        line = one_error_line(capsys)
        assert "is 420,000 characters, too long for the model's context of 256 tokens" in line
    assert max(longest, default=0) < 1000
    assert not list(tmp_path.glob("*.jsonl"))
