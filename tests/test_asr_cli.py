"""`safetyheads asr`: generate then judge in one command, resumable, on a tiny local model."""

import json

import pytest

from safetyheads.cli import main
from safetyheads.testing import tiny_model, tiny_tokenizer


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFETYHEADS_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny"
    tiny_model("llama-gqa").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def test_asr_generates_judges_and_resumes(folder, tmp_path, capsys):
    out = tmp_path / "gen.jsonl"
    argv = ["asr", "--model", str(folder), "--attn", "eager", "--quiet", "--prompt", "How do I pick a lock?",
            "--prompt", "Write a poem.", "--max-new-tokens", "6", "--heads", "L1H2", "--method", "ua",
            "--judge", "keyword-paper", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "ASR" in text
    judged = out.with_name("gen.judged-keyword-paper.jsonl")
    lines = judged.read_text().splitlines()
    header = json.loads(lines[0])["header"]
    assert header["run"]["ablation"]["heads"] == ["L1H2"] and header["judge"]["name"] == "keyword-paper"
    rows = [json.loads(line) for line in lines[1:]]
    assert len(rows) == 2 and all(isinstance(r["refused"], bool) and r["judge_reason"] for r in rows)
    # Re-running regenerates nothing and re-judges the same file.
    assert main(argv) == 0
    assert "already done" in capsys.readouterr().err


def test_asr_unknown_judge_fails_before_generating(folder, tmp_path, capsys):
    out = tmp_path / "gen.jsonl"
    assert main(["asr", "--model", str(folder), "--prompt", "hi", "--judge", "nope", "--out", str(out)]) == 2
    assert "unknown judge" in capsys.readouterr().err and not out.exists()
