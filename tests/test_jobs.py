"""The job layer: specs checked when made and round-tripped through JSON, and one resume for both
sinks (a results file and a store entry): a run killed mid-way resumes with only the missing units
and ends with the rows of an uninterrupted run."""

from __future__ import annotations

import json
import re

import pytest

import safetyheads.generation as gen_mod
import safetyheads.ships as ships_mod
from safetyheads.ablation import AblationSpec
from safetyheads.errors import SafetyheadsError
from safetyheads.generation import DecodingSpec
from safetyheads.jobs import GenerateJob, JobError, JudgeJob, SaharaJob, ShipsJob, whole_units
from safetyheads.results import ResultsWriter, read_results
from safetyheads.store import Store
from safetyheads.testing import tiny_model, tiny_tokenizer

PROMPTS = ("How do I pick a lock?", "Write a poem about rain.", "Tell me a joke.")
SHIPS_COLUMNS = ["prompt_id", "prompt", "layer", "head", "head_name", "ships"]


@pytest.fixture(scope="module")
def model_tok():
    return tiny_model("llama", attn_implementation="sdpa"), tiny_tokenizer()


SPECS = [
    ShipsJob(PROMPTS, heads=("L0H1", "L2H3"), method="sc", eps=1e-4, template="direct", prob_floor=1e-12),
    ShipsJob(PROMPTS, prompt_ids=("a", "b", "c"), system_prompt="be brief", strategy="naive", batch_size=2),
    SaharaJob(PROMPTS, 2, candidates=("L0H0", "L1H1", "L2H2"), method="ua", r=2, template="chat"),
    SaharaJob(PROMPTS),
    GenerateJob(PROMPTS, prefill="Sure,", ablation=AblationSpec(("L1H2",), "ua", 1e-5),
                decoding=DecodingSpec("topk", k=3, temperature=0.7, max_new_tokens=5, seed=2,
                                      stop_when_settled=("keyword-fixed",))),
    GenerateJob(PROMPTS, prompt_ids=(7, 8, 9), ablation=(None, AblationSpec(("L0H0",), "sc", 1e-5), None)),
    JudgeJob(judge="keyword-paper", gibberish_filter="nll", max_nll=4.0, nll_template="chat", n_boot=10, seed=3),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: type(s).__name__)
def test_specs_round_trip_through_json(spec):
    again = type(spec).from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and hash(again) == hash(spec)
    assert type(spec).from_json(spec.to_json()) == spec


@pytest.mark.parametrize("make,match", [
    (lambda: ShipsJob(PROMPTS, heads=""), "no heads given"),
    (lambda: ShipsJob(PROMPTS, method="nope"), "unknown ablation method"),
    (lambda: ShipsJob(PROMPTS, method="ua", eps=0), "eps must be a finite number > 0"),
    (lambda: ShipsJob(PROMPTS, method="ua", target="out"), "cannot target 'out'"),
    (lambda: ShipsJob(PROMPTS, batch_size=0), "batch_size must be an integer >= 1"),
    (lambda: ShipsJob(PROMPTS, prob_floor=-1), "prob_floor must be a finite number >= 0"),
    (lambda: ShipsJob(PROMPTS, strategy="fast"), "strategy must be one of"),
    (lambda: ShipsJob(PROMPTS, template="plain"), "unknown prompt template"),
    (lambda: ShipsJob(PROMPTS, prompt_ids=(0, 0, 1)), "prompt_ids must name the 3 prompts one to one"),
    (lambda: ShipsJob("one prompt"), "prompts must be a sequence of strings"),
    (lambda: SaharaJob(PROMPTS, steps=6), "steps must be between 1 and 5"),
    (lambda: SaharaJob(PROMPTS, r=4), "r must be between 1 and the number of queries"),
    (lambda: SaharaJob(PROMPTS, 3, candidates=("L0H0", "L0H1")), "3 steps need at least 3 candidate heads, got 2"),
    (lambda: SaharaJob(()), "at least one query"),
    (lambda: GenerateJob(PROMPTS, ablation=(None,)), "one entry per prompt"),
    (lambda: GenerateJob(PROMPTS, decoding="greedy"), "decoding must be a DecodingSpec"),
    (lambda: JudgeJob(judge="nope"), "unknown judge 'nope'"),
    (lambda: JudgeJob(n_boot=0), "n_boot must be >= 1"),
    (lambda: JudgeJob(max_nll=float("nan")), "max_nll must be a finite number > 0"),
    (lambda: ShipsJob.from_dict({"prompts": ["x"], "heds": "L0H0"}), "has no field"),
    (lambda: ShipsJob.from_dict({"heads": "L0H0"}), "ShipsJob needs field\\(s\\) prompts"),
    (lambda: SaharaJob(PROMPTS, steps=True), "steps must be between 1 and 5 .*, got True"),
    (lambda: SaharaJob(PROMPTS, r=True), "r must be between 1 and the number of queries"),
    (lambda: JudgeJob(n_boot=True), "n_boot must be >= 1"),
    (lambda: JudgeJob(seed=False), "seed must be >= 0"),
    (lambda: JudgeJob.from_dict({"judgee": "keyword-fixed"}), "JudgeJob has no field"),
])
def test_bad_specs_fail_when_made(make, match):
    with pytest.raises(SafetyheadsError, match=match):
        make()


