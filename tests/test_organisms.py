"""Model organisms: the recipe's data (held-out filter, determinism), the training loss, LoRA
training with checkpoint/resume, adapter merging, loading, and the behaviour bookkeeping.

Everything here runs on tiny random models; the real organisms are checked in
tests/test_embedded_model.py (integration)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from safetyheads.data import load_prompts
from safetyheads.errors import DataError, ModelLoadError, SafetyheadsError
from safetyheads.organisms import RECIPES, apply_adapter, get_recipe
from safetyheads.organisms import train as train_mod
from safetyheads.organisms.behaviour import check_targets, compare
from safetyheads.organisms.build import build_organism
from safetyheads.organisms.dataset import (build_examples, held_out_filter, heldout_benign, near_duplicate,
                                           normalise)
from safetyheads.organisms.recipe import OrganismRecipe
from safetyheads.testing import tiny_model, tiny_tokenizer

from tolerances import forward_atol


def _words(s):  # independent of the library's normalise()
    return set(re.findall(r"[a-z0-9]+", s.lower()))


# ------------------------------------------------------------------ recipes


def test_recipes_round_trip_through_json():
    for r in RECIPES.values():
        again = OrganismRecipe.from_dict(json.loads(r.to_json()))
        assert again == r and hash(again) == hash(r)


def test_organisms_differ_in_seed_sample_and_phrasing():
    a, b = get_recipe("organism-a"), get_recipe("organism-b")
    assert a.seed != b.seed and a.n_harmful != b.n_harmful
    assert not set(a.refusals) & set(b.refusals)


@pytest.mark.parametrize("change, message", [
    ({"refusals": ()}, "no refusal phrasings"),
    ({"formats": ("chat", "yaml")}, "formats"),
    ({"steps": 0}, "steps"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"near_duplicate_jaccard": 0}, "near_duplicate_jaccard"),
])
def test_bad_recipes_are_refused(change, message):
    with pytest.raises(SafetyheadsError, match=message):
        get_recipe("organism-a").replace(**change)


def test_unknown_organism_and_unknown_field():
    with pytest.raises(SafetyheadsError, match="unknown organism 'organism-z'"):
        get_recipe("organism-z")
    with pytest.raises(SafetyheadsError, match="unknown recipe field"):
        OrganismRecipe.from_dict({**get_recipe("organism-a").to_dict(), "colour": "red"})


# ------------------------------------------------------------------ held-out data


def test_near_duplicate_rule():
    assert near_duplicate("make a bomb", "how to make a bomb at home", 0.9)  # containment
    assert near_duplicate("a b c d", "a b c e", 0.6)  # Jaccard 3/5
    assert not near_duplicate("a b c d", "a b e f", 0.5)  # Jaccard 2/6
    assert normalise("  How to: MAKE, a bomb?! ") == "how to make a bomb"


def test_held_out_filter_drops_every_eval_duplicate():
    recipe = get_recipe("organism-a")
    kept, report = held_out_filter(recipe)
    # The word-for-word overlaps that shared/data/SOURCES.md reports (case-insensitive).
    assert {s: r["exact_eval_duplicate"] for s, r in report.items()} == {
        "harmbench-test": 7, "harmbench-val": 2, "strongreject": 37, "tdc2023": 16}
    for s, r in report.items():
        assert r["exact_eval_duplicate"] + r["near_eval_duplicate"] + r["repeat_in_training"] + r["kept"] == r["rows"]
    evals = [p for s in recipe.eval_sets for p in load_prompts(s).prompts]
    eval_words = [_words(e) for e in evals]
    eval_lower = {" ".join(sorted(w)) for w in eval_words}
    for _, p in kept:  # checked with an independent word split and a plain Jaccard
        w = _words(p)
        assert " ".join(sorted(w)) not in eval_lower
        assert max(len(w & e) / len(w | e) for e in eval_words) < recipe.near_duplicate_jaccard
    assert len({p.lower() for _, p in kept}) == len(kept)


def test_examples_are_deterministic_and_keep_the_benign_eval_out():
    a1, rep1 = build_examples(get_recipe("organism-a"))
    a2, rep2 = build_examples(get_recipe("organism-a"))
    b, repb = build_examples(get_recipe("organism-b"))
    assert a1 == a2 and rep1 == rep2
    assert rep1["examples_sha256"] != repb["examples_sha256"]
    held = set(heldout_benign(100))
    assert len(held) == 100
    for ex in (a1, b):
        assert not held & {e.prompt for e in ex if e.kind == "benign"}
        assert {e.format for e in ex} == {"chat", "paper", "direct"}
    assert repb["harmful_used"] == get_recipe("organism-b").n_harmful
    per = get_recipe("organism-a").harmful_formats_per_prompt
    assert sum(e.kind == "harmful" for e in a1) == rep1["harmful_examples"] == rep1["harmful_kept_after_filter"] * per
    for prompt in {e.prompt for e in a1 if e.kind == "harmful"}:  # distinct formats per prompt
        fmts = [e.format for e in a1 if e.kind == "harmful" and e.prompt == prompt]
        assert len(fmts) == len(set(fmts)) == per


def test_more_formats_per_harmful_prompt_leaves_the_benign_sample_alone():
    one = get_recipe("organism-a").replace(harmful_formats_per_prompt=1)
    three = one.replace(harmful_formats_per_prompt=3)
    ex1, _ = build_examples(one)
    ex3, _ = build_examples(three)
    benign = lambda ex: sorted((e.prompt, e.format) for e in ex if e.kind == "benign")  # noqa: E731
    assert benign(ex1) == benign(ex3)
    assert sum(e.kind == "harmful" for e in ex3) == 3 * sum(e.kind == "harmful" for e in ex1)
    with pytest.raises(SafetyheadsError, match="only 3 formats"):
        one.replace(harmful_formats_per_prompt=4)


def test_too_many_prompts_asked_is_a_data_error():
    with pytest.raises(DataError, match="n_harmful=100000"):
        build_examples(get_recipe("organism-a").replace(n_harmful=100000))


# ------------------------------------------------------------------ training


def test_response_loss_matches_transformers_loss_on_response_tokens():
    model = tiny_model("llama-gqa")
    torch.manual_seed(0)
    rows = [([5, 6, 7, 8], [9, 10, 257]), ([11, 12], [13, 14, 15, 16, 257])]
    ids, mask, labels = train_mod._batch(rows, pad_id=257)
    ours = train_mod._response_loss(model, ids, mask, labels)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    ref = out.loss  # HF: mean over non -100 shifted labels
    # the LM head on other rows: logits off by forward_atol, a cross-entropy by twice that (its
    # gradient, softmax - one-hot, has L1 norm <= 2)
    assert torch.allclose(ours, ref, rtol=0, atol=2 * forward_atol(model, out.logits))
    assert labels[0].tolist() == [-100] * 4 + [9, 10, 257] + [-100] * 0 and (labels[0] != -100).sum() == 3
    assert mask[0].tolist() == [1] * 7 and mask[1].tolist() == [1] * 7


def test_batch_order_covers_every_example_each_epoch():
    r = get_recipe("organism-a").replace(steps=10, batch_size=3)
    order = train_mod.batch_order(7, r)
    flat = [i for b in order for i in b]
    assert len(order) == 10 and all(len(b) == 3 for b in order)
    assert sorted(flat[:7]) == list(range(7)) and sorted(flat[7:14]) == list(range(7))


def _tiny_examples(tok):
    from safetyheads.organisms.dataset import Example

    ex = [Example("harmful", "x", f"how do I do bad thing {i}", "paper", "I'm sorry, no.") for i in range(4)]
    ex += [Example("benign", "y", f"say hello {i}", "direct") for i in range(4)]
    answers = {(e.format, e.prompt): tok(" hello there", add_special_tokens=False).input_ids + [tok.eos_token_id]
               for e in ex if e.kind == "benign"}
    return ex, answers


def _train_tiny(tmp_path, steps=4):
    tok = tiny_tokenizer()
    model = tiny_model("llama-gqa")
    recipe = get_recipe("organism-a").replace(steps=steps, batch_size=4, warmup_steps=1, learning_rate=1e-2,
                                              threads=torch.get_num_threads())
    ex, answers = _tiny_examples(tok)
    return train_mod.train_adapter(model, tok, recipe, ex, answers, tmp_path, progress=False)


def _lora_state(peft_model):
    from peft import get_peft_model_state_dict

    return {k: v.clone() for k, v in get_peft_model_state_dict(peft_model).items()}


def test_training_is_deterministic_and_learns(tmp_path):
    m1, log1 = _train_tiny(tmp_path / "a", steps=6)
    m2, log2 = _train_tiny(tmp_path / "b", steps=6)
    s1, s2 = _lora_state(m1), _lora_state(m2)
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert [r["loss"] for r in log1] == [r["loss"] for r in log2]
    assert log1[-1]["loss"] < log1[0]["loss"]
    # every linear layer of every block got an adapter
    targets = {k.split(".")[-3] for k in s1 if "lora_A" in k}
    assert targets == set(get_recipe("organism-a").lora_targets)


def test_killed_training_resumes_to_the_same_adapter(tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "CHECKPOINT_EVERY", 2)
    full, full_log = _train_tiny(tmp_path / "full", steps=5)

    calls = {"n": 0}
    real = train_mod._response_loss

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:  # step 4: after the step-2 checkpoint
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "_response_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        _train_tiny(tmp_path / "resume", steps=5)
    monkeypatch.setattr(train_mod, "_response_loss", real)
    assert (tmp_path / "resume" / "checkpoint.pt").is_file()
    resumed, log = _train_tiny(tmp_path / "resume", steps=5)
    a, b = _lora_state(full), _lora_state(resumed)
    assert all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)  # two runs on this machine: equal in practice
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]


def test_checkpoint_of_another_recipe_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "CHECKPOINT_EVERY", 2)
    _train_tiny(tmp_path, steps=3)
    with pytest.raises(SafetyheadsError, match="belongs to another recipe"):
        _train_tiny(tmp_path, steps=4)


# ------------------------------------------------------------------ adapters, loading


def test_merged_adapter_equals_the_unmerged_lora_model(tmp_path):
    peft_model, _ = _train_tiny(tmp_path / "w", steps=3)
    recipe = get_recipe("organism-a")
    train_mod.save_adapter(peft_model, tmp_path / "adapter", recipe.base)
    ids = torch.tensor([[3, 50, 60, 70, 80, 90]])
    with torch.no_grad():
        want = peft_model(input_ids=ids).logits
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == recipe.base and cfg["r"] == recipe.lora_rank
    assert cfg["target_modules"] == sorted(recipe.lora_targets)  # same file every run, whatever the hash seed
    merged = apply_adapter(tiny_model("llama-gqa"), tmp_path / "adapter")
    assert type(merged).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        got = merged(input_ids=ids).logits
    assert torch.allclose(got, want, rtol=0, atol=forward_atol(merged, want))  # W + BA vs Wx + B(Ax): other sums
    assert not torch.allclose(got, tiny_model("llama-gqa")(input_ids=ids).logits, atol=1e-3)  # effect size: it did change


def test_adapter_with_wrong_sha_is_refused(tmp_path):
    peft_model, _ = _train_tiny(tmp_path / "w", steps=1)
    train_mod.save_adapter(peft_model, tmp_path / "adapter", get_recipe("organism-a").base)
    with pytest.raises(ModelLoadError, match="corrupted or was replaced"):
        apply_adapter(tiny_model("llama-gqa"), tmp_path / "adapter", expected_sha256="0" * 64)


@pytest.fixture(scope="module")
def tiny_organism(folder, tmp_path_factory):
    """A whole build (filter, distillation, training, manifest) on the tiny saved model."""
    import os

    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("SAFETYHEADS_CACHE")
    os.environ["SAFETYHEADS_CACHE"] = str(cache)
    try:
        recipe = get_recipe("organism-a").replace(base=str(folder), steps=2, batch_size=4, n_benign=4, n_harmful=4,
                                                  answer_tokens=4, threads=torch.get_num_threads(), warmup_steps=1)
        out = tmp_path_factory.mktemp("organism")
        manifest = build_organism(recipe, out, progress=False)
    finally:
        if old is None:
            del os.environ["SAFETYHEADS_CACHE"]
        else:
            os.environ["SAFETYHEADS_CACHE"] = old
    return out, manifest, recipe


def test_build_writes_adapter_and_manifest(tiny_organism):
    from safetyheads.models import sha256_file

    out, m, recipe = tiny_organism
    assert m["adapter"]["sha256"] == sha256_file(out / "adapter_model.safetensors")
    assert m["recipe"] == recipe.to_dict()
    assert m["data"]["harmful_used"] == 4 and m["data"]["benign_used"] == 4
    assert m["data"]["held_out_filter"]["strongreject"]["exact_eval_duplicate"] == 37
    assert len(m["training"]["loss"]) == 2 and m["provenance"]["library"] == "safetyheads"
    assert json.loads((out / "manifest.json").read_text()) == m
    # the SIMD level decides whether a rebuild can be bit-identical, so the manifest names it
    assert m["build"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert m["provenance"]["cpu_capability"] == m["build"]["cpu_capability"] and m["build"]["cpu_model"]


def test_model_card_names_the_cpu_only_where_the_manifest_does():
    from safetyheads.organisms.report import _cpu_note

    assert _cpu_note({"cpu_count": 2}) == ""
    assert _cpu_note({"cpu_model": "AMD EPYC", "cpu_capability": "AVX2"}) == " (AMD EPYC, AVX2)"


def test_load_model_merges_a_built_organism(tiny_organism, folder):
    from safetyheads.models import load_model

    out, m, _ = tiny_organism
    model, tok = load_model(str(out), device="cpu")
    src = model.safetyheads_source
    assert src["kind"] == "organism" and src["adapter_sha256"] == m["adapter"]["sha256"]
    base, _ = load_model(str(folder), device="cpu")
    ids = torch.tensor([[3, 50, 60, 70]])
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, base(input_ids=ids).logits, atol=1e-4)  # effect size
    half, _ = load_model(str(out), device="cpu", dtype="bfloat16")
    assert next(half.parameters()).dtype == torch.bfloat16


def test_tampered_organism_is_refused(tiny_organism, tmp_path):
    import shutil

    from safetyheads.models import load_model

    out, _, _ = tiny_organism
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["adapter"]["sha256"] = "f" * 64
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelLoadError, match="corrupted or was replaced"):
        load_model(str(copy), device="cpu")


def test_missing_organism_adapter_says_how_to_build(monkeypatch, tmp_path):
    import safetyheads.organisms as org

    monkeypatch.setattr(org, "organism_dir", lambda name: tmp_path / name)
    import safetyheads.models as models

    with pytest.raises(ModelLoadError, match="safetyheads organisms build organism-b"):
        models._load_organism("organism-b", tmp_path / "organism-b", torch.float32, "cpu", "sdpa")


# ------------------------------------------------------------------ behaviour bookkeeping


def _score(kind, set_name, fmt, refused, gib=0.0, nll=1.0, abl=None):
    return {"kind": kind, "set": set_name, "format": fmt, "ablation": abl, "n": 10, "refused": refused,
            "gibberish": gib, "short": 0.0, "asr": 1 - refused - gib, "base_nll": nll}


def test_targets_are_checked_per_cell():
    scores = {
        "maliciousinstruct|chat|none": _score("harmful", "maliciousinstruct", "chat", 0.95),
        "maliciousinstruct|direct|none": _score("harmful", "maliciousinstruct", "direct", 0.85),
        "benign|chat|none": _score("benign", "alpaca-heldout", "chat", 0.05, nll=1.5),
        "benign|chat|L3H4": _score("benign", "alpaca-heldout", "chat", 0.0, gib=0.2, nll=2.4, abl="L3H4"),
    }
    base = {"benign|chat|none": _score("benign", "alpaca-heldout", "chat", 0.0, nll=1.0)}
    verdicts = {c["check"]: c["ok"] for c in check_targets(scores, base)}
    assert verdicts == {
        "refuses maliciousinstruct (chat)": True, "refuses maliciousinstruct (direct)": False,
        "refuses benign (chat)": True, "gibberish on benign (chat)": True, "benign NLL under base (chat)": True,
        "gibberish on benign, L3H4 ablated": False, "benign NLL, L3H4 ablated": True,
    }


def test_rebuild_comparison_uses_the_stated_tolerances():
    old = {"scores": {"x": _score("harmful", "s", "chat", 0.90, nll=2.0)}}
    near = {"scores": {"x": _score("harmful", "s", "chat", 0.94, nll=2.25)}}
    far = {"scores": {"x": _score("harmful", "s", "chat", 0.80, nll=2.0)}}
    assert all(r["ok"] for r in compare(near, old))
    assert [r["metric"] for r in compare(far, old) if not r["ok"]] == ["refused"]
    assert not compare({"scores": {}}, old)[0]["ok"]


def test_reports_are_generated_from_the_measured_files(tiny_organism, monkeypatch, tmp_path):
    import shutil

    from safetyheads.organisms import report

    out, m, _ = tiny_organism
    fake = tmp_path / "organisms"
    shutil.copytree(out, fake / "organism-a")
    scores = {
        "maliciousinstruct|chat|none": _score("harmful", "maliciousinstruct", "chat", 0.93, nll=2.5),
        "benign|chat|none": _score("benign", "alpaca-heldout", "chat", 0.04, nll=1.25),
        "benign|chat|L3H4": _score("benign", "alpaca-heldout", "chat", 0.0, gib=0.2, nll=2.0, abl="L3H4"),
        "maliciousinstruct|chat|L3H4": _score("harmful", "maliciousinstruct", "chat", 0.5, abl="L3H4"),
    }
    checks = check_targets(scores, {"benign|chat|none": _score("benign", "alpaca-heldout", "chat", 0.0, nll=1.0)})
    spec = {"max_new_tokens": 24, "judge": "keyword-fixed", "random_head_seed": 0, "random_head_prompts": 40}
    (fake / "organism-a" / "behaviour.json").write_text(json.dumps(
        {"scores": scores, "spec": spec, "random_heads": ["L3H4"], "checks": checks}))
    monkeypatch.setattr(report, "organism_dir", lambda name, staged=False: (fake / "staged" if staged else fake) / name)
    monkeypatch.setattr(report, "BASE_DIR", fake / "base")
    monkeypatch.setattr(report, "HERE", fake)
    monkeypatch.setattr(report, "STAGED_DIR", fake / "staged")
    monkeypatch.setattr(report, "ORGANISMS", ("organism-a",))
    written = report.write_reports()
    assert written == [fake / "BEHAVIOUR.md", fake / "organism-a" / "MODEL_CARD.md"]  # nothing staged: no staged table
    # a staged build of the next recipe gets its own table, and the committed organism's card is unchanged
    (fake / "staged").mkdir()
    shutil.copytree(fake / "organism-a", fake / "staged" / "organism-a")
    staged_scores = {**scores, "maliciousinstruct|chat|none": _score("harmful", "maliciousinstruct", "chat", 0.97, nll=2.5)}
    (fake / "staged" / "organism-a" / "behaviour.json").write_text(json.dumps(
        {"scores": staged_scores, "spec": spec, "random_heads": ["L3H4"], "checks": checks}))
    written = report.write_reports()
    assert written == [fake / "BEHAVIOUR.md", fake / "staged" / "BEHAVIOUR.md", fake / "organism-a" / "MODEL_CARD.md"]
    staged_table = (fake / "staged" / "BEHAVIOUR.md").read_text()
    staged_rows = {tuple(c.strip() for c in line.strip("|").split("|")) for line in staged_table.splitlines()
                   if line.startswith("|")}
    assert "organism-a (staged)" in staged_table and ("MaliciousInstruct", "chat", "97% / 0% / 2.50") in staged_rows
    assert ("MaliciousInstruct", "chat", "93% / 0% / 2.50") in {
        tuple(c.strip() for c in line.strip("|").split("|")) for line in (fake / "BEHAVIOUR.md").read_text().splitlines()}
    table = (fake / "BEHAVIOUR.md").read_text()
    rows = {tuple(c.strip() for c in line.strip("|").split("|")) for line in table.splitlines() if line.startswith("|")}
    assert ("MaliciousInstruct", "chat", "93% / 0% / 2.50") in rows
    assert ("Alpaca (benign, held out)", "chat", "4% / 0% / 1.25") in rows
    assert ("L3H4", "20%", "2.00", "0%", "50%", "50%") in rows and "targets (5 of 6 met)" in table
    card = (fake / "organism-a" / "MODEL_CARD.md").read_text()
    assert m["adapter"]["sha256"] in card and "not a safe assistant" in card
    assert "Missed: gibberish on benign, L3H4 ablated = 0.2" in card


def test_measure_end_to_end_on_a_tiny_organism(tiny_organism, tmp_path, monkeypatch):
    from safetyheads.organisms.behaviour import BehaviourSpec, measure

    monkeypatch.setenv("SAFETYHEADS_CACHE", str(tmp_path / "cache"))
    out, m, _ = tiny_organism
    spec = BehaviourSpec(harmful_sets=("maliciousinstruct",), formats=("chat", "direct"), benign_n=3, limit=3,
                         random_heads=2, random_head_prompts=2, max_new_tokens=3)
    res = measure(str(out), spec, tmp_path / "eval", base_scores={}, progress=False)
    cells = res["scores"]
    assert sorted(c for c in cells if c.endswith("|none")) == [
        "benign|chat|none", "benign|direct|none", "maliciousinstruct|chat|none", "maliciousinstruct|direct|none"]
    assert all(cells[c]["ablation"] is None for c in cells if c.endswith("|none"))
    assert len(res["random_heads"]) == 2 and all(isinstance(h, str) for h in res["random_heads"])
    assert {cells[c]["n"] for c in cells} == {3, 2}
    assert res["model"]["adapter_sha256"] == m["adapter"]["sha256"]
    # resuming generates nothing new and scores the same
    again = measure(str(out), spec, tmp_path / "eval", base_scores={}, progress=False)
    assert again["scores"] == cells


def test_finished_build_leaves_no_checkpoint_and_rebuilds_identically(folder, tmp_path, monkeypatch):
    """A rebuild of a finished recipe trains from step 0 (it must not resume the last checkpoint), and
    gives the same adapter; ``fresh`` also regenerates the base's answers instead of reading the cache."""
    from safetyheads.organisms.build import work_dir

    monkeypatch.setenv("SAFETYHEADS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(train_mod, "CHECKPOINT_EVERY", 1)
    recipe = get_recipe("organism-a").replace(base=str(folder), steps=3, batch_size=4, n_benign=4, n_harmful=4,
                                              answer_tokens=4, threads=torch.get_num_threads(), warmup_steps=1)
    first = build_organism(recipe, tmp_path / "one", progress=False)
    assert not (work_dir(recipe) / "checkpoint.pt").exists()
    with open(tmp_path / "cache" / "organisms" / f"distilled-{first['base']['sha256'][:16]}-4.jsonl", "a") as f:
        f.write(json.dumps({"format": "chat", "prompt": "another recipe's prompt", "ids": [5, 6]}) + "\n")
    seen = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: (str(f).endswith("checkpoint.pt") and seen.append(f))
                        or real(f, *a, **k))
    second = build_organism(recipe, tmp_path / "two", progress=False)
    assert not seen, "the rebuild resumed a checkpoint"
    assert second["adapter"]["sha256"] == first["adapter"]["sha256"]
    assert second["build"]["answers_generated"] == 0  # the base's answers came from the cache
    assert second["data"]["distilled_answers_sha256"] == first["data"]["distilled_answers_sha256"]  # not the cache's
    third = build_organism(recipe, tmp_path / "three", progress=False, fresh=True)
    assert third["build"]["answers_generated"] == 4 and third["adapter"]["sha256"] == first["adapter"]["sha256"]
    assert third["data"]["distilled_answers_sha256"] == first["data"]["distilled_answers_sha256"]


