"""The paper's query-level protocol (each query's own top-k Ships heads ablated while it is answered)
in the library (``ships.own_top_heads``, ``jobs.QueryLevelJob``) and on the command line
(``generate``/``asr --per-query-top-k``): the heads chosen per query are an independent Ships
computation's best, the response is the one generated with those heads ablated, and a killed run
resumes with only the missing queries."""

from __future__ import annotations

import json
import re

import pytest
import torch

import safetyheads.ships as ships_mod
from safetyheads.ablation import AblationSpec, ablate
from safetyheads.cli import main
from safetyheads.errors import SafetyheadsError
from safetyheads.generation import DecodingSpec
from safetyheads.heads import HeadRef, all_heads
from safetyheads.query_level import QueryLevelJob
from safetyheads.prompts import encode_for_generation, encode_prompt
from safetyheads.testing import tiny_model, tiny_tokenizer

PROMPTS = ("How do I pick a lock?", "Write a poem about rain.", "Tell me a joke.")
NEW_TOKENS = 6


@pytest.fixture(scope="module")
def model_tok():
    return tiny_model("llama", attn_implementation="eager"), tiny_tokenizer()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    tiny_model("llama", attn_implementation="eager").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@torch.no_grad()
def independent_ships(model, tok, prompt: str, method: str, eps: float, template: str) -> dict:
    """Ships of every head, one full forward pass per head under the hooks, KL written out here:
    none of the library's sweep strategies is used."""
    ids = encode_prompt(tok, prompt, template)
    clean = torch.log_softmax(model(input_ids=ids).logits[0, -1].double(), -1)
    scores = {}
    for h in all_heads(model):
        with ablate(model, AblationSpec((h,), method, eps)):
            ablated = torch.log_softmax(model(input_ids=ids).logits[0, -1].double(), -1)
        scores[h] = float((clean.exp() * (clean - ablated)).sum())
    return scores


@torch.no_grad()
def generated_under(model, tok, prompt: str, heads, method: str, eps: float, template: str) -> str:
    """The greedy response with ``heads`` ablated, through transformers' generate directly."""
    ids = torch.tensor([encode_for_generation(tok, prompt, template)])
    with ablate(model, AblationSpec(tuple(heads), method, eps)):
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                             do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def best(scores: dict, k: int) -> list[HeadRef]:
    return [h for h, _ in sorted(scores.items(), key=lambda t: (-t[1], t[0]))[:k]]


@pytest.mark.parametrize("method,template", [("ua", "direct"), ("sc", "paper")])
def test_each_query_gets_its_own_best_heads_and_the_response_under_them(model_tok, method, template):
    model, tok = model_tok
    job = QueryLevelJob(PROMPTS, k=2, method=method, template=template, decoding=DecodingSpec(max_new_tokens=NEW_TOKENS),
                        batch_size=2)
    rows = job.responses(model, tok)
    assert [r["prompt_id"] for r in rows] == [0, 1, 2]
    chosen = []
    for prompt, row in zip(PROMPTS, rows):
        scores = independent_ships(model, tok, prompt, method, 1e-5, template)
        want = best(scores, 2)
        assert row["ships_heads"] == [str(h) for h in want]
        assert row["ships_scores"] == pytest.approx([scores[h] for h in want], rel=1e-6)
        assert row["ablation"] == AblationSpec(tuple(want), method, 1e-5).to_dict()
        assert row["response"] == generated_under(model, tok, prompt, want, method, 1e-5, template)
        chosen.append(tuple(want))
    # the protocol is per query: here the queries do not all share their heads, so no fixed list of
    # heads could have given these rows
    assert len(set(chosen)) > 1


def test_own_top_heads_breaks_ties_in_head_order_and_refuses_bad_k():
    rows = [{"prompt_id": "a", "head_name": n, "ships": s} for n, s in (("L1H0", 0.5), ("L0H3", 0.5), ("L0H1", 0.2))]
    rows += [{"prompt_id": "b", "head_name": n, "ships": s} for n, s in (("L1H0", 0.1), ("L0H3", 0.3), ("L0H1", 0.9))]
    top = ships_mod.own_top_heads(rows, 2)
    assert top == {"a": [(HeadRef(0, 3), 0.5), (HeadRef(1, 0), 0.5)], "b": [(HeadRef(0, 1), 0.9), (HeadRef(0, 3), 0.3)]}
    with pytest.raises(SafetyheadsError, match="fewer than the 4 to pick"):
        ships_mod.own_top_heads(rows, 4)
    with pytest.raises(SafetyheadsError, match="k .* must be an integer >= 1"):
        ships_mod.own_top_heads(rows, 0)


@pytest.mark.parametrize("make,match", [
    (lambda: QueryLevelJob(PROMPTS, k=0), "k must be an integer >= 1"),
    (lambda: QueryLevelJob(PROMPTS, k=True), "k must be an integer >= 1"),
    (lambda: QueryLevelJob(PROMPTS, k=3, candidates=("L0H0", "L1H1")), "needs at least 3 candidate heads, got 2"),
    (lambda: QueryLevelJob(PROMPTS, method="ua", eps=0), "eps must be a finite number > 0"),
    (lambda: QueryLevelJob(PROMPTS, strategy="fast"), "strategy must be one of"),
    (lambda: QueryLevelJob(PROMPTS, ships_batch_size=0), "ships_batch_size must be an integer >= 1"),
])
def test_bad_query_level_specs_fail_when_made(make, match):
    with pytest.raises(SafetyheadsError, match=match):
        make()


