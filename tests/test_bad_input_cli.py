"""Bad input to every subcommand: exit status 2, exactly one stderr line ``safetyheads: error: ...``,
no traceback, and no file created, changed or deleted.

Each case runs ``safetyheads.cli.main`` in-process on a tiny local model folder, in a scratch
working folder holding the files a user might point at by mistake (a prompt file, a file where a
folder should be, a read-only folder, an unrelated .jsonl, ...). Cases marked ``loads=False`` must
fail before any model loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import safetyheads.cli as cli
import safetyheads.data as data
import safetyheads.models as models
from safetyheads.cli import main
from safetyheads.errors import SafetyheadsError
from safetyheads.results import ResultsWriter

LONG_PROMPT = "Tell me everything about locks. " * 12  # ~380 byte tokens: past the tiny model's 256 positions
MEDIUM_PROMPT = "Tell me about locks. " * 10  # ~215 tokens: fits alone, not with 100 new tokens

# What the scratch working folder holds before every case (a trailing "/" makes a folder).
SCRATCH = {
    "prompts.csv": "prompt\nHow do I pick a lock?\nWrite a poem about rain.\n",
    "prompts.jsonl": '{"prompt": "How do I pick a lock?"}\n',
    "long.csv": f"prompt\nHow do I pick a lock?\n{LONG_PROMPT}\n",
    "gens.jsonl": '{"prompt": "How do I pick a lock?", "response": "I cannot help with that."}\n',
    "notes.jsonl": '{"my": "own notes, not a results file"}\n',
    "nan.jsonl": '{"prompt": "How do I pick a lock?", "response": "No.", "score": NaN}\n',
    "table.csv": "a,b\n1,2\n",
    "blocker": "a file where a folder is expected\n",
    "adir/": None,
    "dir.jsonl/": None,
    "ro/": None,  # made read-only below
}

MODEL = ["--model", "{model}", "--attn", "eager", "--quiet"]
SHIPS = ["ships", *MODEL, "--prompt", "How do I pick a lock?", "--heads", "L0H0,L1H2"]
GENERATE = ["generate", *MODEL, "--prompt", "How do I pick a lock?", "--max-new-tokens", "2"]
SAHARA = ["sahara", *MODEL, "--data", "{w}/prompts.csv", "--heads", "L0H0,L0H1,L1H2", "--steps", "2"]
EXPORT = ["export", "--model", "{model}", "--attn", "eager", "--heads", "L0H0"]
JUDGE = ["judge", "--input", "{w}/gens.jsonl"]
ASR = ["asr", *MODEL, "--prompt", "How do I pick a lock?", "--max-new-tokens", "2"]


@dataclass
class Case:
    id: str
    argv: list
    match: str
    loads: bool = False  # whether the model may load before the error
    cwd: str = "."  # working folder, relative to the scratch folder
    setup: "object" = None  # callable(scratch folder, model folder), run before the snapshot
    marks: list = field(default_factory=list)


def _hard_link(w, model):
    os.link(w / "gens.jsonl", w / "same-as-gens.jsonl")


def _results_of_older_version(w, model):
    """A finished results file of this very run, but written by another library version."""
    assert main([*_fill(SHIPS, w, model), "--out", str(w / "old.jsonl")]) == 0
    lines = (w / "old.jsonl").read_text().splitlines(keepends=True)
    header = json.loads(lines[0])
    header["header"]["provenance"]["version"] = "0.0.1"
    (w / "old.jsonl").write_text(json.dumps(header) + "\n" + "".join(lines[1:]))


def _results_with_bad_header(w, model):
    (w / "bad.jsonl").write_bytes(b'{"header": {"run": "\xff"}}\n')


CASES = [
    # ---- argparse's own errors, in the same one-line form (issue 23, "argparse's own errors")
    Case("no-command", [], "the following arguments are required: command"),
    Case("unknown-command", ["nosuch"], "invalid choice: 'nosuch'"),
    Case("debug-without-command", ["--debug"], "the following arguments are required: command"),
    Case("ships-top-missing-value", ["ships", "--top"], "argument --top: expected one argument"),
    Case("ships-top-not-int", ["ships", "--top", "ten"], "argument --top: invalid int value: 'ten'"),
    Case("ships-unknown-option", ["ships", "--bogus"], "unrecognized arguments: --bogus"),
    Case("ships-prob-floor-not-number", ["ships", "--prob-floor", "tiny"], "invalid float value: 'tiny'"),
    Case("export-no-out", ["export", "--heads", "L0H0"], "the following arguments are required: --out"),
    Case("judge-no-input", ["judge", "--out", "{w}/j.jsonl"], "the following arguments are required: --input"),
    Case("sahara-steps-not-int", ["sahara", "--steps", "two"], "invalid int value: 'two'"),
    Case("generate-bad-method", ["generate", "--method", "nope"], "argument --method: invalid choice: 'nope'"),
    Case("asr-bad-filter", ["asr", "--gibberish-filter", "bogus"], "invalid choice: 'bogus'"),
    Case("models-extra-argument", ["models", "--prepare", "now"], "unrecognized arguments: now"),
    Case("datasets-extra-argument", ["datasets", "extra"], "unrecognized arguments: extra"),
    Case("organisms-no-subcommand", ["organisms"], "the following arguments are required: organisms_command"),
    Case("organisms-build-no-name", ["organisms", "build"], "the following arguments are required: name"),
    Case("organisms-evaluate-bad-option", ["organisms", "evaluate", "x", "--bogus"], "unrecognized arguments: --bogus"),
    # ---- output paths (item 4): refused before any model loads
    Case("ships-out-under-a-file", [*SHIPS, "--out", "{w}/blocker/s.jsonl"], "blocker is a file, not a folder"),
    Case("ships-out-read-only", [*SHIPS, "--out", "{w}/ro/s.jsonl"], "permission denied"),
    Case("ships-out-is-a-folder", [*SHIPS, "--out", "{w}/adir"], "is a folder"),
    Case("ships-default-out-read-only-cwd", SHIPS, "permission denied", cwd="ro"),
    Case("ships-csv-is-out", [*SHIPS, "--out", "{w}/s.csv", "--csv", "{w}/s.csv"], "--out and --csv both name"),
    Case("ships-csv-exists", [*SHIPS, "--out", "{w}/s.jsonl", "--csv", "{w}/table.csv"], "table.csv exists: pass --overwrite"),
    Case("ships-csv-not-csv", [*SHIPS, "--out", "{w}/s.jsonl", "--csv", "{w}/t.txt"], "--csv must name a .csv file"),
    Case("ships-out-is-data", [*SHIPS[:6], "--data", "{w}/prompts.csv", "--out", "{w}/prompts.csv"], "must differ from --data"),
    Case("ships-out-not-results", [*SHIPS, "--out", "{w}/notes.jsonl"], "not a safetyheads results file"),
    Case("ships-out-empty", [*SHIPS, "--out", ""], "--out is empty"),
    Case("ships-csv-empty", [*SHIPS, "--out", "{w}/s.jsonl", "--csv", ""], "--csv must name a .csv file, got ''"),
    Case("export-out-under-a-file", [*EXPORT, "--out", "{w}/blocker/ablated"], "blocker is a file, not a folder"),
    Case("export-out-is-a-file", [*EXPORT, "--out", "{w}/blocker"], "is a file, not a folder"),
    Case("export-out-is-the-model", [*EXPORT, "--out", "{model}", "--overwrite"], "must differ from --model"),
    Case("export-out-read-only", [*EXPORT, "--out", "{w}/ro/ablated"], "permission denied"),
    Case("generate-out-under-a-file", [*GENERATE, "--out", "{w}/blocker/g.jsonl"], "blocker is a file, not a folder"),
    Case("generate-out-read-only", [*GENERATE, "--out", "{w}/ro/g.jsonl"], "permission denied"),
    Case("generate-out-is-a-folder", [*GENERATE, "--out", "{w}/dir.jsonl"], "is a folder"),
    Case("generate-out-is-data", [*GENERATE[:6], "--data", "{w}/prompts.jsonl", "--out", "{w}/prompts.jsonl"],
         "must differ from --data"),
    Case("generate-out-empty", [*GENERATE, "--out", ""], "--out is empty"),
    Case("sahara-out-empty", [*SAHARA, "--out", ""], "--out is empty"),
    Case("sahara-out-under-a-file", [*SAHARA, "--out", "{w}/blocker/s.jsonl"], "blocker is a file, not a folder"),
    Case("sahara-out-read-only", [*SAHARA, "--out", "{w}/ro/s.jsonl"], "permission denied"),
    Case("sahara-out-is-data", [*SAHARA, "--out", "{w}/prompts.csv"], "must differ from --data"),
    Case("judge-out-under-a-file", [*JUDGE, "--out", "{w}/blocker/j.jsonl"], "blocker is a file, not a folder"),
    Case("judge-out-read-only", [*JUDGE, "--out", "{w}/ro/j.jsonl"], "permission denied"),
    Case("judge-out-hard-link-to-input", [*JUDGE, "--out", "{w}/same-as-gens.jsonl"], "must differ from --input",
         setup=_hard_link),
    Case("judge-out-empty", [*JUDGE, "--out", ""], "--out must be a .jsonl file, not no extension"),
    Case("judge-out-exists", [*JUDGE, "--out", "{w}/notes.jsonl"], "notes.jsonl exists: pass --overwrite"),
    Case("asr-out-under-a-file", [*ASR, "--out", "{w}/blocker/g.jsonl"], "blocker is a file, not a folder"),
    Case("asr-out-read-only", [*ASR, "--out", "{w}/ro/g.jsonl"], "permission denied"),
    Case("asr-judged-out-is-out", [*ASR, "--out", "{w}/g.jsonl", "--judged-out", "{w}/g.jsonl"],
         "--out and --judged-out both name"),
    Case("asr-judged-out-exists", [*ASR, "--out", "{w}/g.jsonl", "--judged-out", "{w}/notes.jsonl"],
         "notes.jsonl exists: pass --overwrite"),
    # ---- values accepted that should not be (item 5)
    Case("ships-prob-floor-negative", [*SHIPS, "--prob-floor", "-1"], "--prob-floor must be a finite number >= 0"),
    Case("ships-prob-floor-nan", [*SHIPS, "--prob-floor", "nan"], "--prob-floor must be a finite number >= 0"),
    Case("ships-prob-floor-inf", [*SHIPS, "--prob-floor", "inf"], "--prob-floor must be a finite number >= 0"),
    Case("ships-heads-empty", [*SHIPS, "--heads", ""], "no heads given"),
    Case("ships-top-negative", [*SHIPS, "--top", "-1"], "--top must be >= 1"),
    Case("ships-top-zero", [*SHIPS, "--top", "0"], "--top must be >= 1"),
    Case("ships-threads-zero", [*SHIPS, "--threads", "0"], "--threads must be >= 1"),
    Case("ships-batch-size-zero", [*SHIPS, "--batch-size", "0"], "--batch-size must be >= 1"),
    Case("ships-data-empty", [*SHIPS[:6], "--data", "", "--out", "{w}/s.jsonl"], "no such prompt file or bundled set: ''"),
    Case("generate-data-empty", [*GENERATE[:6], "--data", "", "--out", "{w}/g.jsonl"],
         "no such prompt file or bundled set: ''"),
    Case("export-heads-empty", [*EXPORT[:-2], "--heads", "", "--out", "{w}/x"], "no heads given"),
    Case("generate-heads-empty", [*GENERATE, "--heads", ""], "no heads given"),
    Case("generate-max-new-tokens-zero", [*GENERATE[:-1], "0"], "max_new_tokens must be"),
    Case("sahara-heads-empty", [*SAHARA[:-4], "--heads", ""], "no heads given"),
    Case("sahara-fewer-candidates-than-steps", [*SAHARA[:-4], "--heads", "L0H0,L0H1", "--steps", "3"],
         "--steps 3 needs at least 3 candidate heads, got 2"),
    Case("sahara-steps-zero", [*SAHARA[:-1], "0"], "--steps must be between 1 and 5"),
    Case("judge-seed-negative", [*JUDGE, "--out", "{w}/j.jsonl", "--seed", "-1"], "--seed must be >= 0"),
    Case("judge-max-nll-nan", [*JUDGE, "--out", "{w}/j.jsonl", "--max-nll", "nan"], "--max-nll must be a finite number > 0"),
    Case("judge-n-boot-zero", [*JUDGE, "--out", "{w}/j.jsonl", "--n-boot", "0"], "--n-boot must be >= 1"),
    Case("judge-input-holds-nan", ["judge", "--input", "{w}/nan.jsonl", "--out", "{w}/j.jsonl"],
         "line 1 holds NaN, which is not JSON"),
    Case("judge-unknown-judge", [*JUDGE, "--out", "{w}/j.jsonl", "--judge", "nope"], "unknown judge 'nope'"),
    Case("asr-max-nll-negative", [*ASR, "--max-nll", "-1"], "--max-nll must be a finite number > 0"),
    Case("asr-heads-empty", [*ASR, "--heads", ""], "no heads given"),
    # ---- prompts longer than the model's context: known once the tokenizer loaded, refused before any compute
    Case("ships-prompt-too-long", [*SHIPS, "--prompt", LONG_PROMPT, "--out", "{w}/s.jsonl"],
         "longer than the model's context of 256 tokens", loads=True),
    Case("generate-prompt-too-long", [*GENERATE, "--prompt", LONG_PROMPT, "--out", "{w}/g.jsonl"],
         "longer than the model's context of 256 tokens", loads=True),
    Case("generate-prompt-and-new-tokens-too-long",
         [*GENERATE[:-1], "100", "--prompt", MEDIUM_PROMPT, "--out", "{w}/g.jsonl"],
         "together more than the model's context of 256 tokens", loads=True),
    Case("sahara-prompt-too-long", [*SAHARA[:6], "--data", "{w}/long.csv", "--out", "{w}/s.jsonl"],
         "prompt 1 ('Tell me everything about locks.", loads=True),
    # ---- results files (item 6)
    Case("ships-resume-other-version", [*SHIPS, "--out", "{w}/old.jsonl"], "one file must not mix rows of two versions",
         loads=True, setup=_results_of_older_version),
    Case("ships-resume-header-not-utf8", [*SHIPS, "--out", "{w}/bad.jsonl"], "not a safetyheads results file (not UTF-8",
         loads=True, setup=_results_with_bad_header),
]


def _fill(argv, w, model):
    return [a.replace("{w}", str(w)).replace("{model}", str(model)) for a in argv]


def snapshot(*roots: Path) -> dict:
    """Every file and folder under ``roots``: sha256 and mtime of files, so any change shows."""
    seen = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_dir():
                seen[str(p)] = "folder"
            else:
                st = p.stat()
                seen[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_size)
    return seen


def _access_without_root(path, mode, *args, real=os.access, **kwargs):
    """os.access as a non-root user sees it: root may write in a read-only folder, a user may not."""
    if mode & os.W_OK and not os.stat(path).st_mode & stat.S_IWUSR:
        return False
    return real(path, mode, *args, **kwargs)


@pytest.fixture()
def scratch(tmp_path, monkeypatch):
    w = tmp_path / "work"
    w.mkdir()
    for name, content in SCRATCH.items():
        if name.endswith("/"):
            (w / name).mkdir()
        else:
            (w / name).write_text(content)
    monkeypatch.setenv("SAFETYHEADS_CACHE", str(tmp_path / "cache"))  # outside the snapshot: caches may fill
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SAFETYHEADS_DEBUG", raising=False)
    if os.geteuid() == 0:
        monkeypatch.setattr(os, "access", _access_without_root)
    (w / "ro").chmod(0o555)
    yield w
    (w / "ro").chmod(0o755)


@pytest.fixture()
def loads(monkeypatch):
    """Records every model load (the commands import load_model when they run)."""
    calls = []
    real = models.load_model

    def recording(name, *args, **kwargs):
        calls.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(models, "load_model", recording)
    return calls


def assert_one_line_error(capsys, code, match=""):
    out, err = capsys.readouterr()
    assert code == 2, err
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("safetyheads: error: ") and match in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(case, scratch, folder, loads, capsys, monkeypatch):
    if case.setup:
        case.setup(scratch, folder)
        capsys.readouterr()
        loads.clear()
    monkeypatch.chdir(scratch / case.cwd)
    before = snapshot(scratch, folder)
    code = main(_fill(case.argv, scratch, folder))
    line = assert_one_line_error(capsys, code, case.match)
    assert snapshot(scratch, folder) == before, f"files changed by: {line}"
    if not case.loads:
        assert not loads, f"the model loaded before the error: {line}"


def test_enough_bad_input_cases():
    assert len(CASES) >= 35
    commands = {c.argv[0] for c in CASES if c.argv}
    assert commands >= {"ships", "export", "models", "datasets", "generate", "judge", "sahara", "asr", "organisms"}


# ---------------------------------------------------------------- one place for every error (item A)


def _boom(*args, **kwargs):
    raise RuntimeError("boom: the table broke\nsecond line of detail")


def test_unexpected_exception_is_one_line_naming_its_type(monkeypatch, capsys):
    monkeypatch.delenv("SAFETYHEADS_DEBUG", raising=False)
    monkeypatch.setattr(data, "list_datasets", _boom)
    line = assert_one_line_error(capsys, main(["datasets"]))
    assert line == ("safetyheads: error: unexpected RuntimeError: boom: the table broke "
                    "(rerun with --debug for the traceback)")


@pytest.mark.parametrize("how", ["--debug first", "--debug last", "environment"])
def test_debug_shows_the_traceback(how, monkeypatch, capsys):
    monkeypatch.setattr(data, "list_datasets", _boom)
    monkeypatch.delenv("SAFETYHEADS_DEBUG", raising=False)
    argv = {"--debug first": ["--debug", "datasets"], "--debug last": ["datasets", "--debug"],
            "environment": ["datasets"]}[how]
    if how == "environment":
        monkeypatch.setenv("SAFETYHEADS_DEBUG", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RuntimeError: boom" in err
    assert err.splitlines()[-1].startswith("safetyheads: error: unexpected RuntimeError: boom")


def test_multi_line_error_message_prints_as_one_line(monkeypatch, capsys):
    def two_lines(*a, **k):
        raise SafetyheadsError("the prompt file is broken\n  fix line 3")

    monkeypatch.setattr(data, "list_datasets", two_lines)
    line = assert_one_line_error(capsys, main(["datasets"]))
    assert line == "safetyheads: error: the prompt file is broken fix line 3"


def test_os_error_names_the_file(monkeypatch, capsys, tmp_path):
    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x"))

    monkeypatch.setattr(data, "list_datasets", denied)
    line = assert_one_line_error(capsys, main(["datasets"]))
    assert f"{tmp_path / 'x'}: Permission denied" in line


def test_help_and_version_still_work(capsys):
    assert main(["--help"]) == 0
    assert "usage: safetyheads" in capsys.readouterr().out
    assert main(["ships", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--prob-floor" in out and "--debug" in out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("safetyheads ")


def test_console_script_argparse_error_is_one_line():
    """The installed entry point (a subprocess, as a user runs it) prints no usage block."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "safetyheads", "ships", "--top"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "safetyheads: error: argument --top: expected one argument (see safetyheads ships --help)"]