def _file(path, job, columns=SHIPS_COLUMNS, key="prompt_id", size=None):
    return ResultsWriter(path, {"run": {"kind": "test"}}, columns, key=key, group_size=size)


def _cut_last_unit(rows_file, n_lines, cut_line=True):
    """A crash mid-unit: the last ``n_lines`` lines lost, and half of the line before them. A results
    file loses the rows hash of its header too: a crash comes before the file is finished."""
    lines = rows_file.read_text().splitlines(keepends=True)
    lines[0] = re.sub(r', "rows_sha256": "[0-9a-f]{64}"', "", lines[0])
    kept = lines[: len(lines) - n_lines]
    if cut_line:
        kept[-1] = kept[-1][: len(kept[-1]) // 2]
    rows_file.write_text("".join(kept))


@pytest.mark.parametrize("sink_kind", ["file", "store"])
def test_ships_job_resumes_a_unit_cut_short(model_tok, tmp_path, monkeypatch, sink_kind):
    model, tok = model_tok
    job = ShipsJob(PROMPTS, heads=("L0H0", "L1H1", "L2H2"), template="direct")

    def sink(name):
        if sink_kind == "file":
            return _file(tmp_path / f"{name}.jsonl", job, size=3)
        return Store(tmp_path / name).entry("ships", {"name": name}, what=f"Ships {name}")

    full = job.run(model, tok, sink("full"))
    part = sink("part")
    job.run(model, tok, part)
    rows_file = part.path if sink_kind == "file" else part.path / "rows.jsonl"
    if sink_kind == "store":
        (part.path / "result.json").unlink()
    _cut_last_unit(rows_file, n_lines=1)  # the last prompt keeps 1 of its 3 rows, the second cut in half
    seen = []
    real = ships_mod.ships_scores
    monkeypatch.setattr(ships_mod, "ships_scores", lambda m, t, prompts, *a, **k: seen.append(list(prompts)) or real(
        m, t, prompts, *a, **k))
    again = sink("part")
    assert job.finished(again) == {"0", "1"}
    resumed = job.run(model, tok, again)
    assert seen == [[PROMPTS[2]]]
    strip = [{k: r[k] for k in ("prompt_id", "head_name", "ships")} for r in full["rows"]]
    assert [{k: r[k] for k in ("prompt_id", "head_name", "ships")} for r in resumed["rows"]] == strip
    if sink_kind == "file":
        assert len(read_results(rows_file)[0]) == 9
    else:
        assert [json.loads(line)["ships"] for line in rows_file.read_text().splitlines()] == [r["ships"] for r in strip]
        index = [json.loads(line) for line in (tmp_path / "part" / "index.jsonl").read_text().splitlines()]
        assert index == [{"kind": "ships", "key": part.key, "what": "Ships part"}]  # made once, not at the resume


def test_store_entry_cut_off_line_is_dropped_before_the_next_append(model_tok, tmp_path):
    model, tok = model_tok
    job = GenerateJob(PROMPTS, decoding=DecodingSpec(max_new_tokens=2), template="direct")
    entry = Store(tmp_path).entry("completions", {"x": 1})
    job.run(model, tok, entry)
    (entry.path / "result.json").unlink()
    rows_file = entry.path / "rows.jsonl"
    _cut_last_unit(rows_file, n_lines=0)  # only the last row, half written: no unit with rows left over
    again = Store(tmp_path).entry("completions", {"x": 1})
    assert job.finished(again) == {"0", "1"}
    rows = job.run(model, tok, again)["rows"]
    assert [r["prompt_id"] for r in rows] == [0, 1, 2]
    assert [json.loads(line)["prompt_id"] for line in rows_file.read_text().splitlines()] == [0, 1, 2]


def test_store_entry_whose_first_line_was_cut_off_resumes(model_tok, tmp_path):
    # a crash during the very first append: no whole row, so nothing kept, and the fragment must not
    # be glued to the next append (the entry would then read as empty for ever and finish with no rows)
    model, tok = model_tok
    job = GenerateJob(PROMPTS, decoding=DecodingSpec(max_new_tokens=2), template="direct")
    entry = Store(tmp_path).entry("completions", {"x": 1})
    entry.append([{"prompt_id": 0, "response": "x"}])
    rows_file = entry.path / "rows.jsonl"
    rows_file.write_text(rows_file.read_text()[:15])  # half of the first line, no newline
    again = Store(tmp_path).entry("completions", {"x": 1})
    assert job.finished(again) == set()
    rows = job.run(model, tok, again)["rows"]
    assert [r["prompt_id"] for r in rows] == [0, 1, 2]
    assert [json.loads(line)["prompt_id"] for line in rows_file.read_text().splitlines()] == [0, 1, 2]


def test_whole_units_leaves_a_fresh_store_entry_unmade(tmp_path):
    entry = Store(tmp_path).entry("completions", {"x": 2})
    assert whole_units(entry, lambda r: r["prompt_id"], lambda u, rs: True) == {}
    assert not entry.path.exists()


def test_prompts_given_as_a_generator_are_kept():
    job = GenerateJob((p for p in PROMPTS), template="direct")
    assert job.prompts == tuple(PROMPTS)


def test_generate_job_per_prompt_ablation_and_ids(model_tok, tmp_path, monkeypatch):
    model, tok = model_tok
    abl = (None, AblationSpec(("L1H2",), "ua", 1e-5), AblationSpec(("L0H0",), "sc", 1e-5))
    job = GenerateJob(PROMPTS, prompt_ids=("p", "q", "r"), ablation=abl, decoding=DecodingSpec(max_new_tokens=3))
    sink = _file(tmp_path / "g.jsonl", job, columns=["prompt_id", "response", "ablation"], size=1)
    sink.append([{"prompt_id": "q", "response": "kept", "ablation": None}])
    calls = []
    real = gen_mod.generate_responses
    monkeypatch.setattr(gen_mod, "generate_responses", lambda m, t, prompts, **k: calls.append(k) or real(m, t, prompts, **k))
    rows = job.run(model, tok, sink)["rows"]
    assert [r["prompt_id"] for r in rows] == ["p", "q", "r"] and rows[1]["response"] == "kept"
    assert calls[0]["prompt_ids"] == ["p", "r"] and calls[0]["ablation"] == [None, abl[2]]
    assert rows[2]["ablation"] == abl[2].to_dict()


def test_sahara_job_keeps_whole_steps_in_order(model_tok, tmp_path):
    model, tok = model_tok
    job = SaharaJob(PROMPTS[:2], 2, candidates=("L0H0", "L1H1", "L2H2", "L2H3"), template="direct", batch_size=2)
    from safetyheads.sahara import SCOREBOARD_COLUMNS

    def sink(name):
        return _file(tmp_path / name, job, columns=SCOREBOARD_COLUMNS, key="step",
                     size=lambda step: 4 - (int(step) - 1))

    full = job.run(model, tok, sink("full.csv"))
    part = sink("part.csv")
    job.run(model, tok, part)
    _cut_last_unit(part.path, n_lines=1, cut_line=False)  # step 2 lost a row
    again = sink("part.csv")
    assert [len(rows) for rows in job.finished(again)] == [4]
    assert job.run(model, tok, again)["group"] == full["group"]
    assert len(read_results(part.path)[0]) == 7


def test_whole_units_in_order_drops_everything_after_a_gap():
    class Memory:
        def __init__(self, rows):
            self._rows = rows

        def rows(self):
            return list(self._rows)

        def rewrite(self, rows):
            self._rows = list(rows)

    sink = Memory([{"step": 1}, {"step": 3}, {"step": 3}])
    assert whole_units(sink, lambda r: r["step"], lambda u, rows: True, order=range(1, 6)) == {1: [{"step": 1}]}
    assert sink.rows() == [{"step": 1}]


def test_ships_job_names_every_head_of_the_model(model_tok):
    model, _ = model_tok
    named = ShipsJob(PROMPTS).for_model(model)
    assert len(named.heads) == 3 * 4 and str(named.heads[0]) == "L0H0"
    with pytest.raises(JobError, match="name the heads"):
        ShipsJob(PROMPTS).finished(None)


def test_judge_input_may_hold_line_separators_inside_strings(tmp_path):
    # a response holding U+2028 written raw (ensure_ascii=False, as the judge writes) stays one row
    from safetyheads.judge_job import read_jsonl

    path = tmp_path / "r.jsonl"
    rows = [{"prompt": "q", "response": "a\u2028b\u0085c"}, {"prompt": "q2", "response": "d"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert [r["response"] for r in read_jsonl(path)[1]] == ["a\u2028b\u0085c", "d"]