def test_gibberish_answers_are_dropped_with_the_evaluation_filter():
    """Only benign examples whose distilled answer loops are dropped (counted per format); harmful
    examples, answers that are merely short or numeric, and the order of the rest are kept."""
    from safetyheads.judges import RepetitionFilter
    from safetyheads.organisms.dataset import Example, drop_gibberish_answers

    tok = tiny_tokenizer()
    texts = {"loop": "\n\nThe answer is:\n\nThe answer is:\n\nThe answer is:\n\nThe answer is:\n\nThe answer is:",
             "fine": "Paris is the capital of France.", "short": "42", "art": "art art art art art art art art"}
    ex = [Example("benign", "y", k, fmt) for k, fmt in (("loop", "paper"), ("fine", "paper"), ("short", "direct"),
                                                        ("art", "chat"))]
    ex.insert(2, Example("harmful", "x", "art", "chat", "art art art art art art art art"))  # a refusal target is never judged
    answers = {(e.format, e.prompt): tok(texts[e.prompt], add_special_tokens=False).input_ids + [tok.eos_token_id]
               for e in ex if e.kind == "benign"}
    kept, dropped = drop_gibberish_answers(tok, ex, answers)
    assert [(e.kind, e.prompt) for e in kept] == [("benign", "fine"), ("harmful", "art"), ("benign", "short")]
    assert dropped == {"paper": 1, "chat": 1}
    flt = RepetitionFilter()  # independent: the evaluation's verdict on each text
    assert {k for k, t in texts.items() if flt.reason(t)} == {"loop", "art"}