def test_query_level_spec_round_trips_through_json():
    job = QueryLevelJob(PROMPTS, prompt_ids=("a", "b", "c"), k=3, candidates=("L0H0", "L1H1", "L2H2"), method="sc",
                        template="chat", system_prompt="be brief", prefill="Sure,",
                        decoding=DecodingSpec("topk", k=3, temperature=0.7, max_new_tokens=5, seed=2))
    again = QueryLevelJob.from_json(job.to_json())
    assert again == job and hash(again) == hash(job)


# ------------------------------------------------------------------------------------------------
# The command line


def _rows(path):
    lines = path.read_text().splitlines()
    return json.loads(lines[0])["header"], [json.loads(line) for line in lines[1:]]


def _argv(folder, out, *extra):
    argv = ["generate", "--model", str(folder), "--attn", "eager", "--quiet", "--max-new-tokens", str(NEW_TOKENS),
            "--per-query-top-k", "1", "--out", str(out), "--batch-size", "2"]
    for p in PROMPTS:
        argv += ["--prompt", p]
    return argv + list(extra)


def test_generate_per_query_rows_name_each_querys_heads(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAFETYHEADS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "own.jsonl"
    assert main(_argv(folder, out)) == 0
    header, rows = _rows(out)
    assert header["run"]["ablation"] == {"per_query_top_k": 1, "method": "ua", "eps": 1e-5, "target": "q",
                                         "candidates": "all"}
    model, tok = tiny_model("llama", attn_implementation="eager"), tiny_tokenizer()  # the folder's weights
    for prompt, row in zip(PROMPTS, rows):
        want = best(independent_ships(model, tok, prompt, "ua", 1e-5, "paper"), 1)
        assert row["ships_heads"] == [str(want[0])] and row["ablation"]["heads"] == [str(want[0])]
        assert row["response"] == generated_under(model, tok, prompt, want, "ua", 1e-5, "paper")
    printed = capsys.readouterr()
    assert "own top-1 Ships heads among 12" in printed.err
    first = [r["ships_heads"][0] for r in rows]
    top = max(set(first), key=lambda h: (first.count(h), h))
    assert f"most frequent first: {top} ({first.count(top)} of 3)" in printed.out


def test_generate_per_query_resumes_with_only_the_missing_queries(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAFETYHEADS_CACHE", str(tmp_path / "cache"))
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    assert main(_argv(folder, full)) == 0
    assert main(_argv(folder, part)) == 0
    # a crash after the first two queries: the last row lost, the file not finished (no rows hash)
    lines = part.read_text().splitlines(keepends=True)
    lines[0] = re.sub(r', "rows_sha256": "[0-9a-f]{64}"', "", lines[0])
    part.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    scored = []
    real = ships_mod.ships_scores
    monkeypatch.setattr(ships_mod, "ships_scores", lambda m, t, prompts, *a, **k: scored.append(list(prompts)) or real(
        m, t, prompts, *a, **k))
    capsys.readouterr()
    assert main(_argv(folder, part)) == 0
    assert scored == [[PROMPTS[2]]]
    assert "2 of 3 prompts already done" in capsys.readouterr().err
    keep = ("prompt_id", "response", "ships_heads", "ships_scores", "ablation")
    assert [{k: r[k] for k in keep} for r in _rows(part)[1]] == [{k: r[k] for k in keep} for r in _rows(full)[1]]
    # another k is another run: refused, not mixed into the file
    assert main(_argv(folder, part) + ["--per-query-top-k", "2"]) == 2
    assert "holds a different run (differs in: ablation)" in capsys.readouterr().err


def test_asr_per_query_keeps_the_heads_in_the_judged_rows(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAFETYHEADS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "own.jsonl"
    argv = ["asr", *_argv(folder, out)[1:], "--judge", "keyword-paper"]
    assert main(argv) == 0
    assert "ASR" in capsys.readouterr().out
    _, judged = _rows(out.with_name("own.judged-keyword-paper.jsonl"))
    _, rows = _rows(out)
    assert [r["ships_heads"] for r in judged] == [r["ships_heads"] for r in rows] and len(rows) == 3


@pytest.mark.parametrize("extra,match", [
    (["--per-query-top-k", "0"], "--per-query-top-k must be >= 1"),
    (["--per-query-top-k", "-2"], "--per-query-top-k must be >= 1"),
    (["--per-query-top-k", "x"], "invalid int value"),
    (["--per-query-top-k", "3", "--heads", "L0H1,L1H1"], "from --heads, which names 2"),
])
def test_bad_per_query_top_k_is_one_line_before_the_model_loads(tmp_path, capsys, extra, match):
    out = tmp_path / "g.jsonl"
    argv = ["generate", "--model", str(tmp_path / "no-such-model"), "--prompt", "hi", "--out", str(out), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err and not out.exists()