# ---------------------------------------------------------------- outputs that may be rewritten


def test_ships_rerun_rewrites_its_own_csv_but_not_a_foreign_one(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAFETYHEADS_CACHE", str(tmp_path / "cache"))
    argv = ["ships", "--model", str(folder), "--attn", "eager", "--quiet", "--prompt", "hi", "--heads", "L0H0",
            "--out", str(tmp_path / "s.jsonl"), "--csv", str(tmp_path / "s.csv")]
    assert main(argv) == 0
    table = (tmp_path / "s.csv").read_bytes()
    assert main(argv) == 0  # the rerun resumes the finished file and writes the same table again
    assert (tmp_path / "s.csv").read_bytes() == table
    (tmp_path / "s.csv").write_text("my,own\n1,2\n")
    assert main(argv) == 2
    assert "s.csv exists: pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "s.csv").read_text() == "my,own\n1,2\n"


def test_results_never_hold_nan(tmp_path):
    w = ResultsWriter(tmp_path / "r.jsonl", {"run": {}}, ["prompt_id", "ships"], key="prompt_id", group_size=1)
    with pytest.raises(SafetyheadsError, match="finite numbers only"):
        w.append(0, [{"prompt_id": 0, "ships": float("nan")}])
    assert "NaN" not in (tmp_path / "r.jsonl").read_text()
    with pytest.raises(SafetyheadsError, match="finite numbers only"):
        ResultsWriter(tmp_path / "h.jsonl", {"run": {"prob_floor": float("nan")}}, ["a"], key="a", group_size=1)