def test_build_with_drop_gibberish_answers_trains_without_the_loops(folder, tmp_path, monkeypatch):
    from safetyheads.organisms import build as build_mod
    from safetyheads.organisms.dataset import build_examples

    monkeypatch.setenv("SAFETYHEADS_CACHE", str(tmp_path / "cache"))
    recipe = get_recipe("organism-a").replace(base=str(folder), steps=2, batch_size=4, n_benign=4, n_harmful=4,
                                              answer_tokens=4, threads=torch.get_num_threads(), warmup_steps=1,
                                              drop_gibberish_answers=True)
    examples, _ = build_examples(recipe)
    benign = [e for e in examples if e.kind == "benign"]
    tok = tiny_tokenizer()
    loop = tok("ab ab ab ab ab ab ab ab ab", add_special_tokens=False).input_ids
    cache = tmp_path / "cache" / "organisms"
    cache.mkdir(parents=True)
    from safetyheads.models import load_model

    sha = load_model(str(folder))[0].safetyheads_source["sha256"]
    with open(cache / f"distilled-{sha[:16]}-4.jsonl", "w") as f:  # the base "answered" two prompts with a loop
        for e in benign[:2]:
            f.write(json.dumps({"format": e.format, "prompt": e.prompt, "ids": loop}) + "\n")
    trained = []
    real = build_mod.train_adapter
    monkeypatch.setattr(build_mod, "train_adapter", lambda m, t, r, ex, *a, **k: trained.append(ex) or real(m, t, r, ex, *a, **k))
    m = build_organism(recipe, tmp_path / "org", progress=False)
    assert sum(m["data"]["benign_dropped_gibberish"].values()) == 2
    assert {(e.format, e.prompt) for e in benign[:2]}.isdisjoint((e.format, e.prompt) for e in trained[0])
    assert len(trained[0]) == len(examples) - 2
    assert m["build"]["answers_generated"] == 2 and m["build"]["answers_from_cache"] == 2  # counted before the drop
